"""Configuration: defaults in dataclasses, then a recipe, then a YAML file, then CLI flags.

Unknown keys are an error naming the valid ones. The resolved config is written
to the run folder as ``config.yaml`` and is enough to repeat the run.

Example:
    >>> cfg = resolve_config(overrides={"train.epochs": 3, "model.name": "mlp"})
    >>> cfg.train.epochs, cfg.model.name
    (3, 'mlp')
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vislab.core.errors import ConfigError  # noqa: F401  (re-exported: vislab.core.config.ConfigError)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "lbfgs")
SCHEDULERS = ("none", "cosine", "onecycle", "step", "plateau")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FILL_MODES = ("nearest", "constant", "reflect", "wrap")
FREEZE_MODES = ("none", "backbone")
HEADS = ("linear", "mlp")
# tasks vislab ships (vislab.tasks registers them; a task registered by the user's code works as well)
BUILTIN_TASKS = ("classification", "segmentation")
# segmentation: the loss (cross-entropy with the ignore index, Dice, or their sum) and the named palettes
SEGMENTATION_LOSSES = ("ce", "dice", "ce+dice")
PALETTES = ("camvid", "cityscapes", "voc", "ade20k")
EXPLAIN_METHODS = ("gradcam", "gradcam++", "lime", "occlusion", "integrated-gradients")
LIME_SEGMENTATIONS = ("quickshift", "slic")
OUTPUT_FORMATS = ("table", "json", "csv")
SPLITS = ("train", "val", "test")




@dataclass
class DataConfig:
    source: str = "fashion-mnist"  # built-in name, class-per-folder directory, or CSV file
    data_dir: str | None = None  # where built-in sets are looked for / downloaded to
    image_root: str | None = None  # CSV: folder the file column is relative to (default: the CSV's folder)
    file_col: str | None = None  # CSV: column with the file name (auto: file/filename/path/id...)
    label_col: str | None = None  # CSV: column with the label (auto: label/class/ClassId/breed...)
    labels: list[str] | None = None  # CSV: keep only these labels
    test_csv: str | None = None  # CSV of test files labelled by class name or numeric ID
    test_file_col: str | None = None
    test_label_col: str | None = None
    val_split: float = 0.1  # fraction (<1) or count (>=1) of train held out when no val/ folder
    test_split: float = 0.2  # same, for test, when the source has no test split
    max_per_class: int | None = None  # keep at most N training images per class (few-shot runs)
    workers: int = 2  # DataLoader worker processes (file datasets) / file-check threads


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
    precision: str = "auto"  # auto: bf16 autocast where the device gains from it
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    tta_flip: bool = False  # evaluate on the image and its mirror
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    eval_batch_size: int = 512


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
    task: str = "classification"  # what is learned: vislab.tasks names them (`--task`)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    seed: int = 0
    recipe: str | None = None
    out: str | None = None  # run folder; default runs/<model>-<data>-<time>

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")


def validate(cfg: Config) -> Config:
    """Check values that the type alone does not constrain."""
    _check_choice("train.optimizer", cfg.train.optimizer, OPTIMIZERS)
    _check_choice("train.scheduler", cfg.train.scheduler, SCHEDULERS)
    _check_choice("train.device", cfg.train.device, DEVICES)
    _check_choice("train.precision", cfg.train.precision, PRECISIONS)
    _check_choice("augment.fill_mode", cfg.augment.fill_mode, FILL_MODES)
    _check_choice("model.freeze", cfg.model.freeze, FREEZE_MODES)
    _check_choice("model.head", cfg.model.head, HEADS)
    _check_choice("segmentation.loss", cfg.segmentation.loss, SEGMENTATION_LOSSES)
    if cfg.segmentation.class_weights not in (None, "auto"):
        raise ConfigError(f"segmentation.class_weights={cfg.segmentation.class_weights!r} is not valid; use auto "
                          "(median-frequency weights from the training masks) or leave it unset")
    if cfg.recipe is not None:
        _check_choice("recipe", cfg.recipe, tuple(RECIPES))
    es = cfg.train.early_stopping
    if es.patience is not None and es.patience < 0:
        raise ConfigError("train.early_stopping.patience must be >= 0 (0 stops at the first epoch without "
                          "improvement, as in Keras), or null to turn early stopping off")
    aug = cfg.augment
    # Options that would silently do nothing are errors, as the issue asks.
    if aug.fill_mode != "nearest" and not aug.geometric:
        raise ConfigError(
            f"augment.fill_mode={aug.fill_mode!r} only applies to rotation/zoom/shift/shear, and none is set"
        )
    if aug.fill_value and aug.fill_mode != "constant":
        raise ConfigError("augment.fill_value is only used with fill_mode=constant; set --fill-mode constant")
    for key in ("rotation", "shear"):
        if not 0 <= getattr(aug, key) <= 180:
            raise ConfigError(f"augment.{key} is in degrees and must be within 0..180")
    if not 0 <= aug.zoom < 1:
        raise ConfigError("augment.zoom must be a fraction in [0, 1)")
    for key in ("width_shift", "height_shift"):
        if getattr(aug, key) < 0:
            raise ConfigError(f"augment.{key} must be >= 0: a fraction of the size below 1, pixels from 1 up")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be at least 1")
    if cfg.train.lr <= 0:
        raise ConfigError("train.lr must be positive")
    if not 0 <= cfg.train.label_smoothing < 1:
        raise ConfigError("train.label_smoothing must be in [0, 1)")
    if cfg.train.weight_decay < 0:
        raise ConfigError("train.weight_decay must be >= 0")
    if cfg.model.cache_features and cfg.model.freeze != "backbone":
        raise ConfigError("model.cache_features needs model.freeze=backbone (the features must not change)")
    if cfg.model.cache_features and cfg.train.precision == "fp16":
        raise ConfigError("model.cache_features extracts features in fp32 or bf16: use --precision auto, bf16 "
                          "or fp32 with --cache-features")
    if cfg.model.freeze_epochs and cfg.model.freeze != "backbone":
        raise ConfigError("model.freeze_epochs needs model.freeze=backbone")
    if cfg.train.optimizer == "lbfgs":
        # full-batch L-BFGS needs the whole training set as one tensor: the cached features
        if not cfg.model.cache_features:
            raise ConfigError("train.optimizer=lbfgs fits a head on cached features: "
                              "add --freeze backbone --cache-features")
        if cfg.model.freeze_epochs:
            raise ConfigError("train.optimizer=lbfgs cannot unfreeze the backbone; drop --freeze-epochs")
        if cfg.train.scheduler != "none":
            raise ConfigError("train.optimizer=lbfgs takes no learning-rate schedule (its line search sets the "
                              "steps); use --scheduler none")
    return cfg


def _set(obj, dotted: str, value, origin: str) -> None:
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            prefix = ".".join(parts[:depth])
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            where = f" in section {prefix!r}" if prefix else ""
            raise ConfigError(f"{origin}: unknown key {part!r}{where}.{hint} Valid keys: {', '.join(names)}")
        if depth == len(parts) - 1:
            current = getattr(obj, part)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"{origin}: {dotted} is a section; give a mapping")
                for key, sub in value.items():
                    _set(current, key, sub, origin + f" [{dotted}]")
            else:
                setattr(obj, part, _coerce(current, value, dotted, origin))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{origin}: {'.'.join(parts[:depth + 1])} is not a section")


def _coerce(current, value, key: str, origin: str):
    if value is None or current is None:
        return value
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                lowered = value.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            return bool(value)
        if isinstance(current, int) and not isinstance(value, bool):
            as_float = float(value)
            return int(as_float) if as_float.is_integer() else as_float
        if isinstance(current, float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key}={value!r} is not a {type(current).__name__}") from None
    return value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data, model, train, ...)")
    return data


def resolve_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults <- recipe <- YAML <- overrides (dotted keys such as ``train.lr``)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_values = load_yaml(yaml_path) if yaml_path else {}
    recipe = overrides.get("recipe", file_values.get("recipe"))
    cfg = Config()
    if recipe is not None:
        _check_choice("recipe", recipe, tuple(RECIPES))
        for key, value in RECIPES[recipe].items():
            _set(cfg, key, value, f"recipe {recipe}")
    for key, value in file_values.items():
        _set(cfg, key, value, str(yaml_path))
    for key, value in overrides.items():
        _set(cfg, key, value, "command line")
    return validate(cfg)


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from a resolved config.yaml (no recipe is re-applied)."""
    cfg = Config()
    for key, value in data.items():
        _set(cfg, key, value, "config.yaml")
    return validate(cfg)
