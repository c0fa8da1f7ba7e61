"""The inference layer: a loaded model on a device, its own preprocessing, batched, task-aware.

Every door that runs a model on images comes here: ``vislab predict``, ``vislab segment``,
``vislab serve``, evaluation, and the export's parity check. The predictor reads the
preprocessing from the loaded model (model.json), picks precision and memory format,
batches images of one shape together (:meth:`Predictor.outputs_each`), and returns the
task's outputs at the images' own size (per-pixel maps upsampled before the softmax);
the task turns them into answers (:meth:`Predictor.answers`: top-k, label sets, pixel shares).

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
from vislab.models.imagenet import _as_uint8_chw
from vislab.tasks.classification import Predictions  # noqa: F401  (re-exported)


class Predictor:
    """A loaded model on a device, ready for batches of uint8 images.

    Example:
        >>> from vislab.runs import load               # doctest: +SKIP
        >>> predictor = Predictor(load("imagenet:efficientnet_lite0"))   # doctest: +SKIP
        >>> import skimage.data
        >>> predictor.answers([skimage.data.coffee()], top_k=1)[0]["top"][0]["class"]   # doctest: +SKIP
        'espresso'
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
        self.images: int | None = None  # how many images the job answers, when known (expect)
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

    def expect(self, images: int) -> None:
        """The job answers ``images`` images (files to predict, a split to evaluate): one too short for the
        precision probe to pay runs in fp32 unmeasured (:func:`vislab.core.measure.probe_pays`)."""
        self.images = images

    def _measure(self, x: torch.Tensor) -> measure.Choice:
        """The fastest forward pass for batches shaped like ``x``: the inference probe
        (:func:`vislab.core.measure.measure_forward`, cached)."""
        spec = self.loaded.spec
        return measure.measure_forward(self.model, x, self.device, self._forward, self.task.name,
                                       images=self.images, tta_flip=self.tta_flip,
                                       arch=spec.get("arch", spec.get("name")))

    def _forward(self, x: torch.Tensor, dtype, size=None) -> torch.Tensor:
        """The task's outputs for a preprocessed batch; per-pixel maps at ``size`` (the images' own)."""
        with autocast_context(self.device, dtype):
            raw = self.model(x)
            flipped = self.model(x.flip(-1)) if self.tta_flip else None
        out = self.task.postprocess(self._at_size(raw, size))
        if flipped is not None:
            out = (out + self.task.flip_back(self.task.postprocess(self._at_size(flipped, size)))) / 2
        return out.float()

    def _at_size(self, raw: torch.Tensor, size) -> torch.Tensor:
        raw = raw.float()
        return raw if size is None else self.task.at_size(raw, size)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch -> the model's input on the device, in the chosen memory format (the first
        batch under ``precision="auto"`` measures the choice)."""
        x = self.preprocessing(images.to(self.device))
        if self.choice is None:
            self._use(self._measure(x))
        return x.contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The task's outputs (class probabilities for classification; per-pixel probabilities at the
        images' own size for segmentation) for a uint8 (N, C, H, W) batch, on the CPU."""
        x = self._prepare(images)
        size = tuple(images.shape[-2:])
        out = self._forward(x, self.dtype, size)
        if self.recheck_ties:
            unsure = self.task.uncertain(out)
            if unsure is not None and len(unsure):
                out[unsure] = self._forward(x[unsure], None, size)
                self.rechecked += len(unsure)
        return out.cpu()

    probabilities = outputs  # the classification name

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Raw model outputs (no postprocess, at the model's own output size) for a uint8 batch, in
        fp32 on the CPU: what an exported graph is compared with."""
        x = self._prepare(images)
        with autocast_context(self.device, self.dtype):
            return self.model(x).float().cpu()

    def outputs_each(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The task's output for each uint8 (C, H, W) image of any size (see :func:`outputs_each`)."""
        return outputs_each(self, images)

    def answers(self, images, top_k: int = 5) -> list[dict]:
        """The task's answer for each image (uint8 CHW tensors, or HWC/HW arrays as from skimage or
        PIL): ``{"top": [...]}`` for classification, ``labels`` too for multi-label, ``pixel_shares``
        for segmentation (the JSON of ``vislab predict --format json`` without the file name)."""
        tensors = [image if isinstance(image, torch.Tensor) and image.dim() == 3 else _as_uint8_chw(image)
                   for image in images]
        names = self.loaded.class_names
        return [self.task.describe(output, names, top_k) for output in self.outputs_each(tensors)]

    def evaluate_split(self, split, evaluator, batch_size: int = 256, workers: int = 2, progress=None):
        """Stream ``split`` through the model into ``evaluator`` (a task's); returns the evaluator.
        ``progress(done)``: called with the images done after each batch (a progress bar)."""
        start = 0
        for images, labels in make_batches(split, self.preprocessing, batch_size, workers=workers,
                                           pin_memory=self.device.type == "cuda"):
            outputs = self.outputs(images)
            sources = [split.source(i) for i in range(start, start + len(outputs))]
            evaluator.update(outputs, self.task.targets(labels), sources)
            start += len(outputs)
            if progress is not None:
                progress(start)
        return evaluator

    def predict_split(self, split, batch_size: int = 256, workers: int = 2) -> Predictions:
        """Classification: every probability of ``split`` with its labels and sources."""
        evaluator = self.task.evaluator(self.loaded.class_names)
        return self.evaluate_split(split, evaluator, batch_size, workers).predictions


def outputs_each(predictor, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The task's output for each uint8 (C, H, W) image, in order: images that share a shape (after
    the channel conversion) go through one forward, so a mixed-size folder or a server batch is answered
    as each group alone would be. ``predictor`` is a :class:`Predictor` or anything with its
    ``preprocessing`` and ``outputs`` (:class:`vislab.export.ort.OnnxPredictor`)."""
    converted = [predictor.preprocessing.convert_channels(image) for image in images]
    groups: dict[tuple, list[int]] = {}
    for index, image in enumerate(converted):
        groups.setdefault(tuple(image.shape), []).append(index)
    results: list = [None] * len(converted)
    for members in groups.values():
        outputs = predictor.outputs(torch.stack([converted[i] for i in members]))
        for row, index in enumerate(members):
            results[index] = outputs[row]
    return results


def _set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """``model.to(memory_format=...)`` outside inference mode: weights re-made inside it would be
    inference tensors, and Grad-CAM or integrated gradients on the same model need autograd."""
    with torch.inference_mode(False):
        model.to(memory_format=memory_format)
