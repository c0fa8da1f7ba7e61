"""``vislab evaluate``'s measuring half: a run folder + data -> the task's metrics, streamed.

The explanation panels are computed while the metrics are (``meanwhile``), and the figures are queued as
soon as the metrics are in (``then``); the report comes after it, in :func:`vislab.pipelines.run_evaluation`.
The run's own test split writes ``metrics.json``; any other split, data set or ``--threshold``
writes ``metrics_<name>.json`` beside it, so the test numbers are never overwritten. A named
evaluation's other files carry the same name: ``predictions_<name>.npz``, ``misclassified_<name>.csv``,
its figures in ``plots/<name>/`` and its explanation panels in ``plots/explain/<name>/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vislab.core.background import beside, elsewhere, quiet
from vislab.core.files import BadFileError, read_json, write_bad_files
from vislab.data.sources import DataError
from vislab.infer.predictor import Predictor
from vislab.runs import load, read_config


@dataclass
class Evaluation:
    """What one evaluation measured, and what its figures need."""

    run_dir: Path
    metrics: dict
    evaluator: object  # the task's Evaluator, with its state (probabilities, confusion matrix)
    loaded: object  # vislab.runs.Loaded
    predictor: Predictor
    split: object  # the evaluated vislab.data.sources.Split
    name: str  # "" for the run's own test split, else e.g. "val" or "otherdata_test"
    seed: int
    # the figures drawn for it (figures and explanation panels), recorded in its metrics file as "figures"
    # so that the report can say which of them went missing
    figures: list = field(default_factory=list)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / (f"metrics_{self.name}.json" if self.name else "metrics.json")


def _when_measured(pending, evaluation: Evaluation, then) -> None:
    evaluation.metrics = pending.result()
    then(evaluation)


def evaluation_name(split: str, data: str | None, threshold: float | None = None, distinct: bool = False) -> str:
    """'' for the run's own test split at its own thresholds; otherwise a file-name-safe name of the
    data, the split and the threshold, so no other evaluation overwrites metrics.json.

    The data is named by its file's name without the extension (``more.csv``: ``more``) or by its folder's
    name. ``distinct`` adds a short hash of the data's full path, for two data sets of the same name.

    Example:
        >>> evaluation_name("test", None), evaluation_name("val", None), evaluation_name("test", None, 0.5)
        ('', 'val', 'test_threshold0.5')
        >>> evaluation_name("test", "new/more.csv"), evaluation_name("test", "photos/"), evaluation_name("val", "digits")
        ('more_test', 'photos_test', 'digits_val')
    """
    if data is None and split == "test" and threshold is None:
        return ""
    parts = [_data_name(str(data), distinct)] if data else []
    parts.append(split)
    if threshold is not None:
        parts.append(f"threshold{threshold:g}")
    return "_".join(parts)


def _data_name(data: str, distinct: bool = False) -> str:
    path = Path(data.rstrip("/\\"))
    # a CSV's extension says nothing about the data; a folder's name is all of it (even with a dot in it)
    name = path.stem if path.suffix and not path.expanduser().is_dir() else path.name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "data"
    if distinct:
        try:
            where = str(path.expanduser().resolve())
        except (OSError, RuntimeError):
            where = data
        name += "-" + hashlib.sha1(where.encode()).hexdigest()[:6]
    return name


def _unused_name(run_dir: Path, split: str, data: str | None, threshold: float | None) -> str:
    """The evaluation's name, with a hash of the data's path added when ``metrics_<name>.json`` already holds
    another data set's numbers (``a/photos`` and ``b/photos``; ``more.csv`` and a folder ``more/``)."""
    name = evaluation_name(split, data, threshold)
    if not name or data is None:
        return name
    path = run_dir / f"metrics_{name}.json"
    if not path.is_file():
        return name
    try:
        recorded = read_json(path, "an evaluation's metrics", "this evaluation replaces it").get("data")
    except (BadFileError, AttributeError):
        return name  # a damaged one, which this evaluation replaces
    if recorded is None or _same_source(str(recorded), str(data)):
        return name
    return evaluation_name(split, data, threshold, distinct=True)


