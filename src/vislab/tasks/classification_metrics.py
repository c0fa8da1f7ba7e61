"""Classification metrics from predictions: one dict, JSON-ready, free of NaN.

scikit-learn computes every number; this module only chooses which ones,
handles the edge cases (a class nobody predicted, a class missing from the
test labels) and keeps the result readable. Undefined values are ``None``
with a line in ``notes`` saying why, never NaN.

Which classes the averages cover (scikit-learn's own rule for ``labels=None``,
passed to it explicitly as ``labels=``): the macro precision / recall / F1
(``macro``, ``macro_f1``) and the weighted ones are means over the classes
that occur in the test labels or the predictions. A class of the model with
no test image and no prediction (``vislab evaluate RUN --data`` on a folder
of some of its classes) has nothing to score: its precision, recall and F1
are ``None`` and it is left out, with a note. A class predicted but absent
from the test labels stays in: its precision 0 is real false positives (its
recall, undefined per class, counts as 0 in the macro recall, as in
scikit-learn). ``balanced_accuracy`` is scikit-learn's mean recall over the
classes in the test labels; the macro ROC AUC and average precision are
means over the classes in the test labels (an AUC needs positives), the
micro ones pool every class's column, an absent class adding negatives.

The returned dict has a ``curves`` entry (downsampled ROC/PR points and the
confusion matrix) that the figures need; ``Task.save_metrics`` writes it to
``metrics_curves.json`` beside ``metrics.json`` so the latter stays short.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    auc,
    balanced_accuracy_score,
    f1_score,
    average_precision_score,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_curve,
    top_k_accuracy_score,
)
from sklearn.preprocessing import label_binarize

# Enough points to draw a smooth curve, few enough to keep the JSON small.
MAX_CURVE_POINTS = 200
CALIBRATION_BINS = 15


def classification_metrics(
    y_true,
    probs,
    class_names: Sequence[str],
    top_k: int = 5,
    loss: float | None = None,
    n_bins: int = CALIBRATION_BINS,
) -> dict:
    """Every classification metric vislab reports, from labels and probabilities.

    Args:
        y_true: int array (N,) of true class indices in ``[0, K)``.
        probs: float array (N, K) of class probabilities (rows sum to 1). A binary
            single-sigmoid model is passed as two columns ``[1 - p, p]``.
        class_names: K names, in class-index order.
        top_k: k for the top-k accuracy (clipped to K - 1, with a note; ``None``
            for K == 2, where any k > 1 is trivially 1).
        loss: the mean loss if the caller already has it (e.g. the training loss
            function); otherwise the cross-entropy (log loss) of ``probs``.
        n_bins: number of equal-width confidence bins of the reliability diagram.

    Returns:
        A JSON-serialisable dict. Top-level keys include ``accuracy``, ``loss``,
        ``top_k_accuracy``, ``macro``/``weighted`` (precision, recall, f1),
        ``per_class`` (list of dicts), ``roc_auc``, ``average_precision``,
        ``calibration`` (``ece`` and ``bins``), ``notes`` and ``curves``.
        For K == 2 (``task == "binary"``) ``roc_auc``/``average_precision`` and
        ``binary`` describe the positive class (index 1); otherwise ``roc_auc``
        is the macro one-vs-rest AUC and ``roc_auc_micro`` is also given.

    Example:
        >>> import numpy as np
        >>> m = classification_metrics(np.array([0, 1, 1]),
        ...     np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]), ["cat", "dog"])
        >>> round(m["accuracy"], 3), m["task"], m["roc_auc"]
        (0.667, 'binary', 1.0)
    """
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    names = [str(name) for name in class_names]
    _check_inputs(y_true, probs, names)
    n, k = probs.shape
    labels = np.arange(k)
    y_pred = probs.argmax(axis=1)
    notes: list[str] = []

    present = np.bincount(y_true, minlength=k) > 0
    predicted_counts = np.bincount(y_pred, minlength=k)
    # the classes scored and averaged: those in the truth or the predictions (see the module docstring)
    scored = present | (predicted_counts > 0)
    scored_labels = labels[scored]
    unscored = [names[c] for c in labels if not scored[c]]
    if unscored:
        notes.append(
            f"no test image of {', '.join(unscored)}: left out of the macro averages (classes absent from the "
            f"test labels and never predicted; their precision, recall, F1, ROC AUC and average precision are null)"
        )
    absent_predicted = [names[c] for c in labels if not present[c] and scored[c]]
    if absent_predicted:
        notes.append(
            f"classes absent from the test labels but predicted (false positives: precision 0, counted in the "
            f"macro averages; their recall, ROC AUC and average precision are null and they are left out of "
            f"the macro AUC/AP): {absent_predicted}"
        )
    never_predicted = [names[c] for c in labels if present[c] and not np.any(y_pred == c)]
    if never_predicted:
        notes.append(f"classes never predicted (precision counted as 0): {never_predicted}")

    result: dict = {
        "task": "binary" if k == 2 else "multiclass",
        "num_samples": int(n),
        "num_classes": int(k),
        "class_names": names,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # the mean per-class recall: what accuracy is on an imbalanced test set weighed per class
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(f1_score(y_true, y_pred, labels=scored_labels, average="macro", zero_division=0)),
        "loss": _loss(y_true, probs, loss),
    }

    if k > 2:
        # k >= K would be trivially 1.0 (sklearn warns); K-1 is the most that says anything.
        k_used = int(min(top_k, k - 1))
        if k_used != top_k:
            notes.append(f"top-k accuracy uses k={k_used}: k={top_k} is not below the {k} classes")
        result["top_k"] = k_used
        result["top_k_accuracy"] = float(
            top_k_accuracy_score(y_true, probs, k=k_used, labels=labels)
        )
    else:
        result["top_k"] = None
        result["top_k_accuracy"] = None

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=scored_labels, average=average, zero_division=0
        )
        result[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}

    roc_auc_per_class, ap_per_class, roc_curves, pr_curves = _one_vs_rest(y_true, probs, present, names)

    per_class = []
    for c in labels:
        per_class.append(
            {
                "class": names[c],
                "index": int(c),
                # a class with no image and no prediction has nothing to score
                "precision": float(precision[c]) if scored[c] else None,
                # recall is the per-class accuracy; it has no meaning without support
                "recall": float(recall[c]) if present[c] else None,
                "f1": float(f1[c]) if scored[c] else None,
                "support": int(support[c]),
                "predicted": int(predicted_counts[c]),
                "roc_auc": roc_auc_per_class[c],
                "average_precision": ap_per_class[c],
            }
        )
    result["per_class"] = per_class

    curves: dict = {"confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}
    if k == 2:
        # Binary: everything about the positive class, as sklearn's pos_label=1.
        result["positive_class"] = names[1]
        # the positive class's row, so an undefined value is None here too
        result["binary"] = {key: per_class[1][key] for key in ("precision", "recall", "f1")}
        result["roc_auc"] = roc_auc_per_class[1]
        result["average_precision"] = ap_per_class[1]
        if result["roc_auc"] is None:
            notes.append("binary ROC AUC and average precision need both classes in the test labels")
        curves["roc"] = {names[1]: roc_curves[1]} if roc_curves[1] else {}
        curves["pr"] = {names[1]: pr_curves[1]} if pr_curves[1] else {}
    else:
        micro = _micro_curves(y_true, probs)
        result.update(_multiclass_summary(roc_auc_per_class, ap_per_class, micro))
        if result["roc_auc_micro"] is None:
            notes.append("ROC AUC needs at least one positive and one negative sample; none could be computed")
        curves["roc"] = {names[c]: roc_curves[c] for c in labels if roc_curves[c]}
        curves["pr"] = {names[c]: pr_curves[c] for c in labels if pr_curves[c]}
        if micro:
            curves["roc_micro"], curves["pr_micro"] = micro

    result["calibration"] = calibration_bins(y_true, probs, n_bins=n_bins)
    result["notes"] = notes
    result["curves"] = curves
    return _finite(result)


def _balanced_accuracy(y_true, y_pred) -> float:
    """scikit-learn's balanced accuracy (mean recall over the classes in y_true, so a class of the model
    without a test image is left out, as from the macro averages); a predicted class
    absent from y_true is expected on small test sets and its warning is noise here (notes say it), as is
    the one for data of a single class, all predicted right (`vislab evaluate --data` on one class folder)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(y_true, y_pred))


