"""``vislab export``: a run folder (or ``imagenet:NAME``) as an ONNX file, checked and parity-tested.

The graph is made by ``torch.onnx.export``: the dynamo exporter (``torch.export`` +
onnxscript) where it handles the model, else the TorchScript-based exporter; the result
says which and why. ``onnx.checker`` runs its full check (shape inference included).

What a client needs to feed the graph travels with it twice: in the ONNX metadata
(``metadata_props["vislab"]``, so the file alone is enough) and in a sidecar
``NAME.onnx.json``: task, class names, input size, mean/std, interpolation, input layout,
versions. By default the graph takes what the PyTorch model takes: a float32 NCHW batch,
already resized and normalised, of any batch size (the batch dimension is free, as timm's
exporter makes it; ``dynamic_batch=False`` / ``--no-dynamic-batch`` fixes it at 1).
``include_preprocessing=True`` bakes
uint8 NHWC -> 0..1 -> (x - mean) / std -> NCHW into the graph, so a client sends raw
pixels (already resized to the input size).

The parity report compares the ONNX graph (onnxruntime, CPU) with the PyTorch model in
fp32 on the same inputs, through the one inference path (:meth:`vislab.infer.Predictor.logits`
against :meth:`vislab.export.ort.OnnxPredictor.logits`): a seeded sample of the run's test
split, read by the run's task (a segmentation run's images, never its masks), or the images given.
It is printed, written to ``NAME.parity.json``, and the export fails (the .onnx is
removed) when the top-1 agreement is below 100 % or the max absolute logit difference
is above 1e-4, unless a tolerance is given.

Example:
    >>> result = export_onnx("runs/digits")                          # doctest: +SKIP
    >>> result.exporter, result.parity["top1_agreement"]            # doctest: +SKIP
    ('dynamo', 1.0)
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vislab.core.config import ONNX_EXPORTERS as EXPORTERS
from vislab.core.errors import UserError
from vislab.core.files import load_onnx
from vislab.core.weights import write_text

SIDECAR_FORMAT = "vislab-onnx/1"
DEFAULT_TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# model.json entries a task reads back when the model is loaded (vislab.runs.Loaded): its options, and its state
# (a segmentation palette, multi-label thresholds); the export carries them for the onnxruntime reader
TASK_DATA = ("task_options", "palette", "thresholds")


class ExportError(UserError, RuntimeError):
    """An export that cannot be made or does not match the PyTorch model; the message says what to do."""


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    parity_path: Path
    exporter: str  # "dynamo" or "torchscript"
    exporter_note: str  # why the TorchScript exporter was used, if it was
    opset: int
    metadata: dict
    parity: dict = field(default_factory=dict)


class WithPreprocessing(nn.Module):
    """uint8 NHWC at the model's input size -> ``(x / 255 - mean) / std`` NCHW -> the model.

    The constants are folded into one multiply-add, as :meth:`Preprocessing.normalize` does.
    """

    def __init__(self, model: nn.Module, preprocessing):
        super().__init__()
        self.model = model
        mean = torch.tensor(preprocessing.mean, dtype=torch.float64).view(1, -1, 1, 1)
        std = torch.tensor(preprocessing.std, dtype=torch.float64).view(1, -1, 1, 1)
        self.register_buffer("scale", (1.0 / (255.0 * std)).float())
        self.register_buffer("offset", (-mean / std).float())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        return self.model(x * self.scale + self.offset)


class WindowPool(nn.Module):
    """An adaptive max or average pool at one input size, as the fixed windows PyTorch's uses there.

    ONNX has no adaptive pooling whose output size does not divide its input size: both of torch's
    exporters refuse fastnet's ``AdaptiveMaxPool2d(3)`` on its 7x7 map. A graph has one input size,
    so each window is known: row ``i`` of ``out`` covers ``floor(i * H / out) .. ceil((i + 1) * H / out)``,
    PyTorch's own rule, and the values are the same.

    Example:
        >>> x = torch.randn(2, 4, 7, 7)
        >>> bool(torch.equal(WindowPool((7, 7), (3, 3), "max")(x), nn.AdaptiveMaxPool2d(3)(x)))
        True
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], reduce: str):
        super().__init__()

        def windows(size: int, out: int) -> list[tuple[int, int]]:
            return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

        self.rows, self.cols = windows(in_size[0], out_size[0]), windows(in_size[1], out_size[1])
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = [x[..., r0:r1, c0:c1] for r0, r1 in self.rows for c0, c1 in self.cols]
        pooled = [c.amax((-2, -1)) if self.reduce == "max" else c.mean((-2, -1)) for c in cells]
        return torch.stack(pooled, -1).unflatten(-1, (len(self.rows), len(self.cols)))


