"""The fit loop: config -> run folder.

``fit(cfg)`` loads the data, builds the model with its preprocessing, trains with
validation every epoch, early stopping, best/last checkpoints, history.csv,
TensorBoard events and a curves plot, then writes ``model.safetensors`` +
``model.json`` and evaluates on the test split. ``fit(cfg, resume=RUN)`` continues
exactly where the last checkpoint left off.

Example:
    >>> from vislab.config import resolve_config
    >>> cfg = resolve_config(overrides={"data.source": "digits", "model.name": "chollet_convnet",
    ...                                 "train.epochs": 1, "out": "/tmp/vislab-doc"})
    >>> result = fit(cfg, progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from vislab.config import Config, config_from_dict
from vislab.data.augment import Augment
from vislab.data.loaders import epoch_generator, make_batches
from vislab.data.sources import Dataset, load_dataset, split_table
from vislab.models.build import build_model
from vislab.models.registry import check_model_name
from vislab.runs import parameter_counts, write_model
from vislab.train.callbacks import EarlyStopping
from vislab.train import distributed, speed
from vislab.train.checkpoint import (
    load_training_state, load_weights, rng_state, save_training_state, save_weights, set_rng_state, unwrap,
)
from vislab.train.losses import classification_loss, correct_count, running_sums
from vislab.train.optim import FusedRMSprop

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict]
    metrics: dict | None
    stopped_early: bool


# --------------------------------------------------------------------------- device & precision
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu or auto")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convolutions run natively in oneDNN."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_bf16_native(device=None) -> bool:
    """Whether the GPU computes in bf16 natively (compute capability 8.0+, Ampere on).

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (T4,
    V100: no bf16 cuDNN convolutions); those GPUs train in fp16 with loss scaling.
    """
    return torch.cuda.get_device_capability(device)[0] >= 8 and torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32 (``auto``: bf16 where the device runs it
    natively; benchmarks/bench_step_costs.py measures the gain per model)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- optimiser
def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "lbfgs":
        # full batch on cached features (config.validate checks): multinomial logistic regression.
        # One param group of the trainable head; the strong-Wolfe line search sets the step (lr=1).
        from vislab.train.features import LBFGS_ITERATIONS_PER_EPOCH

        trainable = [p for p in _flat(params) if p.requires_grad]
        return torch.optim.LBFGS(trainable, lr=1.0, max_iter=LBFGS_ITERATIONS_PER_EPOCH, history_size=20,
                                 line_search_fn="strong_wolfe")
    if t.optimizer in ("adam", "adamw"):
        # fused: one kernel per step for all parameters (CPU and CUDA) instead of a chain of
        # element-wise ops per parameter
        cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=t.lr, weight_decay=t.weight_decay, fused=_can_fuse(params))
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0,
                               weight_decay=t.weight_decay)
    # Keras RMSprop: rho=0.9, eps=1e-7; torch.optim.RMSprop's maths in one fused kernel on the CPU
    return FusedRMSprop(params, lr=t.lr, alpha=0.9, eps=1e-7, momentum=0.0, weight_decay=t.weight_decay)


def _flat(params) -> list[torch.Tensor]:
    """The tensors of a parameter list or of a list of param-group dicts."""
    return [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]


def _can_fuse(params) -> bool:
    tensors = _flat(params)
    return bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)


def make_scheduler(optimizer, cfg, steps_per_epoch: int):
    """Returns (scheduler, step_per_batch)."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total)), True
    if t.scheduler == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(1, total),
                                                   pct_start=0.25, anneal_strategy="linear",
                                                   div_factor=10.0, final_div_factor=100.0), True
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, t.epochs // 3), gamma=0.1), False
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.2, patience=2), False
    return None, False


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


