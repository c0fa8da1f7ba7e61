"""Configuration: defaults in dataclasses, then a recipe, then a YAML file, then CLI flags.

Unknown keys are an error naming the valid ones. The resolved config is written
to the run folder as ``config.yaml`` and is enough to repeat the run.

Example:
    >>> cfg = resolve_config(overrides={"train.epochs": 3, "model.name": "mlp"})
    >>> cfg.train.epochs, cfg.model.name
    (3, 'mlp')
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import numbers
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from vislab.core.errors import ConfigError  # noqa: F401  (re-exported: vislab.core.config.ConfigError)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "lbfgs")
SCHEDULERS = ("none", "cosine", "onecycle", "step", "plateau")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FILL_MODES = ("nearest", "constant", "reflect", "wrap")
FREEZE_MODES = ("none", "backbone")
HEADS = ("linear", "mlp")
# tasks vislab ships (vislab.tasks registers them; a task registered by the user's code works as well)
BUILTIN_TASKS = ("classification", "multilabel", "segmentation")
# the task of a config, flag or model.json that names none (vislab.tasks.get_task(None) builds it)
DEFAULT_TASK = "classification"
# segmentation: the loss (cross-entropy with the ignore index, Dice, or their sum) and the named palettes
SEGMENTATION_LOSSES = ("ce", "dice", "ce+dice")
PALETTES = ("camvid", "cityscapes", "voc", "ade20k")
EXPLAIN_METHODS = ("gradcam", "gradcam++", "lime", "occlusion", "integrated-gradients")
LIME_SEGMENTATIONS = ("quickshift", "slic")
OUTPUT_FORMATS = ("table", "json", "csv")
EXPORT_FORMATS = ("onnx",)
ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")  # auto: dynamo, else the TorchScript exporter
SPLITS = ("train", "val", "test")
# fine-tuning: BatchNorm statistics while training -- train: batch statistics as usual
# (frozen layers excepted); frozen: every BN keeps its running (ImageNet) statistics; reestimate:
# recomputed once on the training images before training, then kept
BN_MODES = ("train", "frozen", "reestimate")
# automatic augmentation policies on the uint8 images (torchvision v2)
AUGMENT_POLICIES = ("none", "trivialaugment", "randaugment")
# class imbalance and multi-label (vislab.tasks.losses, vislab.data.samplers, vislab.tasks.multilabel)
# auto: cross-entropy (single-label, segmentation), BCE with logits (multi-label); focal: single- and multi-label;
# asymmetric: multi-label; dice, ce+dice: segmentation (each task refuses the ones that are not its own)
LOSSES = ("auto", "focal", "asymmetric", "dice", "ce+dice")
SAMPLERS = ("none", "balanced")
THRESHOLD_METRICS = ("f1", "f2", "mcc", "jaccard")  # what per-class multi-label thresholds maximise
LABEL_SEPARATORS = ("auto", "space", "comma", "semicolon", "pipe")
# label issues (`vislab audit --label-issues`, vislab.train.label_issues): cleanlab's ranking scores and filters
LABEL_ISSUE_RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
LABEL_ISSUE_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")




@dataclass
class DataConfig:
    source: str = "fashion-mnist"  # built-in name, class-per-folder directory, or CSV file
    data_dir: str | None = None  # where built-in sets are looked for / downloaded to
    image_root: str | None = None  # CSV: folder the file column is relative to (default: the CSV's folder)
    file_col: str | None = None  # CSV: column with the file name (auto: file/filename/path/id...)
    label_col: str | None = None  # CSV: column with the label (auto: label/class/ClassId/breed...)
    labels: list[str] | None = None  # CSV: keep only these labels
    test_csv: str | None = None  # CSV of test files labelled by class name or numeric ID
    class_ids: str | None = None  # test CSV: file mapping numeric IDs to class names (id,class rows)
    test_file_col: str | None = None
    test_label_col: str | None = None
    label_sep: str | None = None  # multi-label CSV: space | comma | semicolon | pipe (None/auto: detected)
    val_split: float = 0.1  # fraction (<1) or count (>=1) of train held out when no val/ folder
    test_split: float = 0.2  # same, for test, when the source has no test split
    max_per_class: int | None = None  # keep at most N training images per class (few-shot runs)
    workers: int = 2  # DataLoader worker processes (file datasets) / file-check threads
    exclude: str | None = None  # label_issues.csv (`vislab audit --label-issues`): leave its files out
    relabel: str | None = None  # label_issues.csv: give its files their suggested labels


@dataclass
class AugmentConfig:
    """Keras ImageDataGenerator names and meanings."""

    hflip: bool = False
    vflip: bool = False
    rotation: float = 0.0  # degrees: uniform in [-rotation, rotation]
    zoom: float = 0.0  # scale uniform in [1 - zoom, 1 + zoom]
    width_shift: float = 0.0  # fraction of the width if < 1, else pixels (whole number: whole-pixel shifts)
    height_shift: float = 0.0  # fraction of the height if < 1, else pixels (whole number: whole-pixel shifts)
    shear: float = 0.0  # shear angle in degrees, uniform in [-shear, shear]
    fill_mode: str = "nearest"  # nearest | constant | reflect | wrap
    fill_value: float = 0.0  # 0..255, used only with fill_mode=constant
    policy: str = "none"  # none | trivialaugment | randaugment (torchvision v2, per image, on uint8)

    @property
    def geometric(self) -> bool:
        return any((self.rotation, self.zoom, self.width_shift, self.height_shift, self.shear))

    @property
    def active(self) -> bool:
        return self.hflip or self.vflip or self.geometric


@dataclass
class ModelConfig:
    name: str = "fastnet"
    options: dict = field(default_factory=dict)  # model kwargs, e.g. {hidden: [512, 256], dropout: 0.5}
    input_size: list[int] | None = None  # [H, W]; default: pretrained config, else data size, else model's
    pretrained: bool = False
    weights: str | None = None  # local weights file or folder
    head: str = "linear"  # linear | mlp (GAP -> Dense -> Dropout -> Dense)
    freeze: str = "none"  # none | backbone
    finetune_last: int = 0  # unfreeze the last N blocks of the backbone
    freeze_epochs: int = 0  # gradual unfreezing: keep frozen for K epochs, then unfreeze
    lr_backbone: float | None = None  # discriminative learning rate for the backbone
    cache_features: bool = False  # frozen backbone: extract features once, train the head on them
    # --freeze backbone without --pretrained/--weights freezes random filters (a user saw 21 % on Fashion-MNIST):
    # refused unless the user asks for it (a random-features baseline)
    allow_random_backbone: bool = False
    # gradual unfreezing in stages: "EPOCH:BLOCKS", after epoch EPOCH (as the `epoch N/M` lines count; 0: from
    # the start) the top BLOCKS blocks (or "all") train too, e.g. ["1:2", "3:4", "5:all"]; needs freeze=backbone
    unfreeze_at: list[str] | None = None
    lr_decay: float = 1.0  # discriminative LRs per block: each block below the top gets lr_backbone x decay
    bn: str = "train"  # train | frozen | reestimate (BN_MODES)


@dataclass
class EarlyStopping:
    monitor: str = "val_loss"
    # Keras' meaning: stop after `patience` epochs without improvement (0: at the first one);
    # None: never stop (the best epoch is still tracked for checkpoints/best.safetensors)
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd / rmsprop
    nesterov: bool = False
    scheduler: str = "none"
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    device: str = "auto"
    precision: str = "auto"  # auto: the fastest of fp32/bf16 x memory formats, timed (vislab.core.measure)
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    tta_flip: bool = False  # evaluate on the image and its mirror
    warmup_epochs: float = 0.0  # linear warm-up from lr/100 before the schedule (cosine, none; onecycle's own)
    no_decay_norm_bias: bool = False  # no weight decay on biases and norm scales (always so when fine-tuning)
    mixup: float = 0.0  # timm Mixup alpha (0: off)
    cutmix: float = 0.0  # timm CutMix alpha (0: off)
    ema: float = 0.0  # timm ModelEmaV3 decay, e.g. 0.998 (0: off); evaluation and the saved model use it
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    eval_batch_size: int = 512
    # an epoch's short last batch (50,000 images at batch 64 leave 16): trained on, as Keras and torch's
    # DataLoader do, unless True; a last batch with fewer images than max(2, processes) is always left out
    drop_last: bool = False
    # written by the run: what --precision auto measured and chose (precision, memory format, threads,
    # seconds per step); `train --resume` continues with it. A new run measures again and ignores it.
    speed: dict | None = None
    class_weights: str = "none"  # none | auto (inverse frequency, normalised) | FILE (JSON/CSV weight per class)
    sampler: str = "none"  # none | balanced (single-label: per-class; multi-label: by each image's rarest label)
    loss: str = "auto"  # auto | focal | asymmetric (multi-label only)
    focal_gamma: float = 2.0  # focal loss focusing parameter (Lin et al. 2017)
    threshold: float | None = None  # multi-label: one threshold for every class instead of tuned ones
    threshold_metric: str = "f1"  # multi-label: what the per-class thresholds maximise on the val split
    # train for about this long (seconds; the flag takes 90s, 5m, 1h): the epochs come from the measured
    # epoch time and the schedule is fitted to them (vislab.train.budget); None: train.epochs as given
    time_budget: float | None = None


@dataclass
class SegmentationConfig:
    """``--task segmentation``: how masks are read and scored (vislab.tasks.segmentation)."""

    palette: str | None = None  # camvid | cityscapes | voc | ade20k | a JSON/CSV file of name, r, g, b
    classes: str | None = None  # a text file, line i names class ID i (default: DIR/classes.txt, the palette)
    ignore_index: int = 255  # void / unlabelled pixels: never in the loss or the metrics
    class_weights: str | None = None  # auto: median-frequency weights from the training pixels
    loss: str = "ce"  # ce | dice | ce+dice


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: str = DEFAULT_TASK  # what is learned: vislab.tasks names them (`--task`)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    seed: int = 0
    # a named bundle (RECIPES), "auto" (vislab.train.recipe reads the data and picks what the user did not
    # give; the default of `vislab train` and vislab.api.train) or "none"/None (the code defaults alone)
    recipe: str | None = None
    # written by the run: what --recipe auto read in the data, what it set and why, which keys the user
    # gave (theirs win), and what --time-budget planned (vislab.train.recipe, vislab.train.budget)
    recipe_choices: dict | None = None
    # run folder; default runs/<model>-<data>-<time>. Keep it the last field: a run's config.yaml without it
    # was cut short (vislab.runs.read_config)
    out: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def user_given(self) -> set[str]:
        """The keys the user gave (flags, YAML), as :func:`resolve_config` recorded them: --recipe auto and
        --time-budget leave these alone."""
        return set((self.recipe_choices or {}).get("user") or ())

    def typed(self, key: str) -> bool:
        """Whether a flag or an API keyword option gave dotted ``key`` (or a section above it)."""
        return any(key == given or key.startswith(given + ".") for given in getattr(self, "_options", ()))

    def set_by_user(self, key: str) -> bool:
        """Whether the user gave dotted ``key``: a flag or keyword option, or a YAML file."""
        return key in self.user_given() or self.typed(key) or self.origin(key) is not None

    def origin(self, key: str) -> str | None:
        """The YAML file (and section) that gave dotted ``key`` its value, e.g. ``"c.yaml [model]"``; None when
        the value is a default, a recipe's, or a flag's/keyword option's (:func:`resolve_config` records it)."""
        return getattr(self, "_origins", {}).get(key)

    def named(self, key: str, message: str) -> str:
        """``message`` about ``key``'s value, led by the YAML file that gave it (``c.yaml [model]: ...``)
        when one did and the message does not say so already."""
        origin = self.origin(key)
        return message if origin is None or message.startswith(f"{origin}: ") else f"{origin}: {message}"

    @contextlib.contextmanager
    def naming_origin(self, key: str):
        """A :class:`ConfigError` raised inside about ``key``'s value names the YAML file that gave it
        (``c.yaml [model]: unknown model 'mlpp' ...``), as the file's other errors do (:meth:`named`)."""
        try:
            yield
        except ConfigError as exc:
            named = self.named(key, str(exc))
            if named == str(exc):
                raise
            raise type(exc)(named) from None

    def given_as(self, key: str, value=..., subject: str | None = None) -> str:
        """Dotted ``key`` as the user gives it, for a message: the flag (``--freeze-epochs 2``) for a flag's or an
        API keyword option's value, the key (``model.freeze_epochs=2``) for a YAML file's, followed by the file
        unless the message's ``subject`` key came from there too (:meth:`named` leads with that); a default or a
        recipe's value (``... (set by --recipe transfer)``) as ``subject``'s is given. ``value``: what to show
        (default: the key's own; None: none).

        Example:
            >>> cfg = Config()
            >>> cfg.model.freeze_epochs = 2
            >>> cfg.given_as("model.freeze_epochs"), cfg.given_as("model.freeze", "backbone")
            ('--freeze-epochs 2', '--freeze backbone')
        """
        origin, lead = self.origin(key), self.origin(subject or key)
        typed = self.typed(key)
        current = dotted_value(self, key)
        own = value is ...
        value = current if own else value
        flag = option_flag(key)
        if origin is not None or (lead is not None and not typed) or flag is None:
            text = key if value is None else f"{key}={value!r}"
            return text + (f" ({origin})" if origin not in (None, lead) else "")
        if isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
        elif isinstance(value, float):
            value = f"{value:g}"
        text = flag if value is None or value is True else f"{flag} {value}"
        chosen = (self.recipe_choices or {}).get("set") or {}
        recipe = "auto" if key in chosen else self.recipe
        if (own or value is None) and (key in chosen or RECIPES.get(recipe or "", {}).get(key, ...) == current):
            text += f" (set by --recipe {recipe})"
        return text