def _same_source(data: str, source: str) -> bool:
    """``--data`` names the data the run trained on (a built-in name, or the same file or folder)."""
    if data == source:
        return True
    try:
        return Path(data).expanduser().resolve() == Path(source).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def has_test_split(data: dict) -> bool | None:
    """Whether ``vislab evaluate RUN`` finds a test split in the run's own data, read from its config.yaml's
    ``data`` (a mapping): a ``test_split`` above 0, a ``test_csv``, a built-in set with a test set of its own
    (all but digits) or a folder with a test/ folder beside train/ (images/ in it: a segmentation set);
    None when the config does not say (no source, or a folder not found from here).

    Example:
        >>> has_test_split({"source": "digits", "test_split": 0.0}), has_test_split({"source": "mnist", "test_split": 0})
        (False, True)
        >>> has_test_split({"source": "photos.csv", "test_split": 0.2})
        True
    """
    from vislab.core.config import DataConfig
    from vislab.data.sources import BUILTIN, _split_folders

    test_split = data.get("test_split", DataConfig.test_split)
    if isinstance(test_split, (int, float)) and test_split > 0 or data.get("test_csv"):
        return True
    source = data.get("source")
    if source is None:
        return None
    if str(source) in BUILTIN:
        return str(source) != "digits"
    path = Path(str(source)).expanduser()
    if not path.is_dir():
        return False if path.is_file() else None
    try:
        splits = _split_folders(path)  # the folders the data reader takes as splits
    except OSError:
        return None
    test = splits.get("test")
    return test is not None and ("train" in splits or (test / "images").is_dir())


def _no_split(split: str, dataset, cfg, other: bool) -> DataError:
    """The error for a ``split`` the data lacks: the run's own data was trained with that split set to 0;
    other data is split only by its own train/ val/ test/ folders, else evaluated whole as the test split."""
    source, have = cfg.data.source, list(dataset.splits)
    if not other:
        flag, setting = {"val": ("--val-split", cfg.data.val_split)}.get(split, ("--test-split", cfg.data.test_split))
        held = f" (this run's {flag} was {setting:g}: config.yaml says whether a recipe chose it)"
        return DataError(f"{source}: has no {split!r} split (has {', '.join(have)}){held}; "
                         f"train with {flag} (e.g. 0.1) or give --data with a {split}/ folder")
    if not Path(str(source)).expanduser().is_dir():  # a CSV or a built-in set: no folders to add
        if have == ["train"]:
            return DataError(f"{source}: has no {split!r} split; data other than the run's is evaluated whole, "
                             "as the test split: give --split test")
        return DataError(f"{source}: has no {split!r} split (has {', '.join(have)}); data other than the run's "
                         f"is split only as it comes: give --split {' or --split '.join(have)}")
    if have == ["train"]:
        return DataError(f"{source}: has no {split}/ folder; data other than the run's is evaluated whole, as the "
                         f"test split: give --split test, or split {source} into train/ and {split}/ folders")
    return DataError(f"{source}: has no {split}/ folder (has {', '.join(name + '/' for name in have)}); data other "
                     f"than the run's is split only by its own folders: give --split {' or --split '.join(have)}, "
                     f"or add a {split}/ folder beside its train/")


def _relative(path: Path, run_dir: Path) -> str:
    try:
        return path.relative_to(run_dir).as_posix()
    except ValueError:
        return path.as_posix()


@contextlib.contextmanager
def _progress_bar(console, total: int, split: str):
    """A transient bar over the images evaluated, on a terminal (a large test split at 224 px takes minutes
    on a CPU); None elsewhere, so a log or a pipe gets only the result line."""
    if console is None or not getattr(console, "is_terminal", False):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"evaluating {split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(split, total=total)
        yield lambda done: bar.update(task, completed=done)