def calibration_bins(y_true, probs, n_bins: int = CALIBRATION_BINS) -> dict:
    """Top-label reliability diagram and expected calibration error (ECE).

    Confidence is the highest probability of each sample; a sample is right when
    its arg-max is the true class. The confidences are put in ``n_bins`` equal
    bins of ``[0, 1]`` (sklearn's ``calibration_curve`` rule: a value on an inner
    edge goes to the upper bin); ECE = sum over bins of
    ``count/N * |accuracy - mean confidence|``. sklearn has no top-label ECE and
    its ``calibration_curve`` drops the bin counts ECE needs, hence this function.

    Example:
        >>> import numpy as np
        >>> cal = calibration_bins(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]), n_bins=10)
        >>> round(cal["ece"], 3)  # one right at 0.9, one wrong at 0.8
        0.45
    """
    y_true = np.asarray(y_true).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], confidence, side="right")
    counts = np.bincount(bin_ids, minlength=n_bins)
    hit_sums = np.bincount(bin_ids, weights=correct, minlength=n_bins)
    confidence_sums = np.bincount(bin_ids, weights=confidence, minlength=n_bins)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        count = int(counts[b])
        accuracy = hit_sums[b] / count if count else None
        mean_conf = confidence_sums[b] / count if count else None
        if count:
            ece += count / len(y_true) * abs(accuracy - mean_conf)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": None if accuracy is None else float(accuracy),
                "confidence": None if mean_conf is None else float(mean_conf),
            }
        )
    return {"ece": float(ece), "n_bins": int(n_bins), "bins": bins}


# ----------------------------------------------------------------------------- helpers