def dotted_value(cfg: Config, key: str):
    """The value of dotted ``key`` (``train.early_stopping.patience``) in ``cfg``."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


# Named bundles of defaults. A recipe sits between the code defaults and the YAML/flags.
RECIPES: dict[str, dict[str, Any]] = {
    # Fashion-MNIST >= 92% test accuracy in 3 epochs (benchmarks/bench_time_to_accuracy.py), about
    # 36-48 s of training on 2 CPU cores (bf16 autocast, channels_last, whole set as one uint8 tensor).
    # The high one-cycle peak is what makes 3 epochs enough: peaks of 4e-3/8e-3/1.2e-2 gave
    # 91.9/92.5/92.5% after 3 epochs (the earlier 2e-3 needed 5 epochs for 92.2%).
    "fast": {
        "model.name": "fastnet",
        # channels at 1/1, 1/2, 1/4 resolution; every BN and ReLU after its pooling
        "model.options": {"widths": [32, 64, 128], "blocks": [0, 0], "pool_early": True},
        "train.epochs": 3,
        "train.batch_size": 128,  # small batches: more steps per epoch at nearly the same images/s on CPU
        "train.optimizer": "adamw",
        "train.lr": 1e-2,  # one-cycle peak
        "train.weight_decay": 0.05,  # decoupled (AdamW)
        "train.scheduler": "onecycle",
        "train.label_smoothing": 0.1,
        "train.tta_flip": True,
        "augment.hflip": True,  # flips only: exact pixels, no resampling; shifts slowed 5-epoch convergence
        "data.val_split": 0.0,
    },
}
# Fashion-MNIST >= 94% within 10 minutes on 2 CPU cores: the fast recipe with 1.5x the channels at
# 1/2 and 1/4 resolution, 20 epochs, a lower peak, and whole-pixel shifts of up to 1 px. One 1-thread
# run each (seed 0, benchmarks/bench_recipe_search.py --group accurate): 94.2% with the 1 px shifts,
# 94.2% with flips only (93.9% in a 2-thread run: it overfits, 99.5% train accuracy), 94.0% with
# weight decay 0.2, 93.9% with shifts of up to 2 px in 20 or 24 epochs.
RECIPES["accurate"] = {
    **RECIPES["fast"],
    "model.options": {"widths": [32, 96, 192], "blocks": [0, 0], "pool_early": True},
    "train.epochs": 20,
    "train.lr": 5e-3,
    "augment.width_shift": 1,  # whole pixels: -1, 0 or 1, exact (no interpolation)
    "augment.height_shift": 1,
    "augment.fill_mode": "constant",  # black, as Fashion-MNIST's background
}

# Transfer to a small labelled set: what measured best on 40 Fashion-MNIST images per class
# (benchmarks/bench_transfer.py; 2026-12-01, AMD EPYC 2 cores, load 11-15, ONE selection, 500 test
# images): the shipped EfficientNet-Lite0's frozen features + an L-BFGS logistic-regression head,
# 85.4 % in 383 s. Fine-tuning, measured against it on the same images, lost:
#   all layers at 128 px, AdamW head 2e-3 / top block 1e-3, lr_decay 0.8, wd 0.01 off norms/biases,
#   1 warm-up epoch + cosine, 10 epochs, batch 32, label smoothing 0.1, hflip, tta flip: 76.6 %, 1267 s;
#   the same with the backbone at 1e-4, --bn frozen, 6 epochs: 73.4 %, 522 s (load 19).
# So the bar (fine-tuning >= frozen + 3 points) is NOT met; the fine-tuning flags stay opt-in.
RECIPES["transfer"] = {
    "model.name": "efficientnet_lite0",
    "model.pretrained": True,
    "model.freeze": "backbone",
    "model.cache_features": True,  # the backbone runs once per image
    "train.optimizer": "lbfgs",  # multinomial logistic regression, C=1 (weight decay 1/N)
    "train.epochs": 2,
    "data.val_split": 0.0,
}


# the --recipe choices: the bundles above, "auto" (chosen from the data when the run starts) and "none"
RECIPE_NAMES = (*RECIPES, "auto", "none")

# train's options that mean nothing for an LR sweep, and why: `vislab lr-find` and api.lr_find refuse them
LR_FIND_UNUSED = {
    "epochs": "lr-find trains for --steps batches", "time_budget": "lr-find trains for --steps batches",
    "patience": "lr-find stops when the loss diverges", "monitor": "lr-find stops when the loss diverges",
    "min_delta": "lr-find stops when the loss diverges", "restore_best": "lr-find keeps no weights",
    "ema": "lr-find keeps no weights", "tta_flip": "lr-find evaluates nothing",
    "threshold": "lr-find evaluates nothing", "threshold_metric": "lr-find evaluates nothing",
    "scheduler": "the sweep is the schedule: the LR grows from --start-lr to --end-lr",
    "warmup_epochs": "the sweep is the schedule: the LR grows from --start-lr to --end-lr",
    "freeze_epochs": "lr-find sweeps the model as --freeze leaves it (the unfreezing is scheduled in epochs)",
    "unfreeze_at": "lr-find sweeps the model as --freeze leaves it (the unfreezing is scheduled in epochs)",
}
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value, given: str | None = None) -> float:
    """``90s``, ``5m``, ``1h``, ``1.5h`` or a number of seconds -> seconds (``--time-budget``); ``given``: how
    the error names the value (:meth:`Config.given_as`; default ``--time-budget VALUE``).

    Example:
        >>> parse_duration("5m"), parse_duration("90s"), parse_duration(300)
        (300.0, 90.0, 300.0)
    """
    text = str(value).strip().lower()
    unit = _DURATION_UNITS.get(text[-1:], None) if text else None
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        seconds = None
    if seconds is None or not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"{given or f'--time-budget {value}'} is not a positive duration; give e.g. 90s, 5m or "
                          "1h (a bare number is seconds)")
    return seconds


def _check_choice(key: str, value, choices, cfg: Config | None = None) -> None:
    """``cfg``: a value a YAML file gave is refused naming the file (:meth:`Config.origin`)."""
    if value not in choices:
        given = cfg.given_as(key, value) if cfg is not None else f"{key}={value!r}"
        message = f"{given} is not valid; choose one of {', '.join(map(str, choices))}"
        raise ConfigError(cfg.named(key, message) if cfg is not None else message)


def validate(cfg: Config, backbone_of: Callable[[str], bool | None] | None = None) -> Config:
    """Check values that the type alone does not constrain: every number against :data:`RANGES`
    first, then the choices and the options that only make sense together. ``backbone_of(name)``: whether a
    network has a backbone (False: all head; None: not known before it is built), from the models layer
    above this one (:func:`vislab.models.registry.has_backbone`), so that a backbone option on a network
    without one is refused for that first."""
    _check_config_ranges(cfg)
    es = cfg.train.early_stopping
    es.monitor = MONITOR_ALIASES.get(es.monitor, es.monitor)  # Keras' names for vislab's
    _check_choice("train.optimizer", cfg.train.optimizer, OPTIMIZERS, cfg)
    _check_choice("train.scheduler", cfg.train.scheduler, SCHEDULERS, cfg)
    _check_choice("train.device", cfg.train.device, DEVICES, cfg)
    _check_choice("train.precision", cfg.train.precision, PRECISIONS, cfg)
    _check_choice("augment.fill_mode", cfg.augment.fill_mode, FILL_MODES, cfg)
    _check_choice("model.freeze", cfg.model.freeze, FREEZE_MODES, cfg)
    _check_choice("model.head", cfg.model.head, HEADS, cfg)
    _check_choice("model.bn", cfg.model.bn, BN_MODES, cfg)
    _check_choice("augment.policy", cfg.augment.policy, AUGMENT_POLICIES, cfg)
    _check_has_backbone(cfg, backbone_of)  # before the fine-tuning checks, whose fixes would not apply
    _validate_transfer(cfg)
    _check_choice("train.sampler", cfg.train.sampler, SAMPLERS, cfg)
    _check_choice("train.loss", cfg.train.loss, LOSSES, cfg)
    _check_choice("train.threshold_metric", cfg.train.threshold_metric, THRESHOLD_METRICS, cfg)
    if cfg.data.label_sep is not None:
        _check_choice("data.label_sep", cfg.data.label_sep, LABEL_SEPARATORS, cfg)
    _check_choice("segmentation.loss", cfg.segmentation.loss, SEGMENTATION_LOSSES, cfg)
    if cfg.segmentation.class_weights not in (None, "auto"):
        raise ConfigError(f"segmentation.class_weights={cfg.segmentation.class_weights!r} is not valid; use auto "
                          "(median-frequency weights from the training masks) or leave it unset")
    if cfg.recipe is not None:
        _check_choice("recipe", cfg.recipe, RECIPE_NAMES, cfg)
    if cfg.train.time_budget is not None:
        with cfg.naming_origin("train.time_budget"):
            cfg.train.time_budget = parse_duration(cfg.train.time_budget, cfg.given_as("train.time_budget"))
    aug = cfg.augment
    # Options that would silently do nothing are errors.
    if aug.fill_mode != "nearest" and not aug.geometric:
        raise ConfigError(
            f"augment.fill_mode={aug.fill_mode!r} only applies to rotation/zoom/shift/shear, and none is set"
        )
    if aug.fill_value and aug.fill_mode != "constant":
        raise ConfigError("augment.fill_value is only used with fill_mode=constant; set --fill-mode constant")
    given, cache = cfg.given_as, "model.cache_features"
    if cfg.model.cache_features and cfg.model.freeze != "backbone":
        raise ConfigError(cfg.named(cache, f"{given(cache)} needs {given('model.freeze', 'backbone', cache)} (the "
                                           "features must not change)"))
    if cfg.model.cache_features and cfg.train.precision == "fp16":
        raise ConfigError(cfg.named(cache, f"{given(cache)} extracts features in fp32 or bf16: use --precision "
                                           "auto, bf16 or fp32 with --cache-features"))
    imbalance = [flag for flag, on in (("--class-weights", cfg.train.class_weights != "none"),
                                       ("--sampler balanced", cfg.train.sampler != "none"),
                                       ("--loss", cfg.train.loss != "auto")) if on]
    if cfg.model.cache_features and imbalance:
        raise ConfigError(f"{', '.join(imbalance)} apply to end-to-end training; the cached-feature head trains "
                          "with plain cross-entropy: drop --cache-features or them")
    if cfg.model.freeze_epochs and cfg.model.freeze != "backbone":
        key = "model.freeze_epochs"
        raise ConfigError(cfg.named(key, f"{given(key)} needs {given('model.freeze', 'backbone', key)}"))
    if cfg.train.optimizer == "lbfgs":
        key = "train.optimizer"
        # full-batch L-BFGS needs the whole training set as one tensor: the cached features
        if not cfg.model.cache_features:
            raise ConfigError(cfg.named(key, f"{given(key)} fits a head on cached features: add "
                                             f"{given('model.freeze', 'backbone', key)} and {given(cache, True, key)}"))
        if cfg.model.freeze_epochs:
            raise ConfigError(cfg.named(key, f"{given(key)} cannot unfreeze the backbone; drop "
                                             f"{given('model.freeze_epochs', None, key)}"))
        if cfg.train.scheduler != "none":
            raise ConfigError(cfg.named(key, f"{given(key)} takes no learning-rate schedule (its line search sets "
                                             f"the steps); use {given('train.scheduler', 'none', key)}"))
        if cfg.train.weight_decay == 0 and cfg.typed("train.weight_decay"):
            # 0 stands for the default penalty, 1/N: a typed 0 asks for none, which this head cannot do
            raise ConfigError(f"{given('train.weight_decay')} with {given(key)}: the L-BFGS head is logistic "
                              "regression, whose loss on separable features has no minimum without an L2 penalty; "
                              "give a penalty > 0, or leave --weight-decay out for 1/N (scikit-learn's C=1)")
    return cfg


def check_new_run(cfg: Config, warn: bool = True,
                  backbone_of: Callable[[str], bool | None] | None = None) -> Config:
    """Checks for a config a new run starts from (not for a finished run's config.yaml, read back as it was);
    ``warn``: also warn of what the options leave undone (False while --recipe auto may still set the epochs);
    ``backbone_of`` (:func:`vislab.models.registry.has_backbone`): not None for vislab's own from-scratch
    networks, which have no pretrained weights to add."""
    weights = cfg.train.class_weights
    if weights not in ("none", "auto") and not Path(str(weights)).expanduser().is_file():
        key = "train.class_weights"  # before the data loads and the recipe line names it
        close = difflib.get_close_matches(str(weights), ["none", "auto"], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        what = "a folder" if Path(str(weights)).expanduser().is_dir() else "no such file"
        raise ConfigError(cfg.named(key, f"{cfg.given_as(key)}: {what}; {hint}give none, auto (inverse class "
                                         "frequency), or a JSON/CSV file of one weight per class"))
    own = backbone_of is not None and backbone_of(cfg.model.name) is not None
    pretrain = (f"Pick a pretrained network (e.g. --model efficientnet_lite0 --pretrained; {cfg.model.name} is one of "
                "vislab's from-scratch networks, with no pretrained weights) or give --weights PATH" if own else
                "Add --pretrained (or --weights PATH)")  # each begins a sentence of the messages below
    if (cfg.model.freeze == "backbone" and not cfg.model.pretrained and not cfg.model.weights
            and not cfg.model.allow_random_backbone):
        key = "model.freeze"
        raise ConfigError(cfg.named(key, (
            f"{cfg.given_as(key)} without --pretrained or --weights freezes randomly initialised filters, so only "
            f"the head learns, on random features (far below what training the whole network gives). {pretrain}, "
            "drop --freeze, or pass --allow-random-backbone for a random-features baseline")))
    if (cfg.model.finetune_last and cfg.model.freeze != "backbone" and not cfg.model.pretrained
            and not cfg.model.weights and not cfg.model.allow_random_backbone):
        key = "model.finetune_last"
        raise ConfigError(cfg.named(key, f"{cfg.given_as(key)} without --pretrained or --weights freezes the blocks "
                                         "below the last ones at their random initial values, so they never learn. "
                                         f"{pretrain}, drop it to train the whole network, "
                                         "or pass --allow-random-backbone to mean it"))
    _check_unfreezing(cfg)
    if warn:
        for message in _unfreezing_warnings(cfg):
            warnings.warn(message, UserWarning, stacklevel=2)
    return cfg


def _backbone_rates(m: ModelConfig) -> list[str]:
    """The backbone's learning-rate options that are set."""
    return [key for key, on in (("model.lr_backbone", m.lr_backbone is not None), ("model.lr_decay", m.lr_decay != 1))
            if on]


def _blocks(count: int) -> str:
    """``block`` or ``N blocks``, as in "the last ..."."""
    return "block" if count == 1 else f"{count} blocks"


def _check_unfreezing(cfg: Config) -> None:
    """Refuse fine-tuning options that can do nothing together: cached features of a backbone that trains,
    a backbone learning rate where only the head trains, a stage that unfreezes blocks already training (the
    ``--finetune-last`` ones, or an earlier stage's)."""
    m, given, cache = cfg.model, cfg.given_as, "model.cache_features"
    if m.cache_features:
        for key, does in (("model.finetune_last", "trains backbone blocks"),
                          ("model.freeze_epochs", "unfreezes the backbone")):
            if getattr(m, key.split(".")[1]):
                raise ConfigError(cfg.named(key, f"{given(key)} {does}, so the backbone's features cannot be "
                                                 f"cached: drop {given(cache, None, key)} or {given(key, None)}"))
        for key in _backbone_rates(m):
            raise ConfigError(cfg.named(key, f"{given(key)} is for the backbone, but with {given(cache, None, key)} "
                                             f"only the head trains: drop {given(key, None)}"))
    if m.unfreeze_at:
        key, stages = "model.unfreeze_at", parse_unfreeze_at(m.unfreeze_at)
        for (at, blocks), (later, more) in zip(stages, stages[1:]):
            if blocks is None or (more is not None and more <= blocks):  # a stage that unfreezes nothing
                first, then = f"{at}:{blocks or 'all'}", f"{later}:{more or 'all'}"
                trained = "the whole backbone" if blocks is None else f"the top {_blocks(blocks)}"
                fewer = min([n for n in (blocks, more) if n is not None] or [1])
                most = "all" if more == blocks or None in (blocks, more) else max(blocks, more)
                raise ConfigError(cfg.named(key, (
                    f"{given(key)}: stage {then} comes after {first}, which already trains {trained}, so it "
                    f"unfreezes nothing; give each later stage more blocks than the one before (e.g. "
                    f"{at}:{fewer} {later}:{most}), or drop {then}")))
    if m.unfreeze_at and m.finetune_last:
        key, last, count = "model.unfreeze_at", "model.finetune_last", m.finetune_last
        idle = [f"{epoch}:{blocks}" for epoch, blocks in parse_unfreeze_at(m.unfreeze_at)
                if blocks is not None and blocks <= count]
        if idle:
            stages = given(key) + ("" if len(idle) == len(m.unfreeze_at) else f": {', '.join(idle)}")
            raise ConfigError(cfg.named(key, f"{stages} unfreezes only blocks that {given(last, subject=key)} "
                                             f"trains from the start; give each stage more than {count} "
                                             f"block{'s' * (count > 1)}, or drop {given(last, None, key)}"))


def _unfreezing_warnings(cfg: Config) -> list[str]:
    """Fine-tuning options that this run leaves partly undone, though they may be meant (a run continued by
    ``--resume`` with more epochs, a config kept for another run): one line each."""
    m, given = cfg.model, cfg.given_as
    last, fe, ua, count = "model.finetune_last", "model.freeze_epochs", "model.unfreeze_at", m.finetune_last
    lines = []
    if count and m.freeze == "backbone" and not (m.freeze_epochs or m.unfreeze_at):
        lines.append(cfg.named(last, f"{given(last)} with {given('model.freeze', subject=last)}: the last "
                                     f"{_blocks(count)} of the backbone train{'s' * (count == 1)} with the head, "
                                     f"those below stay frozen (as with {given(last)} alone); drop "
                                     f"{given(last, None)} to train only the head"))
    if count and m.freeze_epochs:
        lines.append(cfg.named(last, f"{given(last)} trains the last {_blocks(count)} from the first epoch and "
                                     f"{given(fe, subject=last)} the whole backbone after epoch {m.freeze_epochs}; "
                                     f"for the last {_blocks(count)} alone after epoch {m.freeze_epochs}, give "
                                     f"{given(ua, [f'{m.freeze_epochs}:{count}'], last)} instead of both"))
    if m.freeze == "backbone" and not (count or m.freeze_epochs or m.unfreeze_at or m.cache_features):
        for key in _backbone_rates(m):
            lines.append(cfg.named(key, f"{given(key)} is for the backbone, but {given('model.freeze', subject=key)} "
                                        f"keeps it frozen all run; it trains with {given(last, None, key)}, "
                                        f"{given(fe, None, key)} or {given(ua, None, key)}"))
    return lines + late_unfreezing(cfg)


def late_unfreezing(cfg: Config) -> list[str]:
    """The unfreezing that ``--epochs`` ends the run before (``--freeze-epochs``, ``--unfreeze-at`` stages at or
    after the last epoch): one line, or none. A new run and a resumed one with a new ``--epochs`` warn of it."""
    m, t, given = cfg.model, cfg.train, cfg.given_as
    fe, ua, lines = "model.freeze_epochs", "model.unfreeze_at", []
    if t.time_budget is None:  # a budget plans the epochs once the run starts
        key = fe if m.freeze_epochs else ua
        late = [epoch for epoch, _ in ([(m.freeze_epochs, None)] if m.freeze_epochs else
                                       parse_unfreeze_at(m.unfreeze_at)) if epoch >= t.epochs]
        if late:
            what = ("so the backbone stays frozen" if key == fe else
                    "so that stage never comes" if len(late) == 1 else "so those stages never come")
            at = f"epoch {late[0]}" if len(late) == 1 else f"epochs {', '.join(map(str, late))}"
            lines.append(cfg.named(key, f"{given(key)} unfreezes after {at}, but "
                                        f"{given('train.epochs', subject=key)} ends the run after epoch {t.epochs}, "
                                        f"{what}; give {given('train.epochs', late[-1] + 1, key)} or more (or train "
                                        f"on later with --resume RUN --epochs {late[-1] + 1})"))
    return lines


def parse_unfreeze_at(stages, given: str = "--unfreeze-at") -> list[tuple[int, int | None]]:
    """``["1:2", "3:all"]`` -> ``[(1, 2), (3, None)]`` (None: every block), checked and in epoch order;
    ``given``: how an error names the option (:meth:`Config.given_as`). A stage ``EPOCH:BLOCKS`` takes effect
    after epoch EPOCH as the ``epoch N/M`` lines count (0: from the start), i.e. from the loop's 0-based epoch
    index EPOCH on.

    Example:
        >>> parse_unfreeze_at(["3:all", "1:2"])
        [(1, 2), (3, None)]
    """
    parsed = []
    for stage in stages or []:
        epoch, sep, blocks = str(stage).partition(":")
        try:
            value = (int(epoch), None if blocks.strip() == "all" else int(blocks))
        except ValueError:
            value = None
        if sep and value is not None and value[0] >= 0 and value[1] is not None and value[1] < 1:
            raise ConfigError(f"{given}: stage {stage!r} unfreezes {value[1]} blocks, which is nothing; give 1 or "
                              f"more blocks, or all (e.g. {value[0]}:1 or {value[0]}:all)")
        if not sep or value is None or value[0] < 0 or (value[1] is not None and value[1] < 1):
            raise ConfigError(f"{given}: {stage!r} is not EPOCH:BLOCKS; write e.g. 2:3 (after epoch 2, the top "
                              "3 blocks train too) or 4:all")
        parsed.append(value)
    return sorted(parsed)


def check_augment_policy(task: str, policy: str) -> None:
    """A policy (TrivialAugment, RandAugment) transforms the image alone: refused where a label is per pixel."""
    if task == "segmentation" and policy != "none":
        raise ConfigError(f"--augment-policy {policy} draws operations per image (rotations, shears, translations) "
                          "that would move an image but not its mask; for segmentation use --hflip, --vflip, "
                          "--rotation, --zoom, --width-shift, --height-shift or --shear, which move both")


def backbone_options(cfg: Config) -> list[str]:
    """The dotted keys of the options set that act on a backbone (freezing, fine-tuning, its learning rates,
    caching its features), in the order an error names them."""
    m = cfg.model
    return ([key for key, on in (("model.freeze", m.freeze == "backbone"),
                                 ("model.finetune_last", bool(m.finetune_last)),
                                 ("model.freeze_epochs", bool(m.freeze_epochs)),
                                 ("model.unfreeze_at", bool(m.unfreeze_at))) if on]
            + _backbone_rates(m) + (["model.cache_features"] if m.cache_features else []))


def no_backbone_error(cfg: Config, keys: list[str]) -> ConfigError:
    """The refusal of backbone options ``keys`` (:func:`backbone_options`) on a network that is all head."""
    given, key = cfg.given_as, keys[0]
    flags = ", ".join(given(k, subject=key) for k in keys)
    return ConfigError(cfg.named(key, (
        f"{flags}: {cfg.model.name} has no backbone to freeze or fine-tune (all its layers are its head, "
        f"which trains whole), so {'it does' if len(keys) == 1 else 'they do'} nothing; drop "
        f"{'it' if len(keys) == 1 else 'them'}, or pick a model with a pretrained backbone "
        "(e.g. --model efficientnet_lite0 --pretrained)")))


def _check_has_backbone(cfg: Config, backbone_of: Callable[[str], bool | None] | None) -> None:
    """Backbone options on one of vislab's networks that is all head (``mlp``) are refused first: the other
    fine-tuning checks' fixes (add --pretrained, --freeze backbone...) would lead to this refusal anyway.
    Other networks, and every network when no ``backbone_of`` is given, are checked once built
    (``Trainer._check_model_options``)."""
    keys = backbone_options(cfg)
    if keys and backbone_of is not None and backbone_of(cfg.model.name) is False:
        raise no_backbone_error(cfg, keys)


def _validate_transfer(cfg: Config) -> None:
    """The fine-tuning and small-data options: each must have an effect."""
    m, t, given = cfg.model, cfg.train, cfg.given_as
    if m.unfreeze_at:
        key = "model.unfreeze_at"
        with cfg.naming_origin(key):
            stages = parse_unfreeze_at(m.unfreeze_at, given(key, None))
        if m.freeze != "backbone":
            raise ConfigError(cfg.named(key, f"{given(key)} unfreezes a frozen backbone in stages: add "
                                             f"{given('model.freeze', 'backbone', key)}"))
        if m.freeze_epochs:
            raise ConfigError(cfg.named(key, f"{given(key)} and {given('model.freeze_epochs', subject=key)} both "
                                             "schedule the unfreezing; keep one"))
        if len({e for e, _ in stages}) != len(stages):
            raise ConfigError(cfg.named(key, f"{given(key)} names an epoch twice"))
        if m.cache_features:
            raise ConfigError(cfg.named(key, f"{given(key)} changes the backbone, so its features cannot be cached: "
                                             f"drop {given('model.cache_features', None, key)}"))
    if m.bn != "train" and m.cache_features:
        raise ConfigError(cfg.named("model.bn", f"{given('model.bn')} only matters when the backbone trains; with "
                                                f"{given('model.cache_features', None, 'model.bn')} it is frozen"))
    if t.warmup_epochs >= t.epochs:  # its range (>= 0) is in RANGES
        key = "train.warmup_epochs"
        raise ConfigError(cfg.named(key, f"{given(key)} must be below {given('train.epochs', subject=key)}"))
    if t.warmup_epochs and t.scheduler in ("step", "plateau"):
        raise ConfigError(cfg.named("train.warmup_epochs", f"{given('train.warmup_epochs')} works with --scheduler "
                                                           "cosine, onecycle or none"))
    check_augment_policy(cfg.task, cfg.augment.policy)
    if (t.mixup or t.cutmix or t.ema or cfg.augment.policy != "none") and m.cache_features:
        raise ConfigError("--mixup/--cutmix/--ema/--augment-policy act on end-to-end training; "
                          "drop --cache-features")


def _set(obj, dotted: str, value, origin: str, origins: dict | None = None, prefix: str = "") -> None:
    """Set dotted key ``dotted`` of dataclass ``obj`` (``prefix``: the key of ``obj`` itself) to ``value``
    coerced to the field's declared type (:func:`_coerce`); a mapping for a section sets its keys.
    ``origins``: the full dotted key of every value set is recorded there with its ``origin``."""
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            section = ".".join(parts[:depth])
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            where = f" in section {section!r}" if section else ""
            raise ConfigError(f"{origin}: unknown key {part!r}{where}.{hint} Valid keys: {', '.join(names)}")
        if depth == len(parts) - 1:
            key = prefix + dotted
            current = getattr(obj, part)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"{origin}: {key} is a section; give a mapping")
                for sub_key, sub in value.items():
                    _set(current, str(sub_key), sub, origin + f" [{dotted}]", origins, key + ".")
            else:
                setattr(obj, part, _coerce(_field_types(type(obj))[part], value, key, origin))
                if origins is not None:
                    origins[key] = origin
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{origin}: {prefix}{'.'.join(parts[:depth + 1])} is not a section")


