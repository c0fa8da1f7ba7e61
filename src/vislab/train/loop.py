"""The training loop: config -> trained run folder.

``train_run(cfg)`` loads the data, builds the model with its preprocessing and the task
(``cfg.task``: the loss, the metrics and their directions), trains with validation
every epoch, and runs the callbacks (history.csv, TensorBoard, the epoch line, early
stopping, best/last checkpoints, gradual unfreezing); then it writes
``model.safetensors`` + ``model.json`` and the curves plot. ``train_run(cfg, resume=RUN)``
continues exactly where the last checkpoint left off. The test evaluation, figures
and report come after it, in :func:`vislab.pipelines.train`.

Example:
    >>> from vislab.core.config import resolve_config
    >>> cfg = resolve_config(overrides={"data.source": "digits", "model.name": "chollet_convnet",
    ...                                 "train.epochs": 1, "out": "/tmp/vislab-doc"})
    >>> result = train_run(cfg, progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from vislab.core.config import Config, ConfigError, config_from_dict
from vislab.core import background, measure
from vislab.core.device import (
    autocast_context, resolve_device, resolve_precision, seed_everything, warn_if_slow_precision,
)
from vislab.core.weights import load_weights, parameter_counts, save_weights, unwrap
from vislab.core.errors import RunError, UserError
from vislab.core.files import write_bad_files
from vislab.data.augment import Augment
from vislab.data.loaders import drop_short_batch, epoch_generator, make_batches
from vislab.data.sources import Dataset, drop_unused_split_options
from vislab.models.build import build_model
from vislab.models.registry import check_model_for_task, check_model_name
from vislab.runs import read_config, write_model
from vislab.tasks import Task, accumulate, task_for_config
from vislab.train import distributed, speed
from vislab.train.callbacks import (
    BestCheckpoint, Callback, CSVHistory, EarlyStopping, EpochPrinter, GradualUnfreeze, LastCheckpoint, TensorBoard,
    read_history, truncate_history,
)
from vislab.train.checkpoint import head_converged, load_training_state, rng_state, save_training_state, set_rng_state
from vislab.train.optim import build_optimizer, follow_parameter_layout, make_optimizer, make_scheduler

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
    # the epoch (1-based) whose weights model.safetensors holds, and whether early stopping restored them
    # (the best epoch's, which may be earlier than the last one trained)
    model_epoch: int | None = None
    restored_best: bool = False

    def __repr__(self) -> str:
        # short: the metrics hold every ROC/PR point and the history every epoch (tens of KB in a notebook)
        scalars = {k: v for k, v in (self.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(scalars.items())[:4])
        return (f"FitResult(run_dir={str(self.run_dir)!r}, epochs={len(self.history)}, "
                f"stopped_early={self.stopped_early}" + (f", {shown}" if shown else "") + ")")


# --------------------------------------------------------------------------- run folder helpers
def default_run_dir(cfg: Config) -> Path:
    source = Path(cfg.data.source).name if cfg.data.source not in ("", None) else "data"
    model = cfg.model.name.replace(":", "-").replace("/", "-")
    if cfg.recipe == "auto" and "model.name" not in cfg.user_given():
        model = "auto"  # the recipe picks the model once the data is loaded
    return Path("runs") / f"{model}-{source}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_default_run_dir(cfg: Config) -> Path:
    """:func:`default_run_dir`, made here and now; a name already taken (two runs started in one second, in a
    loop or in two processes) gets ``-2``, ``-3``, ...: the folder is created with ``exist_ok=False``, so
    two processes never take one name."""
    base = default_run_dir(cfg)
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        run_dir = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir


class RunExistsError(UserError, FileExistsError):
    """``--out`` names a folder that already holds a run."""


def _write_config(run_dir: Path, cfg: Config) -> None:
    """config.yaml: the whole config, rewritten as the run learns more (the speed choice, the budget)."""
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Holds what one run needs; ``train_run()`` is the entry point."""

    def __init__(self, cfg: Config, run_dir: Path, dataset: Dataset, console,
                 dist: distributed.DistContext = distributed.SINGLE, task: Task | None = None,
                 choice: measure.Choice | None = None, announce: bool = True):
        """``announce``: print which parameters train once they are set (False: the caller prints
        :meth:`trainable_report` when it is final, e.g. after a resumed run's checkpoint restored its flags)."""
        self.cfg, self.run_dir, self.dataset, self.console = cfg, run_dir, dataset, console
        self.announce = announce
        self.dist = dist  # torchrun: this rank's place; the single process otherwise
        self.task = task if task is not None else task_for_config(cfg)
        self.device = resolve_device(cfg.train.device)
        warn_if_slow_precision(cfg.train.precision, self.device)
        self.model, self.preprocessing = build_model(
            self.task.model_config(cfg.model, dataset.native_size), self.task.num_outputs(dataset.class_names), dataset.channels, dataset.native_size
        )
        # hook: finetune (freeze / finetune_last / param groups) -- see vislab.models.finetune
        self.param_groups = self._configure_trainable()
        speed.pool_before_relu(self.model)  # same numbers, ReLU on 4x fewer values
        # precision, memory format and threads: forced by the flags, a resumed run's own, or measured
        # (--precision auto) on this model's step at this batch size (vislab.core.measure)
        self.choice = choice if choice is not None else self._choose_speed(dataset)
        if self.device.type == "cpu":
            # after the probe: its model copies, optimisers and four configurations' activations go back
            # to the system instead of staying in the heap that training's buffers then come from (with
            # them kept, epochs after a probe ran 9.6 CPU-s against 7.5 for the same choice forced)
            speed.reuse_freed_memory()
        # the first epoch's real steps, to check the probe against (check_speed_choice)
        self.step_seconds: list[float] | None = [] if self.choice.source in ("measured", "cache") else None
        self.amp_dtype = self.choice.dtype
        if self.choice.threads is not None:
            torch.set_num_threads(self.choice.threads)
        self.memory_format = self.choice.memory_format
        self.model.to(self.device, memory_format=self.memory_format)
        # eval_model: no DDP wrapper, evaluation needs no gradient sync; forward_model trains
        self.eval_model = torch.compile(self.model) if cfg.train.compile else self.model
        self.forward_model = distributed.wrap_model(dist, self.eval_model, self.device)
        self.augment = Augment(cfg.augment) if cfg.augment.active else None
        # opt-in small-data regularisation: None when off, so the default path is unchanged
        self.policy = _augment_policy(cfg)
        self.mixup = _mixup(cfg, self.task.num_outputs(dataset.class_names))
        pin = self.device.type == "cuda"
        train = _resident(dataset.splits["train"], self.device)
        # --sampler balanced: per-image draw weights (the task's), seeded per epoch like the shuffle
        weights = self.task.balanced_weights(dataset.splits["train"].labels) if cfg.train.sampler == "balanced" \
            else None
        self.train_batches = distributed.shard(dist, make_batches(
            train, self.preprocessing, cfg.train.batch_size, shuffle=True,
            drop_last=drop_short_batch(len(train), cfg.train.batch_size, cfg.train.drop_last, dist.world_size),
            workers=cfg.data.workers, pin_memory=pin,
            weights=weights))
        self.val_split = dataset.splits.get("val")
        self.val_batches = (distributed.shard(dist, make_batches(
            _resident(self.val_split, self.device), self.preprocessing, cfg.train.eval_batch_size,
            workers=cfg.data.workers, pin_memory=pin)) if self.val_split else None)
        if cfg.model.bn == "reestimate":
            from vislab.models.finetune import reestimate_bn

            reestimate_bn(self.model, (self.model_input(images) for images, _ in self.train_batches))
        self.ema = _model_ema(cfg, self.model)
        self.global_step = 0
        self.optimizer = make_optimizer(self.param_groups, cfg)
        # fp16 gradients underflow without loss scaling (bf16 has fp32's range and needs none):
        # GPUs without bf16 (T4, V100) get fp16 under --precision auto
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.cached = None
        self.steps_per_epoch = len(self.train_batches)  # optimiser steps; the schedules are sized by it
        if cfg.model.cache_features:
            # frozen backbone: features once, then only the head trains (seed 002's fast feature extraction)
            from vislab.train.features import CachedTraining

            if not self.task.cached_head:
                raise ConfigError(f"--cache-features trains a classification head on cached features; the "
                                  f"{self.task.name} task trains end to end: drop --cache-features")
            if self.augment is not None:
                console.print("[yellow]--cache-features: augmentation does not apply to cached features "
                              "and is ignored[/]")
            self.cached = CachedTraining(self.model, self.preprocessing, dataset.splits["train"], self.val_split,
                                         cfg.train.batch_size, precision=cfg.train.precision,
                                         workers=cfg.data.workers, drop_last=cfg.train.drop_last)
            self.steps_per_epoch = self.cached.steps_per_epoch()
        self.scheduler, self.step_per_batch = make_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        es = cfg.train.early_stopping
        # no validation split: val_loss -> train_loss (the keys history.csv has)
        monitor = es.monitor if self.val_split is not None or not es.monitor.startswith("val_") \
            else "train_" + es.monitor[4:]
        # always there: it tracks the best epoch for the best checkpoint; it stops only with a patience
        self.stopper = EarlyStopping(monitor, es.patience, es.min_delta, mode=self.task.mode(monitor))
        self.start_epoch = 0

    def _configure_trainable(self):
        mcfg = self.cfg.model
        self.configured_trainable = False  # whether the options below chose what trains (trainable_report)
        self._check_model_options()
        if (mcfg.freeze == "none" and not mcfg.finetune_last and mcfg.lr_backbone is None
                and mcfg.lr_decay == 1 and not self.cfg.train.no_decay_norm_bias):
            return [p for p in self.model.parameters() if p.requires_grad]
        from vislab.models import finetune

        if mcfg.freeze == "backbone" or mcfg.finetune_last:  # --finetune-last N implies a frozen rest
            finetune.freeze(self.model, "backbone")
            if mcfg.finetune_last:
                finetune.finetune_last(self.model, mcfg.finetune_last)
        from vislab.core.config import parse_unfreeze_at

        for at, blocks in parse_unfreeze_at(mcfg.unfreeze_at):
            if at == 0:  # a stage at 0 trains from the start: what the counts below show (callbacks() skips it)
                finetune.unfreeze_stage(self.model, blocks)
        self.configured_trainable = True
        if self.announce:
            self.console.print(self.trainable_report())
        # every parameter goes to the optimiser: gradual unfreezing flips requires_grad later
        return finetune.param_groups(self.model, self.cfg.train.lr, mcfg.lr_backbone, self.cfg.train.weight_decay,
                                     lr_decay=mcfg.lr_decay)

    def trainable_report(self) -> str:
        """Which modules train now and the trainable / non-trainable counts (two lines)."""
        from vislab.models.finetune import trainable_report

        return trainable_report(self.model)

    def _check_model_options(self) -> None:
        """The fine-tuning options against the model built: a backbone option on a network that has no backbone
        (``mlp``: all head) or a stage of more blocks than it has is refused; ``--bn`` on a network without
        BatchNorm layers is warned of (a config kept for other models may mean it)."""
        cfg, m = self.cfg, self.cfg.model
        given = cfg.given_as
        from vislab.core.config import backbone_options, no_backbone_error, parse_unfreeze_at
        from vislab.models import finetune

        backbone = backbone_options(cfg)
        if backbone:
            try:
                empty = not finetune.backbone_parameters(self.model)
            except ValueError:  # no timm interface: freeze() itself says so
                empty = False
            if empty:
                raise no_backbone_error(cfg, backbone)
        if m.finetune_last or m.unfreeze_at:
            blocks = finetune.backbone_blocks(self.model)
            names = [name for name, _ in blocks]
            shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"
            has = f"{len(blocks)} backbone block{'s' * (len(blocks) != 1)}: {shown}"
            if m.finetune_last > len(blocks):
                key = "model.finetune_last"
                raise ConfigError(cfg.named(key, f"{given(key)}: {m.name} has {has}; give 1 to {len(blocks)}"))
            over = [f"{at}:{count}" for at, count in parse_unfreeze_at(m.unfreeze_at)
                    if count is not None and count > len(blocks)]
            if over:
                key = "model.unfreeze_at"
                raise ConfigError(cfg.named(key, (
                    f"{given(key)}: stage{'s' * (len(over) > 1)} {', '.join(over)} ask{'s' * (len(over) == 1)} for "
                    f"more blocks than {m.name} has ({has}); give each stage 1 to {len(blocks)} blocks, or all")))
        if m.bn != "train" and cfg.set_by_user("model.bn"):
            import warnings

            if not finetune.has_batchnorm(self.model):
                warnings.warn(cfg.named("model.bn", f"{given('model.bn')}: {m.name} has no BatchNorm layers, so it "
                                                    "changes nothing; drop it"), UserWarning, stacklevel=3)
            elif m.bn == "frozen" and not m.pretrained and not m.weights:
                # the statistics kept are the initial ones (mean 0, variance 1), not pretrained ones
                warnings.warn(cfg.named("model.bn", (
                    f"{given('model.bn')} keeps the pretrained BatchNorm statistics, but {m.name} is randomly "
                    "initialised (no --pretrained or --weights), so it keeps their initial values (mean 0, "
                    "variance 1), which do not fit the data; add --pretrained (or --weights PATH), or drop it")),
                    UserWarning, stacklevel=3)

    # ---- speed choices
    def _choose_speed(self, dataset: Dataset) -> measure.Choice:
        """``--precision fp32|bf16|fp16``: that, with ``train.channels_last``; ``auto``: measured."""
        t = self.cfg.train
        name = measure.device_name(self.device)
        if t.precision != "auto":
            return measure.Choice(t.precision, t.channels_last, source="forced", device=name)
        if self.cfg.model.cache_features:
            # only the head trains, on cached features (fp32); the extraction measures its own choice
            return measure.Choice("fp32", t.channels_last, source="features", device=name)
        if self.dist.enabled:  # every rank the same choice: rank 0's measurement
            choice = self._measure_speed(dataset) if self.dist.is_main else None
            return distributed.broadcast_object(self.dist, choice)
        return self._measure_speed(dataset)

    def _measure_speed(self, dataset: Dataset, fresh: bool = False) -> measure.Choice:
        t, mcfg = self.cfg.train, self.cfg.model
        split = dataset.splits["train"]
        batch = min(t.batch_size, len(split))
        images, labels = next(iter(make_batches(split, self.preprocessing, batch, workers=0)))
        loader_core = not split.in_memory and self.cfg.data.workers > 0
        key = measure.cache_key(self.device, measure.model_signature(self.model), tuple(images.shape), batch,
                                self.task.name, "train", optimizer=t.optimizer, freeze=mcfg.freeze,
                                finetune_last=mcfg.finetune_last, loader_core=loader_core)
        device, task = self.device, self.task
        prepared: dict[measure.Candidate, object] = {}  # the probe's rounds come back to each candidate

        def make_step(candidate: measure.Candidate):
            if candidate in prepared:
                return prepared[candidate]
            # a copy: the probe's optimizer steps must not touch the weights that train
            source = unwrap(self.model) if fresh else self.model
            model = copy.deepcopy(source).to(device, memory_format=candidate.memory_format).train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = build_optimizer(params, t.optimizer, t.lr, t.weight_decay, t.momentum, t.nesterov)
            scaler = torch.amp.GradScaler(device.type, enabled=candidate.precision == "fp16")
            with torch.no_grad():
                x = self.preprocessing(images.to(device)).contiguous(memory_format=candidate.memory_format)
            y = task.targets(labels.to(device))

            def step():
                with autocast_context(device, candidate.dtype):
                    out = model(x)
                loss = task.loss(out, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            prepared[candidate] = step
            return step

        options = measure.candidates(device, measure.has_convolutions(self.model))

        def run() -> measure.Choice:
            choice = measure.measure(make_step, options, device, kind="train")
            if loader_core and device.type == "cpu" and not measure.threads_pinned():
                counts = measure.thread_candidates(loader_needs_core=True)
                if len(counts) > 1:
                    choice.threads, choice.thread_seconds = measure.measure_threads(
                        make_step(measure.Candidate(choice.precision, choice.channels_last)), counts, device)
            prepared.clear()  # the copies' memory back before training
            return choice

        if fresh or measure.probe_pays(t.epochs * math.ceil(len(split) / batch), options):
            return measure.cached_measure(key, run, fresh=fresh)
        return measure.unmeasured(key, device, t.channels_last, kind="train")

    def check_speed_choice(self, dataset: Dataset, helpers_ran: bool = False) -> str | None:
        """After the first epoch: when its real steps took :data:`measure.DISAGREE_FACTOR` times
        what the probe measured for the chosen configuration, measure again (the probe ran while
        another program held the cores, or the cache answered for another machine) and switch to
        the new choice. Returns a line for the console, or None when nothing was done.

        ``helpers_ran``: the run's own helper interpreter drew figures beside the epoch
        (:mod:`vislab.core.background`), so its steps are not what the probe timed alone: the
        check waits for the next epoch that had the cores to itself."""
        if helpers_ran and self.step_seconds is not None:
            self.step_seconds = []
            return None
        seconds, self.step_seconds = self.step_seconds, None
        if not seconds or len(seconds) < 4 or self.device.type != "cpu" or self.dist.enabled:
            return None
        real = statistics.median(seconds[2:])  # the first steps build kernels
        if not measure.disagrees(self.choice, real):
            return None
        before = self.choice
        choice = self._measure_speed(dataset, fresh=True)
        self.use_choice(choice)
        probe = before.seconds.get(before.label, 0.0)
        changed = "kept" if choice.label == before.label and choice.threads == before.threads else "now"
        return (f"speed: a training step took {real * 1000:.1f} ms where the probe measured "
                f"{probe * 1000:.1f} ms for {before.label}; measured again: {changed} {choice.describe()}")

    def use_choice(self, choice: measure.Choice) -> None:
        """Train on with ``choice``: its autocast dtype, threads and memory format (the parameters
        are converted in place, so the optimiser's references stay valid)."""
        self.choice, self.amp_dtype = choice, choice.dtype
        if choice.threads is not None:
            torch.set_num_threads(choice.threads)
        if choice.memory_format != self.memory_format:
            self.memory_format = choice.memory_format
            unwrap(self.model).to(memory_format=self.memory_format)
            follow_parameter_layout(self.optimizer)  # the moments follow their weights' new layout

    # ---- batches
    def model_input(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if generator is not None and self.policy is not None:
            images = self.policy(images, generator)  # on the uint8 images, before resizing
        augment = None
        if generator is not None and self.augment is not None:
            augment = lambda x: self.augment(x, generator=generator)  # noqa: E731
        x = self.preprocessing(images, augment=augment)
        return x.contiguous(memory_format=self.memory_format)

    def augmented_input(self, images: torch.Tensor, targets: torch.Tensor, generator):
        """A training batch's model input and targets, augmented together by the task
        (classification: the images only, with the same random draws as ``model_input``)."""
        if self.augment is None:
            return self.model_input(images, generator), targets
        images = images.to(self.device, non_blocking=True)
        if self.policy is not None:
            images = self.policy(images, generator)  # on the uint8 images, before resizing
        moved = {}

        def augment(x):
            x, moved["targets"] = self.task.augment_pair(self.augment, x, targets, generator)
            return x

        x = self.preprocessing(images, augment=augment)
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
        # cuDNN autotunes each convolution's algorithm on the training steps alone, whose batches keep
        # one shape. Not in the speed probe: autotuning its six configurations of ResNet-50 took 90 s on
        # an H200 against 3.4 s for the epoch (bench_fixed_cost.py). Nor in evaluation's other shapes.
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        try:
            return self._train_epoch(epoch, progress)
        finally:
            torch.backends.cudnn.benchmark = before

    def _train_epoch(self, epoch: int, progress) -> dict:
        cfg = self.cfg
        if self.cached is not None:
            step = self.scheduler.step if self.scheduler is not None and self.step_per_batch else None
            return self.cached.train_epoch(self.optimizer, cfg.seed, epoch, cfg.train.label_smoothing,
                                           after_step=step, weight_decay=cfg.train.weight_decay)
        self.prepare_train_epoch(epoch)
        # each rank its own augmentation stream; rank 0's is the single-process one
        generator = epoch_generator(cfg.seed, epoch, stream=1 + 100_000 * self.dist.rank)
        task = self.task
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        start = next_update = time.perf_counter()
        timed = self.step_seconds
        for images, labels in self.train_batches:
            y = task.targets(labels.to(self.device, non_blocking=True))
            x, y = self.augmented_input(images, y, generator)
            x, soft = self.mix(x, y)
            step_start = time.perf_counter() if timed is not None else 0.0
            with autocast_context(self.device, self.amp_dtype):
                logits = self.forward_model(x)
            loss = self.training_loss(logits, y, soft)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            if timed is not None:  # the step the probe timed: forward, loss, backward, optimiser
                timed.append(time.perf_counter() - step_start)
            self.after_step()
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

    # ---- hooks of the training step (each a no-op unless its option is on)
    def prepare_train_epoch(self, epoch: int) -> None:
        """Train mode (frozen BatchNorm layers kept in eval mode) and the epoch's shuffle."""
        cfg = self.cfg
        self.model.train()
        if cfg.model.freeze == "backbone" or cfg.model.finetune_last:
            from vislab.models.finetune import keep_frozen_bn_eval

            keep_frozen_bn_eval(self.model)
        if cfg.model.bn != "train":  # frozen / re-estimated statistics: never the batch's
            from vislab.models.finetune import set_bn_eval

            set_bn_eval(self.model)
        self.train_batches.set_epoch(cfg.seed, epoch)

    def mix(self, x: torch.Tensor, y: torch.Tensor):
        """timm's Mixup/CutMix on the model input: (mixed x, soft targets), or (x, None) when off."""
        if self.mixup is None or len(x) % 2:  # timm pairs each image with its mirror in the batch
            return x, None
        return self.mixup(x, y)

    def training_loss(self, outputs: torch.Tensor, targets: torch.Tensor, soft=None) -> torch.Tensor:
        """The task's loss, or its soft-target loss on mixed targets."""
        if soft is None:
            return self.task.loss(outputs, targets)
        return self.task.soft_loss(outputs, soft)

    def after_step(self) -> None:
        """After each optimiser step: the EMA of the weights follows the model."""
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    @property
    def scoring_model(self):
        """What validation, the best checkpoint and the saved model use: the EMA weights when on."""
        return self.ema.module if self.ema is not None else self.eval_model

    @torch.inference_mode()
    def evaluate_batches(self, batches) -> dict:
        """The loss and the task's metrics over ``batches``: ``{"loss": ..., "acc": ...}``."""
        self.model.eval()
        task = self.task
        model = self.scoring_model
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        for images, labels in batches:
            x = self.model_input(images)
            y = task.targets(labels.to(self.device))
            with autocast_context(self.device, self.amp_dtype):
                logits = model(x)
                if self.cfg.train.tta_flip:
                    logits = (logits.float() + task.flip_back(model(x.flip(-1))).float()) / 2
            total_loss += task.loss(logits, y, reduction="sum").double()
            accumulate(sums, task.batch_stats(logits, y))
            seen += len(y)
        return self._epoch_logs("", total_loss, sums, seen)

    @torch.inference_mode()
    def predict_split(self, split):
        """(postprocessed outputs, targets) of a whole split on the CPU, for Task.model_extra."""
        self.model.eval()
        outputs, targets = [], []
        for images, labels in make_batches(_resident(split, self.device), self.preprocessing,
                                           self.cfg.train.eval_batch_size, workers=self.cfg.data.workers):
            x = self.model_input(images)
            with autocast_context(self.device, self.amp_dtype):
                logits = self.eval_model(x)
                if self.cfg.train.tta_flip:
                    logits = (logits.float() + self.task.flip_back(self.eval_model(x.flip(-1))).float()) / 2
            outputs.append(self.task.postprocess(logits.float()).cpu())
            targets.append(self.task.targets(labels).cpu())
        return torch.cat(outputs), torch.cat(targets)

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
            **({"ema": {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()},
                "global_step": self.global_step} if self.ema is not None else {}),
            "speed": self.choice.to_dict(),  # a resumed run keeps this precision: exact resume stays exact
            "converged": bool(self.cached is not None and self.cached.converged),  # --resume refuses to repeat it
        }

    def restore(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        for param, flag in zip(self.model.parameters(), state.get("requires_grad", [])):
            param.requires_grad_(flag)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            fresh = self.scheduler.state_dict()
            length = [key for key in ("total_steps", "T_max") if key in fresh and key in state["scheduler"]]
            if not state["scheduler"] or any(fresh[key] != state["scheduler"][key] for key in length):
                # --resume --epochs N with a per-batch schedule sized for the old length (or a run too short
                # for one): the schedule is fitted to the new length and moved to the step reached (as
                # --time-budget re-plans it)
                from vislab.train.budget import refit_schedule

                refit_schedule(self, (int(state["epoch"]) + 1) * self.steps_per_epoch)
            else:
                self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["stopper"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])
            self.global_step = int(state["global_step"])
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
            callbacks += [BestCheckpoint(run_dir / "checkpoints" / "best.safetensors", self.stopper,
                                         self.ema.module if self.ema is not None else self.model, save_weights),
                          # the state after this epoch, written atomically
                          LastCheckpoint(run_dir / "checkpoints" / "last.pt", self.state, save_training_state)]
        if cfg.model.freeze_epochs:
            callbacks.append(GradualUnfreeze(self.model, cfg.model.freeze_epochs, self.console))
        if cfg.model.unfreeze_at:
            from vislab.core.config import parse_unfreeze_at
            from vislab.train.callbacks import StagedUnfreeze

            # a stage at 0 was applied with the freezing (_configure_trainable), before the counts were printed
            later = [(at, blocks) for at, blocks in parse_unfreeze_at(cfg.model.unfreeze_at) if at > 0]
            if later:
                callbacks.append(StagedUnfreeze(self.model, later, self.console))
        return callbacks


def _augment_policy(cfg: Config):
    if cfg.augment.policy == "none":
        return None
    from vislab.data.policies import AugmentPolicy

    return AugmentPolicy(cfg.augment.policy)


def _mixup(cfg: Config, num_outputs: int):
    t = cfg.train
    if not (t.mixup or t.cutmix):
        return None
    if num_outputs < 2:
        raise ConfigError("--mixup/--cutmix mix one-hot targets of 2 or more classes; a single-logit (binary) "
                          "head has none: drop them or use a 2-class softmax head")
    from timm.data import Mixup

    # the targets come back smoothed, so the soft-target loss adds no smoothing of its own
    return Mixup(mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, label_smoothing=t.label_smoothing,
                 num_classes=num_outputs)


def _model_ema(cfg: Config, model):
    if not cfg.train.ema:
        return None
    from timm.utils import ModelEmaV3

    # warm-up: with a few hundred steps (small data) a fixed 0.998 would keep mostly the initial
    # weights; timm's warm-up ramps the decay up to cfg.train.ema
    return ModelEmaV3(model, decay=cfg.train.ema, use_warmup=True)


def _resident(split, device: torch.device):
    """An in-memory split copied to the GPU once, when it fits easily: no host->device copy per batch."""
    if device.type != "cuda" or split is None or not split.in_memory:
        return split
    free, _ = torch.cuda.mem_get_info(device)
    if split.images.numel() * split.images.element_size() > free // 4:  # leave room for the model
        return split
    return type(split)(labels=split.labels.to(device), images=split.images.to(device), name=split.name)


def resumed_choice(cfg: Config, state: dict) -> measure.Choice:
    """The precision, memory format and threads a resumed run continues with: the checkpoint's
    (else config.yaml's), so the resumed epochs compute exactly what the uninterrupted run would;
    a checkpoint from before measured choices gets the flag-based choice it was trained with."""
    recorded = state.get("speed") or cfg.train.speed
    if recorded:
        choice = measure.Choice.from_dict(recorded)
    else:
        device = resolve_device(cfg.train.device)
        dtype = resolve_precision(cfg.train.precision, device)
        choice = measure.Choice({None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
                                cfg.train.channels_last, source="flags", device=measure.device_name(device))
    if choice.source in ("measured", "cache"):
        choice.source = "resumed"
    return choice


def resume_config(run_dir: Path, epochs: int | None = None, **changes) -> Config:
    """The config a resumed run continues with: its own config.yaml, where only ``epochs`` may change.

    Exact resume needs the same data, model, optimiser and schedule: any other change is refused.
    """
    from vislab.core.config import option_flag, range_problem

    # named as the user gives them: the flags (--lr-backbone), not the config keys they set (model.lr_backbone)
    changed = sorted((option_flag(k) or f"--{k.replace('_', '-')}") for k, v in changes.items() if v is not None)
    if changed:
        raise ConfigError(f"--resume {run_dir} continues the run with its own config.yaml; only --epochs may change "
                          f"(got {', '.join(changed)}): drop {'it' if len(changed) == 1 else 'them'}, or start a new "
                          f"run with {'it' if len(changed) == 1 else 'them'}")
    problem = range_problem("epochs", epochs, subject="--epochs")
    if problem:
        raise ConfigError(f"--resume {run_dir}: {problem}")
    cfg = read_config(run_dir)
    if epochs is not None:
        cfg.train.epochs = epochs
        config_from_dict(cfg.to_dict())  # validate the new count
    return cfg


def _check_history(run_dir: Path, done: int) -> None:
    """A resumed run appends to history.csv: one that lost the rows of epochs the checkpoint trained (deleted,
    or replaced by another run's) would leave the curves, the report and the summary without them."""
    from vislab.runs import history_totals

    path = run_dir / "history.csv"
    recorded = history_totals(path).epochs if path.is_file() else 0
    if recorded is None or recorded < done:
        what = ("is missing" if not path.is_file() else "holds no readable epoch numbers" if recorded is None
                else f"records {recorded} of them")
        raise RunError(f"--resume {run_dir}: its checkpoint has {done} epoch(s) trained, but {path} {what}, so "
                       f"the curves, the report and the summary would lose them; restore {path.name} (e.g. from a "
                       "copy of the run), or start a new run")


@contextlib.contextmanager
def _removed_on_error(run_dir: Path, made: bool):
    """``run_dir`` removed when the block raises, if this run ``made`` it: the figures still queued for it are
    dropped and those being drawn waited for first (:func:`vislab.core.background.discard`)."""
    try:
        yield
    except BaseException:
        if made:
            background.discard()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def train_run(cfg: Config | None, resume: str | Path | None = None, progress: bool = True, console=None,
        epochs: int | None = None, figures: bool = True) -> FitResult:
    """Train ``cfg`` into a run folder, or resume the run folder ``resume`` (its own config.yaml;
    ``epochs`` may extend it), and return the result. ``figures=False``: the audit writes audit.json
    without its figures (the training curves are drawn either way).

    Under ``torchrun`` every rank trains its shard of each batch (DDP) and only rank 0
    writes the run folder and prints; see :mod:`vislab.train.distributed`.
    """
    dist = distributed.setup(cfg.train.device if cfg is not None else "auto")
    try:
        return _fit(cfg, resume, progress, console, epochs, dist, figures)
    finally:
        distributed.cleanup(dist)


def _fit(cfg, resume, progress, console, epochs, dist: distributed.DistContext, figures: bool = True) -> FitResult:
    from rich.console import Console

    from vislab.core.console import console as vislab_console

    started = time.perf_counter()  # --time-budget counts from here
    main = dist.is_main  # only rank 0 writes files and prints
    console = console or vislab_console()
    if not main:
        console = Console(quiet=True)
    unfinished = False
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            from vislab.core.files import similar_folder

            raise RunError(f"--resume {run_dir}: no such run folder{similar_folder(run_dir)}; give a folder written "
                           "by `vislab train --out DIR`")
        state_path = run_dir / "checkpoints" / "last.pt"
        if not state_path.exists():
            from vislab.runs import unfinished_run

            stopped = unfinished_run(run_dir)  # killed before its first checkpoint: the command that starts it again
            raise RunError(f"--resume {stopped}" if stopped else
                           f"--resume {run_dir}: no checkpoints/last.pt there; nothing to resume")
        cfg = resume_config(run_dir, epochs)
        # read before anything in the folder is written: a damaged checkpoint leaves the run as it was
        state = load_training_state(state_path)
        done = int(state["epoch"]) + 1
        _check_history(run_dir, done)
        # stopped before model.json was written (interrupted): resuming finishes it, even with nothing to train
        unfinished = not (run_dir / "model.json").exists()
        if head_converged(state) and not unfinished:  # another L-BFGS epoch starts at the optimum: no change
            raise ConfigError(f"--resume {run_dir}: its L-BFGS logistic-regression head converged in epoch {done}, "
                              f"so another epoch would repeat it and nothing is left to train; "
                              f"`vislab evaluate {run_dir}` evaluates it as it is")
        if unfinished and cfg.train.epochs < done:
            raise ConfigError(f"--resume {run_dir}: its checkpoint has {done} epoch(s) trained, more than --epochs "
                              f"{cfg.train.epochs}; give --epochs {done} to finish it as it is, or more to train on")
        if not unfinished and cfg.train.epochs <= done and epochs is None:  # a finished run, resumed as it was
            trained = f"{done} epochs are all" if done != 1 else "1 epoch is"
            raise ConfigError(f"--resume {run_dir}: its {trained} trained; give --epochs {done + 1} or more to "
                              f"continue it, or `vislab evaluate {run_dir}` to evaluate it as it is")
        if not unfinished and cfg.train.epochs <= done:  # refused before config.yaml takes the new count
            raise ConfigError(f"--resume {run_dir}: its checkpoint has {done} epoch(s) trained, so --epochs "
                              f"{cfg.train.epochs} leaves nothing to train; give --epochs {done + 1} or more to "
                              f"continue it, or `vislab evaluate {run_dir}` to evaluate it as it is")
        if epochs is not None and main:  # an unfreezing the new count still ends the run before, said once
            import warnings

            from vislab.core.config import late_unfreezing

            for message in late_unfreezing(cfg):
                warnings.warn(message, UserWarning, stacklevel=2)
    else:
        # the default name holds a timestamp, and rank 0 makes the folder so that no other run takes it:
        # rank 0's is everyone's
        run_dir = distributed.broadcast_object(
            dist, Path(cfg.out) if cfg.out else make_default_run_dir(cfg) if main else None)
        if (run_dir / "model.json").exists() or (run_dir / "checkpoints" / "last.pt").exists():
            raise RunExistsError(
                f"{run_dir} already holds a run; choose another --out, or --resume {run_dir} to continue it"
            )
    # a folder this run makes is removed when the set-up fails (a bad --model-opt, --class-weights file or
    # --monitor): no half run folder without a model is left for `vislab compare` to list
    made = resume is None and main and (not cfg.out or not run_dir.exists())
    with _removed_on_error(run_dir, made):
        task, dataset = task_and_data(cfg, console, recipe=resume is None)
        if resume is None:
            _check_validation_monitor(cfg, dataset, console)
        cfg.out = str(run_dir)
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_config(run_dir, cfg)
            write_bad_files(run_dir / "bad_files.csv", dataset.bad_files, keep_empty=True)
        _print_data_summary(console, dataset)
        if resume is None:
            note = recipe_scale_note(cfg, len(dataset.splits["train"]))
            if note:
                console.print(f"[yellow]note: {note}[/]")
        if resume is None and main:  # rank 0 only: the audit writes into the run folder
            from vislab.data.audit import leakage_warnings

            audit = task.audit(dataset, run_dir, seed=cfg.seed, figures=figures)
            for warning in leakage_warnings(audit if isinstance(audit, dict) else {}, near=False):
                console.print(f"[yellow]warning: {warning}[/]")

        task.prepare(dataset, console)  # e.g. class weights from the training counts
        if resume is None:
            state = None
        trainer = Trainer(cfg, run_dir, dataset, console, dist, task=task,
                          choice=resumed_choice(cfg, state) if state is not None else None, announce=resume is None)
        cfg.train.speed = trainer.choice.to_dict()  # what was chosen and measured, for config.yaml and model.json
        if main:
            _write_config(run_dir, cfg)
        columns = task.history_columns()
        if resume is not None:
            trainer.restore(state)
            if main:
                truncate_history(run_dir / "history.csv", trainer.start_epoch, columns)
            console.print(f"resuming {run_dir} at epoch {trainer.start_epoch + 1}/{cfg.train.epochs}")
            if trainer.configured_trainable:  # what trains as the checkpoint left it (an unfreezing stage passed)
                console.print(trainer.trainable_report())
        counts = parameter_counts(trainer.model)
        console.print(
            f"model {cfg.model.name}: {counts['total']:,} parameters ({counts['trainable']:,} trainable), "
            f"input {'x'.join(map(str, trainer.preprocessing.input_size))}, device {trainer.device}, "
            f"{trainer.choice.describe()}"
            + (f", {dist.world_size} processes ({dist.backend})" if dist.enabled else "")
        )
        callbacks = trainer.callbacks(main)
        budget = _time_budget(cfg, trainer, callbacks, started, console) if resume is None else None
    history = read_history(run_dir) if resume is not None else []
    # a resumed run whose training had ended (early stopping, a converged L-BFGS head) before its model was written
    converged = unfinished and head_converged(state)
    stopped_early = unfinished and trainer.stopper.patience is not None \
        and trainer.stopper.wait >= trainer.stopper.patience
    try:
        for callback in callbacks:
            callback.on_train_begin({})
        # the helpers' figures wait while the model trains: a helper drawing on one of the cores stalls every
        # step of torch's threads for more than it draws (vislab.core.background.pause)
        paused = background.pause(wait=False)
        for epoch in itertools.count(trainer.start_epoch):  # --time-budget may change cfg.train.epochs
            if epoch >= cfg.train.epochs or converged or stopped_early:
                break
            if budget is not None and history and budget.out_of_time():
                console.print(f"time budget {budget.describe()}: another epoch would end past it; stopping after "
                              f"epoch {epoch}")
                break
            for callback in callbacks:
                callback.on_epoch_begin(epoch, {})
            start = time.perf_counter()
            helpers = background.mark()  # whether a helper drew beside this epoch (check_speed_choice)
            lr = trainer.optimizer.param_groups[-1]["lr"]  # the epoch's first step's (the schedule moves it after)
            with _progress_bar(console, progress, epoch, cfg.train.epochs, len(trainer.train_batches.split),
                               task.metrics[0].name if task.metrics else None) as bar:
                logs = trainer.train_epoch(epoch, bar)
            checked = time.perf_counter()
            note = trainer.check_speed_choice(dataset, helpers_ran=background.ran_since(helpers))
            checked = time.perf_counter() - checked  # a second probe: not part of an epoch's time for --time-budget
            if note is not None:
                console.print(note)
                cfg.train.speed = trainer.choice.to_dict()
                if main:
                    _write_config(run_dir, cfg)
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
            logs.update(epoch=epoch + 1, lr=lr,
                        seconds=round(time.perf_counter() - start, 3))
            history.append(logs)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            note = budget.after_epoch(trainer, epoch + 1, logs["seconds"] - checked) if budget is not None else None
            if note:
                console.print(note)
            if any(callback.stop_training for callback in callbacks):
                stopped_early = True
                console.print(f"early stopping: {trainer.stopper.monitor} has not improved for "
                              f"{trainer.stopper.wait} epoch(s) (patience {trainer.stopper.patience}; "
                              f"best epoch {trainer.stopper.best_epoch + 1})")
                break
            if trainer.cached is not None and trainer.cached.converged and epoch + 1 < cfg.train.epochs:
                console.print(f"lbfgs: the {trainer.cached.head_name} converged in epoch {epoch + 1}; the other "
                              f"{cfg.train.epochs - epoch - 1} epoch(s) would repeat it, so training stops here")
                break
        for callback in callbacks:
            callback.on_train_end({})
        if trainer.cached is not None and not stopped_early:
            note = trainer.cached.not_converged(run_dir, len(history))
            if note:
                console.print(note)
        if (resume is None and trainer.cached is not None and cfg.train.optimizer == "lbfgs" and cfg.train.time_budget
                and cfg.recipe in ("transfer", "auto") and not dist.enabled):
            from vislab.train.lpft import after_head  # LP-FT where the budget allows: the better on validation stays

            record = after_head(trainer, cfg, dataset, task, console, started, history[-1] if history else {})
            cfg.recipe_choices = {**(cfg.recipe_choices or {}), "lpft": record}
            if record["kept"] == "lpft" and main:  # the best checkpoint is the kept model
                save_weights(trainer.model, run_dir / "checkpoints" / "best.safetensors")
        if resume is None and cfg.train.time_budget:  # the budget, its estimates and the epochs, in config.yaml
            if budget is not None:
                cfg.train.epochs = len(history)
                cfg.recipe_choices = {**(cfg.recipe_choices or {}), "time_budget": budget.finish(len(history))}
            if main:
                _write_config(run_dir, cfg)
        if not main:  # the other ranks' work ends with training; rank 0 writes the model
            return FitResult(run_dir, history, None, stopped_early, counts)
        best_path = run_dir / "checkpoints" / "best.safetensors"
        es = cfg.train.early_stopping
        if trainer.ema is not None:  # the averaged weights are the model
            trainer.model.load_state_dict(trainer.ema.module.state_dict())
        # LP-FT's kept model overwrote the best checkpoint: it is no epoch's weights
        lpft = ((cfg.recipe_choices or {}).get("lpft") or {}).get("kept") == "lpft"
        restored = es.restore_best and es.patience is not None and best_path.exists()
        if restored:
            load_weights(trainer.model, best_path)
        model_epoch = (trainer.stopper.best_epoch + 1 if restored and not lpft
                       else int(history[-1]["epoch"]) if history and not lpft else None)
        extra = task.model_extra(dataset, predict_split=trainer.predict_split, console=console)  # thresholds, palette
        write_model(run_dir, trainer.model, trainer.preprocessing, dataset.class_names, cfg.model, task=task,
                    extra={**(extra or {}), "speed": trainer.choice.to_dict()})
        paused.end()
    except KeyboardInterrupt:
        if main:
            _interrupted(run_dir, cfg.train.epochs, made)
        raise
    _plot_curves(run_dir, history, task)
    if trainer.device.type == "cuda":  # free its GPU copies (model, optimiser state, resident splits)
        import gc

        del trainer
        gc.collect()
        torch.cuda.empty_cache()
    return FitResult(run_dir, history, None, stopped_early, counts, dataset, model_epoch=model_epoch,
                     restored_best=bool(restored and not lpft))


def _interrupted(run_dir: Path, epochs: int, made: bool) -> None:
    """What an interrupted run leaves: before its first checkpoint, nothing (a folder this run made is removed,
    as when its set-up fails); after it, a line with the command that continues it. The epochs are read from
    the checkpoint itself: the interruption may land anywhere in an epoch's end, history.csv one row ahead."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        if made:
            background.discard()
            shutil.rmtree(run_dir, ignore_errors=True)
        return
    try:
        saved = int(load_training_state(path)["epoch"]) + 1
    except Exception:  # noqa: BLE001 - the line is advice; --resume itself says what is wrong with the file
        return
    print(f"vislab train: {run_dir} keeps {saved} of {epochs} epochs in checkpoints/last.pt: continue it with "
          f"`vislab train --resume {run_dir}` (add --epochs N to end at epoch N instead, N >= {saved})",
          file=sys.stderr, flush=True)


def _check_validation_monitor(cfg: Config, dataset: Dataset, console) -> None:
    """Early stopping or a best checkpoint on a val_ metric, in a run with no validation split: the loop
    monitors the training metric instead (history.csv has no val_ columns). When the user asked for it
    (--patience, --monitor val_...) and held out no validation data themselves (--val-split 0), that is
    refused before the run folder is written; when the recipe chose either, one line says what is monitored."""
    es = cfg.train.early_stopping
    if dataset.splits.get("val") is not None or not es.monitor.startswith("val_"):
        return
    user = cfg.user_given()
    asked = "train.early_stopping.patience" in user and es.patience is not None \
        or "train.early_stopping.monitor" in user
    if not asked and es.patience is None:  # only the best checkpoint follows the monitor: nothing to stop
        return
    train_metric = "train_" + es.monitor[4:]
    flag = f"--patience {es.patience}" if es.patience is not None else f"--monitor {es.monitor}"
    if asked and "data.val_split" in user and not cfg.data.val_split:
        what = f"{flag} stops on {es.monitor}" if es.patience is not None else f"--monitor {es.monitor} is"
        raise ConfigError(f"{what}, a validation metric, but --val-split "
                          f"{cfg.data.val_split:g} (data.val_split) holds out no validation data: give e.g. "
                          f"--val-split 0.1 (a tenth of the training images), or --monitor {train_metric} to "
                          "stop on the training metric")
    console.print(f"[yellow]warning: {flag}: this run has no validation split (data.val_split "
                  f"{cfg.data.val_split:g}, no val/ folder), so {train_metric} is monitored instead of "
                  f"{es.monitor}; give --val-split 0.1 to monitor validation data[/]")
    es.monitor = train_metric  # what the loop monitors, in config.yaml too


# --------------------------------------------------------------------------- recipe auto, time budget
def task_and_data(cfg: Config, console, recipe: bool = True) -> tuple[Task, Dataset]:
    """The task and the data set a new run of ``cfg`` trains on (``vislab train`` and ``vislab lr-find``
    alike): a mistyped model, or one of the wrong kind for the task, fails before the data is read;
    ``recipe`` and ``--recipe auto``: the recipe's choices are set on ``cfg`` once the data is loaded."""
    # --recipe auto picks the model (unless the user named one) once the data is loaded
    auto = recipe and cfg.recipe == "auto"
    users_model = not auto or "model.name" in cfg.user_given()
    if users_model:
        with cfg.naming_origin("model.name"):  # a name from a YAML file: the error names the file
            check_model_name(cfg.model.name)  # a typo fails before minutes of data loading
    task = task_for_config(cfg)  # an unknown task too
    if users_model:
        check_model_for_task(cfg.model.name, task)  # a classifier for segmentation, or the reverse
    seed_everything(cfg.seed)
    dataset = task.load_dataset(cfg.data, seed=cfg.seed)
    drop_unused_split_options(cfg, dataset)  # --val-split beside a val/ folder: warned, whatever the recipe
    if auto:
        task, resplit = _apply_recipe(cfg, dataset, task, console)
        if resplit:  # the recipe's split (e.g. all of a small set for training): the data is split again
            dataset = task.load_dataset(cfg.data, seed=cfg.seed)
    return task, dataset


def _apply_recipe(cfg: Config, dataset: Dataset, task: Task, console) -> tuple[Task, bool]:
    """--recipe auto: the data-aware choices (vislab.train.recipe) on ``cfg``, one line saying them;
    returns the task rebuilt with the chosen loss and class weights, and whether the recipe changed
    how the data is split (then it is loaded again)."""
    from vislab.core.config import check_new_run, validate
    from vislab.train import recipe

    applied = recipe.apply(cfg, dataset, task)
    console.print(applied.line)
    check_model_name(cfg.model.name)
    validate(cfg)
    check_new_run(cfg)
    task = task_for_config(cfg)
    check_model_for_task(cfg.model.name, task)
    return task, any(key.startswith("data.") for key in applied.set)


def _time_budget(cfg: Config, trainer: Trainer, callbacks, started: float, console):
    """--time-budget: the plan (vislab.train.budget), or None without a budget (or for the L-BFGS head,
    fitted in one pass)."""
    if not cfg.train.time_budget:
        return None
    if cfg.train.optimizer == "lbfgs":
        lpft = cfg.recipe in ("transfer", "auto")
        note = ("the logistic-regression head is fitted in one pass"
                + ("; what is left of the budget may fine-tune from it (LP-FT)" if lpft else ""))
        console.print(f"time budget: {note}")
        cfg.recipe_choices = {**(cfg.recipe_choices or {}),
                              "time_budget": {"seconds": cfg.train.time_budget, "epochs": cfg.train.epochs,
                                              "note": note}}
        return None
    from vislab.train.budget import TimeBudget

    budget = TimeBudget(cfg.train.time_budget, started)
    trainer.budget_callbacks = [c for c in callbacks if isinstance(c, EpochPrinter)]
    budget.plan(trainer, console, user=cfg.user_given())
    return budget


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


# the named recipes were measured on Fashion-MNIST's 54,000-60,000 training images: their high one-cycle peak
# and few epochs take hundreds of steps; below this many images an epoch is a handful of them
RECIPE_SCALE = {"fast": 60_000, "accurate": 60_000}
FEW_IMAGES = 5_000


def recipe_scale_note(cfg: Config, images: int) -> str | None:
    """A note when ``--recipe fast`` or ``accurate`` trains far fewer images than it was measured on (its
    few epochs at a high one-cycle peak then take a few dozen steps, and on 200 digits it ended near chance):
    ``--recipe auto``, the default, sizes the epochs to the data.

    Example:
        >>> from vislab.core.config import resolve_config
        >>> recipe_scale_note(resolve_config(None, {"recipe": "fast"}), 200).split(";")[0]
        "--recipe fast was measured on Fashion-MNIST's 60,000 training images, this run has 200"
    """
    measured = RECIPE_SCALE.get(str(cfg.recipe))
    if measured is None or images >= FEW_IMAGES:
        return None
    steps = max(1, -(-images // cfg.train.batch_size))
    return (f"--recipe {cfg.recipe} was measured on Fashion-MNIST's {measured:,} training images, this run has "
            f"{images:,}; its {cfg.train.epochs} epochs are {steps} step{'s' * (steps != 1)} each here, too few for "
            "its high one-cycle peak; leave --recipe out (auto picks settings for this much data), or give more "
            "--epochs")


def _print_data_summary(console, dataset: Dataset) -> None:
    from rich.table import Table

    rows = dataset.split_table()
    table = Table(title=f"{dataset.name}: {dataset.counted} per class per split", show_lines=False)
    for header in rows[0]:
        table.add_column(header, justify="left" if header in ("class", "label") else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)
    from vislab.data.sources import split_notes

    for note in split_notes(dataset):
        console.print(f"[yellow]note: {note}[/]")
    if dataset.bad_files:
        console.print(f"[yellow]{len(dataset.bad_files)} bad files skipped[/] (listed in bad_files.csv)")


def _plot_curves(run_dir: Path, history: list[dict], task: Task) -> None:
    if history:
        from vislab.core.background import draw

        draw("vislab.viz.training:plot_history", history, run_dir / "plots" / "curves.png", metrics=[m.name for m in task.metrics])
