"""Draw every evaluation figure and write ``misclassified.csv`` for one set of predictions."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vislab.core.background import draw

GRID_SIZE = 18


def write_evaluation_figures(
    predictions,
    class_names: Sequence[str],
    metrics: dict,
    images_fn: Callable[[np.ndarray], np.ndarray],
    out_dir,
    grid_size: int = GRID_SIZE,
    seed: int = 0,
    name: str = "",
) -> list[Path]:
    """Write the evaluation figures to ``out_dir/plots/`` and ``out_dir/misclassified.csv``; for a named
    evaluation (``name``, e.g. ``val``) to ``out_dir/plots/<name>/`` and ``out_dir/misclassified_<name>.csv``,
    beside its ``metrics_<name>.json``.

    Figures: ``confusion_matrix.png``, ``confusion_matrix_normalized.png``,
    ``roc.png``, ``pr.png``, ``reliability.png``, ``per_class_accuracy.png``,
    ``predictions_sample.png``, ``predictions_confident_wrong.png``,
    ``predictions_unsure_right.png``.

    Args:
        predictions: has ``labels`` (N,), ``probs`` (N, K) and ``sources`` (N strings:
            a file path or ``"test#123"``), e.g. ``vislab.infer.predictor.Predictions``.
        class_names: K names.
        metrics: the dict of :func:`vislab.tasks.classification_metrics.classification_metrics`
            (its ``curves``, ``calibration`` and ``per_class`` are drawn).
        images_fn: ``images_fn(indices) -> uint8 (n, C, H, W)``, the raw test images
            at those indices, for the grids.
        out_dir: the run folder (or any folder).
        grid_size: images per grid.
        seed: which random images the sample grid shows.
        name: the evaluation's name ("" for the run's own test split).

    Returns:
        The paths written (figures and the CSV).

    Example:
        >>> import numpy as np, tempfile, types
        >>> from vislab.tasks.classification_metrics import classification_metrics
        >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]); labels = np.array([0, 1, 1])
        >>> preds = types.SimpleNamespace(labels=labels, probs=probs, sources=["test#0", "test#1", "test#2"])
        >>> m = classification_metrics(labels, probs, ["cat", "dog"])
        >>> paths = write_evaluation_figures(preds, ["cat", "dog"], m,
        ...     lambda idx: np.zeros((len(idx), 1, 8, 8), np.uint8), tempfile.mkdtemp())
        >>> sorted(p.name for p in paths)[:2]
        ['confusion_matrix.png', 'confusion_matrix_normalized.png']
    """
    out_dir = Path(out_dir)
    plots = out_dir / "plots" / name
    plots.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(predictions.labels).astype(np.int64).reshape(-1)
    probs = np.asarray(predictions.probs, dtype=np.float64)
    sources = [str(s) for s in predictions.sources]
    names = [str(n) for n in class_names]
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(labels)), predicted]
    curves = metrics.get("curves", {})
    written: list[Path] = []

    right = predicted == labels
    wrong_idx = np.flatnonzero(~right)
    right_idx = np.flatnonzero(right)
    rng = np.random.default_rng(seed)
    grids = {
        "predictions_sample.png": (
            np.sort(rng.choice(len(labels), size=min(grid_size, len(labels)), replace=False)),
            "Sample predictions",
        ),
        # stable sorts so equal probabilities keep a reproducible order
        "predictions_confident_wrong.png": (
            wrong_idx[np.argsort(-confidence[wrong_idx], kind="stable")][:grid_size],
            "Most confidently wrong",
        ),
        "predictions_unsure_right.png": (
            right_idx[np.argsort(confidence[right_idx], kind="stable")][:grid_size],
            "Least confident right",
        ),
    }
    # each figure is drawn in a helper interpreter when the run has one (vislab.core.background.draw).
    # The image grids are queued first: a helper takes the queue's front, and its malloc's huge pages make
    # their large pixel buffers cheap; the run's parent, drawing from the back once it waits, gets the
    # line plots (its first grid's page faults cost it 1 s on a 2-core Xeon)
    grid_paths = []
    for filename, (indices, title) in grids.items():
        images = images_fn(indices) if len(indices) else np.zeros((0, 1, 1, 1), np.uint8)
        grid_paths.append(
            draw(
                "vislab.viz.evaluation:plot_prediction_grid",
                images,
                [names[labels[i]] for i in indices],
                [names[predicted[i]] for i in indices],
                confidence[indices],
                plots / filename,
                title=title,
            )
        )
    matrix = curves.get("confusion_matrix")
    if matrix is None:
        from sklearn.metrics import confusion_matrix

        matrix = confusion_matrix(labels, predicted, labels=np.arange(len(names)))
    written.append(draw("vislab.viz.evaluation:plot_confusion_matrix", matrix, names,
                        plots / "confusion_matrix.png"))
    written.append(draw("vislab.viz.evaluation:plot_confusion_matrix", matrix, names,
                        plots / "confusion_matrix_normalized.png", normalize=True))
    if curves.get("roc"):
        written.append(draw("vislab.viz.evaluation:plot_roc_curves", curves["roc"], plots / "roc.png",
                            micro=curves.get("roc_micro")))
    if curves.get("pr"):
        written.append(draw("vislab.viz.evaluation:plot_pr_curves", curves["pr"], plots / "pr.png",
                            micro=curves.get("pr_micro")))
    if metrics.get("calibration"):
        written.append(draw("vislab.viz.evaluation:plot_reliability_diagram", metrics["calibration"],
                            plots / "reliability.png"))
    if metrics.get("per_class"):
        rows = metrics["per_class"]
        written.append(draw("vislab.viz.evaluation:plot_per_class_accuracy", [r["class"] for r in rows],
                            [r["recall"] for r in rows], plots / "per_class_accuracy.png"))
    written += grid_paths

    csv_name = f"misclassified_{name}.csv" if name else "misclassified.csv"
    written.append(write_misclassified(labels, probs, sources, names, out_dir / csv_name))
    return written


def write_misclassified(labels, probs, sources: Sequence[str], class_names: Sequence[str], path) -> Path:
    """CSV of every wrong prediction, most confident first.

    Columns: ``source`` (file path or ``split#index``), ``true``, ``predicted``,
    ``probability`` (of the predicted class), ``true_probability``.

    Example:
        >>> import tempfile, os
        >>> p = write_misclassified([0, 1], [[0.9, 0.1], [0.6, 0.4]], ["a.png", "b.png"], ["cat", "dog"],
        ...                         os.path.join(tempfile.mkdtemp(), "m.csv"))
        >>> open(p).read().splitlines()[1]
        'b.png,dog,cat,0.600000,0.400000'
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(axis=1)
    rows = np.arange(len(labels))
    confidence = probs[rows, predicted]
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "true", "predicted", "probability", "true_probability"])
        for i in wrong:
            writer.writerow(
                [sources[i], class_names[labels[i]], class_names[predicted[i]], f"{confidence[i]:.6f}", f"{probs[i, labels[i]]:.6f}"]
            )
    return path
