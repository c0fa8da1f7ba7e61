"""The learning-rate range test (Smith 2015; fastai's ``lr_find``), honest about its noise.

The model trains for up to ``steps`` mini-batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``; the loss of every step is recorded and
smoothed (an exponential moving average with bias correction, as fastai does). The sweep
stops early once the smoothed loss exceeds ``diverge`` times its best. Two suggestions are
given, because one number hides how flat or noisy the curve is:

* ``steepest``: where the smoothed loss falls fastest against log(LR);
* ``valley``: fastai's default, half way along the longest stretch over which the smoothed loss
  keeps falling (more robust to a noisy dip).

The model, data, freezing, parameter groups (discriminative LRs keep their ratios: every
group's LR is scaled by the same factor) and augmentation are exactly those ``vislab
train`` would use with the same config; nothing is written into a run folder and the
model is thrown away afterwards. With cached features (``--cache-features``, or
``--recipe transfer`` with a gradient optimiser) what trains is the head on the backbone's
features, extracted once, so the sweep finds the head's learning rate on them.

Example:
    >>> from vislab.core.config import resolve_config
    >>> cfg = resolve_config(overrides={"data.source": "digits", "model.name": "chollet_convnet"})
    >>> result = lr_find(cfg, steps=100, out="/tmp/vislab-lr-find")   # doctest: +SKIP
    >>> result.suggestions                                             # doctest: +SKIP
    {'valley': 0.0021, 'steepest': 0.0063}
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vislab.core.config import Config, ConfigError
from vislab.core.device import autocast_context
from vislab.core.weights import write_text

SUGGESTIONS = ("valley", "steepest")
MIN_STEPS = 10  # fewer give no curve to read (`vislab lr-find --steps` refuses them while parsing)



@contextlib.contextmanager
def _sweep_progress(console, steps: int):
    """``shown(step, lr, smoothed loss, seconds)`` after each step: a bar on a terminal, and one line with the
    time left after the first steps when the sweep takes longer than a few seconds (a silent minute is no use)."""
    said = False

    def line(step, lr, loss, seconds):
        nonlocal said
        left = seconds / step * (steps - step)
        if not said and step >= 3 and left > 10:
            console.print(f"lr-find: about {left:.0f} s more for {steps} steps ({seconds / step:.2f} s a step)")
        said = said or step >= 3

    if not console.is_terminal:
        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("lr-find"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("sweep", total=steps, stats="")

        def update(step, lr, loss, seconds):
            line(step, lr, loss, seconds)
            bar.update(task, completed=step, stats=f"lr {lr:.2g} loss {loss:.4f}")

        yield update


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # each step's training loss
    smoothed: list[float]  # bias-corrected exponential moving average of the losses
    suggestions: dict[str, float | None]  # valley, steepest
    stopped_early: bool  # the smoothed loss diverged before the last step
    seconds: float
    plot: Path | None = None
    json_path: Path | None = None
    config_path: Path | None = field(default=None)  # where a suggestion was written, if asked

    def to_dict(self) -> dict:
        return {"suggestions": self.suggestions, "steps": len(self.lrs), "stopped_early": self.stopped_early,
                "seconds": round(self.seconds, 2), "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed}


def smooth(losses, beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average (fastai's ``SmoothenValue``).

    Example:
        >>> [round(v, 3) for v in smooth([1.0, 1.0, 4.0], beta=0.5)]
        [1.0, 1.0, 2.714]
    """
    average, out = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * float(loss)
        out.append(average / (1 - beta ** step))
    return out


def _trimmed(lrs, losses):
    """fastai drops the first tenth (the average is still settling) and the last few steps (divergence)."""
    n = len(lrs)
    start, stop = n // 10, max(n // 10 + 2, n - 5)
    return np.asarray(lrs[start:stop], dtype=float), np.asarray(losses[start:stop], dtype=float)


def steepest_lr(lrs, smoothed) -> float | None:
    """The LR where the smoothed loss falls fastest per unit of log(LR); None if it never falls.

    Example:
        >>> lrs = [10 ** (e / 10) for e in range(-50, 1)]
        >>> losses = [2.0 - (1.5 if lr > 1e-2 else 0.0) for lr in lrs]
        >>> 1e-3 < steepest_lr(lrs, losses) < 1e-1
        True
    """
    x, y = _trimmed(lrs, smoothed)
    if len(x) < 3:
        return None
    slopes = np.diff(y) / np.diff(np.log(x))
    index = int(np.nanargmin(slopes))
    return float(x[index]) if slopes[index] < 0 else None


