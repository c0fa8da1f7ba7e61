"""Multi-label classification: several labels per image, one sigmoid per label (``--task multilabel``).

* Data: a CSV of file + labels (:mod:`vislab.data.multilabel`); ``split.labels`` is (N, K) 0/1.
* Loss: BCE with logits, ``pos_weight`` from ``--class-weights auto`` (negatives / positives per
  label); ``--loss focal`` (torchvision's ``sigmoid_focal_loss``) or ``--loss asymmetric`` (timm's
  ASL) instead (:mod:`vislab.tasks.losses`).
* Epoch metrics: ``map`` (maximised; early stopping on ``val_map``) and micro-F1 at 0.5 (``f1``).
  ``val_map`` is the evaluation's mAP exactly (scikit-learn's AP, per label:
  :func:`vislab.tasks.classification_metrics.label_average_precision`):
  a validation pass (run under ``torch.inference_mode``) keeps its (N, K) probabilities and targets
  and scores them once at the epoch's end, gathered from every DDP rank (10,000 images x 20 labels:
  about 0.1 s). ``train_map`` stays cheap: per-label histograms of :data:`HISTOGRAM_BINS` score bins,
  summed on the device, where scores that share a bin count as tied, so it is only a rough guide
  (with saturated probabilities, e.g. 0.996 and 0.999 in the top bin, it can be far below the
  exact AP).
* Thresholds: one per label, tuned on the validation split to maximise ``--threshold-metric``
  (F1 by default) and stored in model.json (``thresholds``); evaluate, predict and serve use
  them; ``--threshold 0.5`` (train, evaluate, predict) uses one threshold for every label.
* Test metrics (scikit-learn): ``map`` (macro average precision over the labels with a positive
  test image) at the top level, micro/macro F1, per-label precision/recall/F1/AP/support,
  hamming loss, subset (exact-match) accuracy and label ranking average precision.

Example: label 0's positive scores 0.9991 and its negative 0.9959, in the same top bin
    >>> import torch
    >>> task = MultiLabel()
    >>> logits = torch.tensor([[7.0, -3.0], [5.5, 3.0]]); y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> task.epoch_metrics(task.batch_stats(logits, y), 2)["map"]  # a training pass: the histograms' tie
    0.75
    >>> with torch.inference_mode():  # a validation pass: scikit-learn's AP, as evaluate's
    ...     exact = task.epoch_metrics(task.batch_stats(logits, y), 2)["map"]
    >>> exact, task.mode("val_map")
    (1.0, 'max')
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vislab.core.background import compute
from vislab.core.errors import ConfigError
from vislab.core.files import read_json
from vislab.tasks.base import Evaluator, Metric, Task, register_task

HISTOGRAM_BINS = 200  # score bins of the training pass's mAP: per label, positives' and negatives' counts
THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.02), 2)  # candidate thresholds, also the curves' x axis
DEFAULT_THRESHOLD = 0.5  # where no threshold was tuned (no val split, or a label without val positives)


# --------------------------------------------------------------------------- scores (scikit-learn)
def threshold_scores(y_true: np.ndarray, probs: np.ndarray, metric: str = "f1",
                     grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """(len(grid), K) per-label ``metric`` (f1, f2, mcc, jaccard; scikit-learn's) at each threshold."""
    from sklearn.metrics import f1_score, fbeta_score, jaccard_score, matthews_corrcoef

    y_true = np.asarray(y_true).astype(np.int64)
    out = np.zeros((len(grid), y_true.shape[1]))
    for i, t in enumerate(grid):
        pred = (probs >= t).astype(np.int64)
        if metric == "f1":
            out[i] = f1_score(y_true, pred, average=None, zero_division=0)
        elif metric == "f2":
            out[i] = fbeta_score(y_true, pred, beta=2, average=None, zero_division=0)
        elif metric == "jaccard":
            out[i] = jaccard_score(y_true, pred, average=None, zero_division=0)
        elif metric == "mcc":
            out[i] = [matthews_corrcoef(y_true[:, k], pred[:, k]) for k in range(y_true.shape[1])]
        else:
            raise ConfigError(f"threshold metric {metric!r}: choose f1, f2, mcc or jaccard")
    return out


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, metric: str = "f1") -> tuple[np.ndarray, np.ndarray]:
    """Per-label thresholds maximising ``metric`` on (y_true, probs); labels without a positive keep 0.5.

    Returns (thresholds (K,), scores (len(THRESHOLD_GRID), K)). Ties go to the threshold nearest 0.5.
    """
    scores = threshold_scores(y_true, probs, metric)
    thresholds = np.full(y_true.shape[1], DEFAULT_THRESHOLD)
    distance = np.abs(THRESHOLD_GRID - DEFAULT_THRESHOLD)
    for k in range(y_true.shape[1]):
        if y_true[:, k].sum() == 0:
            continue
        best = scores[:, k].max()
        candidates = np.flatnonzero(np.isclose(scores[:, k], best))
        thresholds[k] = float(THRESHOLD_GRID[candidates[np.argmin(distance[candidates])]])
    return thresholds, scores