def measure_run(run_dir, data: str | None = None, dataset=None, split: str = "test", batch_size: int = 256,
                device: str = "auto", console=None, task_options: dict | None = None,
                meanwhile=None, data_options: dict | None = None, then=None) -> Evaluation:
    """Evaluate the run's model on ``split`` of its own data (or ``data``, a source like ``--data``).

    Other data than the run's is evaluated whole when it has no split folders of its own, and its classes
    may be some of the model's: its labels are renumbered by class name (``Task.align_classes``).

    ``task_options`` go to the task (``{"threshold": 0.5}``: one multi-label threshold for every label).
    ``data_options``: DataConfig fields saying how to read the data (``image_root``, ``file_col``...); another
    ``data``'s CSV reads with its own columns and folder unless they say otherwise.
    ``meanwhile(evaluation)`` runs while the metrics are computed (in a helper interpreter when the run
    has one): work on the predictions alone, such as the explanation panels; ``evaluation.metrics`` is
    still empty then. ``then(evaluation)`` runs as soon as the metrics are in (``evaluation.metrics`` set): the
    figures. With a helper interpreter computing the metrics it runs in a thread of this process while
    ``meanwhile`` still works here, so that the helper goes on from the metrics to the figures instead of
    waiting for ``meanwhile`` (on a 2-core Xeon it idled half a second while the explanation panels imported
    captum); without one, after ``meanwhile``. This call returns once ``then`` has.

    The metrics are written to ``metrics.json`` (own test split) or ``metrics_<name>.json``, with the
    paths of the figures ``then`` and ``meanwhile`` put in ``evaluation.figures`` (``"figures"``, relative to
    the run folder), which the report checks.
    """
    run_dir = Path(run_dir)
    loaded = load(run_dir, device="cpu")
    loaded.task.set_options(**(task_options or {}))
    cfg = read_config(run_dir)
    other = data is not None and not _same_source(data, cfg.data.source)
    if dataset is None:
        if data is not None:
            cfg.data.source = data
            cfg.data.test_csv = None
            # the training CSV's columns and image folder are not another CSV's
            cfg.data.image_root = cfg.data.file_col = cfg.data.label_col = None
        if other:
            # other data is evaluated whole, unless it has split folders of its own; the training data's
            # splits, cap and label edits are not its
            cfg.data.val_split = cfg.data.test_split = 0
            cfg.data.max_per_class = cfg.data.exclude = cfg.data.relabel = None
        for name, value in (data_options or {}).items():
            setattr(cfg.data, name, value)
        dataset = loaded.task.load_dataset(cfg.data, seed=cfg.seed, scoring=other)
        if other and split == "test" and list(dataset.splits) == ["train"]:  # all of it, scored as the test split
            whole = dataset.splits["train"]
            whole.name = "test"
            dataset.splits = {"test": whole}
        dataset = loaded.task.align_classes(dataset, loaded.class_names, str(cfg.data.source))
    if split not in dataset.splits:
        raise _no_split(split, dataset, cfg, other)
    if list(dataset.class_names) != list(loaded.class_names):
        raise DataError(f"the data's classes {dataset.class_names[:5]}... differ from the model's "
                        f"{loaded.class_names[:5]}...; evaluate on data with the same class folders")
    # a run trained at a forced precision (--precision fp32: same results everywhere) is evaluated at it,
    # without timing the others; auto measures as predict does
    predictor = Predictor(loaded, device=device, precision=cfg.train.precision, tta_flip=cfg.train.tta_flip)
    data_split = dataset.splits[split]
    predictor.expect(len(data_split))
    task = loaded.task
    # the forward passes have the cores; the queued figures wait
    with quiet(wait=False), _progress_bar(console, len(data_split), split) as progress:
        evaluator = predictor.evaluate_split(data_split, task.evaluator(loaded.class_names), batch_size=batch_size,
                                             workers=cfg.data.workers, progress=progress)
        # sent while the figures are still held, so a helper takes the metrics next instead of a figure
        # that the pause's end would hand it first (the parent waited 1.6 s for them behind the figures)
        pending = evaluator.result_later()
    threshold = (task_options or {}).get("threshold")
    name = _unused_name(run_dir, split, data, threshold)
    evaluation = Evaluation(run_dir, {}, evaluator, loaded, predictor, data_split, name, cfg.seed)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vislab-figures") as queue:
        queued = queue.submit(_when_measured, pending, evaluation, then) if then and elsewhere() else None
        if meanwhile is not None:
            with beside():  # a helper computes the metrics meanwhile, then draws
                meanwhile(evaluation)
        metrics = evaluation.metrics = pending.result()
        if queued is not None:
            queued.result()  # its error, raised here; and nothing below changes metrics while it reads them
        elif then is not None:
            then(evaluation)
    metrics["split"] = split
    metrics["data"] = str(data if data is not None else cfg.data.source)
    metrics["num_images"] = len(data_split)
    skipped = list(getattr(dataset, "bad_files", None) or []) if other else []  # the run's own: bad_files.csv
    bad_list = run_dir / f"bad_files_{name}.csv"
    if skipped:
        metrics["bad_files"] = len(skipped)
    if other:  # an earlier evaluation's list of this name, no longer true, goes
        write_bad_files(bad_list, skipped)
    if threshold is not None:
        metrics["threshold"] = threshold
    if evaluation.figures:
        metrics["figures"] = sorted({_relative(Path(path), run_dir) for path in evaluation.figures})
    task.save_metrics(metrics, run_dir, evaluation.metrics_path.name)
    evaluator.save(run_dir, f"_{name}" if name else "")
    if console is not None:
        console.print(f"evaluated {len(data_split):,} {split} images: {task.end_of_run_line(metrics)} "
                      f"-> {evaluation.metrics_path}")
        if skipped:
            console.print(f"[yellow]{len(skipped)} bad files skipped[/] (listed in {bad_list})", soft_wrap=True)
    return evaluation
