"""Evaluation figures. Each function draws what it is given into one PNG and returns its path.

Nothing here computes a metric: the numbers come from
:mod:`vislab.tasks.classification_metrics` (or scikit-learn) and are only drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vislab.viz import PNG_COMPRESS_LEVEL  # noqa: E402

RIGHT = "#1a7f37"
WRONG = "#cf222e"
# Above this many classes tick labels and cell numbers become unreadable.
MAX_LABELLED_CLASSES = 40
DPI = 100
GRID_CELL = 96  # largest side of an image in a prediction grid, in pixels


def plot_confusion_matrix(
    matrix, class_names: Sequence[str], path, normalize: bool = False
) -> Path:
    """Confusion matrix (rows true, columns predicted) with class names on both axes.

    Args:
        matrix: (K, K) counts, e.g. ``metrics["curves"]["confusion_matrix"]``.
        class_names: K names.
        path: PNG to write.
        normalize: divide each row by its count (recall on the diagonal); rows with
            no samples stay 0 instead of NaN.

    Example:
        >>> import tempfile, os
        >>> p = plot_confusion_matrix([[3, 1], [0, 4]], ["cat", "dog"], os.path.join(tempfile.mkdtemp(), "cm.png"))
        >>> p.exists()
        True
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    labelled = k <= MAX_LABELLED_CLASSES
    side = min(4 + 0.45 * k, 16)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    # drawn as scikit-learn's ConfusionMatrixDisplay draws it, without importing scikit-learn (1 s, and
    # pandas with it) in whichever process draws: the run's parent draws figures too once it waits
    image = ax.imshow(matrix, interpolation="nearest", cmap="Blues")
    if labelled and k <= 20:
        on_light, on_dark = image.cmap(1.0), image.cmap(0)  # text colours: the map's ends
        threshold = (matrix.max() + matrix.min()) / 2.0
        for i in range(k):
            for j in range(k):
                # centred in its cell, inside the axes: left out of tight_layout's measuring (same layout)
                ax.text(j, i, format(matrix[i, j], ".2f" if normalize else ".0f"), ha="center", va="center",
                        color=on_light if matrix[i, j] < threshold else on_dark, in_layout=False)
    fig.colorbar(image, ax=ax)
    names = list(class_names) if labelled else list(range(k))
    ax.set(xticks=np.arange(k), yticks=np.arange(k), xticklabels=names, yticklabels=names,
           ylabel="True label", xlabel="Predicted label")
    ax.set_ylim((k - 0.5, -0.5))
    if labelled:
        plt.setp(ax.get_xticklabels(), rotation=45)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Confusion matrix (normalised by true class)" if normalize else "Confusion matrix (counts)")
    return _save(fig, path)