def multilabel_metrics(y_true, probs, class_names: Sequence[str], thresholds) -> dict:
    """The multi-label test metrics, every number from scikit-learn; ``map`` is the headline."""
    from vislab.tasks.classification_metrics import label_average_precision
    from sklearn.metrics import (
        accuracy_score, f1_score, hamming_loss, label_ranking_average_precision_score,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    names = [str(n) for n in class_names]
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(names),))
    pred = (probs >= thresholds).astype(np.int64)
    present = y_true.sum(0) > 0
    notes = []
    ap = label_average_precision(y_true, probs)  # the same numbers as an epoch's val_map
    absent = [n for n, p in zip(names, present) if not p]
    if absent:
        notes.append(f"no positive test image for {absent}: their AP is null and mAP leaves them out")
    defined = [a for a in ap if a is not None]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, pred, average=None, zero_division=0)
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = float(F.binary_cross_entropy(torch.from_numpy(clipped), torch.from_numpy(y_true.astype(np.float64))))
    result = {
        "task": "multilabel",
        "map": float(np.mean(defined)) if defined else None,
        "num_samples": int(len(y_true)),
        "num_classes": len(names),
        "class_names": names,
        "loss": loss,
        "micro": dict(zip(("precision", "recall", "f1"), (float(v) for v in precision_recall_fscore_support(
            y_true, pred, average="micro", zero_division=0)[:3]))),
        "macro": dict(zip(("precision", "recall", "f1"), (float(v) for v in precision_recall_fscore_support(
            y_true, pred, average="macro", zero_division=0)[:3]))),
        "micro_f1": float(f1_score(y_true, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0)),
        "hamming_loss": float(hamming_loss(y_true, pred)),
        "subset_accuracy": float(accuracy_score(y_true, pred)),
        "label_ranking_average_precision": float(label_ranking_average_precision_score(y_true, probs))
        if len(y_true) else None,
        "thresholds": {n: float(t) for n, t in zip(names, thresholds)},
        "per_class": [{"class": names[k], "index": k, "precision": float(precision[k]), "recall": float(recall[k]),
                       "f1": float(f1[k]), "average_precision": ap[k], "support": int(support[k]),
                       "predicted": int(pred[:, k].sum()), "threshold": float(thresholds[k])}
                      for k in range(len(names))],
        "images_without_labels": int((y_true.sum(1) == 0).sum()),
        "notes": notes,
    }
    return result


