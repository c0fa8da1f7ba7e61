"""What a task supplies: the seam between "what is learned" and the machinery that learns it.

A task is what makes classification different from segmentation or multi-label.
The training loop, the inference layer, evaluation, explain and the report call a
:class:`Task` and never branch on its name; adding a task is adding a module that
subclasses :class:`Task` and registers it (see :func:`register_task`).

A task owns:
- its targets (``targets``: what a split's ``labels`` mean; ``stratify_key`` and
  ``counts`` for splits and tables);
- the loss (``loss``);
- running statistics per batch (``batch_stats``: sums that stay on the device) and
  the epoch metrics computed from them (``epoch_metrics``), each :class:`Metric` with
  its name and direction (``max`` or ``min``), read by early stopping and the best
  checkpoint through :meth:`Task.mode`;
- turning model outputs into predictions (``postprocess``) and test-time flip
  (``flip_back`` undoes the flip of a per-pixel output);
- streaming evaluation (``evaluator``: metrics accumulate batch by batch, so nothing
  of size N x K x H x W is ever held);
- how a balanced draw weighs its images (``balanced_weights``, ``--sampler balanced``);
- its metrics file (``save_metrics``: metrics.json and its curves file), its figures
  (``write_figures``), its report's metrics table (``report_metrics``) and sections
  (``report_sections``).

Example: a regression of a digit's value, in a dozen lines (tests/test_tasks.py
trains it through the normal fit):

    >>> import torch
    >>> class DigitValue(Task):
    ...     name = "digit-value"
    ...     metrics = (Metric("mae", "min"),)
    ...     headline = "mae"
    ...     def num_outputs(self, class_names): return 1
    ...     def loss(self, outputs, targets, reduction="mean"):
    ...         return torch.nn.functional.mse_loss(outputs[:, 0].float(), targets.float(), reduction=reduction)
    ...     def batch_stats(self, outputs, targets):
    ...         return {"abs_error": (outputs[:, 0].float() - targets.float()).abs().sum().double()}
    ...     def epoch_metrics(self, sums, count):
    ...         return {"mae": float(sums["abs_error"]) / max(count, 1)}
    >>> DigitValue().mode("val_mae"), DigitValue().mode("val_loss")
    ('min', 'min')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from vislab.core.config import DEFAULT_TASK
from vislab.core.errors import ConfigError
from vislab.core.registry import Registry

# A report section: (anchor, title, builder). The builder gets the report object
# (vislab.report.html._Report: run_dir, plots, figure(path), table helpers) and returns HTML or "".
Section = tuple[str, str, Callable]


@dataclass(frozen=True)
class Metric:
    """An epoch metric: ``name`` is the history column's suffix (``train_NAME``, ``val_NAME``)."""

    name: str
    mode: str  # "max": larger is better; "min": smaller is better
    label: str = ""

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"Metric {self.name!r}: mode must be 'max' or 'min', got {self.mode!r}")


class Evaluator:
    """Streams one split's outputs into metrics; see :meth:`Task.evaluator`.

    ``update`` is called once per batch with the task's postprocessed outputs (on the
    CPU), the batch's targets and the batch's source names; ``result`` returns the
    JSON-ready metrics dict (headline metric at the top level). ``state`` is whatever
    the task's figures need afterwards (kept small: a confusion matrix, per-image
    scores), and ``save(run_dir, suffix)`` writes the task's per-split files.
    """

    def update(self, outputs: torch.Tensor, targets: torch.Tensor, sources: Sequence[str]) -> None:
        raise NotImplementedError

    def result(self) -> dict:
        raise NotImplementedError

    def result_later(self):
        """``result()`` as a :class:`concurrent.futures.Future`: a task whose metrics are scikit-learn's
        computes them in a helper interpreter (:mod:`vislab.core.background`) while the caller goes on."""
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(self.result())
        return future

    def save(self, run_dir: Path, suffix: str = "") -> None:
        """Per-split files beside metrics.json (predictions, error lists); none by default."""


