"""``vislab segment MODEL IMAGES... --out DIR``: masks, colour masks, overlays, panels, legends, pixel shares.

MODEL is a vislab segmentation run folder, a torchvision model name (``deeplabv3_resnet50``,
``deeplabv3_resnet101``, ``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``,
``fcn_resnet50``: 21 VOC classes, with their weights' own transforms; ``--weights PATH`` for
local weights), or ``hf:NAME_OR_FOLDER`` for a Hugging Face SegFormer (model + image processor).
A run folder's ``--weights`` is a safetensors file of that model (``RUN/checkpoints/best.safetensors``),
as for ``predict``.

Per image, in DIR:
    STEM_mask.png      class IDs as an indexed PNG with the palette embedded (16-bit grey past 256 classes)
    STEM_color.png     the colour mask
    STEM_overlay.png   cv2.addWeighted(image, alpha, colour mask, beta, 0) (alpha 1.0, beta 0.6 by default)
    STEM_panel.png     input / predicted mask / overlay
    STEM_legend.png    every class's colour and name with its % of this image's pixels
    STEM_prob_CLASS.png  with --class-maps: that class's probability map
and for the whole run: ``legend.png`` (shares over all pixels), ``pixel_shares.csv``
(image, class, pixels, share; ``(all)`` rows for the total) and, when some inputs could not be
read, ``bad_files.csv`` (path, reason; an older one in DIR is removed by a run without bad files).
When no input could be read, nothing is written: DIR is not made, nor anything in it changed, and
:attr:`SegmentResult.bad_files` says why (``vislab segment`` prints each as an error and exits 1).

Every model runs through :class:`vislab.infer.Predictor`, as ``predict`` and ``serve`` do: the
preprocessing comes from the model (model.json for a run; the weights' own transforms for a
torchvision name; the image processor for a SegFormer), precision and memory format are the
predictor's measured choice, and images of one size go through one forward. Masks are at the
input's full resolution: the logits are upsampled bilinearly to the image's size, then the
argmax is taken (a label mask is never resized but by nearest).

Example:
    >>> from vislab.segment import segment_images
    >>> result = segment_images("lraspp_mobilenet_v3_large", ["street.jpg"], "out/",
    ...                         weights="lraspp.safetensors")   # doctest: +SKIP
    >>> result.shares["street.jpg"]["road"]                       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vislab.core.errors import ConfigError, RunError
from vislab.core.files import write_bad_files
from vislab.data.palettes import Palette, get_palette
from vislab.data.preprocess import INTERPOLATIONS, Preprocessing
from vislab.infer import Predictor
from vislab.infer.files import file_outputs
from vislab.models.segmentation_nets import TORCHVISION_MODELS


@dataclass
class Segmenter:
    """A segmentation model behind a :class:`~vislab.infer.Predictor` (or an exported graph behind its
    ``OnnxPredictor``), with its classes, palette and name."""

    predictor: Predictor
    palette: Palette
    name: str

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.loaded.class_names)


@dataclass
class SegmentResult:
    out_dir: Path
    files: dict[str, list[Path]] = field(default_factory=dict)  # image -> files written
    shares: dict[str, dict[str, float]] = field(default_factory=dict)  # image -> class -> share
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _palette_for(names: Sequence[str], palette: str | None) -> Palette:
    if palette:
        chosen = get_palette(palette)
        if len(chosen) < len(names):
            raise ConfigError(f"--palette {palette}: {len(chosen)} colours but the model has {len(names)} classes; "
                              "give a palette with one row per class")
        return Palette(tuple(names), tuple(chosen.colors[: len(names)]), chosen.name)
    for known in ("cityscapes", "ade20k", "voc", "camvid"):
        candidate = get_palette(known)
        if len(candidate) == len(names):
            if known == "voc" or [n.lower() for n in candidate.names] == [n.lower() for n in names]:
                return Palette(tuple(names), candidate.colors, known)
    return Palette.for_classes(names)


def model_palette(loaded, palette: str | None = None) -> Palette:
    """The palette masks are drawn in: ``palette`` (``--palette``) if given, else the run's own
    (model.json ``palette``), else a known palette matching the class names, else VOC's colour map.
    ``vislab segment`` and ``vislab serve`` both ask here."""
    names = list(loaded.class_names)
    stored = loaded.spec.get("palette")
    if palette or not stored:
        return _palette_for(names, palette)
    return Palette.from_json(stored, "model")


def _torchvision_preprocessing(transform) -> Preprocessing:
    """The weights' own ``transforms()`` (resize the short side, mean/std) as a :class:`Preprocessing`."""
    size = transform.resize_size[0] if transform.resize_size else None
    if size is None:
        raise RunError("these torchvision weights do not resize their inputs; vislab needs a resize size")
    mode = str(getattr(transform.interpolation, "value", transform.interpolation))
    return Preprocessing((3, size, size), tuple(transform.mean), tuple(transform.std),
                         mode if mode in INTERPOLATIONS else "bilinear", keep_aspect=True)