def histogram_ap(positive: torch.Tensor, negative: torch.Tensor) -> list[float | None]:
    """Per-label AP from (K, B) score histograms of positives and negatives (bin B-1 = highest scores):
    precision at each bin edge, weighted by the recall it adds, as scikit-learn's step-wise AP.

    The scores within a bin count as one tied score, so this is scikit-learn's AP only where no bin holds
    a positive and a negative of different scores; otherwise it is lower, by any amount (a positive at
    0.999 above a negative at 0.996, alone in the top one of 200 bins: 0.5 against 1.0). Hence only the
    training pass's ``train_map`` uses it."""
    positive, negative = torch.as_tensor(positive).double(), torch.as_tensor(negative).double()
    tp = positive.flip(1).cumsum(1)
    fp = negative.flip(1).cumsum(1)
    total = positive.sum(1, keepdim=True)
    precision = tp / (tp + fp).clamp_min(1e-12)
    gained = positive.flip(1) / total.clamp_min(1e-12)
    ap = (precision * gained).sum(1)
    return [float(a) if float(n) > 0 else None for a, n in zip(ap, total[:, 0])]


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the job's size under torchrun (DDP); (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --------------------------------------------------------------------------- evaluation
class MultiLabelEvaluator(Evaluator):
    """Keeps the (N, K) probabilities and targets (K labels: small) for scikit-learn and the figures."""

    def __init__(self, class_names: Sequence[str], thresholds):
        self.class_names = list(class_names)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.chunks: list[torch.Tensor] = []
        self.target_chunks: list[torch.Tensor] = []
        self.sources: list[str] = []

    def update(self, outputs, targets, sources) -> None:
        self.chunks.append(outputs.float().cpu())
        self.target_chunks.append(torch.as_tensor(targets).float().cpu())
        self.sources += list(sources)

    @property
    def probs(self) -> np.ndarray:
        k = len(self.class_names)
        return torch.cat(self.chunks).numpy() if self.chunks else np.zeros((0, k), np.float32)

    @property
    def targets(self) -> np.ndarray:
        k = len(self.class_names)
        return torch.cat(self.target_chunks).numpy() if self.target_chunks else np.zeros((0, k), np.float32)

    @property
    def predicted(self) -> np.ndarray:
        return (self.probs >= self.thresholds).astype(np.int64)

    def missed(self) -> np.ndarray:
        """Per image: wrong labels (missed positives + false positives), the worst-images order."""
        return np.abs(self.predicted - self.targets.astype(np.int64)).sum(1)

    def result(self) -> dict:
        metrics = multilabel_metrics(self.targets, self.probs, self.class_names, self.thresholds)
        y = self.targets.astype(np.int64)
        metrics["curves"] = {"threshold_grid": THRESHOLD_GRID.tolist(),
                             "f1": threshold_scores(y, self.probs, "f1").T.tolist(),
                             "cooccurrence": (y.T @ y).tolist()}
        return metrics

    def save(self, run_dir: Path, suffix: str = "") -> None:
        np.savez_compressed(Path(run_dir) / f"predictions{suffix}.npz", labels=self.targets, probs=self.probs,
                            thresholds=self.thresholds, sources=np.array(self.sources))
        # every image with a wrong label, most wrong labels first
        missed, probs, targets, pred = self.missed(), self.probs, self.targets, self.predicted
        with open(Path(run_dir) / f"mislabelled{suffix}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["source", "wrong_labels", "true", "predicted", "missed", "extra"])
            for i in np.argsort(-missed, kind="stable"):
                if missed[i] == 0:
                    break
                true = {self.class_names[k] for k in np.flatnonzero(targets[i] > 0)}
                got = {self.class_names[k] for k in np.flatnonzero(pred[i])}
                writer.writerow([self.sources[i], int(missed[i]), " ".join(sorted(true)), " ".join(sorted(got)),
                                 " ".join(sorted(true - got)), " ".join(sorted(got - true))])


class LabelSets:
    """How the data-set audit reads (N, K) 0/1 label sets: a class counts the images carrying it, and the
    per-image studies (duplicates, colours, samples) use each image's first label (-1: none)."""

    def counts(self, labels, k: int) -> np.ndarray:
        return (np.asarray(labels) > 0).sum(0).astype(np.int64)[:k]

    def per_image(self, labels) -> np.ndarray:
        positive = np.asarray(labels) > 0
        return np.where(positive.any(1), positive.argmax(1), -1)

    def balance_extra(self, splits: dict) -> dict:
        return {"images_without_labels": {name: int(((np.asarray(split.labels) > 0).sum(1) == 0).sum())
                                          for name, split in splits.items()}}


# --------------------------------------------------------------------------- the task
@register_task
class MultiLabel(Task):
    """Multi-label classification (``--task multilabel``)."""

    name = "multilabel"
    headline = "map"
    metrics = (Metric("map", "max", "mAP"), Metric("f1", "max", "micro-F1 at 0.5"))

    def __init__(self, loss: str = "auto", focal_gamma: float = 2.0, class_weights: str = "none",
                 threshold: float | None = None, threshold_metric: str = "f1", **options):
        options.pop("label_smoothing", None)  # a single-label regulariser
        super().__init__(**options)
        self.loss_kind, self.focal_gamma = loss, focal_gamma
        self.class_weights_spec = class_weights or "none"
        self.pos_weight: torch.Tensor | None = None
        self.fixed_threshold = threshold
        self.threshold_metric = threshold_metric
        self.thresholds: np.ndarray | None = None  # per label, from model.json (restore) or tuning
        self._scored: list[torch.Tensor] = []  # the validation pass's (B, 2K) [probabilities | targets]

    # ---- data and targets
    def load_dataset(self, data_cfg, seed: int = 0, scoring: bool = False):
        from vislab.data.multilabel import load_multilabel_dataset

        return load_multilabel_dataset(data_cfg, seed=seed, scoring=scoring)

    def renumber_labels(self, labels, index, num_classes):
        """The data's label columns moved to the model's (the images' label sets, by name)."""
        sets = torch.zeros((labels.shape[0], num_classes), dtype=labels.dtype)
        sets[:, index] = labels
        return sets

    def audit(self, dataset, out_dir, seed: int = 0, figures: bool = True, max_images: int = 2000,
              near_duplicates: bool | None = None, label_issues: dict | None = None) -> dict:
        """The audit with every label of an image counted, and the images without any label."""
        from vislab.data.audit import audit_dataset

        return audit_dataset(dataset, out_dir, seed=seed, figures=figures, max_images=max_images,
                             near_duplicates=near_duplicates, labels=LabelSets(), label_issues=label_issues)

    def targets(self, labels):
        return labels.float()

    def stratify_key(self, labels):
        return None  # iterative stratification works on the whole label matrix (vislab.data.stratify)

    def balanced_weights(self, labels):
        """Each image by its rarest label (weighting by one label says nothing of the others)."""
        from vislab.data.samplers import rarest_label_weights

        return rarest_label_weights(labels)

    def prepare(self, dataset, console=None):
        from vislab.tasks.losses import positive_weights, resolve_class_weights

        if self.class_weights_spec == "none":
            return
        train = dataset.splits["train"].labels
        self.pos_weight = resolve_class_weights(
            self.class_weights_spec, lambda: positive_weights((train > 0).sum(0).tolist(), len(train)),
            dataset.class_names, "positive-label weights", console)

    # ---- loss and running statistics
    def loss(self, outputs, targets, reduction="mean"):
        from vislab.tasks.losses import multilabel_loss

        if reduction == "mean":  # training: the chosen loss and weights
            return multilabel_loss(outputs, targets, self.loss_kind, self.focal_gamma, self.pos_weight, reduction)
        return multilabel_loss(outputs, targets, "auto", reduction=reduction)  # plain BCE: comparable val_loss

    def batch_stats(self, outputs, targets):
        """The micro-F1 counts, and for the mAP: under ``torch.inference_mode`` (the validation pass,
        ``Trainer.evaluate_batches``) the batch's probabilities and targets, kept on the task until
        :meth:`epoch_metrics` (``scored``: this rank's row count, one entry per DDP rank); otherwise
        (the training pass, beside the optimiser's steps) per-label score histograms."""
        probs = torch.sigmoid(outputs.float())  # as postprocess: the probabilities evaluate scores
        k = probs.shape[1]
        positive = targets > 0.5
        pred = probs >= 0.5
        stats = {"tp": (pred & positive).sum(), "fp": (pred & ~positive).sum(), "fn": (~pred & positive).sum()}
        if torch.is_inference_mode_enabled():
            rank, world = _rank_and_world()
            self._scored.append(torch.cat([probs, positive.float()], 1))
            scored = torch.zeros(world, dtype=torch.float64, device=probs.device)
            scored[rank] = len(probs)
            stats["scored"] = scored
            return stats
        bins = (probs * HISTOGRAM_BINS).long().clamp_(0, HISTOGRAM_BINS - 1) + \
            torch.arange(k, device=probs.device) * HISTOGRAM_BINS
        stats["pos_hist"] = torch.bincount(bins[positive], minlength=k * HISTOGRAM_BINS).view(k, HISTOGRAM_BINS)
        stats["neg_hist"] = torch.bincount(bins[~positive], minlength=k * HISTOGRAM_BINS).view(k, HISTOGRAM_BINS)
        return stats

    def epoch_metrics(self, sums, count):
        """``map``: the evaluation's mAP (``classification_metrics.label_average_precision``) of the kept probabilities where
        the sums come from a validation pass (under DDP every rank must call this: it gathers them), else
        the histograms' approximation (:func:`histogram_ap`); 0.0 where no label has a positive."""
        def scalar(v):
            return float(torch.as_tensor(v).sum())

        if "scored" in sums:
            probs, positive = self._scored_rows(sums["scored"])
            # scikit-learn's arithmetic: in a run's helper, which has it imported (vislab.core.background)
            ap = compute("vislab.tasks.classification_metrics:label_average_precision", positive, probs)
        else:
            ap = histogram_ap(sums["pos_hist"], sums["neg_hist"])
        ap = [a for a in ap if a is not None]
        tp, fp, fn = scalar(sums["tp"]), scalar(sums["fp"]), scalar(sums["fn"])
        return {"map": float(np.mean(ap)) if ap else 0.0, "f1": 2 * tp / max(2 * tp + fp + fn, 1)}

    def _scored_rows(self, scored) -> tuple[np.ndarray, np.ndarray]:
        """The (N, K) probabilities and 0/1 targets the ``scored`` counts name (per rank: this rank's last
        rows kept by batch_stats), from every rank; older kept rows are dropped."""
        counts = [int(round(float(c))) for c in torch.as_tensor(scored).reshape(-1)]
        rank, world = _rank_and_world()
        if len(counts) != world:
            raise RuntimeError(f"multi-label epoch metrics: {len(counts)} ranks' row counts in a job of {world}")
        kept = torch.cat([c.cpu() for c in self._scored]) if self._scored else torch.zeros((0, 0))
        mine = counts[rank]
        if len(kept) < mine:
            raise RuntimeError(f"multi-label epoch metrics: {mine} validation rows summed but {len(kept)} kept")
        kept = kept[len(kept) - mine:]
        self._scored = [kept]  # the next validation pass appends after them and keeps its own
        if world > 1:
            import torch.distributed as dist

            gathered: list = [None] * world
            dist.all_gather_object(gathered, kept)
            kept = torch.cat([g for g in gathered if len(g)]) if sum(counts) else kept
        if len(kept) != sum(counts):
            raise RuntimeError(f"multi-label epoch metrics: {sum(counts)} validation rows summed, {len(kept)} gathered")
        k = kept.shape[1] // 2
        return kept[:, :k].double().numpy(), kept[:, k:].numpy().astype(np.int64)

    # ---- thresholds
    def model_extra(self, dataset, predict_split=None, console=None):
        k = len(dataset.class_names)
        val = dataset.splits.get("val")
        if self.fixed_threshold is not None:
            self.thresholds = np.full(k, float(self.fixed_threshold))
            source = f"--threshold {self.fixed_threshold}"
        elif val is None or len(val) == 0:
            self.thresholds = np.full(k, DEFAULT_THRESHOLD)
            source = "no validation split: 0.5 for every label"
        else:
            probs, targets = predict_split(val)
            self.thresholds, _ = tune_thresholds(targets.numpy(), probs.numpy(), self.threshold_metric)
            source = f"tuned on the {len(val)} validation images to maximise {self.threshold_metric}"
        if console is not None:
            shown = ", ".join(f"{n}: {t:.2f}" for n, t in zip(dataset.class_names, self.thresholds))
            console.print(f"thresholds ({source}): {shown}")
        return {"thresholds": [float(t) for t in self.thresholds], "threshold_source": source}

    def restore(self, spec):
        if spec.get("thresholds") is not None:
            self.thresholds = np.asarray(spec["thresholds"], dtype=np.float64)

    def set_options(self, threshold: float | None = None, **options) -> None:
        """``--threshold T`` at evaluate/predict: one threshold for every label instead of the stored ones."""
        super().set_options(**options)
        if threshold is None:
            return
        if not 0 < float(threshold) < 1:
            raise ConfigError(f"--threshold {threshold} must be a probability in (0, 1), e.g. 0.5")
        self.fixed_threshold = float(threshold)
        self.thresholds = None

    def current_thresholds(self, k: int) -> np.ndarray:
        if self.fixed_threshold is not None:
            return np.full(k, float(self.fixed_threshold))
        if self.thresholds is not None:
            return self.thresholds
        return np.full(k, DEFAULT_THRESHOLD)

    # ---- predictions
    def postprocess(self, outputs):
        return torch.sigmoid(outputs.float())

    def describe(self, output, class_names, top_k=5):
        thresholds = self.current_thresholds(len(class_names))
        probs = output.float().reshape(-1)
        labels = [{"class": class_names[i], "index": i, "probability": float(probs[i]),
                   "threshold": float(thresholds[i])} for i in range(len(class_names)) if probs[i] >= thresholds[i]]
        labels.sort(key=lambda entry: -entry["probability"])
        top = probs.topk(min(top_k, len(class_names)))
        return {"labels": labels,
                "top": [{"class": class_names[int(c)], "index": int(c), "probability": float(p)}
                        for p, c in zip(top.values, top.indices)]}

    def explain_target(self, outputs, target, class_names):
        from vislab.tasks.classification import ClassScore, resolve_target

        index = resolve_target(target, outputs, class_names)
        return index, float(torch.sigmoid(outputs.float())[0, index]), ClassScore(index)

    # ---- evaluation, figures, report
    def evaluator(self, class_names):
        return MultiLabelEvaluator(class_names, self.current_thresholds(len(class_names)))

    def write_figures(self, evaluator, metrics, class_names, images_for, run_dir, name=""):
        from vislab.viz.multilabel import plot_cooccurrence, plot_label_sets, plot_per_class_ap, plot_threshold_curves

        plots = Path(run_dir) / "plots" / name
        plots.mkdir(parents=True, exist_ok=True)
        names = [str(n) for n in class_names]
        written = [plot_per_class_ap(names, [c["average_precision"] for c in metrics["per_class"]],
                                     plots / "per_class_ap.png", metrics.get("map"))]
        curves = metrics.get("curves") or {}
        if curves.get("cooccurrence") is not None:
            written.append(plot_cooccurrence(names, curves["cooccurrence"], plots / "label_cooccurrence.png",
                                             "Label co-occurrence (test images carrying both)"))
        if curves.get("f1") is not None:
            written.append(plot_threshold_curves(curves["threshold_grid"], dict(zip(names, curves["f1"])),
                                                 dict(zip(names, evaluator.thresholds.tolist())),
                                                 plots / "threshold_f1.png"))
        n = len(evaluator.sources)
        if n:
            targets, pred = evaluator.targets, evaluator.predicted

            def sets(rows, i):
                return [names[k] for k in np.flatnonzero(rows[i] > 0)]

            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(n, size=min(18, n), replace=False))
            missed = evaluator.missed()
            worst = [i for i in np.argsort(-missed, kind="stable")[:18] if missed[i] > 0]
            for indices, filename, title in ((sample, "predictions_sample.png", "Sample predictions"),
                                             (worst, "predictions_most_missed.png", "Most wrong labels")):
                if len(indices):
                    written.append(plot_label_sets(images_for(indices), [sets(targets, i) for i in indices],
                                                   [sets(pred, i) for i in indices], plots / filename, title))
        return written

    def explanation_samples(self, evaluator, seed, count=8):
        n = len(evaluator.sources)
        if not n:
            return []
        missed = evaluator.missed()
        worst = np.array([i for i in np.argsort(-missed, kind="stable")[:count] if missed[i] > 0], dtype=np.int64)
        names = evaluator.class_names
        titles = [f"true: {' '.join(names[k] for k in np.flatnonzero(evaluator.targets[i] > 0)) or '(none)'}"
                  for i in worst]
        return [(worst, "gradcam_most_missed.png", titles)] if len(worst) else []

    def summary_cards(self, metrics):
        def num(v):
            return "n/a" if v is None else f"{v:.4g}"

        return [("mAP", num(metrics.get("map"))), ("Micro F1", num(metrics.get("micro_f1"))),
                ("Macro F1", num(metrics.get("macro_f1"))), ("Subset accuracy", num(metrics.get("subset_accuracy"))),
                ("Hamming loss", num(metrics.get("hamming_loss"))), ("Loss", num(metrics.get("loss"))),
                ("Test images", str(metrics.get("num_samples", "n/a")))]

    def report_metrics(self, metrics):
        from vislab.tasks.classification import classification_report_rows

        return classification_report_rows(metrics)

    def report_tables(self, report, metrics):
        from vislab.tasks.classification import per_class_table

        return per_class_table(report, metrics)

    def report_sections(self):
        return [("figures", "Multi-label evaluation", _figures_section),
                ("per-label", "Per-label scores", _per_label_section),
                ("mislabelled", "Images with the most wrong labels", _mislabelled_section)]

    def end_of_run_line(self, metrics):
        split = metrics.get("split", "test")
        threshold = f" (threshold {metrics['threshold']:g} for every label)" if metrics.get("threshold") else ""
        return (f"{split} mAP: {metrics['map']:.4f}{threshold}  micro-F1: {metrics['micro_f1']:.4f}  macro-F1: "
                f"{metrics['macro_f1']:.4f}  subset accuracy: {metrics['subset_accuracy']:.4f}")