def set_value(cfg: Config, dotted: str, value, origin: str) -> None:
    """Set one dotted key (``train.lr``) on ``cfg`` as a YAML file or flag would: unknown keys and wrong
    types are errors naming ``origin``."""
    _set(cfg, dotted, value, origin)
    getattr(cfg, "_origins", {}).pop(dotted, None)  # no longer the YAML file's value
    getattr(cfg, "_options", set()).discard(dotted)  # nor the options' (Config.given_as)


# --------------------------------------------------------------------------- declared types
# Every value a field gets (defaults aside) -- a recipe's, a YAML file's, a flag's, an API keyword option's
# -- is coerced to the field's declared type by _coerce, or refused in one line naming where it came from.
@dataclass(frozen=True)
class FieldType:
    """What a config field's annotation declares: ``kind`` is bool, int, float, str, dict or list (``item``:
    its elements' kind); ``optional``: None is a value (``int | None``)."""

    kind: type
    optional: bool = False
    item: type | None = None


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, FieldType]:
    """Each field of dataclass ``cls`` -> its :class:`FieldType`, from the annotations.

    Example:
        >>> _field_types(TrainConfig)["epochs"], _field_types(DataConfig)["labels"]
        (FieldType(kind=<class 'int'>, optional=False, item=None), FieldType(kind=<class 'list'>, optional=True, item=<class 'str'>))
    """
    types_ = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        optional = type(None) in args
        (declared,) = [arg for arg in args if arg is not type(None)]
        kind = typing.get_origin(declared) or declared
        item = (typing.get_args(declared) or (None,))[0] if kind is list else None
        types_[name] = FieldType(kind, optional, item)
    return types_


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "y": True, "1": True,
               "false": False, "no": False, "off": False, "n": False, "0": False}
