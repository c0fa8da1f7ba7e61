"""Predictions for image files and folders: one entry per input, a bad file never stops the rest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vislab.data.images import BadImageError, read_image
from vislab.data.sources import expand_image_paths

BATCH_PIXELS = 16_000_000  # a batch also ends past this many input pixels: per-pixel outputs are K maps of each


@dataclass
class FileOutput:
    """One input file: its decoded uint8 (C, H, W) image and the task's output, or why it was skipped."""

    path: str
    image: torch.Tensor | None = None
    output: torch.Tensor | None = None
    error: str | None = None


def file_outputs(predictor, inputs, batch_size: int = 32) -> Iterator[FileOutput]:
    """Each image file of ``inputs`` (files and folders) with the predictor's output, in input order.

    Files are decoded and sent through :meth:`vislab.infer.Predictor.outputs_each` in batches of up
    to ``batch_size`` images (and :data:`BATCH_PIXELS` pixels); unreadable paths come first, each with
    its reason, then the images in order, a bad image in its place.
    """
    paths, bad = expand_image_paths(inputs)
    if hasattr(predictor, "expect"):  # an onnxruntime graph measures nothing
        predictor.expect(len(paths))
    for path, reason in bad:
        yield FileOutput(str(path), error=reason)
    pending: list[FileOutput] = []
    pixels = 0

    def flush():
        good = [item for item in pending if item.error is None]
        for item, output in zip(good, predictor.outputs_each([item.image for item in good])):
            item.output = output
        done = list(pending)
        pending.clear()
        return done

    for path in paths:
        try:
            image = read_image(path)
            pending.append(FileOutput(str(path), image))
            pixels += image.shape[-2] * image.shape[-1]
        except BadImageError as exc:
            pending.append(FileOutput(str(path), error=exc.reason))
        if len(pending) >= batch_size or pixels >= BATCH_PIXELS:
            yield from flush()
            pixels = 0
    yield from flush()


def predict_files(predictor, inputs, top_k: int = 5, batch_size: int = 32) -> list[dict]:
    """The task's answer for each image (classification: the top-k classes); a bad image gets an
    ``error`` entry and the rest go on.

    Example:
        >>> from vislab.infer.predictor import Predictor            # doctest: +SKIP
        >>> predict_files(Predictor(load("imagenet:efficientnet_lite0")), ["cat.jpg"], top_k=3)  # doctest: +SKIP
        [{'file': 'cat.jpg', 'top': [{'class': 'tabby, tabby cat', 'index': 281, 'probability': 0.61}, ...]}]
    """
    names = predictor.loaded.class_names
    results = []
    for item in file_outputs(predictor, inputs, batch_size):
        if item.error is not None:
            results.append({"file": item.path, "error": item.error})
        else:
            results.append({"file": item.path, **predictor.task.describe(item.output, names, top_k)})
    return results
