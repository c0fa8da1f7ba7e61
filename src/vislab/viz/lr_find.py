"""The LR finder's figure: loss against learning rate, raw and smoothed, with the suggestions marked."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vislab.viz.evaluation import _save  # noqa: E402  (one figure writer)

_COLOURS = {"valley": "tab:green", "steepest": "tab:red"}


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                 suggestions: dict[str, float | None], path: str | Path, title: str = "LR finder") -> Path:
    """Loss vs learning rate on a log axis: each step's loss (faint), the smoothed loss, and a
    vertical line per suggestion (``{"valley": 3e-3, "steepest": 1e-2}``), so the noise is visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="0.7", lw=0.8, label="loss per step")
    ax.plot(lrs, smoothed, color="tab:blue", lw=2, label="smoothed loss")
    for index, (name, lr) in enumerate(suggestions.items()):
        if lr is None:
            continue
        colour = _COLOURS.get(name, f"C{index + 3}")
        ax.axvline(lr, color=colour, ls="--", lw=1.2, label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    finite = [v for v in smoothed if v == v]
    if finite:  # the divergence at the end would flatten everything else
        raw = [v for v in losses[: max(1, len(losses) * 9 // 10)] if v == v]
        low, high = min(finite + raw), max(finite[: max(1, len(finite) * 9 // 10)])
        ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.25 * (high - low + 1e-9))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)
