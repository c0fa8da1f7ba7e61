"""Single-label classification: the first task.

K-way softmax heads and single-logit (sigmoid, Keras ``Dense(1, 'sigmoid')``) binary
heads. Loss: cross-entropy with label smoothing. Epoch metric: accuracy (``acc``,
maximised). Evaluation keeps the (N, K) probabilities, which ROC/PR and calibration
need (K is small; per-pixel tasks stream a confusion matrix instead), and scores them
with scikit-learn (:mod:`vislab.tasks.classification_metrics`).

Example:
    >>> import torch
    >>> task = Classification(label_smoothing=0.0)
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]); y = torch.tensor([0, 0])
    >>> int(task.batch_stats(logits, y)["correct"]), task.mode("val_acc")
    (1, 'max')
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vislab.core.errors import ConfigError
from vislab.tasks.base import Evaluator, Metric, Task, number_text, percent_text, register_task, scalar_rows


# --------------------------------------------------------------------------- loss and scores
def classification_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy; a (N, 1) output is a binary sigmoid head (Keras ``Dense(1, 'sigmoid')``)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        soft = targets.float() * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0], soft, reduction=reduction)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(..., K) class probabilities along the last axis; a single logit becomes [1 - p, p]."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=-1)
    return logits.softmax(dim=-1)


def correct_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many predictions are right, as a tensor on the logits' device (no host read)."""
    if logits.shape[1] == 1:
        return ((logits[:, 0] > 0).long() == targets).sum()
    return (logits.argmax(1) == targets).sum()


@dataclass(frozen=True)
class ClassScore:
    """The scalar an explanation follows: ``sign * logits[..., index]``.

    A one-logit (sigmoid) head scores class 1 with +logit and class 0 with -logit;
    otherwise ``index`` is the class and ``sign`` is +1. Callable on one sample's
    logits (pytorch-grad-cam's target protocol) or on a batch (N, K) -> (N,).
    """

    index: int
    sign: float = 1.0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.sign * logits[..., self.index]

    @classmethod
    def for_class(cls, target: int, num_outputs: int) -> "ClassScore":
        if num_outputs == 1:
            return cls(0, 1.0 if target == 1 else -1.0)
        return cls(target)