class _ScalarEvaluator(Evaluator):
    """The default evaluator: the task's loss and epoch metrics over the whole split."""

    def __init__(self, task: "Task"):
        self.task = task
        self.sums: dict[str, torch.Tensor] = {}
        self.loss_sum = 0.0
        self.count = 0

    def update(self, outputs, targets, sources) -> None:
        outputs, targets = outputs.float(), torch.as_tensor(targets)
        self.loss_sum += float(self.task.loss(outputs, targets, reduction="sum"))
        accumulate(self.sums, self.task.batch_stats(outputs, targets))
        self.count += len(targets)

    def result(self) -> dict:
        metrics = self.task.epoch_metrics({k: float(v) for k, v in self.sums.items()}, self.count)
        out = {"task": self.task.name, self.task.headline: metrics.get(self.task.headline)}
        out.update(metrics)
        out["loss"] = self.loss_sum / max(self.count, 1)
        out["num_samples"] = self.count
        return out


def accumulate(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
    """Add a batch's statistics into running sums, which stay where the batch's tensors are."""
    for key, value in batch.items():
        if key in sums:
            sums[key] += value
        else:
            sums[key] = value.clone() if isinstance(value, torch.Tensor) else value


class Task:
    """Base class: override what differs. Defaults fit a per-image target in ``split.labels``."""

    name: ClassVar[str] = ""
    headline: ClassVar[str] = "loss"  # metrics.json's top-level headline key
    metrics: ClassVar[tuple[Metric, ...]] = ()  # epoch metrics besides the loss
    per_pixel: ClassVar[bool] = False  # outputs are (N, K, H, W) maps
    # --cache-features: a head trained on cached backbone features (a softmax classifier, vislab.train.features)
    # learns this task; other tasks train end to end
    cached_head: ClassVar[bool] = False

    def __init__(self, **options):
        self.options = options

    # ---- data
    def prepare(self, dataset, console=None) -> None:
        """Called once the training data is loaded, before the first step (e.g. class weights from its
        counts, printed to ``console``); nothing by default."""

    def restore(self, spec: dict) -> None:
        """Read back what :meth:`model_extra` stored, from a loaded model.json; nothing by default."""

    def set_options(self, **options) -> None:
        """Options given at evaluate/predict time (``--threshold`` for multi-label); a task that
        takes none refuses them, naming the option."""
        given = sorted(k for k, v in options.items() if v is not None)
        if given:
            raise ConfigError(f"the {self.name} task takes no {', '.join('--' + g.replace('_', '-') for g in given)}; "
                              "that option applies to multilabel runs")

    def balanced_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """``--sampler balanced``: one draw weight per training image (they sum to 1). By default each
        image weighs 1 / (images of its class), so every class is drawn alike."""
        from vislab.data.samplers import class_balanced_weights

        return class_balanced_weights(labels)

    def imbalance_lines(self, metrics: dict, train_counts) -> list[str]:
        """Extra end-of-run summary lines for an imbalanced training set (images per class); none by default."""
        return []

    # ---- model and targets
    def num_outputs(self, class_names: Sequence[str]) -> int:
        """How many output channels the model needs."""
        return len(class_names)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """A batch's targets from what the split holds for it (identity by default)."""
        return labels

    def stratify_key(self, labels) -> np.ndarray | None:
        """One value per image to stratify splits by; None: split at random."""
        return np.asarray(labels)

    # ---- data and model set-up (hooks with classification's behaviour as the default)
    def load_dataset(self, data_cfg, seed: int = 0, scoring: bool = False):
        """The task's data set from ``--data`` (a per-pixel task reads image/mask pairs). ``scoring``: data
        a trained model only scores (``vislab evaluate --data``), held to less than training data (a
        single class is enough)."""
        from vislab.data.sources import load_dataset

        return load_dataset(data_cfg, seed=seed, scoring=scoring)

    def align_classes(self, dataset, class_names: Sequence[str], source: str):
        """``dataset`` labelled with a model's ``class_names`` (`vislab evaluate --data`): data with some of
        the model's classes (a test folder of two of its ten) is renumbered by name
        (:meth:`renumber_labels`); a class the model does not know is an error naming it."""
        names = list(class_names)
        if list(dataset.class_names) == names:
            return dataset
        index = self._class_index(dataset, names, source)
        for split in dataset.splits.values():
            split.labels = self.renumber_labels(split.labels, index, len(names))
        dataset.class_names = names
        return dataset

    def renumber_labels(self, labels: torch.Tensor, index: torch.Tensor, num_classes: int) -> torch.Tensor:
        """A split's targets with data class ``i`` as the model's class ``index[i]`` (of ``num_classes``);
        the default: one class index per image."""
        return index[labels]

    @staticmethod
    def _class_index(dataset, names: list[str], source: str) -> torch.Tensor:
        """The model's index of each of the data's classes; a class the model lacks is a DataError.

        A folder cannot be named after a class whose name holds a slash (Fashion-MNIST's "T-shirt/top"):
        a data class that is not one of the model's matches such a class by :func:`folder_key`, the name
        with "-" (or "_", or a space) for each slash."""
        from vislab.core.errors import DataError

        slashed = [name for name in names if "/" in name or "\\" in name]
        by_key: dict[str, list[int]] = {}
        for name in slashed:
            by_key.setdefault(folder_key(name), []).append(names.index(name))

        def model_index(name: str) -> int | None:
            if name in names:
                return names.index(name)
            matches = by_key.get(folder_key(name), [])
            return matches[0] if len(matches) == 1 else None

        index = [model_index(name) for name in dataset.class_names]
        unknown = [name for name, i in zip(dataset.class_names, index) if i is None]
        if unknown:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            hint = f" (a folder for {slashed[0]!r} is named {folder_key(slashed[0])!r})" if slashed else ""
            raise DataError(f"{source}: {len(unknown)} of its classes are not the model's ({unknown[:5]}"
                            f"{'...' if len(unknown) > 5 else ''}); the model knows {len(names)}: {shown}. "
                            f"Evaluate on images of the model's classes, named as in training{hint}")
        return torch.tensor(index, dtype=torch.int64)

    def audit(self, dataset, out_dir, seed: int = 0, figures: bool = True, max_images: int = 2000,
              near_duplicates: bool | None = None, label_issues: dict | None = None) -> dict:
        """The audit of the task's data and targets, written to ``out_dir/audit.json`` and, with
        ``figures``, its figures under ``out_dir/plots/`` (`vislab audit --task`, and every training run).

        The default counts one class per image; a task with other targets counts them its own way (a
        multi-label task every label of an image, a per-pixel task its masks' pixels). ``max_images``:
        images decoded for the colour study; ``near_duplicates``: the perceptual-hash check (None: up to
        a size); ``label_issues``: the label-issues section (``vislab audit --label-issues``) to add."""
        from vislab.data.audit import audit_dataset

        return audit_dataset(dataset, out_dir, seed=seed, figures=figures, max_images=max_images,
                             near_duplicates=near_duplicates, label_issues=label_issues)

    def model_config(self, model_cfg, native_size):
        """The model config to build with (a per-pixel task keeps the data's own size)."""
        return model_cfg

    def model_extra(self, dataset, predict_split=None, console=None) -> dict:
        """What model.json stores for the task after training: a palette, ``task_options`` (passed back to
        the task when the run is loaded), thresholds tuned on the val split. Nothing by default.

        ``predict_split(split)`` returns the trained model's postprocessed outputs and the targets
        of a split, on the CPU; ``console`` prints what was decided.
        """
        return {}

    def augment_pair(self, augment, images: torch.Tensor, targets: torch.Tensor, generator):
        """Augment a training batch and its targets together: per-image targets do not move."""
        return augment(images, generator=generator), targets

    # ---- loss and running statistics
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def soft_loss(self, outputs: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
        """The mean loss against soft (mixed) targets, for --mixup/--cutmix; tasks without one refuse."""
        raise ConfigError(f"the {self.name} task has no soft-target loss, so --mixup/--cutmix cannot train it")

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sums over the batch (tensors on the outputs' device: no host read per step)."""
        return {}

    def epoch_metrics(self, sums: dict[str, float], count: int) -> dict[str, float]:
        """The epoch metrics (named as in :attr:`metrics`) from the summed statistics."""
        return {}

    def mode(self, monitor: str) -> str:
        """The direction of a logged quantity: ``val_miou`` -> max, ``train_loss`` -> min."""
        base = monitor.split("_", 1)[1] if monitor.startswith(("train_", "val_")) else monitor
        if base == "loss":
            return "min"
        for metric in self.metrics:
            if metric.name == base:
                return metric.mode
        import difflib

        names = ["loss", *(m.name for m in self.metrics)]
        logged = [f"{split}_{name}" for split in ("val", "train") for name in names]
        close = difflib.get_close_matches(monitor, logged, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"--monitor {monitor} (train.early_stopping.monitor) is not a metric of the {self.name} "
                          f"task; {hint}use val_ or train_ with one of: {', '.join(names)}")

    def history_columns(self) -> list[str]:
        names = ["loss", *(m.name for m in self.metrics)]
        return ["epoch", *(f"train_{n}" for n in names), *(f"val_{n}" for n in names), "lr", "seconds"]

    # ---- predictions
    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> what predict and evaluate use (probabilities, values)."""
        return outputs.float()

    def at_size(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Raw outputs for images of ``size`` (H, W): a per-pixel task's maps upsampled bilinearly to
        the images' own size (before :meth:`postprocess`, so the argmax is taken at full resolution);
        per-image outputs as they are."""
        if not self.per_pixel or tuple(outputs.shape[-2:]) == tuple(size):
            return outputs
        import torch.nn.functional as F

        return F.interpolate(outputs, size=tuple(size), mode="bilinear", align_corners=False)

    def flip_back(self, outputs: torch.Tensor) -> torch.Tensor:
        """Undo a horizontal input flip on the outputs: a no-op per image, a flip per pixel."""
        return outputs.flip(-1) if self.per_pixel else outputs

    def describe(self, output: torch.Tensor, class_names: Sequence[str], top_k: int = 5) -> dict:
        """One image's answer as JSON-ready fields (``vislab predict --format json``, the server)."""
        return {"outputs": [float(v) for v in output.reshape(-1)]}

    def uncertain(self, outputs: torch.Tensor) -> torch.Tensor | None:
        """Indices whose reduced-precision answer should be recomputed in fp32 (None: none)."""
        return None

    def explain_target(self, outputs: torch.Tensor, target, class_names):
        """(index, score of it, scalar function of the outputs to explain) for ``target``
        (a class name, an index or "top"); tasks without one refuse."""
        raise ConfigError(f"the {self.name} task has no class to explain; explanations need a classification "
                          "or segmentation run")

    def lime_scores(self, outputs: torch.Tensor, index: int):
        """What LIME fits its surrogate to: a function from a batch of the model's outputs (on perturbed
        copies of the image whose ``outputs`` these are) to (N, K) per-image class scores; by default the
        task's probabilities (softmax for classes, sigmoid for labels)."""
        return self.postprocess

    # ---- evaluation, figures, report
    def evaluator(self, class_names: Sequence[str]) -> Evaluator:
        return _ScalarEvaluator(self)

    def save_metrics(self, metrics: dict, run_dir, filename: str = "metrics.json") -> Path:
        """Write an evaluation's metrics into ``run_dir`` (``metrics.json``, or ``metrics_<name>.json`` for
        another split or data set) and return its path. By default the metrics dict goes in whole but for
        its ``curves`` (ROC/PR points, a confusion matrix), which go to ``<stem>_curves.json`` beside it."""
        return write_metrics(metrics, run_dir, filename)

    def write_figures(self, evaluator: Evaluator, metrics: dict, class_names, images_for, run_dir: Path,
                      name: str = "") -> list:
        """Figures under ``run_dir/plots`` from a finished evaluation (``run_dir/plots/<name>/`` for a named
        evaluation, e.g. ``val``; any other file it writes is named ``..._<name>``, as ``metrics_<name>.json``
        is), returning their paths: the metrics file records them, and the report names any that go missing.
        None by default."""
        return []

    def explanation_samples(self, evaluator: Evaluator, seed: int, count: int = 8) -> list:
        """[(indices, filename, titles)] of split images to draw Grad-CAM panels for; none by default."""
        return []

    def summary_cards(self, metrics: dict) -> list[tuple[str, str]]:
        """(label, value) cards at the top of the report: the headline and the loss by default."""
        cards = []
        if isinstance(metrics.get(self.headline), (int, float)):
            cards.append((self.headline, f"{metrics[self.headline]:.4g}"))
        if isinstance(metrics.get("loss"), (int, float)):
            cards.append(("loss", f"{metrics['loss']:.4g}"))
        return cards

    def report_metrics(self, metrics: dict) -> list[tuple[str, object]]:
        """The rows (label, value) of the report's metrics table, from metrics.json (a float is shown to
        4 significant digits, None as n/a): by default the task, the images, the loss and every other
        top-level scalar as it is."""
        return [("task", metrics.get("task")), ("test images", metrics.get("num_samples")),
                ("loss", number_text(metrics.get("loss")))] + scalar_rows(metrics, {"task", "num_samples", "loss"})

    def report_tables(self, report, metrics: dict) -> list[str]:
        """HTML tables shown under the metrics table (a per-class table); none by default."""
        return []

    def report_sections(self) -> list[Section]:
        """Extra report sections after the metrics table."""
        return []

    def end_of_run_line(self, metrics: dict) -> str:
        value = metrics.get(self.headline)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        split = metrics.get("split", "test")
        return f"{split} {self.headline}: {shown}  {split} loss: {metrics.get('loss', float('nan')):.4f}"


def number_text(value) -> str:
    """A metric as the report shows it: 4 significant digits, n/a for None."""
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def percent_text(value) -> str:
    """A fraction as a percentage with 2 decimals, n/a for None."""
    return "n/a" if value is None else f"{value:.2%}"


def scalar_rows(metrics: dict, shown) -> list[tuple[str, object]]:
    """(key, value) for each top-level scalar of ``metrics`` not in ``shown``, in the file's order."""
    return [(key, value) for key, value in metrics.items() if key not in shown and not isinstance(value, (dict, list))]


TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available by its ``name`` (``--task NAME``, model.json)."""
    TASKS.register(cls.name, cls)
    return cls


def get_task(name: str | None = None, **options) -> Task:
    """A task instance by name (None: :data:`DEFAULT_TASK`, what a model.json without ``task`` was
    trained for); an unknown name is an error naming the known ones."""
    _load_builtin_tasks()
    return TASKS.get(name or DEFAULT_TASK)(**options)


def task_names() -> tuple[str, ...]:
    _load_builtin_tasks()
    return TASKS.names()


def _load_builtin_tasks() -> None:
    from vislab.tasks import classification, multilabel, segmentation  # noqa: F401  (register themselves)


# ----------------------------------------------------------------------------- metrics files
def write_metrics(metrics: dict, out_dir, filename: str = "metrics.json") -> Path:
    """Write ``filename`` (default ``metrics.json``; without the curves) and its curves file
    (``metrics_curves.json``, or ``metrics_<name>_curves.json`` beside ``metrics_<name>.json``).

    Returns the path of the metrics file.

    Example:
        >>> import tempfile
        >>> write_metrics({"task": "classification", "accuracy": 0.5, "curves": {}}, tempfile.mkdtemp()).name
        'metrics.json'
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {key: value for key, value in metrics.items() if key != "curves"}
    path = out_dir / filename
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    if "curves" in metrics:
        (out_dir / f"{Path(filename).stem}_curves.json").write_text(
            json.dumps(metrics["curves"], separators=(",", ":"), allow_nan=False) + "\n"
        )
    return path


def load_metrics(run_dir) -> dict | None:
    """Read ``metrics.json`` and, when present, put ``metrics_curves.json`` back under ``curves``."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    from vislab.core.files import read_json

    fix = "run `vislab evaluate` on the run again to rewrite it"
    metrics = read_json(path, "a metrics file (JSON)", fix)
    curves = run_dir / "metrics_curves.json"
    if curves.is_file() and isinstance(metrics, dict) and "curves" not in metrics:
        metrics["curves"] = read_json(curves, "a metrics file (JSON)", fix)
    return metrics


def folder_key(class_name: str) -> str:
    """How a folder's name is matched to a class whose name holds a slash, which no folder's name can:
    each run of slashes, "-", "_" and spaces counts as one "-".

    Example:
        >>> folder_key("T-shirt/top"), folder_key("T-shirt_top"), folder_key("T-shirt - top")
        ('T-shirt-top', 'T-shirt-top', 'T-shirt-top')
    """
    import re

    return re.sub(r"[/\\_ -]+", "-", class_name)