def _hf_preprocessing(processor, net, source: str) -> Preprocessing:
    """A Hugging Face image processor's resize and normalisation as a :class:`Preprocessing`
    (a model folder without one gets its model type's default processor from transformers)."""
    if processor is None:
        model_type = getattr(getattr(net.net, "config", None), "model_type", "")
        if model_type != "segformer":
            raise RunError(f"hf:{source} has no image processor (preprocessor_config.json), so its input size and "
                           "normalisation are unknown; save one beside the model with "
                           "AutoImageProcessor.save_pretrained(FOLDER)")
        from transformers import SegformerImageProcessor

        processor = SegformerImageProcessor()  # transformers' defaults for SegFormer checkpoints
    size = processor.size
    height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    mean = tuple(processor.image_mean) if getattr(processor, "do_normalize", True) else (0.0,) * 3
    std = tuple(processor.image_std) if getattr(processor, "do_normalize", True) else (1.0,) * 3
    interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(getattr(processor, "resample", 2)),
                                                                      "bilinear")
    return Preprocessing((3, int(height), int(width)), mean, std, interpolation)


def load_segmentation(model: str, weights: str | None = None):
    """A :class:`vislab.runs.Loaded` segmentation model for a run folder, a torchvision name or
    ``hf:NAME_OR_FOLDER``, its preprocessing read from the model (never a copied constant).
    ``weights``: local weights for a torchvision name, or a safetensors file of a run folder's model
    (a checkpoint, read as :func:`vislab.runs.load` reads it).

    Raises:
        RunError / PretrainedWeightsError / ConfigError: what is wrong and how to fix it.
    """
    from vislab.runs import load

    text = str(model)
    if text.startswith("hf:"):
        from vislab.models.segmentation_nets import load_hf_segmentation

        if weights:
            raise ConfigError("--weights is for the named torchvision architectures and run folders; a Hugging "
                              "Face model is loaded from its own folder: pass hf:PATH/TO/FOLDER")
        net, processor, names = load_hf_segmentation(text[3:])
        return _named_model(net, _hf_preprocessing(processor, net, text[3:]), names, text)
    if text in TORCHVISION_MODELS:
        import torchvision

        from vislab.models.segmentation_nets import (
            checkpoint_num_classes, create_torchvision_segmentation, read_segmentation_weights,
        )

        enum = torchvision.models.get_model_weights(text).DEFAULT
        num_classes = 21
        if weights:
            num_classes = checkpoint_num_classes(read_segmentation_weights(weights)) or 21
        net = create_torchvision_segmentation(text, num_classes, 3, pretrained=not weights, weights=weights)
        names = list(enum.meta["categories"]) if num_classes == len(enum.meta["categories"]) else \
            [str(i) for i in range(num_classes)]
        return _named_model(net, _torchvision_preprocessing(enum.transforms()), names, text)
    run_dir = Path(text)
    if not run_dir.is_dir():
        raise RunError(f"MODEL {text!r} is neither a run folder nor a known model: give a vislab segmentation run "
                       f"folder, its `vislab export` MODEL.onnx, one of {', '.join(TORCHVISION_MODELS)}, or "
                       "hf:NAME_OR_FOLDER (a SegFormer)")
    loaded = load(run_dir, device="cpu", weights=weights)
    if not getattr(loaded.task, "per_pixel", False):
        raise RunError(f"{run_dir} is a {loaded.task.name} run; `vislab segment` needs a segmentation run "
                       "(vislab train --task segmentation), or use `vislab predict` for it")
    return loaded


