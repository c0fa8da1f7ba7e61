"""Training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vislab.viz.evaluation import _save  # noqa: E402  (one figure writer)

_TITLES = {"loss": "Loss", "acc": "Accuracy", "miou": "mIoU", "map": "mAP", "mae": "MAE"}


def plot_history(history: list[dict], path: str | Path, metrics: Sequence[str] = ("acc",)) -> Path:
    """The loss and each named metric per epoch, train vs validation, as in the Keras tutorials; the epoch
    axis is ticked at whole epochs (a 3-epoch run had ticks at 1.25, 1.5, ... 2.75).

    Example:
        >>> import tempfile, os
        >>> rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e} for e in (1, 2, 3)]
        >>> plot_history(rows, os.path.join(tempfile.mkdtemp(), "curves.png"), metrics=()).suffix
        '.png'
    """
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [int(row["epoch"]) for row in history]
    keys = ["loss", *metrics]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [row.get(f"train_{key}") for row in history], "o-", label="train")
        val = [row.get(f"val_{key}") for row in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, "s-", label="validation")
        ax.set_title(_TITLES.get(key, key))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)