_WANTED = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
           list: "a list", dict: "a mapping of KEY: VALUE"}
# the example an error gives for a field whose default is none, or says nothing
_EXAMPLES = {"model.options": "{dropout: 0.25}", "model.input_size": "[224, 224]", "data.labels": "[cat, dog]",
             "model.unfreeze_at": "['1:2', '3:all']", "train.time_budget": "5m", "model.lr_backbone": "1e-4",
             "train.threshold": "0.5", "data.max_per_class": "100", "train.early_stopping.patience": "3",
             "train.speed": "{} (the run writes it: leave it out)",
             "recipe_choices": "{} (the run writes it: leave it out)"}
# fields that take text besides their declared type, checked by validate (train.time_budget: 90s, 5m, 1h)
_ALSO_TEXT = {"train.time_budget"}


def _example(key: str) -> str:
    """``, e.g. VALUE`` for field ``key``: its default (or :data:`_EXAMPLES`'), nothing for a default of None."""
    if key in _EXAMPLES:
        return f", e.g. {_EXAMPLES[key]}"
    value = Config()
    for part in key.split("."):
        value = getattr(value, part, None)
    if value is None or value == {} or value == []:
        return ""
    return f", e.g. {str(value).lower() if isinstance(value, bool) else value}"


def _coerce(declared: FieldType, value, key: str, origin: str):
    """``value`` as the declared type of field ``key`` (``train.epochs``), else a ConfigError naming ``origin``:
    a bool is never a number (``epochs: true``) and a number never a bool (``hflip: 3``); a bool takes true/false
    and YAML's spellings (yes/no, on/off); an int field a whole number (``2.0``, ``"10"``; a fraction is left to
    the range check, which says the range); a float field any number (``1``, ``"1e-3"``); a text field a number
    as text (``labels: [0, 1]``); a list field one item as a list of one (``input_size: 64`` a square); a mapping
    (``model.options``) only KEY: VALUE pairs; None only an optional field (an empty mapping for a mapping).

    Example:
        >>> _coerce(FieldType(int), 2.0, "train.epochs", "c.yaml"), _coerce(FieldType(float), "1e-3", "train.lr", "c.yaml")
        (2, 0.001)
        >>> _coerce(FieldType(int), True, "train.epochs", "c.yaml [train]")
        Traceback (most recent call last):
        ...
        vislab.core.errors.ConfigError: c.yaml [train]: train.epochs=True is not a whole number, e.g. 10
    """
    kind = declared.kind
    if value is None:
        if declared.optional:
            return None
        if kind is dict:
            return {}
        raise ConfigError(f"{origin}: {key} has no value; give {_WANTED.get(kind, 'a value')}{_example(key)}")
    if kind is list:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (dict, set)) or not items:
            _refuse(declared, value, key, origin)
        if key == "model.input_size":
            if len(items) not in (1, 2):
                raise ConfigError(f"{origin}: {key} takes one number or [H, W], not {len(items)} numbers: {value!r}")
            items = (items * 2)[:2]
        return [_coerce(FieldType(declared.item or str), item, key, origin) for item in items]
    converted = _convert(kind, value, key)
    if converted is _REFUSED:
        _refuse(declared, value, key, origin)
    return converted