def _named_model(net, preprocessing: Preprocessing, names, text: str):
    """A torchvision or Hugging Face segmentation net by name, as a Loaded model of the segmentation task."""
    from vislab.runs import Loaded
    from vislab.tasks.segmentation import Segmentation

    return Loaded(net.eval(), preprocessing, names, {"name": text, "arch": text, "task": Segmentation.name}, None,
                  task=Segmentation())


def load_segmenter(model, weights: str | None = None, device: str = "auto", precision: str = "auto",
                   palette: str | None = None) -> Segmenter:
    """A :class:`Segmenter` for a run folder, a torchvision name, ``hf:NAME_OR_FOLDER`` or a
    :class:`vislab.runs.Loaded` segmentation model (an exported graph: ``vislab.api.segment``)."""
    from vislab.runs import Loaded

    loaded = model if isinstance(model, Loaded) else load_segmentation(model, weights)
    name = str(model) if not isinstance(model, Loaded) else str(loaded.spec.get("name", "model"))
    return Segmenter(Predictor(loaded, device=device, precision=precision), model_palette(loaded, palette), name)


def predict_mask(segmenter: Segmenter, image: torch.Tensor, with_probs: bool = False):
    """(mask (H, W) int64 at the image's full size, probabilities (K, H, W) or None) for a uint8 (C, H, W) image.

    The logits are upsampled bilinearly to (H, W) first; the argmax comes after.
    """
    probs = segmenter.predictor.outputs_each([image])[0]
    return probs.argmax(0), (probs if with_probs else None)