def exportable(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """``module``, or a copy of it in which each adaptive pool that ONNX cannot express at the example's
    size is a :class:`WindowPool` (the model the parity report compares with stays as it was)."""
    kinds = {nn.AdaptiveMaxPool2d: "max", nn.AdaptiveAvgPool2d: "avg"}
    if not any(type(m) in kinds for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    sizes: dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(pool, inputs, output):
        sizes[pool] = (tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:]))

    hooks = [m.register_forward_hook(record) for m in module.modules() if type(m) in kinds]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if child in sizes and any(s % o for s, o in zip(*sizes[child])):  # output does not divide input
                setattr(parent, name, WindowPool(*sizes[child], kinds[type(child)]))
    return module


def default_output(spec: str) -> Path:
    """``RUN/model.onnx`` for a run folder, ``NAME.onnx`` here for ``imagenet:NAME``."""
    text = str(spec)
    if text.startswith("imagenet:"):
        return Path(f"{text.split(':', 1)[1]}.onnx")
    return Path(text) / "model.onnx"


def check_output(path: Path) -> None:
    """Refuse an ``--out`` the export cannot write, before the model is loaded and without making anything: a
    file in the way, a folder named NAME.onnx, a place no file can be made in (the nearest existing folder
    is tried with a file of its own, removed at once). One line names ``--out`` and the fix, worded as for
    every command (:func:`vislab.core.errors.user_message`), never an exporter failure blamed on the model."""
    from vislab.core.files import file_target_problem

    problem = file_target_problem(path)
    if problem:
        raise ExportError(f"--out {path}: {problem}")


def sidecar_path(path: Path) -> Path:
    return Path(f"{path}.json")


