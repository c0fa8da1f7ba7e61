"""Leaderboard of several runs, read from their run folders only (no model is loaded).

Columns: run, model, data, split, parameters, epochs, training seconds, accuracy,
macro-F1, ROC AUC (and loss). Each row says which data and split its numbers come from:
``metrics.json`` (the run's own test split) by default, or ``metrics_<name>.json``
(``evaluation="val"``, or e.g. ``"otherdata_test"`` for ``vislab evaluate RUN --data otherdata``).
Runs measured on different data are ranked within their own data, never side by side.
Written as ``leaderboard.csv``, drawn as ``leaderboard.png`` and printed as a rich table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

from vislab.core.config import DEFAULT_TASK
from vislab.core.errors import ConfigError, RunError
from vislab.core.files import (BadFileError, evaluation_files, read_json, read_yaml, reading, run_folder_error,
                               vislab_output)

COLUMNS = ["run", "model", "data", "split", "parameters", "epochs", "train_seconds", "accuracy", "macro_f1", "auc",
           "loss", "run_dir", "task", "miou", "map"]
UNKNOWN = "—"  # a cell the run folder does not say (no model.json, no history.csv)


class Leaderboard(list):
    """:func:`compare_runs`' rows, and ``skipped``: (folder, what it is) for each folder given that another
    vislab command wrote (``runs/*`` holds compare's own ``runs/compare``), and each stray file or non-run folder
    among several paths, left out."""

    def __init__(self, rows=(), skipped=()):
        super().__init__(rows)
        self.skipped = list(skipped)


def compare_runs(run_dirs: Sequence, evaluation: str | None = None) -> Leaderboard:
    """One row per run folder, grouped by the data measured on, best accuracy first within each
    (runs not yet evaluated last). A folder another vislab command wrote (compare's leaderboard, lr-find's
    plot: :func:`vislab.core.files.vislab_output`; an audit) is left out, and listed in the rows' ``skipped``;
    so is, among several paths (``runs/*``), a file or a folder holding no run's files.

    Reads ``model.json`` (name, parameter count; the count falls back to the
    tensor shapes in ``model.safetensors``), ``history.csv`` (epochs, summed
    ``seconds``) and ``metrics.json`` (accuracy, macro F1, ``roc_auc``; its ``data`` and
    ``split``, else the run's config.yaml data source and ``test``), or ``metrics_<evaluation>.json``.
    A missing file leaves its columns ``None``.

    Raises:
        RunError: a path is missing, the one path given is not a run folder (a file, or a folder holding no
            run's files), or no path given is a run folder.

    Example:
        >>> import tempfile, json, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "model.json").write_text(json.dumps({"name": "mlp", "parameters": 1000}))
        >>> _ = (run / "history.csv").write_text("epoch,seconds\\n1,2.5\\n2,2.0\\n")
        >>> _ = (run / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.3,
        ...     "macro": {"f1": 0.88}, "roc_auc": 0.99}))
        >>> row = compare_runs([run])[0]
        >>> row["model"], row["epochs"], row["train_seconds"], row["macro_f1"]
        ('mlp', 2, 4.5, 0.88)
    """
    rows = []
    named: dict[Path, object] = {}  # a folder named twice (runs/a and ./runs/a) is one row
    skipped: dict[Path, tuple[str, str]] = {}
    run_dirs = list(run_dirs)
    for run_dir in run_dirs:
        error = run_folder_error(run_dir, trained=True)
        output = None
        if error is not None:
            output = vislab_output(run_dir) or ("`vislab audit`'s output (no model)"
                                                if (Path(run_dir) / "audit.json").is_file() else None)
        if output is None and error is not None and len(run_dirs) > 1:  # `runs/*` holds stray files and folders
            output = _stray(run_dir)
        if output is not None:
            skipped.setdefault(Path(run_dir).resolve(), (str(run_dir), output))
        elif error is not None:
            raise error
        else:
            named.setdefault(Path(run_dir).resolve(), run_dir)
    if not named:
        listed = ", ".join(f"{folder} is {what}" for folder, what in skipped.values())
        raise RunError(f"no run folder to compare: {listed}; give the folders `vislab train --out DIR` wrote")
    run_dirs = list(named.values())
    if evaluation == "test":  # the run's own test split is metrics.json
        evaluation = None
    if evaluation is not None:
        have = evaluations([Path(run_dir) for run_dir in run_dirs])
        if evaluation not in have:
            choices = ", ".join(have) or "none: run `vislab evaluate RUN` first"
            raise ConfigError(f"--evaluation {evaluation}: none of these runs has metrics_{evaluation}.json; "
                              f"choose one of the evaluations they have: {choices}")
    for run_dir in run_dirs:
        rows.append(_row(Path(run_dir), evaluation))
    # Unevaluated runs sink to the bottom instead of breaking the sort; different data never interleave;
    # a segmentation run ranks by mIoU and a multi-label one by mAP (they have no accuracy)
    rows.sort(key=lambda r: (_score(r) is None, str(r.get("data") or ""),
                             -_score(r) if _score(r) is not None else math.inf))
    return Leaderboard(rows, skipped.values())


def _stray(path) -> str | None:
    """What ``path`` is when it is neither a run nor a missing path: a file, or a folder holding no run's files."""
    path = Path(path)
    if path.is_file():
        return "a file"
    if path.is_dir():
        return "a folder with none of a run's files"
    return None


def evaluations(run_dirs: Sequence[Path]) -> list[str]:
    """The evaluation names the runs hold: ``test`` (metrics.json) and NAME for each metrics_NAME.json.

    Example:
        >>> import tempfile, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "metrics.json").write_text("{}"); _ = (run / "metrics_val.json").write_text("{}")
        >>> _ = (run / "metrics_curves.json").write_text("{}"); _ = (run / "metrics_val_curves.json").write_text("{}")
        >>> evaluations([run])
        ['test', 'val']
    """
    names = {name or "test" for run_dir in run_dirs for name in evaluation_files(run_dir)}
    return sorted(names, key=lambda name: (name != "test", name))


def unread_metrics(row: dict) -> str | None:
    """Why the row has no metrics to rank although the run is not simply unevaluated, or None: its metrics
    file is damaged or malformed, its training never finished, or `vislab evaluate` could not write the file (its
    model.json is damaged or missing). The message names the file (or folder) and the fix."""
    return (row.get("unfinished") or (row.get("unread") or {}).get(row.get("metrics_file") or "metrics.json")
            or row.get("unevaluable"))


def evaluated(rows: Sequence[dict]) -> list[dict]:
    """The rows with a number to rank by: a run never evaluated is listed apart, never ranked."""
    return [r for r in rows if _score(r) is not None]


def write_leaderboard(rows: Sequence[dict], out_dir) -> tuple[Path, Path]:
    """Write the evaluated runs' ``leaderboard.csv`` and ``leaderboard.png`` into ``out_dir``; return both paths.

    Example:
        >>> import tempfile
        >>> csv_path, png_path = write_leaderboard([{"run": "a", "accuracy": 0.9}], tempfile.mkdtemp())
        >>> csv_path.read_text().splitlines()[0].split(",")[:3]
        ['run', 'model', 'data']
    """
    from vislab.viz.evaluation import plot_leaderboard

    rows = evaluated(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "leaderboard.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    png_path = plot_leaderboard(rows, out_dir / "leaderboard.png")
    return csv_path, png_path


def print_leaderboard(rows: Sequence[dict], console=None, evaluation: str | None = None) -> None:
    """Print the evaluated runs as a rich table (``console`` defaults to a new rich Console), then the runs
    not evaluated (for ``evaluation``: no metrics_<evaluation>.json) apart, with the command that evaluates them."""
    from rich.markup import escape
    from rich.table import Table

    from vislab.core.console import console as vislab_console

    console = console or vislab_console()
    for folder, what in getattr(rows, "skipped", ()):
        console.print(f"skipped {escape(folder)}: {what}, not a run", soft_wrap=True)
    missing = [r for r in rows if _score(r) is None]
    rows = evaluated(rows)
    splits = sorted({str(r.get("split")) for r in rows if r.get("split")})
    datas = sorted({str(r.get("data")) for r in rows if r.get("data")})
    table = Table(title=f"Leaderboard ({', '.join(splits) or 'test'} split{'s' if len(splits) > 1 else ''})")
    headers = [("#", "right"), ("run", "left"), ("model", "left"), ("data", "left"), ("split", "left"),
               ("params", "right"), ("epochs", "right"), ("train time", "right"), ("accuracy", "right"),
               ("macro F1", "right"), ("AUC", "right"), ("loss", "right")]
    extra = [(key, label) for key, label in (("miou", "mIoU"), ("map", "mAP")) if any(r.get(key) is not None for r in rows)]
    headers[8:8] = [(label, "right") for _, label in extra]
    for name, justify in headers:
        table.add_column(name, justify=justify, no_wrap=True)
    rank, previous = 0, None
    for r in rows:
        rank = 1 if r.get("data") != previous else rank + 1  # ranks restart for each data set
        previous = r.get("data")
        table.add_row(
            str(rank),
            str(r.get("run")),
            str(r.get("model") or UNKNOWN),
            str(r.get("data") or UNKNOWN),
            str(r.get("split") or UNKNOWN),
            _count(r.get("parameters")),
            _plain(r.get("epochs")),
            _duration(r.get("train_seconds")),
            *[_fixed(r.get(key)) for key, _ in extra],
            _fixed(r.get("accuracy")),
            _fixed(r.get("macro_f1")),
            _fixed(r.get("auc")),
            _fixed(r.get("loss")),
        )
    from rich.measure import Measurement

    # the table's own width, not the terminal's: an 80-column terminal (or a pipe) would cut run names to "…"
    needed = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(table)
    finally:
        console.width = width
    if len(datas) > 1:
        console.print(f"[yellow]these runs were measured on {len(datas)} different data sets ({', '.join(datas)}): "
                      "each is ranked on its own; numbers across data sets do not compare[/]")
    for r in [*rows, *missing]:
        for name, message in (r.get("unread") or {}).items():  # each names its file and the fix
            if name == "model.json" and r.get("unevaluable"):  # said below, as the reason it is not ranked
                continue
            console.print(f"[yellow]{escape(message)}; the leaderboard goes on without it[/]")
    for r in missing:
        # `vislab evaluate` would fail on it: the message gives the resume command, or names the damaged file
        reason = r.get("unfinished") or r.get("unevaluable")
        if reason:
            console.print(f"[yellow]not ranked: {escape(reason)}[/]", soft_wrap=True)
    missing = [r for r in missing if unread_metrics(r) is None]  # a damaged or unfinished one was said above
    untested = [r for r in missing if r.get("own_test_split") is False]
    if untested:  # `vislab evaluate RUN` would find no test split
        console.print(f"[yellow]not evaluated (no metrics.json), so not ranked: {', '.join(r['run'] for r in untested)}"
                      ": trained with --test-split 0 on data with no test split of its own; run `vislab evaluate "
                      "RUN --data DATA` on other data with its classes, then compare with --evaluation DATA_test[/]",
                      soft_wrap=True)
        missing = [r for r in missing if r not in untested]
    if missing:
        files = sorted({r.get("metrics_file") or "metrics.json" for r in missing})
        recorded = _recorded_evaluation([r.get("run_dir") for r in [*rows, *missing]], evaluation)
        command = escape(_evaluate_command(evaluation, recorded))  # the --data another run's file records
        console.print(f"[yellow]not evaluated (no {', '.join(files)}), so not ranked: "
                      f"{', '.join(r['run'] for r in missing)}: run `{command}`[/]", soft_wrap=True)


def _recorded_evaluation(run_dirs, evaluation: str | None) -> dict:
    """What another run's ``metrics_<evaluation>.json`` records (its ``data``, ``split``, ``threshold``): the
    ``vislab evaluate`` options that write that file; ``{}`` when no run holds a readable one."""
    if not evaluation:
        return {}
    for run_dir in run_dirs:
        path = Path(run_dir) / f"metrics_{evaluation}.json" if run_dir else None
        if path is None or not path.is_file():
            continue
        try:
            metrics = read_json(path, "a metrics file (JSON)", "")
        except BadFileError:
            continue
        if isinstance(metrics, dict) and _metrics_problem(metrics) is None:
            return metrics
    return {}


def _evaluate_command(evaluation: str | None, recorded: dict) -> str:
    """The ``vislab evaluate RUN ...`` command that writes a run's ``metrics_<evaluation>.json``
    (``metrics.json`` without one): the data, split and threshold another run's file records, else the split
    the name ends with.

    Example:
        >>> _evaluate_command(None, {}), _evaluate_command("val", {})
        ('vislab evaluate RUN', 'vislab evaluate RUN --split val')
        >>> _evaluate_command("seg3_test", {"data": "data/seg3", "split": "test"})
        'vislab evaluate RUN --data data/seg3'
    """
    import shlex

    from vislab.evaluate.runner import evaluation_name

    if not evaluation:
        return "vislab evaluate RUN"
    split = recorded.get("split") if isinstance(recorded.get("split"), str) else None
    threshold = recorded.get("threshold") if _number(recorded.get("threshold")) else None
    data = recorded.get("data") if isinstance(recorded.get("data"), str) else None
    if split is None:  # no run's file to read: the name ends with the split (``val``, ``photos_test``)
        split = evaluation.rsplit("_", 1)[-1]
        split = split if split in ("train", "val", "test") else "test"
    words = []
    if evaluation != evaluation_name(split, None, threshold):  # another data set's evaluation
        words += ["--data", data] if data else ["--data", "DATA"]
    if split != "test":
        words += ["--split", split]
    if threshold is not None:
        words += ["--threshold", f"{threshold:g}"]
    command = " ".join(["vislab evaluate RUN", shlex.join(words)]).strip()
    if "DATA" in words:  # no run's file says which data: name what DATA is
        command += f" (DATA: the data metrics_{evaluation}.json was measured on)"
    return command


# ----------------------------------------------------------------------------- reading one run


def _score(row: dict):
    """The number a run ranks by: test accuracy, else mIoU (segmentation), else mAP (multi-label)."""
    for key in ("accuracy", "miou", "map"):
        if row.get(key) is not None and math.isfinite(row[key]):
            return row[key]
    return None


def _row(run_dir: Path, evaluation: str | None = None) -> dict:
    from vislab.evaluate.runner import has_test_split
    from vislab.runs import unfinished_run

    # a damaged file leaves its columns blank, not the whole leaderboard: file name -> the reader's message
    unread: dict[str, str] = {}
    spec = _checked(run_dir / "model.json", _json(run_dir / "model.json", "a vislab model description (JSON)",
                                                  _MODEL_FIX, unread), _spec_problem, _MODEL_FIX, unread)
    metrics_file = f"metrics_{evaluation}.json" if evaluation else "metrics.json"
    fix = _evaluate_fix(run_dir, evaluation)
    metrics = _checked(run_dir / metrics_file, _json(run_dir / metrics_file, "a metrics file (JSON)", fix, unread),
                       _metrics_problem, fix, unread)
    epochs, seconds = _history(run_dir / "history.csv", unread)
    unevaluable = None
    if not (run_dir / metrics_file).is_file() and unfinished_run(run_dir) is None:
        unevaluable = _model_problem(run_dir, metrics_file, unread)
    # older metrics.json files carry no data/split: the run's own data and test split
    data = _data_section(run_dir, unread) if not metrics.get("data") and (not evaluation or metrics) else {}
    parameters = spec.get("parameters")
    if parameters is None:
        parameters = _safetensors_parameters(run_dir / "model.safetensors")
    macro = metrics.get("macro") if isinstance(metrics.get("macro"), dict) else {}
    return {
        "run": run_dir.resolve().name,
        "model": spec.get("name") or spec.get("architecture"),
        "data": metrics.get("data") or _config_data(data),
        "split": metrics.get("split") or ("test" if not evaluation else evaluation.rsplit("_", 1)[-1]),
        "metrics_file": metrics_file,
        "parameters": parameters,
        "epochs": epochs,
        "train_seconds": seconds,
        "accuracy": metrics.get("accuracy"),
        "macro_f1": macro.get("f1"),
        "auc": metrics.get("roc_auc"),
        "loss": metrics.get("loss"),
        "run_dir": str(run_dir),
        "task": spec.get("task") or DEFAULT_TASK,
        "miou": metrics.get("miou"),
        "map": metrics.get("map"),
        "unread": unread,
        "unfinished": unfinished_run(run_dir),
        # why `vislab evaluate` cannot write the missing metrics file: a damaged or missing model.json
        "unevaluable": unevaluable,
        # False: the run's own data has no test split, so `vislab evaluate RUN` cannot write metrics.json
        "own_test_split": None if evaluation or metrics else has_test_split(data),
    }


_MODEL_FIX = "retrain, or restore the file"


def _model_problem(run_dir: Path, metrics_file: str, unread: dict[str, str]) -> str | None:
    """Why `vislab evaluate` cannot write the run's missing ``metrics_file`` (its model.json is damaged or
    missing), or None."""
    cannot = f"{run_dir} has no {metrics_file}, and `vislab evaluate` cannot write it"
    if "model.json" in unread:  # the reader's message names the file and the fix
        return f"{cannot}: {unread['model.json']}"
    if not (run_dir / "model.json").is_file():
        return f"{cannot}: {run_dir / 'model.json'} is missing; {_MODEL_FIX}"
    return None
# what a row shows of metrics.json: each a number or null (JSON's), else the file is not one evaluate wrote
_METRIC_KEYS = ("accuracy", "miou", "map", "loss", "roc_auc")
_SCORE_KEYS = ("accuracy", "miou", "map")


def _evaluate_fix(run_dir: Path, evaluation: str | None) -> str:
    if evaluation in ("train", "val"):
        return f"`vislab evaluate {run_dir} --split {evaluation}` writes it again"
    if evaluation:
        return f"`vislab evaluate {run_dir}` with the --data and --split that wrote it writes it again"
    return f"`vislab evaluate {run_dir}` writes it again"


def _checked(path: Path, value, problem, fix: str, unread: dict[str, str]) -> dict:
    """``value`` read from ``path`` when it has the shape the row needs, else ``{}`` with the reason recorded
    (a file that could not be read at all is already recorded, and is ``None`` here)."""
    if value is None and path.name in unread or not path.is_file():
        return {}
    reason = problem(value)
    if reason is not None:
        unread[path.name] = f"{path}: {reason}; {fix}"
        return {}
    return value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_problem(metrics) -> str | None:
    if not isinstance(metrics, dict):
        return f"not a metrics file (a JSON object of metrics), it holds {_json_kind(metrics)}"
    for key in _METRIC_KEYS:
        value = metrics.get(key)
        if value is not None and not _number(value):
            return f"its {key} is {json.dumps(value)[:40]}, not a number"
    for key in ("data", "split"):
        if metrics.get(key) is not None and not isinstance(metrics[key], str):
            return f"its {key} is {json.dumps(metrics[key])[:40]}, not a name"
    macro = metrics.get("macro")
    if isinstance(macro, dict) and macro.get("f1") is not None and not _number(macro["f1"]):
        return f"its macro f1 is {json.dumps(macro['f1'])[:40]}, not a number"
    if not any(key in metrics for key in _SCORE_KEYS):
        return "holds no accuracy, miou or map (not a metrics file `vislab evaluate` wrote)"
    if not any(_number(metrics.get(key)) and math.isfinite(metrics[key]) for key in _SCORE_KEYS):
        return "holds no accuracy, miou or map to rank by (each is null or not finite)"
    return None


def _spec_problem(spec) -> str | None:
    if not isinstance(spec, dict):
        return f"not a vislab model description (a JSON object), it holds {_json_kind(spec)}"
    count = spec.get("parameters")
    if count is not None and not (_number(count) and math.isfinite(count) and count >= 0):
        return f"its parameters is {json.dumps(count)[:40]}, not a count"
    return None


def _json_kind(value) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number",
            dict: "an object"}.get(type(value), type(value).__name__)


def _data_section(run_dir: Path, unread: dict[str, str]) -> dict:
    """The ``data`` mapping of the run's config.yaml (``{}`` when it has none or cannot be read)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = read_yaml(path, "a run's config (YAML)", "restore the config.yaml the run wrote") or {}
    except BadFileError as exc:
        unread[path.name] = str(exc)
        return {}
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def _config_data(data: dict) -> str | None:
    source = data.get("source")
    return str(source) if source is not None else None


def _json(path: Path, kind: str, fix: str, unread: dict[str, str]):
    if not path.is_file():
        return None
    try:
        return read_json(path, kind, fix)
    except BadFileError as exc:
        unread[path.name] = str(exc)
        return None


def _history(path: Path, unread: dict[str, str]) -> tuple[int | None, float | None]:
    """The row's epochs (the highest trained, else the count of rows) and training seconds."""
    from vislab.runs import history_totals

    if not path.is_file():
        return None, None
    try:
        totals = history_totals(path)
    except BadFileError as exc:
        unread[path.name] = str(exc)
        return None, None
    return (totals.rows if totals.epochs is None else totals.epochs), totals.seconds


def _safetensors_parameters(path: Path) -> int | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with reading(path, "a safetensors weights file", "retrain, or restore the file"):
            total = 0
            with safe_open(str(path), framework="np") as handle:
                for name in handle.keys():
                    shape = handle.get_slice(name).get_shape()
                    total += math.prod(shape)
            return int(total)
    except BadFileError:  # an unreadable weights file just leaves the count blank
        return None


def _count(value) -> str:
    if value is None:
        return UNKNOWN
    value = int(value)
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else str(value)


def _duration(seconds) -> str:
    if seconds is None:
        return UNKNOWN
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def _fixed(value) -> str:
    return UNKNOWN if value is None else f"{value:.4f}"


def _plain(value) -> str:
    return UNKNOWN if value is None else str(value)
