"""The fit loop: config -> trained run folder.

``fit(cfg)`` loads the data, builds the model with its preprocessing and the task
(``cfg.task``: the loss, the metrics and their directions), trains with validation
every epoch, and runs the callbacks (history.csv, TensorBoard, the epoch line, early
stopping, best/last checkpoints, gradual unfreezing); then it writes
``model.safetensors`` + ``model.json`` and the curves plot. ``fit(cfg, resume=RUN)``
continues exactly where the last checkpoint left off. The test evaluation, figures
and report come after it, in :func:`vislab.pipelines.train`.

Example:
    >>> from vislab.core.config import resolve_config
    >>> cfg = resolve_config(overrides={"data.source": "digits", "model.name": "chollet_convnet",
    ...                                 "train.epochs": 1, "out": "/tmp/vislab-doc"})
    >>> result = fit(cfg, progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from vislab.core.config import Config, ConfigError, config_from_dict
from vislab.core.device import autocast_context, resolve_device, resolve_precision, seed_everything
from vislab.core.weights import load_weights, parameter_counts, save_weights, unwrap
from vislab.data.augment import Augment
from vislab.data.loaders import epoch_generator, make_batches
from vislab.data.sources import Dataset, load_dataset, split_table
from vislab.models.build import build_model
from vislab.models.registry import check_model_name
from vislab.runs import write_model
from vislab.tasks import Task, accumulate, task_for_config
from vislab.train import distributed, speed
from vislab.train.callbacks import (
    BestCheckpoint, Callback, CSVHistory, EarlyStopping, EpochPrinter, GradualUnfreeze, LastCheckpoint, TensorBoard,
    read_history, truncate_history,
)
from vislab.train.checkpoint import load_training_state, rng_state, save_training_state, set_rng_state
from vislab.train.optim import make_optimizer, make_scheduler

# the classification task's columns (tasks.base.Task.history_columns), kept for callers of the old name
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict]
    metrics: dict | None  # filled by vislab.pipelines.train after the test evaluation
    stopped_early: bool
    parameters: dict | None = None  # total / trainable / non_trainable
    dataset: Dataset | None = field(default=None, repr=False)  # what was trained on (for the evaluation)


# --------------------------------------------------------------------------- run folder helpers
def default_run_dir(cfg: Config) -> Path:
    source = Path(cfg.data.source).name if cfg.data.source not in ("", None) else "data"
    model = cfg.model.name.replace(":", "-").replace("/", "-")
    return Path("runs") / f"{model}-{source}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_bad_files(run_dir: Path, bad_files) -> None:
    with open(run_dir / "bad_files.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows(bad_files)


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Holds what one run needs; ``fit()`` is the public entry point."""

    def __init__(self, cfg: Config, run_dir: Path, dataset: Dataset, console,
                 dist: distributed.DistContext = distributed.SINGLE, task: Task | None = None):
        self.cfg, self.run_dir, self.dataset, self.console = cfg, run_dir, dataset, console
        self.dist = dist  # torchrun: this rank's place; the single process otherwise
        self.task = task if task is not None else task_for_config(cfg)
        self.device = resolve_device(cfg.train.device)
        self.amp_dtype = resolve_precision(cfg.train.precision, self.device)
        self.model, self.preprocessing = build_model(
            self.task.model_config(cfg.model, dataset.native_size), self.task.num_outputs(dataset.class_names), dataset.channels, dataset.native_size
        )
        # hook: finetune (freeze / finetune_last / param groups) -- see vislab.models.finetune
        self.param_groups = self._configure_trainable()
        speed.pool_before_relu(self.model)  # same numbers, ReLU on 4x fewer values
        if self.device.type == "cpu":
            speed.reuse_freed_memory()
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training batches keep one shape: autotune once
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        # eval_model: no DDP wrapper, evaluation needs no gradient sync; forward_model trains
        self.eval_model = torch.compile(self.model) if cfg.train.compile else self.model
        self.forward_model = distributed.wrap_model(dist, self.eval_model, self.device)
        self.augment = Augment(cfg.augment) if cfg.augment.active else None
        pin = self.device.type == "cuda"
        train = _resident(dataset.splits["train"], self.device)
        self.train_batches = distributed.shard(dist, make_batches(
            train, self.preprocessing, cfg.train.batch_size, shuffle=True,
            drop_last=len(train) > cfg.train.batch_size, workers=cfg.data.workers, pin_memory=pin))
        self.val_split = dataset.splits.get("val")
        self.val_batches = (distributed.shard(dist, make_batches(
            _resident(self.val_split, self.device), self.preprocessing, cfg.train.eval_batch_size,
            workers=cfg.data.workers, pin_memory=pin)) if self.val_split else None)
        self.optimizer = make_optimizer(self.param_groups, cfg)
        # fp16 gradients underflow without loss scaling (bf16 has fp32's range and needs none):
        # GPUs without bf16 (T4, V100) get fp16 under --precision auto
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.cached = None
        steps_per_epoch = len(self.train_batches)
        if cfg.model.cache_features:
            # frozen backbone: features once, then only the head trains (seed 002's fast feature extraction)
            from vislab.train.features import CachedTraining

            if self.task.name != "classification":
                raise ConfigError(f"--cache-features trains a classification head on cached features; the "
                                  f"{self.task.name} task trains end to end: drop --cache-features")
            if self.augment is not None:
                console.print("[yellow]--cache-features: augmentation does not apply to cached features "
                              "and is ignored[/]")
            self.cached = CachedTraining(self.model, self.preprocessing, dataset.splits["train"], self.val_split,
                                         cfg.train.batch_size, precision=cfg.train.precision,
                                         workers=cfg.data.workers)
            steps_per_epoch = -(-len(dataset.splits["train"]) // cfg.train.batch_size)
        self.scheduler, self.step_per_batch = make_scheduler(self.optimizer, cfg, steps_per_epoch)
        es = cfg.train.early_stopping
        # no validation split: val_loss -> train_loss (the keys history.csv has)
        monitor = es.monitor if self.val_split is not None or not es.monitor.startswith("val_") \
            else "train_" + es.monitor[4:]
        # always there: it tracks the best epoch for the best checkpoint; it stops only with a patience
        self.stopper = EarlyStopping(monitor, es.patience, es.min_delta, mode=self.task.mode(monitor))
        self.start_epoch = 0

    def _configure_trainable(self):
        mcfg = self.cfg.model
        if mcfg.freeze == "none" and not mcfg.finetune_last and mcfg.lr_backbone is None:
            return [p for p in self.model.parameters() if p.requires_grad]
        from vislab.models import finetune

        if mcfg.freeze == "backbone" or mcfg.finetune_last:  # --finetune-last N implies a frozen rest
            finetune.freeze(self.model, "backbone")
            if mcfg.finetune_last:
                finetune.finetune_last(self.model, mcfg.finetune_last)
        self.console.print(finetune.trainable_report(self.model))
        # every parameter goes to the optimiser: gradual unfreezing flips requires_grad later
        return finetune.param_groups(self.model, self.cfg.train.lr, mcfg.lr_backbone, self.cfg.train.weight_decay)

    # ---- batches
    def model_input(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        augment = None
        if generator is not None and self.augment is not None:
            augment = lambda x: self.augment(x, generator=generator)  # noqa: E731
        x = self.preprocessing(images, augment=augment)
        return x.contiguous(memory_format=self.memory_format)

    def augmented_input(self, images: torch.Tensor, targets: torch.Tensor, generator):
        """A training batch's model input and targets, augmented together by the task
        (classification: the images only, with the same random draws as ``model_input``)."""
        if self.augment is None:
            return self.model_input(images), targets
        moved = {}

        def augment(x):
            x, moved["targets"] = self.task.augment_pair(self.augment, x, targets, generator)
            return x

        x = self.preprocessing(images.to(self.device, non_blocking=True), augment=augment)
        return x.contiguous(memory_format=self.memory_format), moved.get("targets", targets)

    def _epoch_logs(self, prefix: str, loss_sum, sums: dict, seen: int) -> dict:
        """Reduce the running sums across ranks (one host read) and turn them into the task's metrics."""
        keys = sorted(sums)
        reduced = distributed.all_reduce_sum(self.dist, loss_sum, *(sums[k] for k in keys), torch.tensor(seen))
        total = float(reduced[-1])
        metrics = self.task.epoch_metrics({k: v for k, v in zip(keys, reduced[1:-1])}, total)
        logs = {f"{prefix}loss": float(reduced[0]) / max(total, 1)}
        logs.update({f"{prefix}{k}": v for k, v in metrics.items()})
        return logs

    def train_epoch(self, epoch: int, progress) -> dict:
        cfg = self.cfg
        if self.cached is not None:
            step = self.scheduler.step if self.scheduler is not None and self.step_per_batch else None
            return self.cached.train_epoch(self.optimizer, cfg.seed, epoch, cfg.train.label_smoothing,
                                           after_step=step, weight_decay=cfg.train.weight_decay)
        self.model.train()
        if cfg.model.freeze == "backbone" or cfg.model.finetune_last:
            from vislab.models.finetune import keep_frozen_bn_eval

            keep_frozen_bn_eval(self.model)
        self.train_batches.set_epoch(cfg.seed, epoch)
        # each rank its own augmentation stream; rank 0's is the single-process one
        generator = epoch_generator(cfg.seed, epoch, stream=1 + 100_000 * self.dist.rank)
        task = self.task
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        start = next_update = time.perf_counter()
        for images, labels in self.train_batches:
            y = task.targets(labels.to(self.device, non_blocking=True))
            x, y = self.augmented_input(images, y, generator)
            with autocast_context(self.device, self.amp_dtype):
                logits = self.forward_model(x)
            loss = task.loss(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            if self.scheduler is not None and self.step_per_batch:
                self.scheduler.step()
            with torch.no_grad():
                total_loss += loss.detach().double() * len(y)
                accumulate(sums, task.batch_stats(logits.detach(), y))
            seen += len(y)
            if progress is not None and time.perf_counter() >= next_update:
                # a few times a second: reading the sums waits for a GPU's queue to drain
                next_update = time.perf_counter() + 0.2
                shown = task.epoch_metrics({k: float(v) if v.numel() == 1 else v.double().cpu()
                                            for k, v in sums.items()}, seen)
                progress(seen * self.dist.world_size, float(total_loss) / seen, shown,
                         seen * self.dist.world_size / (time.perf_counter() - start))
        return self._epoch_logs("train_", total_loss, sums, seen)

    @torch.inference_mode()
    def evaluate_batches(self, batches) -> dict:
        """The loss and the task's metrics over ``batches``: ``{"loss": ..., "acc": ...}``."""
        self.model.eval()
        task = self.task
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        for images, labels in batches:
            x = self.model_input(images)
            y = task.targets(labels.to(self.device))
            with autocast_context(self.device, self.amp_dtype):
                logits = self.eval_model(x)
                if self.cfg.train.tta_flip:
                    logits = (logits.float() + task.flip_back(self.eval_model(x.flip(-1))).float()) / 2
            total_loss += task.loss(logits, y, reduction="sum").double()
            accumulate(sums, task.batch_stats(logits, y))
            seen += len(y)
        return self._epoch_logs("", total_loss, sums, seen)

    # ---- state
    def state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "stopper": self.stopper.state_dict(),
            "scaler": self.scaler.state_dict(),  # {} unless fp16
            "rng": rng_state(),
            "requires_grad": [p.requires_grad for p in self.model.parameters()],
        }

    def restore(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        for param, flag in zip(self.model.parameters(), state.get("requires_grad", [])):
            param.requires_grad_(flag)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["stopper"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"]) + 1

    def callbacks(self, main: bool) -> list[Callback]:
        """The loop's callbacks, in the order they run at each epoch's end (writers on rank 0 only)."""
        cfg, run_dir = self.cfg, self.run_dir
        callbacks: list[Callback] = []
        if main:
            callbacks += [CSVHistory(run_dir / "history.csv", self.task.history_columns()),
                          TensorBoard(_tensorboard(run_dir))]
        callbacks += [EpochPrinter(self.console, cfg.train.epochs, [m.name for m in self.task.metrics]),
                      self.stopper]
        if main:
            callbacks += [BestCheckpoint(run_dir / "checkpoints" / "best.safetensors", self.stopper, self.model,
                                         save_weights),
                          # the state after this epoch, written atomically
                          LastCheckpoint(run_dir / "checkpoints" / "last.pt", self.state, save_training_state)]
        if cfg.model.freeze_epochs:
            callbacks.append(GradualUnfreeze(self.model, cfg.model.freeze_epochs, self.console))
        return callbacks


def _resident(split, device: torch.device):
    """An in-memory split copied to the GPU once, when it fits easily: no host->device copy per batch."""
    if device.type != "cuda" or split is None or not split.in_memory:
        return split
    free, _ = torch.cuda.mem_get_info(device)
    if split.images.numel() * split.images.element_size() > free // 4:  # leave room for the model
        return split
    return type(split)(labels=split.labels.to(device), images=split.images.to(device), name=split.name)


def resume_config(run_dir: Path, epochs: int | None = None, **changes) -> Config:
    """The config a resumed run continues with: its own config.yaml, where only ``epochs`` may change.

    Exact resume needs the same data, model, optimiser and schedule: any other change is refused.
    """
    changed = sorted(k for k, v in changes.items() if v is not None)
    if changed:
        raise ConfigError(f"resume continues {run_dir} with its own config.yaml; only --epochs may change "
                          f"(got {', '.join(changed)})")
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no config.yaml there; is it a vislab run folder?")
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    if epochs is not None:
        cfg.train.epochs = epochs
        config_from_dict(cfg.to_dict())  # validate the new count
    return cfg


def fit(cfg: Config | None, resume: str | Path | None = None, progress: bool = True, console=None,
        epochs: int | None = None) -> FitResult:
    """Train ``cfg`` into a run folder, or resume the run folder ``resume`` (its own config.yaml;
    ``epochs`` may extend it), and return the result.

    Under ``torchrun`` every rank trains its shard of each batch (DDP) and only rank 0
    writes the run folder and prints; see :mod:`vislab.train.distributed`.
    """
    dist = distributed.setup(cfg.train.device if cfg is not None else "auto")
    try:
        return _fit(cfg, resume, progress, console, epochs, dist)
    finally:
        distributed.cleanup(dist)


def _fit(cfg, resume, progress, console, epochs, dist: distributed.DistContext) -> FitResult:
    from rich.console import Console

    main = dist.is_main  # only rank 0 writes files and prints
    console = console or Console(highlight=False, soft_wrap=True)
    if not main:
        console = Console(quiet=True)
    if resume is not None:
        run_dir = Path(resume)
        state_path = run_dir / "checkpoints" / "last.pt"
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no checkpoints/last.pt there; nothing to resume")
        cfg = resume_config(run_dir, epochs)
    else:
        # the default name holds a timestamp: rank 0's is everyone's
        run_dir = distributed.broadcast_object(dist, Path(cfg.out) if cfg.out else default_run_dir(cfg))
        if (run_dir / "model.json").exists() or (run_dir / "checkpoints" / "last.pt").exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; choose another --out, or --resume {run_dir} to continue it"
            )
    check_model_name(cfg.model.name)  # a typo fails before minutes of data loading
    task = task_for_config(cfg)  # an unknown task too
    seed_everything(cfg.seed)
    dataset = task.load_dataset(cfg.data, seed=cfg.seed)
    cfg.out = str(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_bad_files(run_dir, dataset.bad_files)
    _print_data_summary(console, dataset)
    if resume is None and main:  # rank 0 only: the audit writes into the run folder
        task.audit(dataset, run_dir, seed=cfg.seed)

    trainer = Trainer(cfg, run_dir, dataset, console, dist, task=task)
    columns = task.history_columns()
    if resume is not None:
        trainer.restore(load_training_state(run_dir / "checkpoints" / "last.pt"))
        if main:
            truncate_history(run_dir / "history.csv", trainer.start_epoch, columns)
        console.print(f"resuming {run_dir} at epoch {trainer.start_epoch + 1}/{cfg.train.epochs}")
    counts = parameter_counts(trainer.model)
    console.print(
        f"model {cfg.model.name}: {counts['total']:,} parameters ({counts['trainable']:,} trainable), "
        f"input {'x'.join(map(str, trainer.preprocessing.input_size))}, device {trainer.device}, "
        f"precision {trainer.amp_dtype or 'fp32'}"
        + (f", {dist.world_size} processes ({dist.backend})" if dist.enabled else "")
    )
    callbacks = trainer.callbacks(main)
    history = read_history(run_dir) if resume is not None else []
    stopped_early = False
    for callback in callbacks:
        callback.on_train_begin({})
    for epoch in range(trainer.start_epoch, cfg.train.epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch, {})
        start = time.perf_counter()
        with _progress_bar(console, progress, epoch, cfg.train.epochs, len(trainer.train_batches.split),
                           task.metrics[0].name if task.metrics else None) as bar:
            logs = trainer.train_epoch(epoch, bar)
        if trainer.cached is not None:
            logs.update(trainer.cached.evaluate())
        elif trainer.val_batches is not None:
            val = trainer.evaluate_batches(trainer.val_batches)
            logs.update({f"val_{k}": v for k, v in val.items()})
        if trainer.scheduler is not None and not trainer.step_per_batch:
            if isinstance(trainer.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                trainer.scheduler.step(logs.get("val_loss", logs["train_loss"]))
            else:
                trainer.scheduler.step()
        logs.update(epoch=epoch + 1, lr=trainer.optimizer.param_groups[-1]["lr"],
                    seconds=round(time.perf_counter() - start, 3))
        history.append(logs)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if any(callback.stop_training for callback in callbacks):
            stopped_early = True
            console.print(f"early stopping: {trainer.stopper.monitor} has not improved for "
                          f"{trainer.stopper.wait} epoch(s) (patience {trainer.stopper.patience}; "
                          f"best epoch {trainer.stopper.best_epoch + 1})")
            break
    for callback in callbacks:
        callback.on_train_end({})
    if not main:  # the other ranks' work ends with training; rank 0 writes the model
        return FitResult(run_dir, history, None, stopped_early, counts)
    best_path = run_dir / "checkpoints" / "best.safetensors"
    es = cfg.train.early_stopping
    if es.restore_best and es.patience is not None and best_path.exists():
        load_weights(trainer.model, best_path)
    write_model(run_dir, trainer.model, trainer.preprocessing, dataset.class_names, cfg.model, task=task,
                extra=task.model_extra(dataset))
    _plot_curves(run_dir, history, task)
    if trainer.device.type == "cuda":  # free its GPU copies (model, optimiser state, resident splits)
        import gc

        del trainer
        gc.collect()
        torch.cuda.empty_cache()
    return FitResult(run_dir, history, None, stopped_early, counts, dataset)


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


@contextlib.contextmanager
def _progress_bar(console, enabled: bool, epoch: int, epochs: int, total: int, metric: str | None):
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        progress_task = bar.add_task("train", total=total, stats="")

        def update(seen, loss, metrics, speed):
            shown = f" {metric} {metrics[metric]:.4f}" if metric and metric in metrics else ""
            bar.update(progress_task, completed=seen, stats=f"loss {loss:.4f}{shown} {speed:,.0f} img/s")

        yield update


def _print_data_summary(console, dataset: Dataset) -> None:
    from rich.table import Table

    rows = split_table(dataset)
    table = Table(title=f"{dataset.name}: images per class per split", show_lines=False)
    for header in rows[0]:
        table.add_column(header, justify="left" if header == "class" else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)
    if dataset.bad_files:
        console.print(f"[yellow]{len(dataset.bad_files)} bad files skipped[/] (listed in bad_files.csv)")


def _plot_curves(run_dir: Path, history: list[dict], task: Task) -> None:
    if history:
        from vislab.viz.training import plot_history

        plot_history(history, run_dir / "plots" / "curves.png", metrics=[m.name for m in task.metrics])