def parity_path(path: Path) -> Path:
    return Path(path).with_suffix(".parity.json")


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from vislab.runs import versions

    out = versions()
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _reason(exc: Exception) -> str:
    """An exporter's failure in one line: its type and the line that names the operator, without colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    named = [line for line in lines if re.search(r"No ONNX function found|not supported|Unsupported", line)]
    line = (named or [line for line in lines if line] or [""])[0]
    return f"{type(exc).__name__}: {line.split('>: ', 1)[-1][:300]}"


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool, opset: int | None,
                  exporter: str) -> tuple[str, str]:
    """Write the graph; returns (exporter used, why the TorchScript exporter was used or '')."""
    kwargs = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "external_data": False}
    if opset is not None:
        kwargs["opset_version"] = opset
    note = ""
    if exporter in ("auto", "dynamo"):
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        try:
            # the dynamo exporter reports progress on stdout; keep `--format json`-style output clean
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=dynamic,
                                  verify=False, optimize=True, **kwargs)
            return "dynamo", ""
        except Exception as exc:  # any failure of torch.export/onnxscript: say it and fall back
            if exporter == "dynamo":
                raise ExportError(f"the dynamo ONNX exporter failed for this model ({_reason(exc)}); "
                                  "use --exporter torchscript") from None
            note = f"dynamo exporter failed: {_reason(exc)}"
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    kwargs.pop("external_data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=dynamic_axes, **kwargs)
    except Exception as exc:  # an operator ONNX has no form for: the model, not the user's input
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX cannot express this model: the TorchScript exporter failed ({_reason(exc)})"
                          + (f"; the {note}" if note else "")) from None
    return "torchscript", note or "requested with --exporter torchscript"


def export_onnx(spec, out=None, dynamic_batch: bool = True, opset: int | None = None,
                include_preprocessing: bool = False, images=None, samples: int = 64,
                tolerance: float | None = None, exporter: str = "auto", seed: int = 0, weights=None) -> ExportResult:
    """Export a run folder or ``imagenet:NAME`` to ONNX, check it, and test parity with PyTorch fp32.

    Args:
        spec: a run folder or ``imagenet:NAME``.
        out: the .onnx path (default :func:`default_output`).
        dynamic_batch: a free batch dimension (the default, as timm's exporter); False fixes it at 1.
        opset: ONNX opset (default: the exporter's).
        include_preprocessing: the graph takes uint8 NHWC pixels at the input size.
        images: image files/folders for the parity check (default: a sample of the run's
            test split; for ``imagenet:`` models, scikit-image's sample photos).
        samples: how many test-split images the parity check uses.
        tolerance: accept a max absolute logit difference up to this (and report, not
            fail on, top-1 disagreements); default 1e-4 and 100 % agreement.
        exporter: ``auto`` (dynamo, else TorchScript), ``dynamo`` or ``torchscript``.
        weights: local weights for the model (``--weights``; see :func:`vislab.runs.load`).

    Raises:
        ExportError: the exporter failed, or the parity check failed (the .onnx is removed).
    """
    from vislab.runs import load

    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    if tolerance is not None and not tolerance > 0:
        raise ExportError(f"--tolerance must be a positive number, got {tolerance}")
    if not str(spec).startswith(("imagenet:", "hf:")) and Path(spec).is_file():
        from vislab.core.files import run_folder_error

        raise run_folder_error(spec)  # an ONNX graph (or another file) where a run folder is needed
    path = Path(out) if out is not None else default_output(spec)
    if path.suffix.lower() != ".onnx":
        raise ExportError(f"{path}: the output must end in .onnx (e.g. --out {path.with_suffix('.onnx')})")
    check_output(path)
    given = _read_parity_images(images) if images else None  # unreadable --images: refused before anything is written
    loaded = load(spec, weights=weights)
    model = loaded.model.float().eval()
    pre = loaded.preprocessing
    path.parent.mkdir(parents=True, exist_ok=True)
    channels, height, width = pre.input_size
    batch = 2 if dynamic_batch else 1
    if include_preprocessing:
        module = WithPreprocessing(model, pre).eval()
        example = torch.zeros(batch, height, width, channels, dtype=torch.uint8)
        graph_input = {"dtype": "uint8", "layout": "NHWC", "shape": ["batch" if dynamic_batch else 1,
                                                                      height, width, channels],
                       "range": "0..255, resized to the input size"}
    else:
        module = model
        example = torch.zeros(batch, channels, height, width)
        graph_input = {"dtype": "float32", "layout": "NCHW", "shape": ["batch" if dynamic_batch else 1,
                                                                        channels, height, width],
                       "range": "resized and normalised: (x / 255 - mean) / std"}
    sidecar = sidecar_path(path)
    before = {file: _identity(file) for file in (path, sidecar)}
    try:
        return _write_and_check(spec, loaded, module, example, path, sidecar, graph_input, dynamic_batch, opset,
                                exporter, include_preprocessing, given, images, samples, seed, tolerance)
    except BaseException:
        # any failure once writing began leaves no unchecked graph: the .onnx and sidecar this export wrote (or
        # replaced) are removed; a file it had not yet touched (an earlier export's) stays as it was
        for file, identity in before.items():
            if identity is None or _identity(file) != identity:
                file.unlink(missing_ok=True)
        raise


def _identity(path: Path) -> tuple | None:
    """What tells a file apart from a rewrite of it (device, inode, size, mtime); None when absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _write_and_check(spec, loaded, module, example, path, sidecar, graph_input, dynamic_batch, opset, exporter,
                     include_preprocessing, given, images, samples, seed, tolerance) -> ExportResult:
    """Write the graph, its metadata and sidecar, and the parity report; raise when parity fails."""
    import onnx

    pre = loaded.preprocessing
    used, note = _export_graph(exportable(module, example), example, path, dynamic_batch, opset, exporter)

    proto = load_onnx(path, "the export did not finish writing it; run `vislab export` again")
    metadata = {
        "format": SIDECAR_FORMAT,
        "source": str(spec),
        "name": loaded.spec.get("name", str(spec)),
        "task": loaded.task.name,
        "class_names": list(loaded.class_names),
        "preprocessing": pre.to_dict(),
        "include_preprocessing": include_preprocessing,
        "dynamic_batch": dynamic_batch,
        "input": {"name": INPUT_NAME, **graph_input},
        "output": {"name": OUTPUT_NAME, "meaning": "raw model outputs (logits); the task's postprocess "
                                                   "(softmax for classification) is applied by the reader"},
        "exporter": used,
        "exporter_note": note,
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        # what the task stored in model.json: the reader makes its task from these, as a run folder's is made
        "task_data": {k: loaded.spec[k] for k in TASK_DATA if k in loaded.spec},
        "versions": package_versions(),
    }
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "vislab", json.dumps(metadata)
    for key in ("task", "class_names", "preprocessing"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(metadata[key])
    proto.producer_name, proto.doc_string = "vislab", f"vislab export of {spec}"
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: onnx.checker rejected the exported graph ({str(exc)[:400]}); "
                          "try --exporter torchscript or another --opset") from None
    write_text(sidecar, json.dumps(metadata, indent=2))

    parity = parity_report(loaded, path, images=images, samples=samples, seed=seed, given=given)
    parity["exporter"] = used
    limit = tolerance if tolerance is not None else DEFAULT_TOLERANCE
    parity["tolerance"] = limit
    failures = []
    if not parity["max_abs_diff"] <= limit:
        failures.append(f"max |logit difference| {parity['max_abs_diff']:.3g} > {limit:g}")
    if tolerance is None and parity["top1_agreement"] < 1.0:
        failures.append(f"top-1 agreement {parity['top1_agreement']:.2%} < 100%")
    parity["passed"] = not failures
    report = parity_path(path)
    write_text(report, json.dumps(parity, indent=2))
    if failures:  # export_onnx removes the .onnx and its sidecar
        raise ExportError(f"{path}: the ONNX graph does not match PyTorch fp32 on {parity['images']} images: "
                          f"{'; '.join(failures)} (details in {report}). The .onnx was removed; pass "
                          "--tolerance X to accept a larger difference, or try --exporter torchscript")
    return ExportResult(path, sidecar, report, used, note, metadata["opset"], metadata, parity)


def _read_parity_images(images) -> tuple[list[torch.Tensor], list[str], str]:
    """``--images`` read: (uint8 CHW images, their names, "images given"); none readable is an error."""
    from vislab.data.images import BadImageError, read_image
    from vislab.data.sources import expand_image_paths

    paths, bad = expand_image_paths(images)
    tensors, names = [], []
    for p in paths:
        try:
            tensors.append(read_image(p))
            names.append(p)
        except BadImageError as exc:
            bad.append((p, exc.reason))
    if not tensors:
        shown = "; ".join(f"{p}: {r}" for p, r in bad[:3])
        raise ExportError(f"--images: none of the parity images could be read ({shown}); give image files or "
                          "folders")
    return tensors, names, "images given"


def _parity_images(loaded, images, samples: int, seed: int) -> tuple[list[torch.Tensor], list[str], str]:
    """(uint8 CHW images, their names, where they came from)."""
    if images:
        return _read_parity_images(images)
    if loaded.run_dir is None:
        import skimage.data

        photos = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
                  "retina", "coins", "camera", "page", "moon")
        tensors = []
        for name in photos:
            array = np.asarray(getattr(skimage.data, name)())
            array = array[:, :, None] if array.ndim == 2 else array[:, :, :3]
            tensors.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous())
        return tensors, [f"skimage.data.{n}" for n in photos], "scikit-image sample photos"
    from vislab.runs import read_config

    config = Path(loaded.run_dir) / "config.yaml"
    if not config.is_file():
        raise ExportError(f"{loaded.run_dir}: config.yaml is missing, so the test split is unknown; "
                          "give parity images with --images")
    cfg = read_config(loaded.run_dir)
    dataset = loaded.task.load_dataset(cfg.data, seed=cfg.seed)  # the task's reader: image/mask pairs stay pairs
    split = dataset.splits.get("test") or dataset.splits.get("val")
    if split is None:
        raise ExportError(f"{cfg.data.source}: no test split to check parity on; give --images")
    order = np.random.default_rng(seed).permutation(len(split))[:samples]
    return [split.load(int(i)) for i in order], [split.source(int(i)) for i in order], f"{split.name} split sample"


def resized_uint8(preprocessing, image: torch.Tensor) -> torch.Tensor:
    """A uint8 CHW image at the model's channels and input size (what a preprocessing graph takes)."""
    image = preprocessing.convert_channels(image)
    if tuple(image.shape[-2:]) == preprocessing.size:
        return image
    resized = preprocessing.resize(image.float().div(255.0).unsqueeze(0))[0]
    return resized.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


@torch.inference_mode()
def parity_report(loaded, path: Path, images=None, samples: int = 64, seed: int = 0, given=None) -> dict:
    """Max/mean |logit difference| and top-1 agreement of the ONNX graph vs PyTorch fp32, both fed the
    same uint8 batches through their predictors (the model's preprocessing, read from model.json).

    A graph that takes pixels (``include_preprocessing``) takes them already resized, as whole uint8 values,
    while vislab's PyTorch path resizes in floats: what a user gets from ``vislab predict MODEL.onnx`` on an
    image file differs by that rounding. For such a graph the ``end_to_end_*`` entries measure it: each original
    image through the graph's predictor (resized to uint8, then the graph) against vislab's PyTorch predictor on
    the same image, in logits and in the task's outputs (probabilities). A float graph's predictor resizes as
    PyTorch's does, so the check itself is that measure and no second pass is made. ``given``: the images
    :func:`_read_parity_images` read (``--images``)."""
    from vislab.export.ort import OnnxPredictor
    from vislab.infer import Predictor

    graph = OnnxPredictor(path)
    torch_side = Predictor(loaded, device="cpu", precision="fp32")
    tensors, names, origin = given if given is not None else _parity_images(loaded, images, samples, seed)
    pre, task = loaded.preprocessing, loaded.task
    diffs, agree, max_diff, sum_diff, count = [], 0, 0.0, 0.0, 0
    reference = torch.zeros(0, 1)
    for start in range(0, len(tensors), 16):
        batch = torch.stack([resized_uint8(pre, t) for t in tensors[start:start + 16]])
        reference = torch_side.logits(batch)
        got = graph.logits(batch).float()
        diff = (got - reference).abs().reshape(len(batch), -1)
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.sum())
        count += diff.numel()
        ref_top = task.postprocess(reference).reshape(len(batch), reference.shape[1], -1).argmax(1)
        got_top = task.postprocess(got).reshape(len(batch), got.shape[1], -1).argmax(1)
        agree += int((ref_top == got_top).sum())
        diffs.extend(float(d) for d in diff.max(1).values)
    # per-pixel tasks agree pixel by pixel
    predictions = len(tensors) * (int(np.prod(reference.shape[2:])) if reference.dim() > 2 else 1)
    worst = int(np.argmax(diffs)) if diffs else 0
    end_to_end = {}
    if graph.onnx.takes_pixels:
        end_to_end = _end_to_end(graph, torch_side, tensors, task)
        end_to_end["end_to_end_note"] = (
            "the graph takes uint8 pixels resized outside it (rounded to whole values), vislab's PyTorch path "
            "resizes in floats: a difference inherent to a uint8 input at the input size, not an export error")
    return {
        "model": str(loaded.spec.get("name")),
        "onnx": str(path),
        "images": len(tensors),
        "source": origin,
        "max_abs_diff": max_diff,
        "mean_abs_diff": sum_diff / max(count, 1),
        "top1_agreement": agree / max(predictions, 1),
        "worst_image": names[worst] if names else None,
        "provider": "CPUExecutionProvider",
        **end_to_end,
    }