def plot_roc_curves(curves: Mapping[str, Mapping], path, micro: Mapping | None = None) -> Path:
    """One-vs-rest ROC curves.

    Args:
        curves: class name -> ``{"fpr": [...], "tpr": [...], "auc": float}``
            (``metrics["curves"]["roc"]``).
        path: PNG to write.
        micro: optional micro-average curve of the same form, drawn dashed.

    Example:
        >>> import tempfile, os
        >>> plot_roc_curves({"dog": {"fpr": [0, 0, 1], "tpr": [0, 1, 1], "auc": 1.0}},
        ...                 os.path.join(tempfile.mkdtemp(), "roc.png")).suffix
        '.png'
    """
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for name, curve in _limit(curves).items():
        ax.plot(curve["fpr"], curve["tpr"], lw=1.4, label=f"{name} (AUC {_fmt(curve.get('auc'))})")
    if micro:
        ax.plot(micro["fpr"], micro["tpr"], "k--", lw=2, label=f"micro-average (AUC {_fmt(micro.get('auc'))})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="False positive rate", ylabel="True positive rate", title="ROC")
    _legend(ax, len(curves) + bool(micro), loc="lower right")
    return _save(fig, path)


def plot_pr_curves(curves: Mapping[str, Mapping], path, micro: Mapping | None = None) -> Path:
    """Precision-recall curves, one per class (``metrics["curves"]["pr"]``).

    Example:
        >>> import tempfile, os
        >>> plot_pr_curves({"dog": {"recall": [1, 0.5, 0], "precision": [0.5, 1, 1], "ap": 0.8}},
        ...                os.path.join(tempfile.mkdtemp(), "pr.png")).name
        'pr.png'
    """
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for name, curve in _limit(curves).items():
        ax.step(curve["recall"], curve["precision"], where="post", lw=1.4, label=f"{name} (AP {_fmt(curve.get('ap'))})")
    if micro:
        ax.step(micro["recall"], micro["precision"], "k--", where="post", lw=2, label=f"micro-average (AP {_fmt(micro.get('ap'))})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title="Precision-recall")
    _legend(ax, len(curves) + bool(micro), loc="lower left")
    return _save(fig, path)


def plot_reliability_diagram(calibration: Mapping, path) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with counts below.

    Args:
        calibration: ``metrics["calibration"]`` (``ece`` and ``bins`` with lower, upper,
            count, accuracy, confidence).

    Example:
        >>> import tempfile, os
        >>> cal = {"ece": 0.1, "bins": [{"lower": 0.5, "upper": 1.0, "count": 2, "accuracy": 0.5, "confidence": 0.6}]}
        >>> plot_reliability_diagram(cal, os.path.join(tempfile.mkdtemp(), "rel.png")).exists()
        True
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    draw_reliability(top, bottom, calibration)
    return _save(fig, path)


def draw_reliability(top, bottom, calibration: Mapping) -> None:
    """The reliability diagram's two axes: per bin, the gap between accuracy and mean confidence
    (hatched), then the accuracy bar's outline drawn over it and the mean confidence as a red tick, so
    both stay visible whichever is higher (an under-confident bin's accuracy is above its gap's bottom)."""
    bins = list(calibration["bins"])
    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    accuracy = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    confidence = np.array([b["confidence"] if b["confidence"] is not None else 0.0 for b in bins])
    counts = np.array([b["count"] for b in bins])
    filled = counts > 0
    top.bar(lower[filled], accuracy[filled], width=width[filled], align="edge", color="#4c72b0", alpha=0.55,
            edgecolor="none", zorder=2, label="accuracy")
    # The gap spans accuracy..confidence in either direction (over- or under-confident bins).
    low = np.minimum(accuracy, confidence)
    gap = np.abs(confidence - accuracy)
    top.bar(lower[filled], gap[filled], bottom=low[filled], width=width[filled], align="edge",
            color="none", edgecolor=WRONG, hatch="//", linewidth=0.8, zorder=3, label="gap to mean confidence")
    # on top of the gap: the accuracy bar's outline and the mean confidence, each always visible
    top.bar(lower[filled], accuracy[filled], width=width[filled], align="edge", fill=False, edgecolor="black",
            linewidth=1.6, zorder=4)
    top.hlines(confidence[filled], lower[filled], lower[filled] + width[filled], colors=WRONG, linewidth=2.2,
               zorder=5, label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set(ylim=(0, 1), ylabel="Accuracy", title=f"Reliability diagram (ECE {_fmt(calibration.get('ece'))})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(lower, counts, width=width, align="edge", color="grey", edgecolor="black")
    bottom.set(xlim=(0, 1), xlabel="Confidence (top probability)", ylabel="Samples")


def plot_per_class_accuracy(class_names: Sequence[str], accuracies: Sequence[float | None], path) -> Path:
    """Horizontal bars of per-class accuracy (recall); ``None`` (no test samples) is marked n/a.

    Example:
        >>> import tempfile, os
        >>> plot_per_class_accuracy(["a", "b"], [0.9, None], os.path.join(tempfile.mkdtemp(), "acc.png")).exists()
        True
    """
    fig, _ = per_class_bars(class_names, accuracies, "n/a (no samples)", "{:.1%}", "Accuracy (recall)",
                            "Per-class accuracy")
    return _save(fig, path)


def per_class_bars(names: Sequence[str], scores: Sequence[float | None], missing: str, fmt: str, xlabel: str,
                   title: str, text_cap: float = 0.9, hide_names_over: int | None = 200):
    """Horizontal 0..1 bars, one per class, coloured red to green and labelled with ``fmt``; a ``None``
    score is drawn as 0 and labelled ``missing``. Per-class accuracy, AP and IoU all draw through it;
    returns ``(fig, ax)`` for the caller to add to and save.

    Example:
        >>> fig, ax = per_class_bars(["a", "b"], [0.5, None], "n/a", "{:.2f}", "score", "Per class")
        >>> len(ax.patches)
        2
        >>> plt.close(fig)
    """
    k = len(names)
    values = np.array([v if v is not None else 0.0 for v in scores], dtype=float)
    fig, ax = plt.subplots(figsize=(7, min(2 + 0.3 * k, 60)))
    y = np.arange(k)
    ax.barh(y, values, color=plt.cm.RdYlGn(values), edgecolor="black", lw=0.5)
    for i, v in enumerate(scores):
        ax.text(min(values[i] + 0.01, text_cap), i, missing if v is None else fmt.format(v), va="center", fontsize=8)
    shown = hide_names_over is None or k <= hide_names_over
    ax.set_yticks(y, [str(n) for n in names] if shown else [""] * k)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.05), xlabel=xlabel, title=title)
    return fig, ax


def plot_prediction_grid(
    images,
    true_names: Sequence[str],
    predicted_names: Sequence[str],
    probabilities: Sequence[float],
    path,
    title: str = "Sample predictions",
    columns: int = 6,
) -> Path:
    """Image grid titled "true : predicted" (green when right, red when wrong) and the probability.

    Used for the sample predictions, the most confidently wrong and the least
    confident right images alike.

    Args:
        images: uint8 (N, C, H, W) array or tensor, C in {1, 3}; may be empty.
        true_names, predicted_names: N class names.
        probabilities: N probabilities of the predicted class.

    Example:
        >>> import numpy as np, tempfile, os
        >>> imgs = np.zeros((2, 1, 8, 8), np.uint8)
        >>> plot_prediction_grid(imgs, ["a", "b"], ["a", "a"], [0.9, 0.6],
        ...                      os.path.join(tempfile.mkdtemp(), "g.png")).exists()
        True
    """
    images = _as_numpy(images)
    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no images", ha="center", va="center")
        return _save(fig, path)
    # One image of all the cells, titles as text on one axes: 18 subplots took ~1 s per figure.
    from vislab.viz.montage import fit_width, rgb, titled_grid

    right = [str(t) == str(p) for t, p in zip(true_names, predicted_names)]
    fig = plt.figure()
    titled_grid(fig, [rgb(image) for image in images],
                [f"{_short(t)} : {_short(p)}\n{float(q):.1%}" for t, p, q in zip(true_names, predicted_names, probabilities)],
                [RIGHT if ok else WRONG for ok in right], columns=columns, cell_max=GRID_CELL)
    # a grid of one or two images is narrower than this title: the figure widens to hold it
    fit_width(fig, fig.suptitle(f"{title}   (true : predicted, probability)", y=1 - 0.1 / fig.get_figheight(),
                                va="top"))
    return _save(fig, path, tight=False)


def plot_leaderboard(rows: Sequence[Mapping], path, metrics: Sequence[str] = ("accuracy", "macro_f1", "auc")) -> Path:
    """Grouped bars of test metrics per run (rows from :func:`vislab.evaluate.compare.compare_runs`).

    Missing values (``None``) are left out of their group.

    Example:
        >>> import tempfile, os
        >>> rows = [{"run": "cnn", "accuracy": 0.9, "macro_f1": 0.88, "auc": 0.99},
        ...         {"run": "vit", "accuracy": 0.95, "macro_f1": None, "auc": 0.995}]
        >>> plot_leaderboard(rows, os.path.join(tempfile.mkdtemp(), "lb.png")).exists()
        True
    """
    names = [str(r.get("run") or r.get("model")) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) + 2), 4.8))
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(metrics))
    for j, key in enumerate(metrics):
        values = [r.get(key) for r in rows]
        keep = [i for i, v in enumerate(values) if v is not None]
        bars = ax.bar(x[keep] + (j - (len(metrics) - 1) / 2) * width, [values[i] for i in keep], width, label=key)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set(ylim=(0, 1.15), ylabel="Test score", title="Leaderboard")
    ax.legend(loc="upper right", ncols=len(metrics))
    return _save(fig, path)


