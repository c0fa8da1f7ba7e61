"""Images titled with their top-1 prediction (``vislab predict --figure``)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_predictions(results: list[dict], path: str | Path, columns: int = 4) -> Path:
    """One panel per predicted image: the picture, titled "class (probability)"."""
    from vislab.data.images import BadImageError, open_image

    good = [r for r in results if "top" in r]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = max(1, math.ceil(len(good) / columns))
    cols = max(1, min(columns, len(good)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, result in zip(axes.flat, good):
        try:
            image = open_image(result["file"])
        except BadImageError:
            continue
        ax.imshow(image, cmap="gray" if image.mode == "L" else None)
        top = result["top"][0]
        ax.set_title(f"{top['class'][:28]}\n{top['probability']:.1%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