def _end_to_end(graph, torch_side, tensors, task) -> dict:
    """The graph's predictor vs vislab's PyTorch predictor on the original images (each at its own size, as
    ``vislab predict`` reads a file): max/mean |logit difference|, max |output difference| (probabilities
    for classification) and top-1 agreement."""
    max_diff, sum_diff, count, max_output, agree, predictions = 0.0, 0.0, 0, 0.0, 0, 0
    groups: list[list[torch.Tensor]] = []
    for image in tensors:  # runs of same-sized images go together, at most 16
        if groups and groups[-1][0].shape == image.shape and len(groups[-1]) < 16:
            groups[-1].append(image)
        else:
            groups.append([image])
    for group in groups:
        batch = torch.stack(group)
        reference, got = torch_side.logits(batch).float(), graph.logits(batch).float()
        diff = (got - reference).abs()
        max_diff, sum_diff, count = max(max_diff, float(diff.max())), sum_diff + float(diff.sum()), count + diff.numel()
        ref_out, got_out = task.postprocess(reference), task.postprocess(got)
        max_output = max(max_output, float((got_out - ref_out).abs().max()))
        ref_top = ref_out.reshape(len(batch), ref_out.shape[1], -1).argmax(1)
        got_top = got_out.reshape(len(batch), got_out.shape[1], -1).argmax(1)
        agree += int((ref_top == got_top).sum())
        predictions += ref_top.numel()
    return {"end_to_end_max_abs_diff": max_diff, "end_to_end_mean_abs_diff": sum_diff / max(count, 1),
            "end_to_end_max_output_diff": max_output, "end_to_end_top1_agreement": agree / max(predictions, 1)}
