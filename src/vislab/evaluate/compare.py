"""Leaderboard of several runs, read from their run folders only (no model is loaded).

Columns: run, model, parameters, epochs, training seconds, test accuracy,
macro-F1, ROC AUC (and loss). Written as ``leaderboard.csv``, drawn as
``leaderboard.png`` and printed as a rich table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

COLUMNS = ["run", "model", "parameters", "epochs", "train_seconds", "accuracy", "macro_f1", "auc", "loss", "run_dir",
           "task", "miou"]


def compare_runs(run_dirs: Sequence) -> list[dict]:
    """One row per run folder, best test accuracy first (runs not yet evaluated last).

    Reads ``model.json`` (name, parameter count; the count falls back to the
    tensor shapes in ``model.safetensors``), ``history.csv`` (epochs, summed
    ``seconds``) and ``metrics.json`` (accuracy, macro F1, ``roc_auc``). A missing
    file leaves its columns ``None``.

    Raises:
        FileNotFoundError: a path is not a folder.

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
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir} is not a folder; pass run folders written by `vislab train`")
        rows.append(_row(run_dir))
    # Unevaluated runs sink to the bottom instead of breaking the sort.
    # segmentation runs rank by mIoU (they have no accuracy)
    rows.sort(key=lambda r: -r["accuracy"] if r["accuracy"] is not None else
              (-r["miou"] if r.get("miou") is not None else math.inf))
    return rows


def write_leaderboard(rows: Sequence[dict], out_dir) -> tuple[Path, Path]:
    """Write ``leaderboard.csv`` and ``leaderboard.png`` into ``out_dir``; return both paths.

    Example:
        >>> import tempfile
        >>> csv_path, png_path = write_leaderboard([{"run": "a", "accuracy": 0.9}], tempfile.mkdtemp())
        >>> csv_path.read_text().splitlines()[0].split(",")[:3]
        ['run', 'model', 'parameters']
    """
    from vislab.viz.evaluation import plot_leaderboard

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


def print_leaderboard(rows: Sequence[dict], console=None) -> None:
    """Print the leaderboard as a rich table (``console`` defaults to a new rich Console)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Leaderboard (test split)")
    headers = [("#", "right"), ("run", "left"), ("model", "left"), ("params", "right"), ("epochs", "right"),
               ("train time", "right"), ("accuracy", "right"), ("macro F1", "right"), ("AUC", "right"), ("loss", "right")]
    segmentation = any(r.get("miou") is not None for r in rows)
    if segmentation:
        headers.insert(6, ("mIoU", "right"))
    for name, justify in headers:
        table.add_column(name, justify=justify)
    for rank, r in enumerate(rows, 1):
        table.add_row(
            str(rank),
            str(r.get("run")),
            str(r.get("model") or "?"),
            _count(r.get("parameters")),
            _plain(r.get("epochs")),
            _duration(r.get("train_seconds")),
            *([_fixed(r.get("miou"))] if segmentation else []),
            _fixed(r.get("accuracy")),
            _fixed(r.get("macro_f1")),
            _fixed(r.get("auc")),
            _fixed(r.get("loss")),
        )
    console.print(table)
    missing = [r["run"] for r in rows if r.get("accuracy") is None and r.get("miou") is None]
    if missing:
        console.print(f"[yellow]not evaluated yet (no metrics.json): {', '.join(missing)}; run `vislab evaluate RUN_DIR`[/]")


# ----------------------------------------------------------------------------- reading one run


def _row(run_dir: Path) -> dict:
    spec = _json(run_dir / "model.json") or {}
    metrics = _json(run_dir / "metrics.json") or {}
    epochs, seconds = _history(run_dir / "history.csv")
    parameters = spec.get("parameters")
    if parameters is None:
        parameters = _safetensors_parameters(run_dir / "model.safetensors")
    macro = metrics.get("macro") if isinstance(metrics.get("macro"), dict) else {}
    return {
        "run": run_dir.resolve().name,
        "model": spec.get("name") or spec.get("architecture"),
        "parameters": parameters,
        "epochs": epochs,
        "train_seconds": seconds,
        "accuracy": metrics.get("accuracy"),
        "macro_f1": macro.get("f1"),
        "auc": metrics.get("roc_auc"),
        "loss": metrics.get("loss"),
        "run_dir": str(run_dir),
        "task": spec.get("task", "classification"),
        "miou": metrics.get("miou"),
    }


def _json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _history(path: Path) -> tuple[int | None, float | None]:
    if not path.is_file():
        return None, None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return 0, 0.0
    epochs = len(rows)
    if "epoch" in rows[0]:
        # a resumed run may repeat an epoch row; the highest epoch number is what was trained
        try:
            epochs = max(int(float(r["epoch"])) for r in rows if r.get("epoch"))
        except ValueError:
            pass
    seconds = None
    if "seconds" in rows[0]:
        try:
            seconds = round(sum(float(r["seconds"]) for r in rows if r.get("seconds")), 3)
        except ValueError:
            seconds = None
    return epochs, seconds


def _safetensors_parameters(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        total = 0
        with safe_open(str(path), framework="np") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                total += math.prod(shape)
        return int(total)
    except Exception:  # noqa: BLE001 - an unreadable weights file just leaves the count blank
        return None


def _count(value) -> str:
    if value is None:
        return "?"
    value = int(value)
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else str(value)


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def _fixed(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def _plain(value) -> str:
    return "?" if value is None else str(value)
