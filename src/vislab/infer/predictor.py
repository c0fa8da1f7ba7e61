"""The inference layer: a loaded model on a device, its own preprocessing, batched, task-aware.

Under ``precision="auto"`` the first batch times the model's forward pass in fp32 and
bf16, channels_last and contiguous (:mod:`vislab.core.measure`; cached per CPU/GPU,
model, batch shape), and inference runs in the fastest, under ``torch.inference_mode``;
bf16 must win by 10 % or fp32 stays. When bf16 is chosen, answers the task marks as
uncertain (for classification: the two best classes within
``Classification.TIE_MARGIN``) are recomputed in fp32, so the top-1 answers agree with
fp32 (benchmarks/bench_inference.py measures both speed and agreement).
``precision="fp32"`` forces fp32, ``"bf16"`` bf16 without the re-check.

Evaluation streams through :meth:`Predictor.evaluate_split`: each batch's outputs go
into the task's evaluator and are dropped, so per-pixel outputs are never all held.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from vislab.core import measure
from vislab.core.device import autocast_context, resolve_device, warn_if_slow_precision
from vislab.data.loaders import make_batches
from vislab.data.preprocess import Preprocessing
from vislab.models.imagenet import _as_uint8_chw, imagenet_class_names
from vislab.tasks.classification import Predictions, probabilities  # noqa: F401  (Predictions re-exported)


class Predictor:
    """A loaded model on a device, ready for batches of uint8 images.

    Example:
        >>> from vislab.runs import load               # doctest: +SKIP
        >>> predictor = Predictor(load("runs/x"))       # doctest: +SKIP
        >>> probs = predictor.probabilities(uint8_batch)  # doctest: +SKIP
    """

    def __init__(self, loaded, device: str = "auto", precision: str = "auto", tta_flip: bool = False):
        self.loaded = loaded
        self.task = loaded.task
        self.device = resolve_device(device)
        warn_if_slow_precision(precision, self.device)
        self.precision = precision
        self.model = loaded.model.to(self.device, memory_format=torch.channels_last).eval()
        self.preprocessing = loaded.preprocessing
        self.tta_flip = tta_flip
        self.rechecked = 0  # answers recomputed in fp32 so far
        self.choice: measure.Choice | None = None  # auto: measured on the first batch
        self.dtype = None
        self.memory_format = torch.channels_last
        if precision != "auto":
            self._use(measure.Choice(precision, True, source="forced", device=measure.device_name(self.device),
                                     kind="infer"))
        self.recheck_ties = False

    def _use(self, choice: measure.Choice) -> None:
        self.choice, self.dtype, self.memory_format = choice, choice.dtype, choice.memory_format
        self.recheck_ties = self.precision == "auto" and self.dtype is not None
        _set_memory_format(self.model, self.memory_format)

    def _measure(self, x: torch.Tensor) -> measure.Choice:
        """The fastest forward pass for batches shaped like ``x`` (cached; see vislab.core.measure),
        timed on the first ``measure.PROBE_IMAGES`` images."""
        x = x[:measure.PROBE_IMAGES]
        spec = self.loaded.spec
        key = measure.cache_key(self.device, measure.model_signature(self.model), tuple(x.shape), len(x),
                                self.task.name, "infer", tta_flip=self.tta_flip,
                                arch=spec.get("arch", spec.get("name")))

        def make_step(candidate: measure.Candidate):
            _set_memory_format(self.model, candidate.memory_format)
            moved = x.contiguous(memory_format=candidate.memory_format)
            return lambda: self._forward(moved, candidate.dtype)

        options = measure.candidates(self.device, measure.has_convolutions(self.model))
        return measure.cached_measure(key, lambda: measure.measure(make_step, options, self.device, kind="infer"))

    def _forward(self, x: torch.Tensor, dtype) -> torch.Tensor:
        with autocast_context(self.device, dtype):
            out = self.task.postprocess(self.model(x))
            if self.tta_flip:
                out = (out + self.task.flip_back(self.task.postprocess(self.model(x.flip(-1))))) / 2
        return out.float()

    @torch.inference_mode()
    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The task's outputs (class probabilities for classification) for a uint8 batch, on the CPU."""
        x = self.preprocessing(images.to(self.device))
        if self.choice is None:
            self._use(self._measure(x))
        x = x.contiguous(memory_format=self.memory_format)
        out = self._forward(x, self.dtype)
        if self.recheck_ties:
            unsure = self.task.uncertain(out)
            if unsure is not None and len(unsure):
                out[unsure] = self._forward(x[unsure], None)
                self.rechecked += len(unsure)
        return out.cpu()

    probabilities = outputs  # the classification name

    def evaluate_split(self, split, evaluator, batch_size: int = 256, workers: int = 2):
        """Stream ``split`` through the model into ``evaluator`` (a task's); returns the evaluator."""
        start = 0
        for images, labels in make_batches(split, self.preprocessing, batch_size, workers=workers,
                                           pin_memory=self.device.type == "cuda"):
            outputs = self.outputs(images)
            sources = [split.source(i) for i in range(start, start + len(outputs))]
            evaluator.update(outputs, self.task.targets(labels), sources)
            start += len(outputs)
        return evaluator

    def predict_split(self, split, batch_size: int = 256, workers: int = 2) -> Predictions:
        """Classification: every probability of ``split`` with its labels and sources."""
        evaluator = self.task.evaluator(self.loaded.class_names)
        return self.evaluate_split(split, evaluator, batch_size, workers).predictions