def mask_png(mask: np.ndarray, palette: np.ndarray) -> bytes:
    """An indexed (P) PNG of class IDs with the palette embedded; 16-bit grey when there are over 256
    classes. ``vislab segment`` writes these bytes and ``POST /v1/segment`` sends them."""
    from PIL import Image

    from vislab.viz.masks import PNG_COMPRESS_LEVEL

    mask = np.asarray(mask)
    if len(palette) <= 256 and mask.max(initial=0) < 256:
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(palette)] = palette[:256]
        image.putpalette(flat.reshape(-1).tolist())
    else:
        image = Image.fromarray(mask.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def save_mask_png(mask: np.ndarray, palette: np.ndarray, path) -> Path:
    """:func:`mask_png` written to ``path``."""
    Path(path).write_bytes(mask_png(mask, palette))
    return Path(path)


def mask_answer(output: torch.Tensor, class_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask (H, W) class IDs, pixels per class) from one image's per-pixel outputs (K, H, W)."""
    mask = output.argmax(0).numpy()
    counts = np.bincount(mask.reshape(-1), minlength=class_count)[:class_count]
    return mask, counts


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def segment_images(model, inputs: Sequence[str], out_dir, weights: str | None = None, alpha: float = 1.0,
                   beta: float = 0.6, class_maps: Sequence[str] = (), palette: str | None = None,
                   device: str = "auto", precision: str = "auto", panels: bool = True,
                   segmenter: Segmenter | None = None, batch_size: int = 32) -> SegmentResult:
    """Segment image files and folders into ``out_dir`` (see the module docstring for the files).

    ``model`` is a run folder, a torchvision name, ``hf:NAME_OR_FOLDER`` or a loaded model
    (:class:`vislab.runs.Loaded`); ``segmenter`` (from :func:`load_segmenter`) skips the loading.
    Images are decoded and segmented ``batch_size`` at a time, one forward per image size.
    An input that cannot be read is listed in ``bad_files`` and the rest go on; when none can be read,
    ``files`` is empty and nothing is written (``out_dir`` is not made).
    """
    import difflib
    import time

    from vislab.viz.masks import colorize, overlay, plot_class_map, plot_legend, plot_panel, save_png

    segmenter = segmenter or load_segmenter(model, weights, device, precision, palette)
    names = segmenter.class_names
    wanted = []
    lowered = [n.lower() for n in names]
    for name in class_maps:
        if str(name).lower() not in lowered:
            close = difflib.get_close_matches(str(name), names, n=3)
            listed = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
            raise ConfigError(f"--class-maps {name!r} is not a class of {segmenter.name}"
                              + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "")
                              + f"; its classes: {listed}")
        wanted.append(lowered.index(str(name).lower()))
    colors = segmenter.palette.array(len(names))
    out = Path(out_dir)
    result = SegmentResult(out)
    totals = np.zeros(len(names), dtype=np.int64)
    rows = []
    used_stems: dict[str, int] = {}
    start = time.perf_counter()
    for item in file_outputs(segmenter.predictor, inputs, batch_size):
        if item.error is not None:
            result.bad_files.append((item.path, item.error))
            continue
        path, image = item.path, item.image
        if not result.files:  # the first image read: only now is there anything to write
            out.mkdir(parents=True, exist_ok=True)
        mask_np, counts = mask_answer(item.output, len(names))
        stem = Path(path).stem
        used_stems[stem] = used_stems.get(stem, 0) + 1
        if used_stems[stem] > 1:  # two inputs with one stem (a/x.jpg, b/x.png): keep both
            stem = f"{stem}_{used_stems[stem]}"
        rgb = np.repeat(image.numpy(), 3, 0) if image.shape[0] == 1 else image.numpy()[:3]
        rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
        color = colorize(mask_np, colors)
        blended = overlay(rgb, color, alpha, beta)
        written = [save_mask_png(mask_np, colors, out / f"{stem}_mask.png"),
                   save_png(color, out / f"{stem}_color.png"), save_png(blended, out / f"{stem}_overlay.png")]
        totals += counts
        shares = counts / max(mask_np.size, 1)
        if panels:
            written.append(plot_panel(rgb, color, blended, out / f"{stem}_panel.png"))
            written.append(plot_legend(names, colors, out / f"{stem}_legend.png", shares,
                                       title=f"{Path(path).name}: % of pixels"))
        for index in wanted:
            written.append(plot_class_map(item.output[index].numpy(), names[index],
                                          out / f"{stem}_prob_{_safe(names[index])}.png"))
        result.files[path] = written
        result.shares[path] = {n: float(s) for n, s in zip(names, shares)}
        rows += [(path, n, int(c), f"{s:.6f}") for n, c, s in zip(names, counts, shares)]
    result.seconds = time.perf_counter() - start
    if not result.files:  # no input could be read: write nothing, and leave an existing DIR as it was
        return result
    overall = totals / max(int(totals.sum()), 1)
    rows += [("(all)", n, int(c), f"{s:.6f}") for n, c, s in zip(names, totals, overall)]
    with open(out / "pixel_shares.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "class", "pixels", "share"])
        writer.writerows(rows)
    # only a run with bad files has the list: an older one left in --out would claim bad files this run lacks
    write_bad_files(out / "bad_files.csv", result.bad_files)
    plot_legend(names, colors, out / "legend.png", overall if result.files else None,
                title=f"{segmenter.name}: % of pixels over {len(result.files)} image(s)")
    return result
