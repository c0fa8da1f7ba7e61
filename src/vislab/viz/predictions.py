"""Images titled with their top-1 prediction (``vislab predict --figure``, ImageNet top-k)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vislab.viz.evaluation import _save  # noqa: E402  (one figure writer)


def _hwc(image) -> np.ndarray:
    """An image as (H, W) or (H, W, 3) for imshow: numpy/PIL/tensor, channels first or last."""
    array = np.asarray(image.cpu() if hasattr(image, "cpu") else image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    return array[:, :, :3] if array.ndim == 3 else array


def plot_topk(images, predictions: list[list[dict]], path: str | Path, columns: int = 4,
              titles: Sequence[str] | None = None) -> Path:
    """Save a figure of the images, each titled with its top-1 class and probability.

    Args:
        images: one image per prediction: arrays (H, W), (H, W, C) or (C, H, W), PIL images or tensors.
        predictions: per image, a list of ``{"class", "probability"}`` dicts, most likely first
            (each ``Predictor.answers`` or ``vislab predict`` entry's ``top``).
        path: PNG to write.
        columns: panels per row.
        titles: optional first title line per image (e.g. the model name or file name).

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = plot_topk([np.zeros((8, 8), np.uint8)], [[{"class": "cat", "probability": 0.9}]],
        ...                  os.path.join(tempfile.mkdtemp(), "top.png"))
        >>> path.name
        'top.png'
    """
    count = len(predictions)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    # a second title line needs its own room above each row's images
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, (3.8 if titles else 3.5) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for index, (ax, image, top) in enumerate(zip(axes.flat, images, predictions)):
        picture = _hwc(image)
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        best = top[0]
        head = f"{titles[index]}\n" if titles else ""
        ax.set_title(f"{head}{str(best['class']).split(',')[0][:28]} ({best['probability']:.1%})", fontsize=9)
    return _save(fig, path)