def valley_lr(lrs, smoothed) -> float | None:
    """fastai's ``valley``: the longest run over which the loss keeps decreasing (as a longest
    decreasing subsequence), and the LR half way along it (fastai's index: a third of the run plus a sixth);
    None if it never falls."""
    x, y = _trimmed(lrs, smoothed)
    n = len(y)
    if n < 3:
        return None
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if y[i] < y[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    if max_end == 0:
        return None
    sections = (max_end - max_start) / 3
    return float(x[max_start + int(sections) + int(sections / 2)])


def lr_find(cfg: Config, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200, beta: float = 0.98,
            diverge: float = 4.0, out: str | Path | None = None, console=None,
            write_config: str | Path | None = None, suggestion: str = "valley") -> LRFindResult:
    """Sweep the learning rate exponentially over ``steps`` training steps; plot and suggest.

    Args:
        cfg: the training config (model, data, freezing, optimiser, augmentation).
            ``train.lr`` only sets the ratios between parameter groups (``model.lr_backbone``).
        start_lr, end_lr: the sweep's range (the head's LR).
        steps: training steps (mini-batches); the data repeats if an epoch is shorter.
        beta: smoothing of the loss (0.98, as fastai).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum.
        out: folder for ``lr_find.png`` and ``lr_find.json`` (None: nothing written).
        console: a rich console for the summary lines.
        write_config: a YAML config file to write the chosen LR into as ``train.lr``
            (created from ``cfg`` if absent; otherwise only ``train.lr`` and, when set and the sweep trained
            the backbone at a rate of its own, ``model.lr_backbone`` at the ratio to it the sweep kept, are
            changed; a line says so). Checked before the sweep.
        suggestion: which suggestion ``write_config`` takes: ``valley`` or ``steepest``.

    Returns:
        An :class:`LRFindResult` with the curve and the suggestions.

    Raises:
        ConfigError: a range, step count or suggestion that cannot work, or an optimiser
            that sets its own steps (``lbfgs``).
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"need 0 < --start-lr < --end-lr (got {start_lr:g} and {end_lr:g})")
    if steps < MIN_STEPS:
        raise ConfigError(f"--steps {steps} is too few for a curve; it must be >= {MIN_STEPS} "
                          "(default 200, which gives a smoother one)")
    if suggestion not in SUGGESTIONS:
        raise ConfigError(f"suggestion {suggestion!r} is not one of {', '.join(SUGGESTIONS)}")
    if write_config is not None:
        check_write_target(write_config)  # before the sweep, not after it
    _check_sweepable(cfg)  # the user's own settings: refused before the data is read
    from rich.console import Console

    from vislab.core.console import console as vislab_console
    from vislab.train.loop import Trainer, task_and_data

    console = console or vislab_console()
    chosen_cfg = copy.deepcopy(cfg)
    # the task, data, model and settings `vislab train` would use with these options (--recipe auto included)
    task, dataset = task_and_data(chosen_cfg, console)
    _check_sweepable(chosen_cfg, by_recipe=True)
    sweep_cfg = copy.deepcopy(chosen_cfg)
    sweep_cfg.train.scheduler = "none"  # the sweep is the schedule
    sweep_cfg.train.warmup_epochs = 0
    task.prepare(dataset, Console(quiet=True))  # e.g. class weights from the training counts
    trainer = Trainer(sweep_cfg, Path(out or "."), dataset, Console(quiet=True), task=task)
    optimizer = trainer.optimizer
    ratios = [group["lr"] / sweep_cfg.train.lr for group in optimizer.param_groups]
    backbone_ratio = _swept_backbone_ratio(trainer, sweep_cfg)
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    if trainer.cached is not None:
        console.print(f"lr-find: the head trains on cached features: extracting the backbone's features of "
                      f"{len(trainer.cached.train_data)} training images once")
        trainer.cached.prepare()
    lrs, losses = [], []
    best, stopped_early, step = math.inf, False, 0
    start = time.perf_counter()
    with _sweep_progress(console, steps) as shown:
        for loss in _step_losses(trainer, sweep_cfg):
            lr = start_lr * factor ** step
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            trainer.after_step()
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value)
            current = smooth(losses, beta)[-1]
            best = min(best, current)
            step += 1
            shown(step, lr, current, time.perf_counter() - start)
            if not math.isfinite(current) or current > diverge * best:
                stopped_early = True
                break
            if step >= steps:
                break
    if not lrs:
        raise ConfigError("the training split gave no batch to train on; check --data and --batch-size")
    smoothed = smooth(losses, beta)
    suggestions = {"valley": valley_lr(lrs, smoothed), "steepest": steepest_lr(lrs, smoothed)}
    result = LRFindResult(lrs, losses, smoothed, suggestions, stopped_early, time.perf_counter() - start)
    if out is not None:
        from vislab.viz.lr_find import plot_lr_find

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        result.plot = plot_lr_find(lrs, losses, smoothed, suggestions, folder / "lr_find.png",
                                   title=f"LR finder: {cfg.model.name}"
                                         + (" (its head on cached features)" if trainer.cached is not None else "")
                                         + f" on {Path(str(cfg.data.source)).name}")
        result.json_path = folder / "lr_find.json"
        write_text(result.json_path, json.dumps(result.to_dict(), indent=1))
    shown = ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} none" for k, v in suggestions.items())
    console.print(f"lr-find: {len(lrs)} steps from {start_lr:g} to {lrs[-1]:.3g}"
                  + (" of the head on cached features" if trainer.cached is not None else "")
                  + (" (stopped: the loss diverged)" if stopped_early else "")
                  + f" in {result.seconds:.1f}s; suggestions: {shown}")
    if write_config is not None:
        chosen = suggestions[suggestion]
        if chosen is None:
            raise ConfigError(f"the loss never fell, so there is no {suggestion} suggestion to write "
                              f"into {write_config}; widen the range (--start-lr/--end-lr) or check the data")
        notes: list[str] = []
        result.config_path = write_lr(write_config, chosen, chosen_cfg, notes, backbone_ratio=backbone_ratio)
        console.print(f"lr-find: wrote train.lr={chosen:.3g} ({suggestion}) into {result.config_path}")
        for note in notes:
            console.print(f"lr-find: {note}")
    return result


def _step_losses(trainer, cfg: Config):
    """The loss of each training step as ``vislab train`` would take it (not yet backpropagated), batch after
    batch, epoch after epoch: the model's on the training batches (augmented as training augments them), or
    with cached features the head's on the shuffled feature batches."""
    from vislab.data.loaders import epoch_generator

    cached, epoch = trainer.cached, 0
    while True:
        yielded = False
        if cached is not None:
            from vislab.tasks.classification import classification_loss

            data = cached.train_features
            device = next(cached.head.parameters()).device
            cached.head.train()
            for index in cached.epoch_order(cfg.seed, epoch).split(cached.batch_size):  # as train_epoch batches
                x, y = data.features[index].to(device), data.labels[index].to(device)
                yielded = True
                yield classification_loss(cached.head(x), y, cfg.train.label_smoothing)
        else:
            trainer.prepare_train_epoch(epoch)
            generator = epoch_generator(cfg.seed, epoch, stream=1)
            for images, labels in trainer.train_batches:
                x = trainer.model_input(images, generator)
                y = trainer.task.targets(labels.to(trainer.device))
                with autocast_context(trainer.device, trainer.amp_dtype):
                    outputs = trainer.forward_model(x)
                yielded = True
                yield trainer.training_loss(outputs, y)
        if not yielded:
            return
        epoch += 1


def _check_sweepable(cfg: Config, by_recipe: bool = False) -> None:
    """Refuse a config with no learning rate to sweep: the L-BFGS head, which picks its own steps. Cached
    features with another optimiser are swept: their head is what trains. ``by_recipe``: after ``--recipe
    auto`` chose L-BFGS for this data. The message names the flag that makes a sweep possible."""
    if cfg.train.optimizer != "lbfgs":
        return
    if by_recipe:
        raise ConfigError("for this data `vislab train` fits a logistic-regression head on cached features "
                          "(recipe auto), which has no learning rate to find; to sweep end-to-end training, name "
                          "the model and optimizer (e.g. --model fastnet --optimizer adam) or pass --recipe none")
    what = "the learning rate of its head on the cached features" if cfg.model.cache_features else "one"
    raise ConfigError(f"{cfg.given_as('train.optimizer')} picks its own steps by line search, so there is no "
                      f"learning rate to find; add --optimizer adam (or adamw, sgd, rmsprop) to find {what}")


def _swept_backbone_ratio(trainer, cfg: Config) -> float | None:
    """``model.lr_backbone / train.lr`` when the sweep trained a backbone in parameter groups of its own at that
    ratio (moved by the same factor as the head's); None when it did not (cached features: only the head trains;
    no ``lr_backbone``; a backbone frozen throughout the sweep)."""
    if trainer.cached is not None or cfg.model.lr_backbone is None:
        return None
    trained = any(not str(group.get("name", "head")).startswith("head")
                  and any(p.requires_grad for p in group["params"]) for group in trainer.optimizer.param_groups)
    return cfg.model.lr_backbone / cfg.train.lr if trained else None


def check_write_target(path: str | Path) -> None:
    """Refuse a ``--write-config`` target that :func:`write_lr` could not write, naming the user's path: a folder,
    a file that is not a YAML mapping of sections, a place that cannot be written. Called before the sweep."""
    import os

    from vislab.core.files import file_target_problem

    given = str(path)
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--write-config {given}: is a folder; give a YAML file (created if absent)")
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"--write-config {given}: is not a regular file; give a YAML file (created if absent)")
        _read_mapping(path)
        if not os.access(path, os.W_OK):
            raise ConfigError(f"--write-config {given}: is not writable; give a file you can write")
        return
    problem = file_target_problem(path)  # the folder it would be created in, as export's --out is checked
    if problem:
        raise ConfigError(f"--write-config {given}: {problem}")


