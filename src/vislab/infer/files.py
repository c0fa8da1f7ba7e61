"""Predictions for image files and folders: one entry per input, a bad file never stops the rest."""

from __future__ import annotations

import torch

from vislab.data.images import BadImageError, read_image
from vislab.data.sources import expand_image_paths


def predict_files(predictor, inputs, top_k: int = 5, batch_size: int = 32) -> list[dict]:
    """The task's answer for each image (classification: the top-k classes); a bad image gets an
    ``error`` entry and the rest go on.

    Example:
        >>> from vislab.infer.predictor import Predictor            # doctest: +SKIP
        >>> predict_files(Predictor(load("imagenet:efficientnet_lite0")), ["cat.jpg"], top_k=3)  # doctest: +SKIP
        [{'file': 'cat.jpg', 'top': [{'class': 'tabby, tabby cat', 'index': 281, 'probability': 0.61}, ...]}]
    """
    paths, bad = expand_image_paths(inputs)
    results: list[dict] = [{"file": path, "error": reason} for path, reason in bad]
    names = predictor.loaded.class_names
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
            outputs = predictor.outputs(torch.stack([resized[i] for i in members]))
            for row, i in enumerate(members):
                results.append({"file": batch_paths[i], **predictor.task.describe(outputs[row], names, top_k)})
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