_REFUSED = object()


def _convert(kind: type, value, key: str):
    """``value`` as ``kind``, or _REFUSED."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        return _REFUSED
    if kind in (int, float):
        if isinstance(value, bool):
            return _REFUSED
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return value if key in _ALSO_TEXT else _REFUSED
        if not isinstance(value, numbers.Real):
            return _REFUSED
        if kind is float:
            return float(value)
        if isinstance(value, numbers.Integral):
            return int(value)
        number = float(value)
        if number.is_integer():
            return int(number)
        # a fraction for a whole number: the range check words it ("must be >= 1 (a whole number), not 1.5")
        return number if key.split(".")[-1] in RANGES else _REFUSED
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return str(value)
        return _REFUSED
    if kind is dict:
        if isinstance(value, dict) and all(isinstance(name, str) for name in value):
            return value
        return _REFUSED
    return value


def _refuse(declared: FieldType, value, key: str, origin: str):
    kind = declared.kind
    wanted = ("a list" if kind is list and declared.item is None else
              f"a list of {_WANTED[declared.item].replace('a ', '', 1)}s" if kind is list and declared.item in (int, float)
              else _WANTED.get(kind, kind.__name__))
    if kind is dict:
        raise ConfigError(f"{origin}: {key} must be {wanted}{_example(key)}, not {value!r}")
    hint = ""
    if kind is str and isinstance(value, bool):
        hint = " (YAML reads yes/no/on/off unquoted as true/false: quote the word)"
    raise ConfigError(f"{origin}: {key}={value!r} is not {wanted}{_example(key)}{hint}")


def load_yaml(path: str | Path) -> dict:
    from vislab.core.files import read_yaml

    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise ConfigError(f"--config {path}: no such file")
    data = read_yaml(path, "a YAML config", "give a YAML file of sections (data, model, train, ...), e.g. a run's "
                     "config.yaml", allow_empty=True)
    if data is None:
        warnings.warn(f"--config {path} holds no settings (empty, or comments only): every value is a flag's or "
                      "a default", UserWarning, stacklevel=2)
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data, model, train, ...)")
    return data


def resolve_config(yaml_path: str | Path | None = None, overrides: dict | None = None,
                   default_recipe: str | None = None,
                   backbone_of: Callable[[str], bool | None] | None = None) -> Config:
    """Defaults <- recipe <- YAML <- overrides (dotted keys such as ``train.lr``).

    ``default_recipe``: the recipe when neither the overrides nor the YAML name one (``vislab train``
    passes ``auto``; None keeps the code defaults). With ``auto``, the keys the user gave (YAML and
    overrides) are recorded in ``recipe_choices["user"]``: the data-aware choices made when the run
    starts (vislab.train.recipe) leave exactly those alone. ``backbone_of``: see :func:`validate`.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_values = load_yaml(yaml_path) if yaml_path else {}
    recipe = overrides.get("recipe", file_values.get("recipe"))
    if recipe is None and default_recipe is not None:
        recipe = default_recipe
        overrides = {**overrides, "recipe": recipe}
    cfg = Config()
    if recipe is not None:
        cfg._origins = {} if "recipe" in overrides or not yaml_path else {"recipe": str(yaml_path)}
        _check_choice("recipe", recipe, RECIPE_NAMES, cfg)
        for key, value in RECIPES.get(recipe, {}).items():
            _set(cfg, key, value, f"recipe {recipe}")
    origins: dict[str, str] = {}  # the YAML file's keys -> "c.yaml [train]": its errors name the file
    for key, value in file_values.items():
        _set(cfg, str(key), value, str(yaml_path), origins)
    for key, value in overrides.items():
        _set(cfg, key, value, "the options given")
    cfg._options = set(overrides)  # the keys the flags or keyword options gave (Config.given_as)
    cfg._origins = {key: origin for key, origin in origins.items()
                    if not any(key == given or key.startswith(given + ".") for given in overrides)}
    given = set(overrides) | set(user_keys(file_values))  # the dotted keys the user set
    if cfg.train.optimizer == "lbfgs" and "train.epochs" not in given | set(RECIPES.get(recipe, {})):
        # the L-BFGS head is fitted to convergence in one epoch: 10 would refit the same optimum
        cfg.train.epochs = 1
    if RECIPES.get(recipe, {}).get("train.optimizer") == "lbfgs" and cfg.train.optimizer != "lbfgs" \
            and "train.epochs" not in given:
        # the recipe's epochs are its L-BFGS head's (2 full-batch fits); a head the user's gradient optimiser
        # trains on the same features takes the default epochs (2 Adam epochs on digits: 66 % against 96 %)
        cfg.train.epochs = Config().train.epochs
    if recipe == "auto" or cfg.train.time_budget is not None:
        cfg.recipe_choices = {**(cfg.recipe_choices or {}), "user": sorted(given - {"recipe", "recipe_choices"})}
    if recipe == "transfer" and cfg.train.time_budget is not None and "data.val_split" not in given:
        # the budget may fine-tune from the head (vislab.train.lpft): a validation split chooses between them
        cfg.data.val_split = 0.1
    if cfg.train.time_budget is not None and "train.epochs" in given:
        typed_epochs, typed_budget = cfg.typed("train.epochs"), cfg.typed("train.time_budget")
        if typed_epochs and typed_budget:
            raise ConfigError("--time-budget sets the epochs from the measured epoch time; give --epochs or "
                              "--time-budget, not both")
        if typed_budget:  # the flag's budget plans the epochs; the file's count gives way
            cfg.train.epochs = Config().train.epochs
        else:  # --epochs, or a run's config.yaml holding the epochs its budget reached: those epochs are trained
            if not typed_epochs:
                warnings.warn(f"{cfg.origin('train.epochs') or 'the config'} sets both train.epochs "
                              f"({cfg.train.epochs}) and train.time_budget: its {cfg.train.epochs} epochs are trained "
                              "(as a run's config.yaml replays the run); --time-budget plans them afresh instead",
                              UserWarning, stacklevel=2)
            cfg.train.time_budget = None
    return check_new_run(validate(cfg, backbone_of), warn=recipe != "auto",  # auto: once it has set the epochs
                         backbone_of=backbone_of)