def _read_mapping(path: Path) -> dict:
    """An existing ``--write-config`` file's sections (an empty file: none)."""
    from vislab.core.files import read_yaml

    data = read_yaml(path, "a YAML config", "fix it or pass a new file to --write-config", allow_empty=True) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--write-config {path}: the top level must be a mapping of sections (data, model, "
                          "train, ...); fix it or pass a new file")
    return data


def write_lr(path: str | Path, lr: float, cfg: Config, notes: list[str] | None = None,
             backbone_ratio: float | None = None) -> Path:
    """Put ``lr`` into a config YAML as ``train.lr``; ``model.lr_backbone``, where the file sets it, moves with it
    only when the sweep moved a backbone's LR with the head's (``backbone_ratio``: ``lr_backbone / lr`` in the
    sweep, whose suggestion holds for that pair); otherwise the file's value is left as it is.

    An existing file keeps everything else as it is; a new one gets what ``cfg`` sets beyond the defaults.
    ``notes``: a line is added for each value changed besides ``train.lr`` (what and why), for the caller to print.

    Example:
        >>> import tempfile
        >>> cfg = Config(); cfg.train.lr, cfg.model.lr_backbone = 1e-3, 1e-4
        >>> notes = []
        >>> path = write_lr(Path(tempfile.mkdtemp()) / "tune.yaml", 2e-3, cfg, notes, backbone_ratio=0.1)
        >>> print(notes[0])  # doctest: +ELLIPSIS
        also changed model.lr_backbone 0.0001 -> 0.0002 in .../tune.yaml: the sweep moved it with train.lr (at 0.1x), ...
    """
    given = str(path)
    path = Path(path)
    lr = float(f"{lr:.3g}")
    if path.is_file():
        data = _read_mapping(path)
    else:
        # what differs from the code's defaults: every default written down would count as the user's own
        # setting when training from the file, which --recipe auto then leaves alone
        data = _changed(cfg.to_dict(), Config().to_dict())
        for key in ("out", "recipe_choices"):
            data.pop(key, None)
        # the learning rate belongs to the model, optimiser and batch it was swept with: those are pinned
        data.setdefault("model", {})["name"] = cfg.model.name
        data.setdefault("train", {}).update(optimizer=cfg.train.optimizer, batch_size=cfg.train.batch_size)
    train = data.setdefault("train", {})
    model = data.get("model") or {}
    if model.get("lr_backbone") and backbone_ratio is not None:
        # the sweep scaled every parameter group by the same factor: the backbone's LR stayed at its ratio to the
        # head's, so the suggestion is a pair (the head's LR, the backbone's at that ratio)
        before = float(model["lr_backbone"])
        after = float(f"{lr * backbone_ratio:.3g}")
        if after != before and notes is not None:
            notes.append(f"also changed model.lr_backbone {before:g} -> {after:g} in {path}: the sweep moved it with "
                         f"train.lr (at {backbone_ratio:.3g}x), so the suggestion holds for that pair; set "
                         f"{before:g} back to keep your own")
        model["lr_backbone"] = after
    elif model.get("lr_backbone") and notes is not None:
        what = "only the head, on cached features" if cfg.model.cache_features else "no backbone at a rate of its own"
        notes.append(f"left model.lr_backbone {float(model['lr_backbone']):g} in {path} as it was: the sweep trained "
                     f"{what}, so the suggestion is for train.lr alone")
    train["lr"] = lr
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, yaml.safe_dump(data, sort_keys=False))
    except OSError as exc:
        raise ConfigError(f"--write-config {given}: cannot be written ({exc.strerror or exc}); give another path") \
            from None
    return path


def _changed(values: dict, defaults: dict) -> dict:
    """The entries of ``values`` that differ from ``defaults``, section by section."""
    out = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            inner = _changed(value, default)
            if inner:
                out[key] = inner
        elif value != default:
            out[key] = value
    return out
