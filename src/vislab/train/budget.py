"""``--time-budget 5m``: train for about that long, the schedule fitted to it.

The budget counts from the start of the run (data loading included) to the end of the test
evaluation. The epochs come from measured times:

1. before training, from the speed probe's seconds per step of the chosen precision (the probe
   the trainer runs anyway, :mod:`vislab.core.measure`) times the steps per epoch; without a
   probe (a forced precision) a provisional count;
2. after the first epoch, from that epoch's real time (loading and validation included, a second
   speed probe not), which replaces the estimate, and once more after the second (the first carries
   one-time costs); after any later epoch when the epochs left no longer fit at the mean time of the
   epochs since the first. Each time, the per-batch schedule (one-cycle, cosine) is rebuilt for the
   new count and continued from the step reached, so it still ends at the last step;
3. before each further epoch, a guard: an epoch that would end past the budget does not start.

The time left for after training is the test pass (estimated from the validation pass, or from
the training images/s) plus half the set-up time before the first epoch (the evaluation's
figures and report cost about what the audit's did). config.yaml records the budget, the
estimates and the epochs in ``recipe_choices["time_budget"]``.

Example:
    >>> plan_epochs(budget=300, elapsed=20, epoch_seconds=25, reserve=10)
    10
"""

from __future__ import annotations

import math
import time
import warnings

# the guard lets an epoch start when it is expected to end within this share past the budget
OVERRUN = 0.02


def epochs_that_fit(left: float, epoch_seconds: float) -> int:
    """Whole epochs of ``epoch_seconds`` in ``left`` seconds (0 when nothing is left)."""
    return max(0, math.floor(left / epoch_seconds)) if epoch_seconds > 0 and left > 0 else 0


def budget_scheduler(cfg, user=()) -> str:
    """The schedule a budgeted run trains with: one-cycle, fitted to the planned epochs, unless the user
    chose one (``user`` holds the keys they gave). ``--recipe auto``'s line says this one."""
    if cfg.train.scheduler == "none" and "train.scheduler" not in user:
        return "onecycle"
    return cfg.train.scheduler


def plan_epochs(budget: float, elapsed: float, epoch_seconds: float, reserve: float, done: int = 0) -> int:
    """Total epochs: those ``done`` plus the whole epochs of ``epoch_seconds`` that fit in what is left
    of ``budget`` after ``elapsed`` and the ``reserve`` for after training (at least 1 in all)."""
    return max(1, done + epochs_that_fit(budget - elapsed - reserve, epoch_seconds))