def _append_history(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def _truncate_history(path: Path, completed: int) -> None:
    """After a kill, history.csv may hold an epoch the checkpoint does not: keep the first ``completed``."""
    rows = [r for r in read_history(path.parent) if r["epoch"] is not None and r["epoch"] <= completed]
    if path.exists():
        path.unlink()
    for row in rows:
        row["epoch"] = int(row["epoch"])
        _append_history(path, row)


# --------------------------------------------------------------------------- the loop
class Trainer:
    """Holds what one run needs; ``fit()`` is the public entry point."""

    def __init__(self, cfg: Config, run_dir: Path, dataset: Dataset, console,
                 dist: distributed.DistContext = distributed.SINGLE):
        self.cfg, self.run_dir, self.dataset, self.console = cfg, run_dir, dataset, console
        self.dist = dist  # torchrun: this rank's place; the single process otherwise
        self.device = resolve_device(cfg.train.device)
        self.amp_dtype = resolve_precision(cfg.train.precision, self.device)
        self.model, self.preprocessing = build_model(
            cfg.model, dataset.num_classes, dataset.channels, dataset.native_size
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
        self.stopper = EarlyStopping(monitor, es.patience, es.min_delta)
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
        total_loss, correct = running_sums(self.device)
        seen = 0
        start = next_update = time.perf_counter()
        for images, labels in self.train_batches:
            x = self.model_input(images, generator)
            y = labels.to(self.device, non_blocking=True)
            with autocast_context(self.device, self.amp_dtype):
                logits = self.forward_model(x)
            loss = classification_loss(logits, y, cfg.train.label_smoothing)
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
                correct += correct_count(logits.detach(), y)
            seen += len(y)
            if progress is not None and time.perf_counter() >= next_update:
                # a few times a second: reading the sums waits for a GPU's queue to drain
                next_update = time.perf_counter() + 0.2
                progress(seen * self.dist.world_size, float(total_loss) / seen, float(correct) / seen,
                         seen * self.dist.world_size / (time.perf_counter() - start))
        total_loss, correct, total = distributed.all_reduce_sum(self.dist, total_loss, correct, torch.tensor(seen))
        return {"train_loss": float(total_loss) / max(float(total), 1), "train_acc": float(correct) / max(float(total), 1)}

    @torch.inference_mode()
    def evaluate_batches(self, batches) -> dict:
        self.model.eval()
        total_loss, correct = running_sums(self.device)
        seen = 0
        for images, labels in batches:
            x = self.model_input(images)
            y = labels.to(self.device)
            with autocast_context(self.device, self.amp_dtype):
                logits = self.eval_model(x)
                if self.cfg.train.tta_flip:
                    logits = (logits.float() + self.eval_model(x.flip(-1)).float()) / 2
            total_loss += classification_loss(logits, y, reduction="sum").double()
            correct += correct_count(logits, y)
            seen += len(y)
        total_loss, correct, total = distributed.all_reduce_sum(self.dist, total_loss, correct, torch.tensor(seen))
        return {"loss": float(total_loss) / max(float(total), 1), "acc": float(correct) / max(float(total), 1)}

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


def _resident(split, device: torch.device):
    """An in-memory split copied to the GPU once, when it fits easily: no host->device copy per batch."""
    if device.type != "cuda" or split is None or not split.in_memory:
        return split
    free, _ = torch.cuda.mem_get_info(device)
    if split.images.numel() * split.images.element_size() > free // 4:  # leave room for the model
        return split
    return type(split)(labels=split.labels.to(device), images=split.images.to(device), name=split.name)


def fit(cfg: Config | None, resume: str | Path | None = None, progress: bool = True, evaluate: bool = True,
        console=None, epochs: int | None = None) -> FitResult:
    """Train ``cfg`` into a run folder, or resume the run folder ``resume`` (its own config.yaml;
    ``epochs`` may extend it), and return the result.

    Under ``torchrun`` every rank trains its shard of each batch (DDP) and only rank 0
    writes the run folder and prints; see :mod:`vislab.train.distributed`.
    """
    dist = distributed.setup(cfg.train.device if cfg is not None else "auto")
    try:
        return _fit(cfg, resume, progress, evaluate, console, epochs, dist)
    finally:
        distributed.cleanup(dist)


def _fit(cfg, resume, progress, evaluate, console, epochs, dist: distributed.DistContext) -> FitResult:
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
        cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        if epochs is not None:
            cfg.train.epochs = epochs
    else:
        # the default name holds a timestamp: rank 0's is everyone's
        run_dir = distributed.broadcast_object(dist, Path(cfg.out) if cfg.out else default_run_dir(cfg))
        if (run_dir / "model.json").exists() or (run_dir / "checkpoints" / "last.pt").exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; choose another --out, or --resume {run_dir} to continue it"
            )
    check_model_name(cfg.model.name)  # a typo fails before minutes of data loading
    seed_everything(cfg.seed)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    cfg.out = str(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_bad_files(run_dir, dataset.bad_files)
    _print_data_summary(console, dataset)
    if resume is None and main:  # rank 0 only: the audit writes into the run folder
        from vislab.data.audit import audit_dataset

        audit_dataset(dataset, run_dir, seed=cfg.seed)

    trainer = Trainer(cfg, run_dir, dataset, console, dist)
    history_path = run_dir / "history.csv"
    if resume is not None:
        trainer.restore(load_training_state(run_dir / "checkpoints" / "last.pt"))
        if main:
            _truncate_history(history_path, trainer.start_epoch)
        console.print(f"resuming {run_dir} at epoch {trainer.start_epoch + 1}/{cfg.train.epochs}")
    counts = parameter_counts(trainer.model)
    console.print(
        f"model {cfg.model.name}: {counts['total']:,} parameters ({counts['trainable']:,} trainable), "
        f"input {'x'.join(map(str, trainer.preprocessing.input_size))}, device {trainer.device}, "
        f"precision {trainer.amp_dtype or 'fp32'}"
        + (f", {dist.world_size} processes ({dist.backend})" if dist.enabled else "")
    )
    writer = _tensorboard(run_dir) if main else distributed.NullWriter()
    history = read_history(run_dir) if resume is not None else []
    stopped_early = False
    best_path = run_dir / "checkpoints" / "best.safetensors"
    for epoch in range(trainer.start_epoch, cfg.train.epochs):
        _maybe_unfreeze(trainer, epoch)
        start = time.perf_counter()
        with _progress_bar(console, progress, epoch, cfg.train.epochs, len(trainer.train_batches.split)) as bar:
            logs = trainer.train_epoch(epoch, bar)
        if trainer.cached is not None:
            logs.update(trainer.cached.evaluate())
        elif trainer.val_batches is not None:
            val = trainer.evaluate_batches(trainer.val_batches)
            logs.update(val_loss=val["loss"], val_acc=val["acc"])
        if trainer.scheduler is not None and not trainer.step_per_batch:
            if isinstance(trainer.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                trainer.scheduler.step(logs.get("val_loss", logs["train_loss"]))
            else:
                trainer.scheduler.step()
        logs.update(epoch=epoch + 1, lr=trainer.optimizer.param_groups[-1]["lr"],
                    seconds=round(time.perf_counter() - start, 3))
        history.append(logs)
        if main:
            _append_history(history_path, logs)
        for key, value in logs.items():
            if key != "epoch" and value is not None:
                writer.add_scalar(key, value, epoch + 1)
        writer.flush()
        console.print(_epoch_line(logs, cfg.train.epochs))
        was_best = trainer.stopper.best_epoch
        trainer.stopper.on_epoch_end(epoch, logs)
        if trainer.stopper.best_epoch != was_best and main:
            save_weights(trainer.model, best_path)
        # checkpoint last: the state after this epoch, written atomically
        if main:
            save_training_state(run_dir / "checkpoints" / "last.pt", trainer.state(epoch))
        if trainer.stopper.stop_training:
            stopped_early = True
            console.print(f"early stopping: {trainer.stopper.monitor} has not improved for "
                          f"{trainer.stopper.patience} epochs (best epoch {trainer.stopper.best_epoch + 1})")
            break
    writer.close()
    if not main:  # the other ranks' work ends with training; rank 0 writes the model and evaluates
        return FitResult(run_dir, history, None, stopped_early)
    if cfg.train.early_stopping.restore_best and cfg.train.early_stopping.patience and best_path.exists():
        load_weights(trainer.model, best_path)
    write_model(run_dir, trainer.model, trainer.preprocessing, dataset.class_names, cfg.model)
    _plot_curves(run_dir, history)
    metrics = None
    if evaluate and "test" in dataset.splits:
        from vislab.evaluate.runner import evaluate_run

        if trainer.device.type == "cuda":  # free its GPU copies (model, optimiser state, resident splits) first
            import gc

            del trainer
            gc.collect()
            torch.cuda.empty_cache()
        metrics = evaluate_run(run_dir, dataset=dataset, console=console, device=cfg.train.device)
    _print_final_summary(console, run_dir, history, metrics, counts, stopped_early)
    return FitResult(run_dir, history, metrics, stopped_early)


def _maybe_unfreeze(trainer: Trainer, epoch: int) -> None:
    mcfg = trainer.cfg.model
    if mcfg.freeze_epochs and epoch == mcfg.freeze_epochs:
        from vislab.models.finetune import unfreeze

        unfreeze(trainer.model)
        trainer.console.print(f"epoch {epoch + 1}: unfreezing the backbone (freeze_epochs={mcfg.freeze_epochs})")


def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _epoch_line(logs: dict, epochs: int) -> str:
    parts = [f"epoch {int(logs['epoch'])}/{epochs}", f"loss {logs['train_loss']:.4f}", f"acc {logs['train_acc']:.4f}"]
    if logs.get("val_loss") is not None:
        parts += [f"val_loss {logs['val_loss']:.4f}", f"val_acc {logs['val_acc']:.4f}"]
    parts += [f"lr {logs['lr']:.3g}", f"{logs['seconds']:.1f}s"]
    return "  ".join(parts)


@contextlib.contextmanager
def _progress_bar(console, enabled: bool, epoch: int, epochs: int, total: int):
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("train", total=total, stats="")

        def update(seen, loss, acc, speed):
            bar.update(task, completed=seen, stats=f"loss {loss:.4f} acc {acc:.4f} {speed:,.0f} img/s")

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


def _plot_curves(run_dir: Path, history: list[dict]) -> None:
    if history:
        from vislab.viz.training import plot_history

        plot_history(history, run_dir / "plots" / "curves.png")


def _print_final_summary(console, run_dir, history, metrics, counts, stopped_early) -> None:
    seconds = sum(row["seconds"] for row in history)
    last = history[-1] if history else {}
    lines = [f"run folder: {run_dir}", f"epochs: {len(history)}{' (stopped early)' if stopped_early else ''}"
             f"  training time: {seconds:.1f}s  parameters: {counts['total']:,}"]
    if last.get("val_acc") is not None:
        lines.append(f"last val_acc: {last['val_acc']:.4f}  val_loss: {last['val_loss']:.4f}")
    if metrics:
        lines.append(f"test accuracy: {metrics['accuracy']:.4f}  test loss: {metrics['loss']:.4f}")
    console.rule("summary")
    for line in lines:
        console.print(line)
    sys.stdout.flush()