def _set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """``model.to(memory_format=...)`` outside inference mode: weights re-made inside it would be
    inference tensors, and Grad-CAM or integrated gradients on the same model need autograd."""
    with torch.inference_mode(False):
        model.to(memory_format=memory_format)


@torch.inference_mode()
def predict_topk(model: nn.Module, preprocessing: Preprocessing, images, k: int = 5,
                 class_names: Sequence[str] | None = None, batch_size: int = 32,
                 precision: str = "fp32") -> list[list[dict]]:
    """Top-k classes for each image.

    Args:
        model: a classifier in eval mode.
        preprocessing: the model's :class:`Preprocessing`.
        images: a uint8 (N, C, H, W) tensor, or a sequence of images of any sizes
            (uint8 CHW tensors, or HWC/HW numpy arrays as from skimage or PIL).
        k: classes per image.
        class_names: names for the class indices (default: ImageNet's for 1000 outputs).
        batch_size: images per forward pass.
        precision: ``fp32`` or ``bf16`` (autocast with channels_last; see
            benchmarks/bench_inference.py for its top-1 agreement with fp32).

    Returns:
        Per image, a list of ``{"index", "class", "probability"}`` dicts, most likely first.

    Example:
        >>> import skimage.data
        >>> model, pre, names = load_imagenet_model("efficientnet_lite0")   # doctest: +SKIP
        >>> predict_topk(model, pre, [skimage.data.chelsea()], k=1)[0][0]["class"]   # doctest: +SKIP
        'tiger cat'
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        tensors = list(images)
    else:
        tensors = [_as_uint8_chw(image) for image in images]
    probs = []
    device = next(model.parameters()).device
    use_bf16 = precision == "bf16"
    for start in range(0, len(tensors), batch_size):
        chunk = tensors[start:start + batch_size]
        # images of different sizes are preprocessed one by one, then stacked
        x = torch.stack([preprocessing(t.to(device)) for t in chunk])
        if use_bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        probs.append(probabilities(logits.float()))
    if not probs:
        return []
    probs = torch.cat(probs)
    if class_names is None and probs.shape[1] in (1000,):
        class_names = imagenet_class_names(probs.shape[1])
    k = min(k, probs.shape[1])
    values, indices = probs.cpu().topk(k, dim=1)  # one copy, not 2 * k * N reads from a GPU
    return [
        [
            {"index": int(i), "class": class_names[int(i)] if class_names else str(int(i)), "probability": float(v)}
            for v, i in zip(row_values, row_indices)
        ]
        for row_values, row_indices in zip(values, indices)
    ]