class TimeBudget:
    """The plan for one run; ``started``: ``time.perf_counter()`` when the run began."""

    def __init__(self, seconds: float, started: float):
        self.seconds, self.started = float(seconds), started
        self.setup = None  # seconds before the first epoch
        self.reserve = 0.0
        self.epoch_seconds = None  # the last epoch's (the guard's estimate of the next)
        self.epoch_times: list[float] = []  # every epoch's, in order
        self.record: dict = {"seconds": self.seconds}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _reserve(self, trainer, epoch_seconds: float | None = None) -> float:
        """Seconds to keep for the test evaluation, figures and report."""
        splits = trainer.dataset.splits
        test = len(splits["test"]) if "test" in splits else 0
        train = max(len(splits["train"]), 1)
        per_image = (epoch_seconds / train / 3) if epoch_seconds else 0.0  # a forward is about a third of a step
        return test * per_image + 0.5 * (self.setup or 0.0)

    def plan(self, trainer, console, user=()) -> int:
        """Before the first epoch: the epochs from the probe, the schedule built for them (one-cycle
        unless the user chose a schedule: ``user`` holds the keys they gave)."""
        cfg = trainer.cfg
        scheduler = budget_scheduler(cfg, user)
        if scheduler != cfg.train.scheduler:
            cfg.train.scheduler = scheduler
            self.record["scheduler"] = f"{scheduler} (fitted to the budget)"
        self.setup = self.elapsed()
        steps = trainer.steps_per_epoch
        step_seconds = trainer.choice.seconds.get(trainer.choice.label) if trainer.choice.seconds else None
        if step_seconds:
            estimate = step_seconds * steps * 1.15  # the probe times compute only: loading and validation on top
            self.reserve = self._reserve(trainer, estimate)
            epochs = plan_epochs(self.seconds, self.elapsed(), estimate, self.reserve)
            self.record.update(probe_step_seconds=round(step_seconds, 6), estimated_epoch_seconds=round(estimate, 3))
        else:
            epochs = max(1, cfg.train.epochs)  # provisional: the first epoch's time decides
            self.record.update(probe_step_seconds=None)
        self._set_epochs(trainer, epochs, done=0)
        self.record.update(setup_seconds=round(self.setup, 3), planned_epochs=epochs)
        console.print(f"time budget {duration_words(self.seconds)}: {epochs} epoch(s) planned"
                      + (f" from the probe's {step_seconds * 1000:.1f} ms a step x {steps} steps" if step_seconds
                         else "; the first epoch's time sets the count")
                      + f", {self.setup:.0f}s spent before training")
        return epochs

    def after_epoch(self, trainer, done: int, epoch_seconds: float) -> str | None:
        """After epoch ``done`` (1-based count; ``epoch_seconds`` without a second speed probe): re-plan
        from the real time of the first epoch, and again from the second's (the first carries one-time
        costs: kernel selection, loader start-up); after that, whenever the epochs left would not fit at
        the mean time of the epochs since the first (a fast second epoch, a machine that got busier),
        so that the schedule is rebuilt to end at the epoch the run really ends with."""
        self.epoch_seconds = epoch_seconds
        self.epoch_times.append(epoch_seconds)
        before = trainer.cfg.train.epochs
        if done >= before:
            return None
        if done > 2:
            typical = sum(self.epoch_times[1:]) / len(self.epoch_times[1:])
            if self.elapsed() + (before - done) * typical + self.reserve <= self.seconds * (1 + OVERRUN):
                return None  # the plan still fits
            epoch_seconds = typical
        self.reserve = self._reserve(trainer, epoch_seconds)
        epochs = plan_epochs(self.seconds, self.elapsed(), epoch_seconds, self.reserve, done=done)
        self.record.update({f"epoch_{done}_seconds": round(epoch_seconds, 3), "reserve_seconds": round(self.reserve, 3),
                            f"replanned_epochs_after_{done}": epochs})
        if epochs == before:
            return None
        self._set_epochs(trainer, epochs, done=done)
        took = f"epoch {done} took {epoch_seconds:.1f}s" if done <= 2 else \
            f"epochs 2-{done} took {epoch_seconds:.1f}s on average"
        return (f"time budget: {took}, so {epochs} epoch(s) in all (planned {before}); the schedule now ends "
                f"at epoch {epochs}")

    def out_of_time(self) -> bool:
        """Whether one more epoch as long as the last would end past the budget (less the reserve)."""
        if self.epoch_seconds is None:
            return False
        return self.elapsed() + self.epoch_seconds + self.reserve > self.seconds * (1 + OVERRUN)

    def finish(self, epochs_run: int) -> dict:
        self.record.update(epochs=epochs_run, training_ended_at_seconds=round(self.elapsed(), 3))
        return self.record

    def _set_epochs(self, trainer, epochs: int, done: int) -> None:
        cfg = trainer.cfg
        cfg.train.epochs = epochs
        for callback in getattr(trainer, "budget_callbacks", ()):
            callback.epochs = epochs
        if epochs <= done:
            return
        refit_schedule(trainer, done * trainer.steps_per_epoch)

    def describe(self) -> str:
        return duration_words(self.seconds)


def refit_schedule(trainer, done_steps: int) -> None:
    """(Re)build a per-batch schedule (one-cycle, cosine, warm-up) for ``cfg.train.epochs`` and move it
    to ``done_steps``; epoch-level schedules (step, plateau) and a constant rate are left as they are."""
    from vislab.train.optim import make_scheduler

    if trainer.cfg.train.scheduler not in ("onecycle", "cosine") and not trainer.cfg.train.warmup_epochs:
        return
    for group in trainer.optimizer.param_groups:  # the peak / base rate the schedule was built from
        group["lr"] = group.get("max_lr", group.get("initial_lr", group["lr"]))
        group.pop("initial_lr", None)
    scheduler, per_batch = make_scheduler(trainer.optimizer, trainer.cfg, trainer.steps_per_epoch)
    if scheduler is not None:  # None: too few steps left for the schedule, which holds the rate constant
        with warnings.catch_warnings():  # fast-forwarding a new schedule past steps already taken, not a misuse
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            for _ in range(done_steps):
                scheduler.step()
    trainer.scheduler, trainer.step_per_batch = scheduler, per_batch


def duration_words(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