def user_keys(values: dict, prefix: str = "", obj=None) -> list[str]:
    """The dotted keys a YAML mapping sets (``{"train": {"lr": 1}}`` -> ``["train.lr"]``); a mapping that
    is a value (``model.options``) stays one key.

    Example:
        >>> user_keys({"train": {"lr": 0.1, "early_stopping": {"patience": 2}}, "model": {"options": {"a": 1}}})
        ['train.lr', 'train.early_stopping.patience', 'model.options']
    """
    obj = Config() if obj is None else obj
    keys = []
    for key, value in values.items():
        parts = str(key).split(".")
        target = obj
        for part in parts[:-1]:
            target = getattr(target, part, None)
        current = getattr(target, parts[-1], None) if target is not None else None
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            keys += user_keys(value, f"{prefix}{key}.", current)
        else:
            keys.append(f"{prefix}{key}")
    return keys


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from a resolved config.yaml (no recipe is re-applied)."""
    cfg = Config()
    for key, value in data.items():
        _set(cfg, key, value, "config.yaml")
    return validate(cfg)


# --------------------------------------------------------------------------- flat options
# The one mapping from a flat option name (a CLI flag's name: ``--batch-size`` is ``batch_size``) to
# its dotted config key. Most names are a field's own name; these are the ones that are not, or that
# two sections share (``loss``, ``class_weights``: training's, as the flags mean).
OPTION_ALIASES = {"data": "data.source", "model": "model.name", "model_options": "model.options",
                  "augment_policy": "augment.policy", "patience": "train.early_stopping.patience",
                  "monitor": "train.early_stopping.monitor", "min_delta": "train.early_stopping.min_delta",
                  "restore_best": "train.early_stopping.restore_best"}

# Keras' metric names (what `EarlyStopping(monitor=...)` and `history.history` call them) -> vislab's
# history.csv columns: `--monitor val_accuracy` means val_acc, as `--rotation-range` means --rotation.
# Keras' bare names are the training-set ones ("accuracy", "loss").
MONITOR_ALIASES = {
    "loss": "train_loss", "accuracy": "train_acc", "acc": "train_acc", "val_accuracy": "val_acc",
    "train_accuracy": "train_acc", "categorical_accuracy": "train_acc", "val_categorical_accuracy": "val_acc",
    "sparse_categorical_accuracy": "train_acc", "val_sparse_categorical_accuracy": "val_acc",
    "mean_io_u": "train_miou", "val_mean_io_u": "val_miou", "iou": "train_miou", "val_iou": "val_miou",
    "miou": "train_miou", "map": "train_map",
}


def option_keys() -> dict[str, str]:
    """Every flat option name -> its dotted config key (the first section that has a field wins)."""
    keys: dict[str, str] = {}

    def walk(obj, prefix):
        for item in dataclasses.fields(obj):
            value = getattr(obj, item.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{item.name}.")
            else:
                keys.setdefault(item.name, f"{prefix}{item.name}")

    walk(Config(), "")
    keys.update(OPTION_ALIASES)
    return keys


# options whose flag is not their keyword's name with dashes, and keyword options no flag sets (a YAML
# file's or the API's alone): a message names those by their dotted key
FLAG_NAMES = {"model_options": "--model-opt", "restore_best": "--no-restore-best"}
NO_FLAG = {"channels_last", "eval_batch_size", "nesterov", "recipe_choices", "speed", "test_file_col",
           "test_label_col"}


@functools.lru_cache(maxsize=None)
def _flags() -> dict[str, str]:
    return {key: FLAG_NAMES.get(name) or f"--{name.replace('_', '-')}"  # an alias wins
            for name, key in option_keys().items() if name not in NO_FLAG}


def option_flag(key: str) -> str | None:
    """The flag that sets dotted ``key`` (``model.freeze_epochs`` -> ``--freeze-epochs``), or None.

    Example:
        >>> option_flag("model.freeze_epochs"), option_flag("train.early_stopping.patience")
        ('--freeze-epochs', '--patience')
    """
    return _flags().get(key)


def option_overrides(options: dict) -> dict:
    """Flat options named like the CLI flags -> dotted config keys, for :func:`resolve_config`.

    An unknown name is an error naming the closest one; ``input_size`` takes one number or H W.

    Example:
        >>> option_overrides({"epochs": 3, "data": "digits", "input_size": 64})
        {'train.epochs': 3, 'data.source': 'digits', 'model.input_size': [64, 64]}
    """
    keys = option_keys()
    overrides = {}
    for name, value in options.items():
        if name not in keys:
            close = difflib.get_close_matches(name, list(keys), n=1)
            raise ConfigError(f"unknown option {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                              + " (options are the flags' names: --batch-size is batch_size)")
        if name == "input_size" and value is not None:
            value = input_size_pair(value)
        overrides[keys[name]] = value
    return overrides


def input_size_pair(value) -> list[int]:
    """``--input-size``: one number (a square) or H W, as [H, W]; any other count is refused."""
    sizes = [value] if isinstance(value, (int, float, str)) else list(value)
    if len(sizes) not in (1, 2):
        raise ConfigError(f"--input-size takes one number or H W, got {len(sizes)} numbers")
    pair = []
    for size in (sizes * 2)[:2]:
        whole = _convert(int, size, "model.input_size")  # as the field's declared type (a fraction: the range's)
        if whole is _REFUSED:
            raise ConfigError(f"input_size={size!r} is not a whole number (--input-size)")
        pair.append(whole)
    return pair


# --------------------------------------------------------------------------- numeric ranges
# The one table of every numeric option's range, by its flat name (the CLI flag's: ``--batch-size`` is
# ``batch_size``). The CLI's argparse types (vislab.cli), config validation (YAML files and the API's
# keyword options) and the help texts all read it; tests/test_cli.py tries each flag out of range.
@dataclass(frozen=True)
class Range:
    """Where a number may lie: ``low``/``high`` (None: unbounded), each inclusive unless ``*_open``.

    Example:
        >>> Range(1, 65535, integer=True).problem(99999)
        '99999 must be in 1..65535 (a whole number)'
        >>> Range(0, 1, low_open=True, high_open=True, noun="a probability").describe()
        'a probability in (0, 1)'
    """

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    noun: str = ""  # what the number is, e.g. "a fraction": "a fraction in [0, 1)"
    count: bool = False  # from 1 up also a whole count (val/test splits: a fraction, else images)
    hint: str = ""  # added to the error: what the number means, an example

    def describe(self) -> str:
        if self.count:
            return "a fraction in (0, 1) or a whole count (0: none)"
        low, high = (_number(v) for v in (self.low, self.high))
        if self.low is not None and self.high is not None:
            bounds = (f"in {low}..{high}" if self.integer and not (self.low_open or self.high_open) else
                      f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}")
        elif self.low is not None:
            bounds = f"{'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            bounds = f"{'<' if self.high_open else '<='} {high}"
        else:
            bounds = "any number"
        if self.noun:
            return f"{self.noun} {bounds}"
        return f"{bounds} (a whole number)" if self.integer else bounds

    def problem(self, value, subject: str | None = None) -> str | None:
        """None when ``value`` is in range, else ``"SUBJECT must be RANGE, not VALUE"`` with the hint
        (``subject`` defaults to the value itself: ``"-5 must be >= 1 (a whole number)"``)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{subject or repr(value)} must be {self.describe()}" + (f", not {value!r}" if subject else "")
        shown = _number(number)
        if self.count:
            if number >= 0 and (number < 1 or number.is_integer()):
                return None
            return (f"{subject + '=' if subject else ''}{shown} is neither a fraction in (0, 1) nor a whole count "
                    "of images: give e.g. 0.1 (10 % of the training images) or 500 (500 images), or 0 for none")
        inside = number == number  # NaN is never in range
        if self.integer and not number.is_integer():
            inside = False
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            inside = False
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            inside = False
        if inside:
            return None
        return (f"{subject or shown} must be {self.describe()}" + (f", not {shown}" if subject else "")
                + (f"; {self.hint}" if self.hint else ""))