def resolve_target(target, logits: torch.Tensor, class_names: list[str] | None) -> int:
    """``"top"`` / an int / a class name -> class index, checked against the model's classes.

    Raises:
        ValueError: the index is out of range or the name is not a class name.
    """
    num_classes = 2 if logits.shape[-1] == 1 else logits.shape[-1]
    if target is None or (isinstance(target, str) and target.lower() == "top"):
        if logits.shape[-1] == 1:
            return int(logits.reshape(-1)[0] > 0)
        return int(logits.reshape(-1, logits.shape[-1])[0].argmax())
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < num_classes:
            raise ConfigError(f"target class {target} is out of range: the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
        return int(target)
    if not class_names:
        raise ConfigError(f"target {target!r} is a name but the model has no class names; give an index "
                         f"0..{num_classes - 1} or 'top'")
    wanted = str(target).strip().lower()
    for index, name in enumerate(class_names):
        synonyms = [part.strip().lower() for part in str(name).split(",")]
        if wanted == str(name).lower() or wanted in synonyms:
            return index
    close = difflib.get_close_matches(str(target), [str(n) for n in class_names], n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(map(repr, map(str, class_names[:20]))) + (" ..." if len(class_names) > 20 else "")
    raise ConfigError(f"unknown target class {target!r}.{hint} Classes: {shown}; or give an index or 'top'")


# --------------------------------------------------------------------------- evaluation
@dataclass
class Predictions:
    labels: np.ndarray  # (N,) true class index, -1 where unknown
    probs: np.ndarray  # (N, K) float32
    sources: list[str]  # file path or "<split>#<index>"

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)


class ClassificationEvaluator(Evaluator):
    """Keeps the (N, K) probabilities: ROC/PR, calibration and the grids need every row."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.chunks: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.sources: list[str] = []
        self._predictions: Predictions | None = None

    def update(self, outputs, targets, sources) -> None:
        self.chunks.append(outputs.float().cpu())
        self.labels.append(torch.as_tensor(targets).cpu())
        self.sources += list(sources)
        self._predictions = None

    @property
    def predictions(self) -> Predictions:
        if self._predictions is None:
            k = len(self.class_names)
            probs = torch.cat(self.chunks).numpy() if self.chunks else np.zeros((0, k), np.float32)
            labels = torch.cat(self.labels).numpy() if self.labels else np.zeros(0, np.int64)
            self._predictions = Predictions(labels, probs, self.sources)
        return self._predictions

    def result(self) -> dict:
        return self.result_later().result()

    def result_later(self):
        from vislab.core.background import submit

        predictions = self.predictions
        probs = torch.from_numpy(predictions.probs).clamp_min(1e-12)
        labels = torch.from_numpy(predictions.labels)
        loss = float(F.nll_loss(probs.log(), labels))
        # scikit-learn's arithmetic, in a helper interpreter when the run has one (it imports scikit-learn there)
        return submit("vislab.tasks.classification_metrics:classification_metrics", predictions.labels,
                      predictions.probs, list(self.class_names), loss=loss)

    def save(self, run_dir: Path, suffix: str = "") -> None:
        p = self.predictions
        np.savez_compressed(Path(run_dir) / f"predictions{suffix}.npz", labels=p.labels, probs=p.probs,
                            sources=np.array(p.sources))


# --------------------------------------------------------------------------- the task
@register_task
class Classification(Task):
    """Single-label classification (``--task classification``, the default)."""

    name = "classification"
    headline = "accuracy"
    metrics = (Metric("acc", "max", "accuracy"),)
    cached_head = True  # --cache-features: a softmax head on cached backbone features
    # top-1 minus top-2 probability under which a reduced-precision answer is re-checked in fp32:
    # bf16 flips the top-1 of near-tied images (benchmarks/bench_inference.py)
    TIE_MARGIN = 0.02

    # the training set's largest / smallest class above which the end-of-run summary adds
    # balanced accuracy and macro-F1 (accuracy alone hides a neglected small class)
    IMBALANCE_RATIO = 3.0

    def __init__(self, label_smoothing: float = 0.0, loss: str = "auto", focal_gamma: float = 2.0,
                 class_weights: str = "none", **options):
        super().__init__(**options)
        self.label_smoothing = label_smoothing
        if loss not in ("auto", "focal"):
            raise ConfigError(f"--loss {loss} is a multi-label loss; single-label classification takes auto "
                              "(cross-entropy) or focal")
        self.loss_kind, self.focal_gamma = loss, focal_gamma
        self.class_weights_spec = class_weights or "none"
        self.class_weights: torch.Tensor | None = None  # set by prepare() from the training counts

    def prepare(self, dataset, console=None):
        from vislab.tasks.losses import inverse_frequency_weights, resolve_class_weights

        if self.class_weights_spec == "none":
            return
        self.class_weights = resolve_class_weights(
            self.class_weights_spec, lambda: inverse_frequency_weights(dataset.counts()["train"]),
            dataset.class_names, "class weights", console)

    def loss(self, outputs, targets, reduction="mean"):
        # label smoothing, class weights and focusing are training devices: evaluation sums
        # (reduction="sum") are the plain cross-entropy, comparable across runs
        smoothing = self.label_smoothing if reduction == "mean" else 0.0
        if reduction == "mean" and (self.loss_kind == "focal" or self.class_weights is not None):
            from vislab.tasks.losses import softmax_focal_loss

            if outputs.shape[1] == 1:
                raise ConfigError("--loss focal / --class-weights need a softmax head; drop binary=true")
            if self.loss_kind == "focal":
                return softmax_focal_loss(outputs, targets, self.focal_gamma, self.class_weights)
            return F.cross_entropy(outputs.float(), targets, weight=self.class_weights.to(outputs.device),
                                   label_smoothing=smoothing)
        return classification_loss(outputs, targets, smoothing, reduction=reduction)

    def soft_loss(self, outputs, soft_targets):
        # timm's Mixup already smoothed the targets: plain soft cross-entropy (timm's SoftTargetCrossEntropy)
        from timm.loss import SoftTargetCrossEntropy

        return SoftTargetCrossEntropy()(outputs.float(), soft_targets.float())

    def imbalance_lines(self, metrics, train_counts):
        counts = [c for c in train_counts if c > 0]
        if not metrics or len(counts) < 2 or max(counts) / min(counts) < self.IMBALANCE_RATIO:
            return []
        return [f"the training set is imbalanced (largest / smallest class {max(counts) / min(counts):.1f}): "
                f"{metrics.get('split', 'test')} balanced accuracy: {metrics.get('balanced_accuracy', float('nan')):.4f}  "
                f"{metrics.get('split', 'test')} macro-F1: {(metrics.get('macro') or {}).get('f1', float('nan')):.4f}"]

    def batch_stats(self, outputs, targets):
        return {"correct": correct_count(outputs, targets)}

    def epoch_metrics(self, sums, count):
        return {"acc": float(sums["correct"]) / max(float(count), 1)}

    def postprocess(self, outputs):
        return probabilities(outputs)

    def describe(self, output, class_names, top_k=5):
        k = min(top_k, len(class_names))
        top = output.topk(k)
        return {"top": [{"class": class_names[int(c)], "index": int(c), "probability": float(p)}
                        for p, c in zip(top.values, top.indices)]}

    def uncertain(self, outputs):
        if outputs.shape[1] < 2:
            return None
        top2 = outputs.topk(2, dim=1).values
        return (top2[:, 0] - top2[:, 1] < self.TIE_MARGIN).nonzero().flatten()

    def explain_target(self, outputs, target, class_names):
        index = resolve_target(target, outputs, class_names)
        return index, float(probabilities(outputs)[0, index]), ClassScore.for_class(index, outputs.shape[-1])

    def evaluator(self, class_names):
        return ClassificationEvaluator(class_names)

    def write_figures(self, evaluator, metrics, class_names, images_for, run_dir, name=""):
        from vislab.tasks.classification_figures import write_evaluation_figures

        return write_evaluation_figures(evaluator.predictions, class_names, metrics, images_for, run_dir, name=name)

    def explanation_samples(self, evaluator, seed, count=8):
        """A seeded sample of test images and the most confidently wrong ones."""
        p = evaluator.predictions
        names = evaluator.class_names
        if not len(p.labels):
            return []
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(p.labels), size=min(count, len(p.labels)), replace=False)
        wrong = np.flatnonzero(p.predicted != p.labels)
        worst = wrong[np.argsort(-p.probs[wrong].max(1))][:count]
        return [(indices, filename, [f"true: {names[p.labels[i]]}" for i in indices])
                for indices, filename in ((sample, "gradcam_samples.png"), (worst, "gradcam_most_wrong.png"))
                if len(indices)]

    def summary_cards(self, metrics):
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.2f} %"

        def num(v):
            return "n/a" if v is None else f"{v:.4g}"

        cards = [("Accuracy", pct(metrics.get("accuracy")))]
        if metrics.get("top_k_accuracy") is not None:
            cards.append((f"Top-{metrics.get('top_k')} accuracy", pct(metrics["top_k_accuracy"])))
        cards += [("Loss", num(metrics.get("loss"))), ("Macro F1", num((metrics.get("macro") or {}).get("f1"))),
                  ("ROC AUC", num(metrics.get("roc_auc"))),
                  ("ECE", num((metrics.get("calibration") or {}).get("ece"))),
                  ("Test images", str(metrics.get("num_samples", "n/a")))]
        return cards

    def report_metrics(self, metrics):
        return classification_report_rows(metrics)

    def report_tables(self, report, metrics):
        return per_class_table(report, metrics)

    def report_sections(self):
        return [("figures", "Evaluation figures", _evaluation_figures),
                ("misclassified", "Misclassified examples", _misclassified)]

    def end_of_run_line(self, metrics):
        """``test accuracy: 0.9500  test loss: 0.1234``, and a note naming the model's classes without an image
        in the data (``vislab evaluate RUN --data`` on a folder of some of them), whose numbers are null.

        Example:
            >>> rows = [{"class": name, "support": n} for name, n in (("astro", 0), ("cat", 5), ("coffee", 5))]
            >>> print(Classification().end_of_run_line({"accuracy": 1.0, "loss": 0.05, "per_class": rows}))
            test accuracy: 1.0000  test loss: 0.0500  (1 of the model's 3 classes has no image here: astro)
        """
        split = metrics.get("split", "test")  # every printed number names its split
        line = f"{split} accuracy: {metrics['accuracy']:.4f}  {split} loss: {metrics['loss']:.4f}"
        per_class = metrics.get("per_class") or []
        missing = [str(row.get("class")) for row in per_class if row.get("support") == 0]
        if missing:
            verb = "has" if len(missing) == 1 else "have"
            line += f"  ({len(missing)} of the model's {len(per_class)} classes {verb} no image here: {', '.join(missing)})"
        return line


# metrics.json keys shown by name in the report's metrics table (the rest: every other top-level scalar)
_AREA_KEYS = ("roc_auc", "roc_auc_micro", "roc_auc_macro", "average_precision", "average_precision_micro",
              "average_precision_macro")
_SHOWN_KEYS = {*_AREA_KEYS, "accuracy", "loss", "task", "notes", "per_class", "class_names", "calibration", "curves",
               "top_k", "num_classes", "positive_class", "macro", "weighted", "binary", "num_samples",
               "top_k_accuracy"}


def classification_report_rows(metrics: dict) -> list[tuple[str, object]]:
    """The report's metrics table for (single- or multi-label) classification: accuracy, top-k, the
    averaged precision / recall / F1, the areas under ROC and PR, the calibration error, the rest."""
    items = [
        ("task", metrics.get("task")),
        ("test images", metrics.get("num_samples")),
        *([("accuracy", percent_text(metrics["accuracy"]))] if "accuracy" in metrics else []),
        ("loss", number_text(metrics.get("loss"))),
    ]
    if metrics.get("top_k_accuracy") is not None:
        items.append((f"top-{metrics.get('top_k')} accuracy", percent_text(metrics.get("top_k_accuracy"))))
    for average in ("macro", "weighted", "binary"):
        values = metrics.get(average)
        if isinstance(values, dict):
            label = f"{average} (positive class: {metrics.get('positive_class')})" if average == "binary" else average
            items.append((f"{label} precision / recall / F1",
                          " / ".join(number_text(values.get(k)) for k in ("precision", "recall", "f1"))))
    for key in _AREA_KEYS:
        if key in metrics:
            items.append((key.replace("_", " "), number_text(metrics[key])))
    calibration = metrics.get("calibration") or {}
    if "ece" in calibration:
        items.append((f"expected calibration error ({calibration.get('n_bins', '?')} bins)",
                      number_text(calibration["ece"])))
    return items + scalar_rows(metrics, _SHOWN_KEYS | {k for k, _ in items})


def per_class_table(report, metrics: dict) -> list[str]:
    """The per-class precision / recall / F1 / support / ROC AUC / AP table, when metrics.json has one."""
    per_class = metrics.get("per_class") or []
    if not per_class:
        return []
    columns = ["class", "precision", "recall", "f1", "support", "predicted", "roc_auc", "average_precision"]
    rows = [[r.get("class")] + [number_text(r.get(c)) if isinstance(r.get(c), float) or r.get(c) is None
                                else r.get(c) for c in columns[1:]] for r in per_class]
    return ["<h3>Per class</h3>" + report.table([c.replace("_", " ") for c in columns], rows, formatted=True)]


EVALUATION_FIGURES = [
    "confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_accuracy.png", "roc.png", "pr.png",
    "reliability.png", "predictions_sample.png",
]
MISCLASSIFIED_FIGURES = ["predictions_confident_wrong.png", "predictions_unsure_right.png"]
MAX_TABLE_ROWS = 50  # a table of 10k misclassified rows would drown the page; the CSV has them all


def _evaluation_figures(report) -> str:
    return "\n".join(report.figure(report.plots / n) for n in EVALUATION_FIGURES if (report.plots / n).is_file())


def _misclassified(report) -> str:
    parts = [report.figure(report.plots / n) for n in MISCLASSIFIED_FIGURES if (report.plots / n).is_file()]
    path = report.run_dir / "misclassified.csv"
    if path.is_file():
        header, rows = report.read_csv(path)
        if header:
            shown = f"the most confident {MAX_TABLE_ROWS}" if len(rows) > MAX_TABLE_ROWS else "all"
            parts.append(f"<p>{len(rows)} misclassified test images (all in <code>{html.escape(path.name)}</code>); "
                         f"{shown} shown.</p>"
                         + report.table(header, rows[:MAX_TABLE_ROWS], text_columns={0, 1, 2}))
    return "\n".join(parts)
