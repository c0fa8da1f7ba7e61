"""Training callbacks: the loop runs a list of them, Keras-style.

A callback has ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``, and may set
``stop_training``. ``state_dict``/``load_state_dict`` put its state in the
checkpoint, so a resumed run continues exactly.

The loop (:mod:`vislab.train.loop`) builds, in this order: :class:`CSVHistory`,
:class:`TensorBoard`, :class:`EpochPrinter`, :class:`EarlyStopping` (always there:
it tracks the best epoch; it stops only when ``patience`` is not None),
:class:`BestCheckpoint`, :class:`LastCheckpoint` and, with ``freeze_epochs``,
:class:`GradualUnfreeze`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path


class Callback:
    stop_training = False

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Keras' meanings: ``patience=0`` stops at the first epoch without improvement,
    ``patience=None`` never stops (the best epoch is still tracked, for the best
    checkpoint). ``mode`` is ``"min"`` or ``"max"``; the loop takes it from the task
    (``Task.mode``), so ``val_miou`` is maximised and ``val_mae`` minimised.

    Example:
        >>> stopper = EarlyStopping("val_loss", patience=1, mode="min")
        >>> for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7]):
        ...     stopper.on_epoch_end(epoch, {"val_loss": loss})
        >>> stopper.stop_training, stopper.best_epoch
        (True, 1)
    """

    def __init__(self, monitor: str = "val_loss", patience: int | None = 3, min_delta: float = 0.0,
                 mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
        if patience is not None and patience < 0:
            raise ValueError(f"EarlyStopping patience must be >= 0 or None (off), got {patience}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, abs(min_delta), mode
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.stop_training = False

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.monitor not in logs or logs[self.monitor] is None:
            raise KeyError(
                f"early stopping monitors {self.monitor!r}, which this run does not log; "
                f"available: {', '.join(k for k, v in logs.items() if v is not None)}"
            )
        value = float(logs[self.monitor])
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                self.stop_training = True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


class CSVHistory(Callback):
    """history.csv, one row per epoch, with the columns the task names (Keras' CSVLogger)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = Path(path), list(columns)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        append_history(self.path, logs, self.columns)


def append_history(path: Path, row: dict, columns: list[str]) -> None:
    missing = [k for k in row if k not in columns]
    if missing:  # a logged value the columns do not name would vanish silently
        raise KeyError(f"history.csv has no column for {missing}; the task's history_columns() must name them")
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    from vislab.core.files import read_csv_rows

    fix = "restore the history.csv the run wrote, or delete it to start the history afresh"
    lines = [line for line in read_csv_rows(path, "a training history (CSV)", fix) if line]
    if not lines:
        return []
    try:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in zip(lines[0], line)}
                for line in lines[1:]]
    except ValueError as exc:
        from vislab.core.files import BadFileError

        raise BadFileError(path, f"holds a value that is not a number ({exc})", fix) from None


def truncate_history(path: Path, completed: int, columns: list[str]) -> None:
    """After a kill, history.csv may hold an epoch the checkpoint does not: keep the first ``completed``."""
    rows = [r for r in read_history(path.parent) if r["epoch"] is not None and r["epoch"] <= completed]
    if path.exists():
        path.unlink()
    for row in rows:
        row["epoch"] = int(row["epoch"])
        append_history(path, row, columns)


class TensorBoard(Callback):
    """Every logged number as a scalar per epoch (``tensorboard --logdir runs``)."""

    def __init__(self, writer):
        self.writer = writer

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for key, value in logs.items():
            if key != "epoch" and value is not None:
                self.writer.add_scalar(key, value, epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs=None) -> None:
        self.writer.close()


class EpochPrinter(Callback):
    """One line per epoch: ``epoch 3/10  loss 0.41  acc 0.86  val_loss ...  lr  seconds``."""

    def __init__(self, console, epochs: int, metric_names: list[str]):
        self.console, self.epochs, self.names = console, epochs, ["loss", *metric_names]

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        parts = [f"epoch {int(logs['epoch'])}/{self.epochs}"]
        parts += [f"{name} {logs[f'train_{name}']:.4f}" for name in self.names
                  if logs.get(f"train_{name}") is not None]
        parts += [f"val_{name} {logs[f'val_{name}']:.4f}" for name in self.names
                  if logs.get(f"val_{name}") is not None]
        parts += [f"lr {logs['lr']:.3g}", f"{logs['seconds']:.1f}s"]
        self.console.print("  ".join(parts))


class BestCheckpoint(Callback):
    """checkpoints/best.safetensors whenever the tracker's best epoch moves."""

    def __init__(self, path: Path, tracker: EarlyStopping, model, save):
        self.path, self.tracker, self.model, self.save = Path(path), tracker, model, save
        self._last = tracker.best_epoch

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.tracker.best_epoch != self._last:
            self.save(self.model, self.path)
            self._last = self.tracker.best_epoch


class LastCheckpoint(Callback):
    """checkpoints/last.pt after every epoch: everything exact resume needs, written atomically."""

    def __init__(self, path: Path, state_fn, save):
        self.path, self.state_fn, self.save = Path(path), state_fn, save

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.save(self.path, self.state_fn(epoch))


class GradualUnfreeze(Callback):
    """Keep the backbone frozen for ``epochs`` epochs, then unfreeze it (fastai's fine_tune)."""

    def __init__(self, model, epochs: int, console):
        self.model, self.epochs, self.console = model, epochs, console

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.epochs and epoch == self.epochs:
            from vislab.models.finetune import unfreeze

            unfreeze(self.model)
            self.console.print(f"epoch {epoch + 1}: unfreezing the backbone (--freeze-epochs {self.epochs})")


class StagedUnfreeze(Callback):
    """Gradual unfreezing in stages (ULMFiT): at each ``(epoch, blocks)`` unfreeze the top ``blocks``
    blocks of the backbone (None: all of it), e.g. ``[(1, 2), (3, 4), (5, None)]``.

    The optimiser already holds every parameter (``finetune.param_groups(include_frozen=True)``),
    so a stage only flips ``requires_grad``; a resumed run gets the flags from its checkpoint.
    """

    def __init__(self, model, stages: list[tuple[int, int | None]], console):
        self.model, self.stages, self.console = model, list(stages), console

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        from vislab.models.finetune import unfreeze_stage

        for at, blocks in self.stages:
            if at == epoch:
                self.console.print(f"epoch {epoch + 1}: unfreezing {unfreeze_stage(self.model, blocks)}")