FIGURES = ["per_class_ap.png", "threshold_f1.png", "label_cooccurrence.png", "predictions_sample.png",
           "predictions_most_missed.png"]


def _figures_section(report) -> str:
    return "\n".join(report.figure(report.plots / n) for n in FIGURES if (report.plots / n).is_file())


def _per_label_section(report) -> str:
    import json

    path = report.run_dir / "metrics.json"
    if not path.is_file():
        return ""
    rows = [[html.escape(c["class"]), str(c["support"]), f"{c['threshold']:.2f}", f"{c['precision']:.3f}",
             f"{c['recall']:.3f}", f"{c['f1']:.3f}",
             "n/a" if c["average_precision"] is None else f"{c['average_precision']:.3f}"]
            for c in read_json(path, "a metrics file (JSON)", "run `vislab evaluate` again").get("per_class", [])]
    return report.table(["label", "support", "threshold", "precision", "recall", "F1", "AP"], rows)


def _mislabelled_section(report) -> str:
    path = report.run_dir / "mislabelled.csv"
    if not path.is_file():
        return ""
    header, rows = report.read_csv(path)
    return (f"<p>{len(rows)} test images with at least one wrong label (all in <code>mislabelled.csv</code>); "
            f"the first 50 shown.</p>" + report.table(header, rows[:50], text_columns={0, 2, 3, 4, 5}))
