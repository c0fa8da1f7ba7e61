"""Training callbacks: a small interface (``on_epoch_end(epoch, logs)`` and a stop flag), Keras-style."""

from __future__ import annotations

import math


class Callback:
    stop_training = False

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Example:
        >>> stopper = EarlyStopping("val_loss", patience=1)
        >>> for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7]):
        ...     stopper.on_epoch_end(epoch, {"val_loss": loss})
        >>> stopper.stop_training, stopper.best_epoch
        (True, 1)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "auto"):
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        if mode == "auto":
            mode = "max" if any(k in monitor for k in ("acc", "f1", "auc")) else "min"
        self.mode = mode
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
            if self.patience and self.wait >= self.patience:
                self.stop_training = True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
