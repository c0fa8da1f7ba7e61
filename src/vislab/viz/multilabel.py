"""Multi-label figures: per-class AP, label co-occurrence, threshold-vs-score curves, label-set grids.

Each function draws what it is given (numbers from :mod:`vislab.tasks.multilabel`, which
takes them from scikit-learn) into one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vislab.viz.evaluation import RIGHT, WRONG, _as_numpy, _save, _short, per_class_bars, plt


def plot_per_class_ap(class_names: Sequence[str], aps: Sequence[float | None], path, headline: float | None = None) -> Path:
    """Horizontal bars of each label's average precision; ``None`` (no positive test image) is n/a.

    Example:
        >>> import tempfile, os
        >>> plot_per_class_ap(["a", "b"], [0.8, None], os.path.join(tempfile.mkdtemp(), "ap.png")).exists()
        True
    """
    title = "Average precision per label" + (f" (mAP {headline:.3f})" if headline is not None else "")
    fig, _ = per_class_bars(class_names, aps, "n/a (no positives)", "{:.3f}", "Average precision", title)
    return _save(fig, path)


def plot_cooccurrence(class_names: Sequence[str], matrix, path, title: str = "Label co-occurrence") -> Path:
    """(K, K) counts: images carrying both labels (the diagonal: images carrying the label)."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(min(2 + 0.5 * k, 30), min(1.6 + 0.5 * k, 30)))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    if k <= 40:
        ax.set_xticks(range(k), [_short(n) for n in class_names], rotation=60, ha="right")
        ax.set_yticks(range(k), [_short(n) for n in class_names])
        if k <= 20:
            top = matrix.max() if matrix.size else 0
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > top / 2 else "black", in_layout=False)
    ax.set_title(title)
    return _save(fig, path)


def plot_threshold_curves(grid: Sequence[float], curves: Mapping[str, Sequence[float]], chosen: Mapping[str, float],
                          path, metric: str = "f1", limit: int = 30) -> Path:
    """Per-label score (F1 by default) against the decision threshold, each label's chosen threshold marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in list(curves.items())[:limit]:
        line, = ax.plot(grid, values, lw=1.2, label=_short(name))
        if name in chosen and chosen[name] is not None:
            ax.axvline(chosen[name], color=line.get_color(), lw=0.6, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="threshold", ylabel=metric,
           title=f"{metric} against the threshold (dotted: each label's threshold)")
    if curves:
        ax.legend(fontsize=7 if len(curves) > 10 else 9, ncols=2 if len(curves) > 15 else 1, loc="lower left")
    return _save(fig, path)


def plot_label_sets(images, true_sets: Sequence[Sequence[str]], predicted_sets: Sequence[Sequence[str]], path,
                    title: str = "Sample predictions", columns: int = 6) -> Path:
    """Image grid titled with the true and the predicted label sets (green: the sets are equal)."""
    images = _as_numpy(images)
    if len(images) == 0:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no images", ha="center", va="center")
        return _save(fig, path)
    from vislab.viz.montage import rgb, titled_grid

    def text(labels):
        return _short(" ".join(map(str, labels)) or "(none)", 24)

    fig = plt.figure()
    titled_grid(fig, [rgb(image) for image in images],
                [f"{text(t)}\n{text(p)}" for t, p in zip(true_sets, predicted_sets)],
                [RIGHT if set(t) == set(p) else WRONG for t, p in zip(true_sets, predicted_sets)],
                columns=columns, cell_max=96, title_band=0.5, fontsize=8)
    fig.suptitle(f"{title}   (top: true labels, below: predicted)", y=1 - 0.1 / fig.get_figheight(), va="top")
    return _save(fig, path, tight=False)