def _number(value) -> str:
    if value is None:
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


_WHOLE_1 = Range(1, integer=True)
_WHOLE_0 = Range(0, integer=True)
_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
_FRACTION = Range(0, 1, high_open=True, noun="a fraction")
_PROBABILITY = Range(0, 1, low_open=True, high_open=True, noun="a probability", hint="e.g. 0.5")
_DEGREES = Range(0, 180, noun="degrees")

RANGES: dict[str, Range] = {
    # data
    "val_split": Range(count=True), "test_split": Range(count=True),
    "max_per_class": _WHOLE_1, "workers": _WHOLE_0,
    # augmentation (Keras ImageDataGenerator meanings)
    "rotation": _DEGREES, "shear": _DEGREES, "zoom": _FRACTION,
    "width_shift": Range(0, hint="a fraction of the size below 1, pixels from 1 up"),
    "height_shift": Range(0, hint="a fraction of the size below 1, pixels from 1 up"),
    "fill_value": Range(0, 255, hint="a uint8 grey level (nothing lies outside 0..255): e.g. 0 for black, "
                                     "255 for white"),
    # model
    "input_size": _WHOLE_1, "finetune_last": _WHOLE_0, "freeze_epochs": _WHOLE_0, "lr_backbone": _POSITIVE,
    "lr_decay": Range(0, 1, low_open=True, hint="each lower block gets the LR times this factor"),
    "num_classes": _WHOLE_1, "in_chans": _WHOLE_1, "ignore_index": Range(0, 255, integer=True),
    # training
    "epochs": _WHOLE_1, "batch_size": _WHOLE_1, "eval_batch_size": _WHOLE_1, "lr": _POSITIVE,
    "momentum": _FRACTION, "label_smoothing": _FRACTION, "weight_decay": _NON_NEGATIVE,
    "warmup_epochs": _NON_NEGATIVE,
    "mixup": Range(0, hint="a Beta-distribution alpha, 0 for off, typically 0.2-1.0"),
    "cutmix": Range(0, hint="a Beta-distribution alpha, 0 for off, typically 0.2-1.0"),
    "ema": Range(0, 1, high_open=True, hint="the EMA decay, 0 for off, e.g. 0.998"),
    "focal_gamma": Range(0, hint="0 is plain cross-entropy"), "threshold": _PROBABILITY,
    "patience": Range(0, integer=True, hint="0 stops at the first epoch without improvement, as in Keras"),
    "min_delta": _NON_NEGATIVE, "seed": Range(0, 2**32 - 1, integer=True),
    # lr-find
    "start_lr": _POSITIVE, "end_lr": _POSITIVE, "steps": _WHOLE_1,
    # evaluate, predict, explain, audit, augment-preview, summary, filters, export
    "top_k": _WHOLE_1, "num_samples": _WHOLE_1, "n": _WHOLE_1, "count": _WHOLE_1, "versions": _WHOLE_1,
    "max_images": _WHOLE_1, "folds": Range(2, integer=True), "depth": _WHOLE_1, "samples": _WHOLE_1,
    "opset": Range(7, integer=True), "tolerance": _NON_NEGATIVE,
    # serve, segment
    "port": Range(1, 65535, integer=True), "max_wait_ms": _NON_NEGATIVE, "max_body_mb": _POSITIVE,
    "max_pixels": _WHOLE_1, "max_queue": _WHOLE_1, "timeout": _POSITIVE,
    "alpha": Range(0, 1, hint="the overlay's weight of the image"),
    "beta": Range(0, 1, hint="the overlay's weight of the colour mask"),
}