# ----------------------------------------------------------------------------- helpers


def _as_numpy(images) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.size and images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (N, C, H, W), got {images.dtype}; pass the raw images, not normalised ones")
    return images


def _show(ax, image: np.ndarray) -> None:
    """Draw one uint8 (C, H, W) image, grey for one channel."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = np.transpose(image, (1, 2, 0))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")


def _short(name, limit: int = 16) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _limit(curves: Mapping, limit: int = 30) -> dict:
    # More curves than this is a hairball; the micro average still summarises all classes.
    return dict(list(curves.items())[:limit])


def _legend(ax, count: int, loc: str) -> None:
    if count:
        ax.legend(loc=loc, fontsize=7 if count > 10 else 9, ncols=2 if count > 15 else 1)


def _save(fig, path, tight: bool = True) -> Path:
    """The one PNG writer of the viz modules: ``tight_layout`` (unless ``tight=False``), save, close.

    ``tight_layout`` leaves a placeholder layout engine on the figure, and with any engine set
    ``savefig`` lays the whole figure out once more before drawing it for the file. Dropping the
    placeholder gives the same bytes in about two thirds of the time (a confusion matrix: 0.22 s
    against 0.31 s). A real engine (constrained layout) stays: it runs in that extra pass."""
    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        fig.set_layout_engine(None)
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    return path