def _check_inputs(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> None:
    if probs.ndim != 2:
        raise ValueError(
            f"probs must be a 2-D (N, K) array, got shape {probs.shape}; "
            "for a single-sigmoid model pass np.stack([1 - p, p], axis=1)"
        )
    n, k = probs.shape
    if n == 0:
        raise ValueError("no predictions to evaluate: the test split is empty")
    if len(y_true) != n:
        raise ValueError(f"{len(y_true)} labels but {n} rows of probabilities; they must match")
    if k < 2:
        raise ValueError(f"need at least 2 classes, got probs with {k} column(s)")
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} probability columns; pass one name per column")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), found {int(y_true.min())}..{int(y_true.max())}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contains NaN or infinite values; check the model output")


def _loss(y_true: np.ndarray, probs: np.ndarray, loss: float | None) -> float:
    if loss is not None:
        return float(loss)
    # Rows that drift from summing to 1 (float32 softmax) make sklearn warn; renormalise first.
    normalised = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    return float(log_loss(y_true, normalised, labels=np.arange(probs.shape[1])))


def _one_vs_rest(y_true, probs, present, names):
    """Per-class ROC AUC, average precision and downsampled curves (None where undefined)."""
    n, k = probs.shape
    aucs: list[float | None] = [None] * k
    aps: list[float | None] = [None] * k
    rocs: list[dict | None] = [None] * k
    prs: list[dict | None] = [None] * k
    # For K == 2 only the positive class is described (binary evaluation).
    classes = [1] if k == 2 else range(k)
    for c in classes:
        positives = y_true == c
        # AUC needs both positives and negatives; skip (None) rather than get NaN/warnings.
        if not present[c] or positives.all():
            continue
        rocs[c], prs[c] = _curves(positives, probs[:, c])
        aucs[c], aps[c] = rocs[c]["auc"], prs[c]["ap"]
    if k == 2:
        # Also fill class 0 so per-class rows are complete (AUC of class 0 equals AUC of class 1).
        aucs[0] = aucs[1]
        if aps[1] is not None and present[0]:
            aps[0] = float(average_precision_score(y_true == 0, probs[:, 0]))
    return aucs, aps, rocs, prs


def _curves(positives, score) -> tuple[dict, dict]:
    """The downsampled ROC and precision-recall curves of one binary problem, with their ROC AUC and
    average precision. Each curve is computed once: the AUC is scikit-learn's ``auc`` of this ROC curve,
    which is what ``roc_auc_score`` computes for a binary problem (the same number, without sorting the
    scores a second time)."""
    fpr, tpr, _ = roc_curve(positives, score)
    precision, recall, _ = precision_recall_curve(positives, score)
    area = float(auc(fpr, tpr))
    ap = float(average_precision_score(positives, score))
    return ({"fpr": _downsample(fpr), "tpr": _downsample(tpr), "auc": area},
            {"recall": _downsample(recall), "precision": _downsample(precision), "ap": ap})


def _multiclass_summary(aucs, aps, micro) -> dict:
    """Macro means of the per-class numbers, and the micro ones from :func:`_micro_curves` (``micro``)."""
    defined_auc = [a for a in aucs if a is not None]
    defined_ap = [a for a in aps if a is not None]
    auc_micro = micro[0]["auc"] if micro else None
    ap_micro = micro[1]["ap"] if micro else None
    auc_macro = float(np.mean(defined_auc)) if defined_auc else None
    ap_macro = float(np.mean(defined_ap)) if defined_ap else None
    return {
        "roc_auc": auc_macro,
        "roc_auc_macro": auc_macro,
        "roc_auc_micro": auc_micro,
        "average_precision": ap_macro,
        "average_precision_macro": ap_macro,
        "average_precision_micro": ap_micro,
    }


def _micro_curves(y_true, probs):
    """Micro averaging pools every (sample, class) pair, as scikit-learn's ``average="micro"`` does, so an
    absent class just adds negatives: the pooled curves and their AUC and average precision (None when
    every pair is positive, or none is)."""
    onehot = label_binarize(y_true, classes=np.arange(probs.shape[1]))
    if not 0 < onehot.sum() < onehot.size:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _curves(onehot.ravel(), probs.ravel())


def _downsample(values: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[float]:
    """At most ``max_points`` of the curve's own points (first and last kept), rounded."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) > max_points:
        keep = np.unique(np.linspace(0, len(values) - 1, max_points).round().astype(int))
        values = values[keep]
    return [round(float(v), 5) for v in values]


def _finite(value):
    """Plain Python types only; any NaN/inf that slipped through becomes None."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def label_average_precision(y_true, probs) -> list[float | None]:
    """scikit-learn's average precision of each label (a column of the (N, K) arrays); None for a label
    without a positive, where it is undefined. A multi-label mAP, of the test metrics and of an epoch's
    val_map (vislab.tasks.multilabel), is the mean of the others."""
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    present = y_true.sum(0) > 0
    return [float(average_precision_score(y_true[:, k], probs[:, k])) if present[k] else None
            for k in range(y_true.shape[1])]
