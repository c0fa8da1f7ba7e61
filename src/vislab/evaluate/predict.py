"""Batched inference with the model's own preprocessing: splits, tensors and image files.

On CPUs with native bf16 (AVX512-BF16/AMX) and on GPUs, inference runs under bf16
autocast with channels_last and ``torch.inference_mode``; images whose two best
classes are within ``Predictor.TIE_MARGIN`` are recomputed in fp32, so the top-1
answers agree with fp32 (benchmarks/bench_inference.py measures both speed and
agreement). ``precision="fp32"`` turns bf16 off, ``"bf16"`` skips the re-check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vislab.data.images import BadImageError, read_image
from vislab.data.loaders import make_batches
from vislab.data.sources import list_images
from vislab.train.loop import autocast_context, resolve_device, resolve_precision
from vislab.train.losses import probabilities


@dataclass
class Predictions:
    labels: np.ndarray  # (N,) true class index, -1 where unknown
    probs: np.ndarray  # (N, K) float32
    sources: list[str]  # file path or "<split>#<index>"

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)


class Predictor:
    """A loaded model on a device, ready for batches of uint8 images.

    Example:
        >>> from vislab.runs import load               # doctest: +SKIP
        >>> predictor = Predictor(load("runs/x"))       # doctest: +SKIP
        >>> probs = predictor.probabilities(uint8_batch)  # doctest: +SKIP
    """

    # bf16 flips the top-1 of images whose two best classes are nearly tied; under precision
    # "auto" those few images are recomputed in fp32, so top-1 matches fp32 at bf16 speed.
    TIE_MARGIN = 0.02  # top-1 minus top-2 probability under which a bf16 answer is re-checked in fp32

    def __init__(self, loaded, device: str = "auto", precision: str = "auto", tta_flip: bool = False):
        self.loaded = loaded
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.recheck_ties = precision == "auto" and self.dtype is not None
        self.model = loaded.model.to(self.device, memory_format=torch.channels_last).eval()
        self.preprocessing = loaded.preprocessing
        self.tta_flip = tta_flip
        self.rechecked = 0  # images recomputed in fp32 so far

    def _forward(self, x: torch.Tensor, dtype) -> torch.Tensor:
        with autocast_context(self.device, dtype):
            probs = probabilities(self.model(x))
            if self.tta_flip:
                probs = (probs + probabilities(self.model(x.flip(-1)))) / 2
        return probs.float()

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocessing(images.to(self.device)).contiguous(memory_format=torch.channels_last)
        probs = self._forward(x, self.dtype)
        if self.recheck_ties and probs.shape[1] > 1:
            top2 = probs.topk(2, dim=1).values
            ties = (top2[:, 0] - top2[:, 1] < self.TIE_MARGIN).nonzero().flatten()
            if len(ties):
                probs[ties] = self._forward(x[ties], None)
                self.rechecked += len(ties)
        return probs.cpu()

    def predict_split(self, split, batch_size: int = 256, workers: int = 2) -> Predictions:
        chunks = [self.probabilities(images) for images, _ in
                  make_batches(split, self.preprocessing, batch_size, workers=workers,
                               pin_memory=self.device.type == "cuda")]
        probs = torch.cat(chunks).numpy() if chunks else np.zeros((0, len(self.loaded.class_names)), np.float32)
        return Predictions(split.labels.numpy(), probs, [split.source(i) for i in range(len(split))])


def expand_image_paths(inputs) -> tuple[list[str], list[tuple[str, str]]]:
    """Files and folders (searched recursively) -> (image paths, [(path, reason)] for bad inputs)."""
    import os

    paths, bad = [], []
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found = list_images(item)
            if not found:
                bad.append((item, "folder holds no image files"))
            paths += found
        elif os.path.exists(item):
            paths.append(item)
        else:
            bad.append((item, "no such file or folder"))
    return paths, bad


def predict_files(predictor: Predictor, inputs, top_k: int = 5, batch_size: int = 32) -> list[dict]:
    """Top-k classes for each image; a bad image gets an ``error`` entry and the rest go on."""
    paths, bad = expand_image_paths(inputs)
    results: list[dict] = [{"file": path, "error": reason} for path, reason in bad]
    names = predictor.loaded.class_names
    k = min(top_k, len(names))
    batch, batch_paths = [], []

    def flush():
        if not batch:
            return
        resized = [predictor.preprocessing.convert_channels(img) for img in batch]
        # one forward per image size group keeps mixed-size folders correct
        by_shape: dict[tuple, list[int]] = {}
        for i, img in enumerate(resized):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for members in by_shape.values():
            probs = predictor.probabilities(torch.stack([resized[i] for i in members]))
            top = probs.topk(k, dim=1)
            for row, i in enumerate(members):
                results.append({"file": batch_paths[i], "top": [
                    {"class": names[int(c)], "index": int(c), "probability": float(p)}
                    for p, c in zip(top.values[row], top.indices[row])]})
        batch.clear()
        batch_paths.clear()

    for path in paths:
        try:
            batch.append(read_image(path))
            batch_paths.append(path)
        except BadImageError as exc:
            results.append({"file": path, "error": exc.reason})
        if len(batch) >= batch_size:
            flush()
    flush()
    order = {p: i for i, p in enumerate([b[0] for b in bad] + paths)}
    results.sort(key=lambda r: order.get(r["file"], 0))
    return results
