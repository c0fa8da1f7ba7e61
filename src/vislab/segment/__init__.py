"""``vislab segment MODEL IMAGES... --out DIR``: masks, colour masks, overlays, panels, legends, pixel shares.

MODEL is a vislab segmentation run folder, a torchvision model name (``deeplabv3_resnet50``,
``deeplabv3_resnet101``, ``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``,
``fcn_resnet50``: 21 VOC classes, with their weights' own transforms; ``--weights PATH`` for
local weights), or ``hf:NAME_OR_FOLDER`` for a Hugging Face SegFormer (model + image processor).

Per image, in DIR:
    STEM_mask.png      class IDs as an indexed PNG with the palette embedded (16-bit grey past 256 classes)
    STEM_color.png     the colour mask
    STEM_overlay.png   cv2.addWeighted(image, alpha, colour mask, beta, 0) (alpha 1.0, beta 0.6 by default)
    STEM_panel.png     input / predicted mask / overlay
    STEM_legend.png    every class's colour and name with its % of this image's pixels
    STEM_prob_CLASS.png  with --class-maps: that class's probability map
and for the whole run: ``legend.png`` (shares over all pixels), ``pixel_shares.csv``
(image, class, pixels, share; ``(all)`` rows for the total) and ``bad_files.csv``.

Masks are at the input's full resolution: the logits are upsampled bilinearly to the image's
size, then the argmax is taken (a label mask is never resized but by nearest).

Example:
    >>> from vislab.segment import segment_images
    >>> result = segment_images("lraspp_mobilenet_v3_large", ["street.jpg"], "out/",
    ...                         weights="lraspp.safetensors")   # doctest: +SKIP
    >>> result.shares["street.jpg"]["road"]                       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vislab.core.device import autocast_context, resolve_device, resolve_precision
from vislab.core.errors import ConfigError, RunError
from vislab.data.images import BadImageError, read_image
from vislab.data.palettes import Palette, get_palette
from vislab.data.sources import expand_image_paths
from vislab.models.segmentation import TORCHVISION_MODELS


PNG_COMPRESS_LEVEL = 1  # colour masks and overlays: speed over size (bench_segmentation_inference.py)


@dataclass
class Segmenter:
    """A segmentation model ready for one uint8 (C, H, W) image at a time: ``logits(image)`` -> (1, K, h, w).

    The batch of one keeps the model's memory format (channels_last): indexing it away before the
    upsampling left strides that no fast kernel takes, and made ``predict_mask`` 2.3x slower than a
    raw torchvision loop on 720x960 images (bench_segmentation_inference.py).
    """

    logits: Callable[[torch.Tensor], torch.Tensor]
    class_names: list[str]
    palette: Palette
    name: str
    channels: int = 3


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


def _run_forward(model, device, dtype, channels_last: bool):
    def forward(x):
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_context(device, dtype):
            return model(x).float()
    return forward


def load_segmenter(model: str, weights: str | None = None, device: str = "auto", precision: str = "auto",
                   palette: str | None = None) -> Segmenter:
    """A :class:`Segmenter` for a run folder, a torchvision name or ``hf:NAME_OR_FOLDER``.

    Raises:
        RunError / PretrainedWeightsError / ConfigError: what is wrong and how to fix it.
    """
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    text = str(model)
    if text.startswith("hf:"):
        from vislab.models.segmentation import load_hf_segmentation

        if weights:
            raise ConfigError("--weights is for the named torchvision architectures; a Hugging Face model is "
                              "loaded from its own folder: pass hf:PATH/TO/FOLDER")
        net, processor, names = load_hf_segmentation(text[3:])
        net = net.to(dev).eval()
        forward = _run_forward(net, dev, dtype, channels_last=False)

        def logits(image):
            rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
            if processor is not None:
                inputs = processor(images=rgb.permute(1, 2, 0).numpy(), return_tensors="pt")["pixel_values"]
            else:  # no processor saved: SegFormer's defaults (512 px, ImageNet mean/std)
                x = F.interpolate(rgb[None].float() / 255, size=(512, 512), mode="bilinear", antialias=True)
                mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
                inputs = (x - mean) / torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
            return forward(inputs)

        return Segmenter(logits, names, _palette_for(names, palette), text)
    if text in TORCHVISION_MODELS:
        import torchvision

        from vislab.models.segmentation import (
            checkpoint_num_classes, create_torchvision_segmentation, read_segmentation_weights,
        )

        enum = torchvision.models.get_model_weights(text).DEFAULT
        num_classes = 21
        if weights:
            num_classes = checkpoint_num_classes(read_segmentation_weights(weights)) or 21
        net = create_torchvision_segmentation(text, num_classes, 3, pretrained=not weights, weights=weights)
        net = net.to(dev, memory_format=torch.channels_last).eval()
        transform = enum.transforms()  # the weights' own: resize to 520 px (short side), ImageNet normalisation
        names = list(enum.meta["categories"]) if num_classes == len(enum.meta["categories"]) else \
            [str(i) for i in range(num_classes)]
        forward = _run_forward(net, dev, dtype, channels_last=True)

        def logits(image):
            rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
            return forward(transform(rgb)[None])

        return Segmenter(logits, names, _palette_for(names, palette), text)
    run_dir = Path(text)
    if not run_dir.is_dir():
        raise RunError(f"MODEL {text!r} is neither a run folder nor a known model: give a vislab segmentation run "
                       f"folder, one of {', '.join(TORCHVISION_MODELS)}, or hf:NAME_OR_FOLDER (a SegFormer)")
    if weights:
        raise ConfigError("--weights is for the named torchvision architectures; a run folder has its own weights")
    from vislab.runs import load

    loaded = load(run_dir, device="cpu")
    if loaded.spec.get("task") != "segmentation":
        raise RunError(f"{run_dir} is a {loaded.spec.get('task')} run; `vislab segment` needs a segmentation run "
                       "(vislab train --task segmentation), or use `vislab predict` for it")
    net = loaded.model.to(dev, memory_format=torch.channels_last).eval()
    forward = _run_forward(net, dev, dtype, channels_last=True)
    pre = loaded.preprocessing

    def logits(image):
        return forward(pre(image[None]))

    names = list(loaded.class_names)
    stored = loaded.spec.get("palette")
    chosen = _palette_for(names, palette) if palette or not stored else Palette.from_json(stored, "model")
    return Segmenter(logits, names, chosen, str(run_dir), pre.channels)


def predict_mask(segmenter: Segmenter, image: torch.Tensor, with_probs: bool = False):
    """(mask (H, W) int64 at the image's full size, probabilities (K, H, W) or None) for a uint8 (C, H, W) image.

    The logits are upsampled bilinearly to (H, W) first; the argmax comes after.
    """
    logits = segmenter.logits(image)  # (1, K, h, w), in the model's memory format
    logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
    mask = logits.argmax(1)[0]
    probs = logits.softmax(1)[0] if with_probs else None
    return mask.cpu(), (probs.cpu() if probs is not None else None)


def save_mask_png(mask: np.ndarray, palette: np.ndarray, path) -> Path:
    """An indexed (P) PNG of class IDs with the palette embedded; 16-bit grey when there are over 256 classes."""
    from PIL import Image

    mask = np.asarray(mask)
    if len(palette) <= 256 and mask.max(initial=0) < 256:
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(palette)] = palette[:256]
        image.putpalette(flat.reshape(-1).tolist())
    else:
        image = Image.fromarray(mask.astype(np.uint16))
    image.save(path)
    return Path(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def segment_images(model: str, inputs: Sequence[str], out_dir, weights: str | None = None, alpha: float = 1.0,
                   beta: float = 0.6, class_maps: Sequence[str] = (), palette: str | None = None,
                   device: str = "auto", precision: str = "auto", panels: bool = True,
                   segmenter: Segmenter | None = None) -> SegmentResult:
    """Segment image files and folders into ``out_dir`` (see the module docstring for the files)."""
    import time

    from PIL import Image

    from vislab.viz.segmentation import colorize, overlay, plot_class_map, plot_legend, plot_panel

    segmenter = segmenter or load_segmenter(model, weights, device, precision, palette)
    names = segmenter.class_names
    wanted = []
    for name in class_maps:
        lowered = [n.lower() for n in names]
        if str(name).lower() not in lowered:
            import difflib

            close = difflib.get_close_matches(str(name), names, n=3)
            raise ConfigError(f"--class-maps {name!r} is not a class of {segmenter.name}"
                              + (f"; did you mean {', '.join(close)}?" if close else "")
                              + f" Classes: {', '.join(names[:40])}")
        wanted.append(lowered.index(str(name).lower()))
    colors = segmenter.palette.array(len(names))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, bad = expand_image_paths(inputs)
    result = SegmentResult(out, bad_files=list(bad))
    totals = np.zeros(len(names), dtype=np.int64)
    rows = []
    used_stems: dict[str, int] = {}
    start = time.perf_counter()
    for path in paths:
        try:
            image = read_image(path)
        except BadImageError as exc:
            result.bad_files.append((str(path), exc.reason))
            continue
        mask, probs = predict_mask(segmenter, image, with_probs=bool(wanted))
        mask_np = mask.numpy()
        stem = Path(path).stem
        used_stems[stem] = used_stems.get(stem, 0) + 1
        if used_stems[stem] > 1:  # two inputs with one stem (a/x.jpg, b/x.png): keep both
            stem = f"{stem}_{used_stems[stem]}"
        rgb = np.repeat(image.numpy(), 3, 0) if image.shape[0] == 1 else image.numpy()[:3]
        rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
        color = colorize(mask_np, colors)
        blended = overlay(rgb, color, alpha, beta)
        written = [save_mask_png(mask_np, colors, out / f"{stem}_mask.png")]
        # zlib level 1: 3x faster than Pillow's default 6 on a 720x960 overlay (70 vs 221 ms), 16 % larger
        Image.fromarray(color).save(out / f"{stem}_color.png", compress_level=PNG_COMPRESS_LEVEL)
        Image.fromarray(blended).save(out / f"{stem}_overlay.png", compress_level=PNG_COMPRESS_LEVEL)
        written += [out / f"{stem}_color.png", out / f"{stem}_overlay.png"]
        counts = np.bincount(mask_np.reshape(-1), minlength=len(names))[: len(names)]
        totals += counts
        shares = counts / max(mask_np.size, 1)
        if panels:
            written.append(plot_panel(rgb, color, blended, out / f"{stem}_panel.png"))
            written.append(plot_legend(names, colors, out / f"{stem}_legend.png", shares,
                                       title=f"{Path(path).name}: % of pixels"))
        for index in wanted:
            written.append(plot_class_map(probs[index].numpy(), names[index],
                                          out / f"{stem}_prob_{_safe(names[index])}.png"))
        result.files[str(path)] = written
        result.shares[str(path)] = {n: float(s) for n, s in zip(names, shares)}
        rows += [(str(path), n, int(c), f"{s:.6f}") for n, c, s in zip(names, counts, shares)]
    result.seconds = time.perf_counter() - start
    overall = totals / max(int(totals.sum()), 1)
    rows += [("(all)", n, int(c), f"{s:.6f}") for n, c, s in zip(names, totals, overall)]
    with open(out / "pixel_shares.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "class", "pixels", "share"])
        writer.writerows(rows)
    with open(out / "bad_files.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows(result.bad_files)
    plot_legend(names, colors, out / "legend.png", overall if result.files else None,
                title=f"{segmenter.name}: % of pixels over {len(result.files)} image(s)")
    return result