def range_problem(name: str, value, subject: str | None = None) -> str | None:
    """What is wrong with ``value`` (a number or a list of them) for option ``name``, or None when it is in
    range (or the option has no range)."""
    spec = RANGES.get(name)
    if spec is None or value is None or isinstance(value, bool):
        return None
    for item in value if isinstance(value, (list, tuple)) else [value]:
        problem = spec.problem(item, subject)
        if problem:
            return problem
    return None


def check_ranges(**values) -> None:
    """The API's check of its numeric keyword options, as the CLI's parser checks the flags.

    Example:
        >>> check_ranges(port=8080, top_k=5)
        >>> check_ranges(port=99999)
        Traceback (most recent call last):
        ...
        vislab.core.errors.ConfigError: port must be in 1..65535 (a whole number), not 99999 (--port)
    """
    for name, value in values.items():
        problem = range_problem(name, value, subject=name)
        if problem:
            raise ConfigError(f"{problem} (--{name.replace('_', '-')})")


def _check_config_ranges(cfg: Config) -> None:
    """Every ranged option that is a config field, under its dotted key (a YAML file's values too)."""
    for name, key in option_keys().items():
        if name not in RANGES:
            continue
        problem = range_problem(name, dotted_value(cfg, key), subject=key)
        if problem:
            raise ConfigError(cfg.named(key, f"{problem} (--{name.replace('_', '-')})"))
