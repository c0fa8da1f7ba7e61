"""``--recipe auto``: read the data, then pick what the user did not give.

``vislab train --data DIR`` (plus ``--task`` where the data needs it) names no model and no
recipe, so ``auto`` applies (:func:`vislab.core.config.resolve_config` with ``default_recipe``).
Once the data is loaded, :func:`describe_data` reads its shape from the loaded splits (task,
training images, classes, images per class, image size and channels, the largest/smallest
class ratio; a folder's size from a few of its images, never a pass over the data) and
:func:`choose` picks the model, input size, optimizer, learning rate, schedule, epochs,
augmentation, loss and class weights. Every rule names the measurement behind it (the
benchmark script and, where docs/benchmarks.md has it, its number). A key the user gave (a flag, a
YAML key: ``recipe_choices["user"]``) keeps the user's value: :func:`apply` sets only the
others. When the user names the model, the rules for that model's family still pick the
rest (``--model chollet_convnet`` gets a one-cycle AdamW schedule and epochs for the data); the
line then says ``your NAME`` and, where a setting was measured on another network (the fast
recipe's on fastnet), says so and cites no benchmark for it (:data:`NOT_MEASURED` in its reason).
What was read, set and why is written into config.yaml as ``recipe_choices``; one line says it.

Example:
    >>> shape = DataShape(task="classification", images=400, classes=10, size=(28, 28), channels=1)
    >>> rule, values, _ = choose(shape, user=set())
    >>> rule, values["model.name"], values["train.optimizer"]
    ('small data: frozen pretrained features', 'efficientnet_lite0', 'lbfgs')
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, replace

from vislab.core.config import RECIPES, Config, dotted_value, option_flag, set_value
from vislab.data.images import BadImageError

# at most this many training images per class (classification): frozen pretrained features + a
# logistic-regression head beat every from-scratch net measured (benchmarks/bench_transfer.py: 40 per
# class, 85.4 % vs chollet_convnet/model3 from scratch; on another 400: 82.7 % vs the default net's 70.5 %)
SMALL_DATA_PER_CLASS = 100
# the fast small net's measured home: grey images this small (28 px Fashion-MNIST, 8 px digits)
SMALL_IMAGE_SIDE = 32
# options that act on end-to-end training only: a user who gives one gets a net that trains end to end,
# not the cached-feature head (vislab.core.config.validate refuses them together)
END_TO_END_KEYS = ("train.class_weights", "train.sampler", "train.loss", "train.mixup", "train.cutmix", "train.ema",
                   "train.scheduler", "train.lr", "augment.", "model.unfreeze_at", "model.freeze_epochs", "model.bn")
# what makes one choice: a user who gives any key of a piece owns the whole piece, and the recipe
# leaves it alone (``--lr 0.05`` keeps the default optimizer and no schedule rather than a one-cycle
# peak of 0.05); a key in no piece is its own. Weights and freezing come first (a rule reads it).
PIECES = (
    ("model.pretrained", "model.weights", "model.freeze", "model.cache_features", "model.finetune_last",
     "model.head", "model.lr_backbone", "model.lr_decay", "model.unfreeze_at", "model.freeze_epochs", "model.bn",
     "model.allow_random_backbone"),
    ("train.optimizer", "train.lr", "train.scheduler", "train.weight_decay", "train.momentum", "train.nesterov",
     "train.warmup_epochs"),
    ("augment.", "train.tta_flip", "train.label_smoothing", "train.mixup", "train.cutmix"),
    ("train.loss", "train.class_weights", "train.sampler", "train.focal_gamma"),
)
# a largest/smallest class ratio at or above this gets class weights (bench_imbalance.py's long tail, 200:1)
IMBALANCE_RATIO = 10.0
# in a reason: the benchmark named there measured another network than the user's, so the recipe line cites
# no benchmark for it and says so
NOT_MEASURED = "not measured on"

BENCH_TRANSFER = ("benchmarks/bench_transfer.py: frozen Lite0 + logistic regression 85.4 % at 40 images per class, "
                  "from-scratch CNNs below it (82.7 % vs 70.5 % on the same 400 Fashion-MNIST images); "
                  "fine-tuning all layers lost 9-12 points there, LP-FT 1 point (bench_lpft.py)")
BENCH_FAST = ("benchmarks/bench_time_to_accuracy.py: the fast recipe's fastnet, one-cycle AdamW peak 1e-2, "
              ">= 92 % on Fashion-MNIST in 3 epochs")
BENCH_DIGITS = ("the code defaults (fastnet, Adam 1e-3, 10 epochs): 99.2 % on digits in 8 s "
                "(benchmarks/bench_auto_recipe.py --rows digits re-measures it)")
BENCH_SEG = ("benchmarks/bench_segmentation.py + bench_seg_levers.py: U-Net on the shipped Lite0 encoder, decoder "
             "128/64/32/16/8, class weights auto + ce+dice, Adam one-cycle 3e-3, batch 32, flips: test mIoU 0.51 "
             "after 12 epochs and still rising; cross-entropy alone collapsed to all-background (0.079)")
BENCH_MULTILABEL = ("benchmarks/bench_multilabel.py: the default net at 28 px reached mAP 0.78-0.81 on 56 px mosaics, "
                    "0.85 after 30 epochs with training mAP 1.00; the images' own size keeps the detail "
                    "(bench_auto_recipe.py's mosaics row checks this choice)")
BENCH_MOSAICS = ("benchmarks/bench_auto_recipe.py --rows mosaics: 2x2 Fashion-MNIST mosaics, 2,714 training images "
                 "at 56 px, fastnet at that size: test mAP 0.884 after 20 epochs without flips, 0.907 after 40 with "
                 "horizontal flips (a flipped mosaic carries the same items)")
BENCH_IMBALANCE = ("benchmarks/bench_imbalance.py: long-tail Fashion-MNIST, balanced accuracy 65.5 % -> 76.6 % with "
                   "--class-weights auto (rare-class recall 0.53 -> 0.81)")


@dataclass
class DataShape:
    """What the recipe reads in the loaded data (all from the splits: no extra pass over the files)."""

    task: str
    images: int  # training images
    classes: int
    size: tuple[int, int] | None = None  # (H, W): the in-memory size, else the median of a few files
    channels: int = 3
    imbalance: float = 1.0  # largest / smallest training class (images; pixels for segmentation)
    builtin: str | None = None  # a built-in source's name (digits, mnist, fashion-mnist, cifar10)
    size_words: str | None = None  # files of several sizes: "sizes 48x96 to 120x90" or "mostly 64x64" (those read)

    @property
    def per_class(self) -> float:
        return self.images / max(self.classes, 1)

    @property
    def side(self) -> int | None:
        return max(self.size) if self.size else None

    def describe(self) -> str:
        size = self.size_words or ("x".join(map(str, self.size)) if self.size else "?")
        colour = "grey" if self.channels == 1 else "colour"
        # "per class" is images per class where an image has one; a multi-label image has several, a mask many
        each = f" ({self.per_class:.0f} per class)" if self.task == "classification" else ""
        kind = {"multilabel": "labels", "segmentation": "classes"}.get(self.task, "classes")
        text = f"{self.images} training images, {self.classes} {kind}{each}, {size} {colour}"
        if self.imbalance >= 3:
            text += f", classes {self.imbalance:.0f}:1"
        return text


def describe_data(dataset, task) -> DataShape:
    """The shape of a loaded :class:`vislab.data.sources.Dataset` for ``task``."""
    from vislab.data.sources import BUILTIN

    train = dataset.splits["train"]
    size, size_words = dataset.native_size, None
    if size is None:  # files: the median size of a few (decoded through the guarded reader)
        sizes = []
        for index in range(min(len(train), 8)):
            try:
                sizes.append(tuple(train.load(index).shape[-2:]))
            except BadImageError:
                continue
        if sizes:
            size = (int(statistics.median(s[0] for s in sizes)), int(statistics.median(s[1] for s in sizes)))
            size_words = _size_words(sizes)
    counts = [int(c) for c in dataset.counts()["train"]]  # images, label carriers or pixels per class
    present = [c for c in counts if c > 0]
    imbalance = max(present) / min(present) if present else 1.0
    builtin = dataset.name if dataset.name in BUILTIN else None
    return DataShape(task=task.name, images=len(train), classes=dataset.num_classes, size=size,
                     channels=int(dataset.channels), imbalance=float(imbalance), builtin=builtin,
                     size_words=size_words)


def _size_words(sizes) -> str | None:
    """The sizes (H, W) of the files read, in words, where they differ: ``mostly 64x64`` where more than half
    share one, else the smallest and the largest by area (``sizes 48x96 to 120x90``); None where all share one.

    Example:
        >>> _size_words([(64, 64), (64, 64), (48, 96)]), _size_words([(48, 96), (120, 90)]), _size_words([(8, 8)])
        ('mostly 64x64', 'sizes 48x96 to 120x90', None)
    """
    from collections import Counter

    if len(set(sizes)) <= 1:
        return None
    common, count = Counter(sizes).most_common(1)[0]
    if count * 2 > len(sizes):
        return "mostly " + "x".join(map(str, common))
    ordered = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    return f"sizes {'x'.join(map(str, ordered[0]))} to {'x'.join(map(str, ordered[-1]))}"


def _epochs(images: int, passes: int, low: int, high: int) -> int:
    """Epochs for about ``passes`` image-passes, within [low, high]."""
    return max(low, min(high, math.ceil(passes / max(images, 1))))


def _family(name: str) -> str:
    from vislab.models.registry import SHIPPED_BACKBONES, model_outputs, vislab_models

    if name in vislab_models():
        return "small"
    if name in SHIPPED_BACKBONES:
        return "shipped"
    if model_outputs(name) == "pixel":
        return "smp" if name in ("unet", "fpn", "deeplabv3plus") else "segmentation"
    return "other"


def piece_of(key: str) -> tuple[str, ...]:
    """The keys that make one choice with ``key`` (:data:`PIECES`; a key in none is its own piece)."""
    for piece in PIECES:
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in piece):
            return piece
    return (key,)


def owned(key: str, user) -> bool:
    """Whether the user gave ``key`` or another key of its piece (then the piece is theirs)."""
    piece = piece_of(key)
    return any(u == k or (k.endswith(".") and u.startswith(k)) for u in user for k in piece)


def choose(shape: DataShape, user, model: str | None = None, lbfgs: bool = False) -> tuple[str, dict, dict]:
    """(rule, values, reasons): the settings for data of ``shape`` that the user left open. A piece the
    user gave any key of (:data:`PIECES`: e.g. ``--lr`` makes the optimizer, rate and schedule theirs)
    is left out; ``model``: the user's model, whose family decides the rest; ``lbfgs``: the user's L-BFGS
    head, which sets its own epochs (one fit to convergence), so the recipe sets none."""
    user = set(user) | ({"train.epochs"} if lbfgs else set())
    values: dict = {}
    reasons: dict = {}

    def pick(key, value, reason, unit=False):
        """``unit``: part of a rule that only works whole (checked before it is chosen): only the user's
        own key is left out, not its piece."""
        if key in user or (not unit and owned(key, user)):
            return
        values[key] = value
        reasons[key] = reason

    if shape.task == "segmentation":
        name = model or "unet"
        family = _family(name)
        # the settings were measured on the U-Net: for another network of the user's, the reasons say so
        seg = BENCH_SEG if name == "unet" else f"{BENCH_SEG}; {NOT_MEASURED} {name}"
        rule = ("segmentation: U-Net on the shipped encoder" if model is None else
                "segmentation: your U-Net on the shipped encoder" if name == "unet" else
                f"segmentation: your {name} with the U-Net's settings, measured on the U-Net, not on {name}")
        pick("model.name", name, BENCH_SEG)
        if family == "smp":
            pick("model.pretrained", True, "the shipped EfficientNet-Lite0 encoder weights (offline); " + seg)
        if name == "unet":
            pick("model.options", {"decoder_channels": [128, 64, 32, 16, 8]},
                 "half smp's decoder widths: 42-56 vs 29-32 training images/s at 64 px, same curve "
                 "(bench_seg_levers.py --speed)")
        for key, value in (("train.class_weights", "auto"), ("train.loss", "ce+dice"), ("train.optimizer", "adam"),
                           ("train.scheduler", "onecycle"), ("train.lr", 3e-3), ("train.batch_size", 32),
                           ("augment.hflip", True), ("train.early_stopping.monitor", "val_miou")):
            pick(key, value, seg)
        # bench_auto_recipe.py's segmentation row: 30 epochs of 1,350 training composites (72 px) reached test mIoU
        # 0.59 (validation 0.55 at epoch 20) at 20-25 s an epoch on 2 cores, past its 10 minutes: 23 epochs fit
        pick("train.epochs", _epochs(shape.images, 30_000, 8, 30),
             "about 30,000 image-passes (23 epochs of 1,350 72 px composites), 8 to 30; "
             "bench_auto_recipe.py --rows segmentation; " + seg)
        return rule, values, reasons

    if shape.task == "multilabel":
        name = model or "fastnet"
        sized = shape.size and "model.input_size" not in user
        size, why = input_size_for(name, shape.size, shape.channels) if sized else (None, None)
        yours = "" if model is None else "your "
        rule = f"multi-label: {yours}{name} at the images' own size" if why is None else \
            f"multi-label: {yours}{name} at its default {'x'.join(map(str, size))} ({why})"
        if model is None:
            pick("model.name", "fastnet", BENCH_MULTILABEL)
            pick("model.options", dict(RECIPES["fast"]["model.options"]), BENCH_FAST)
            # bench_auto_recipe.py's mosaics row: 20 epochs without flips mAP 0.884 (validation flat from epoch
            # 16, training mAP near 1); with flips and 40 epochs 0.907 in 151 s on 2 cores
            pick("augment.hflip", True, BENCH_MOSAICS)
        if size is not None:
            pick("model.input_size", size, BENCH_MULTILABEL if why is None else _default_size_reason(name, why))
        _small_net_training(pick, shape, name, passes=110_000, low=8, high=40)
        training = _training_words(values)
        if training and name != "fastnet":
            rule += f", the fast recipe's {training}, measured on fastnet, not on {name}"
        return rule, values, reasons

    # classification
    name = model
    family = _family(name) if name else None
    small_data = shape.per_class <= SMALL_DATA_PER_CLASS
    big_or_colour = (shape.side or 0) > SMALL_IMAGE_SIDE or shape.channels == 3
    # the frozen-feature head is a whole: the user's weights/freezing, optimizer or end-to-end options rule it out
    blocked = sorted(k for k in user if k.startswith(END_TO_END_KEYS) or k in PIECES[0] or k == "train.optimizer")
    # the user's change to the network the benchmarks measured (its head, weights, freezing, options)
    net_changed = sorted(k for k in user if k in PIECES[0] or k == "model.options")
    not_yours = f"{NOT_MEASURED} your {', '.join(option_flag(k) or k for k in net_changed)}"  # as the user gave them
    # with no model named, the data called for the frozen-feature head but the user's options rule it out
    no_transfer = (f"{', '.join(option_flag(k) or k for k in blocked)} given, so not the frozen-feature head; "
                   if name is None and blocked and (small_data or big_or_colour) else "")
    if family == "shipped" and blocked:
        # the user's own use of the backbone: its weights unless they said otherwise, the rest for it
        pick("model.pretrained", True, f"{name}: its shipped ImageNet weights; {', '.join(blocked)} given, so the "
             "frozen-feature head (bench_transfer.py) is not chosen; fine-tuning measured below it (bench_lpft.py)")
        _small_net_training(pick, shape, name, passes=60_000, low=3, high=10)
        chosen = ["its shipped ImageNet weights"] if "model.pretrained" in values else []
        training = _training_words(values)
        if training:
            chosen.append(f"the fast recipe's {training}, measured on fastnet, not on {name}")
        rule = f"your {name} with your options instead of the transfer recipe"
        return rule + (f": {', '.join(chosen)}" if chosen else ""), values, reasons
    if not blocked and (family == "shipped" or (name is None and (small_data or big_or_colour))):
        if name is not None:  # the user's shipped backbone: its frozen features, whatever the data's shape
            measured = name == RECIPES["transfer"]["model.name"]
            why = f"{name}, a backbone with shipped ImageNet weights" + ("" if measured else f"; {NOT_MEASURED} {name}")
            rule = f"your {name}: its frozen pretrained features + a logistic-regression head" + (
                "" if measured else f", measured on {RECIPES['transfer']['model.name']}, not on {name}")
        else:
            why = (f"{shape.per_class:.0f} images per class (<= {SMALL_DATA_PER_CLASS})" if small_data else
                   "images larger than 32 px or in colour: the shipped ImageNet backbone's features")
            rule = "small data: frozen pretrained features" if small_data else "pretrained features"
        for key, value in RECIPES["transfer"].items():
            pick(key, value, f"{why}; {BENCH_TRANSFER}", unit=True)
        return rule, values, reasons
    if family in (None, "small") and (shape.side or 0) <= 16 and (name in (None, "fastnet")):
        # tiny images (digits' 8 px): the code defaults measured there
        rule = ("tiny grey images: the code defaults' fastnet" if model is None else
                "tiny grey images: your fastnet with the code defaults, measured with it on digits")
        bench = BENCH_DIGITS
        if net_changed:  # measured with fastnet's own head and options, not the user's
            rule += f" (Adam, constant lr), {not_yours}"
            bench = f"{BENCH_DIGITS}; {NOT_MEASURED} {', '.join(net_changed)}"
        pick("model.name", "fastnet", bench)
        pick("train.epochs", 10, bench)
        return no_transfer + rule, values, reasons
    name = name or "fastnet"
    sized = model and shape.size and "model.input_size" not in user
    size, why = input_size_for(name, shape.size, shape.channels) if sized else (None, None)
    if why is not None:  # the images' own size would not run: the model's default, said in config.yaml
        pick("model.input_size", size, _default_size_reason(name, why))
    if model is None:
        # the fast recipe's net with its regularisers: measured together, so chosen together
        pick("model.name", "fastnet", BENCH_FAST)
        pick("model.options", dict(RECIPES["fast"]["model.options"]), BENCH_FAST)
        pick("train.label_smoothing", 0.1, BENCH_FAST)
        if shape.builtin not in ("digits", "mnist"):  # a mirrored digit is another digit
            pick("augment.hflip", True, "flips only: exact pixels; shifts slowed 5-epoch convergence; " + BENCH_FAST)
            pick("train.tta_flip", True, BENCH_FAST)
    _small_net_training(pick, shape, name, passes=180_000, low=3, high=15)
    if shape.imbalance >= IMBALANCE_RATIO:
        pick("train.class_weights", "auto", f"classes {shape.imbalance:.0f}:1 (>= {IMBALANCE_RATIO:.0f}); "
             + BENCH_IMBALANCE)
    if net_changed:  # the fast recipe was measured on fastnet's own head and options, not the user's
        for key in list(reasons):
            if NOT_MEASURED not in reasons[key]:
                reasons[key] += f"; {NOT_MEASURED} {', '.join(net_changed)}"
    if model is None:
        rule = no_transfer + "enough small images: fastnet (the fast recipe)" + (
            f", {not_yours}" if net_changed else "")
    else:  # the user's network: what the recipe set for it, and whether that was measured on it
        training = _training_words(values)
        rule = f"your {name}" + (" with your settings" if not training else
                                 f": the fast recipe's {training}" if name == "fastnet" else
                                 f": the fast recipe's {training}, measured on fastnet, not on {name}")
        if "train.optimizer" in values and name != "fastnet" and (shape.side or 0) <= 16:
            rule += " (the code defaults measured on these tiny images are fastnet's)"
    return rule, values, reasons


def _training_words(values: dict) -> str | None:
    """What :func:`_small_net_training` set of a network's training, in words (None: nothing, the user's)."""
    parts = [words for key, words in (("train.optimizer", "one-cycle AdamW"), ("train.epochs", "epochs"))
             if key in values]
    return " and ".join(parts) or None


def input_size_for(name: str, size, channels: int = 1) -> tuple[list[int] | None, str | None]:
    """(input size, why it is not the images' own) for model ``name`` on images of ``size`` (H, W); the one
    rule of every task: the size :func:`vislab.models.build.resolve_input_size` keeps for in-memory data
    (the images' own, both sides at least ``MIN_NATIVE_SIZE``) where the network runs at it, else the
    network's default size (8x8 digits train at 28x28). ``(None, None)`` for a model that is not one of
    vislab's networks (its own configuration sizes it)."""
    from vislab.core.config import ModelConfig
    from vislab.core.errors import ConfigError
    from vislab.models.build import MIN_NATIVE_SIZE, build_model, resolve_input_size
    from vislab.models.registry import model_defaults

    if _family(name) != "small":
        return None, None
    default = list(model_defaults(name)["input_size"])
    own = resolve_input_size(ModelConfig(name=name), tuple(size))
    shown = "x".join(map(str, size))
    if own is None:
        return default, f"the images' {shown} is below {MIN_NATIVE_SIZE} px"
    try:
        build_model(ModelConfig(name=name, input_size=list(own)), num_classes=2, in_chans=channels)
    except ConfigError:
        return default, f"{name}'s pooling leaves no pixels of the images' {shown}"
    return list(own), None


def _default_size_reason(name: str, why: str) -> str:
    from vislab.models.build import MIN_NATIVE_SIZE

    return (f"{why}: {name}'s default size, as for every task (vislab.models.build.resolve_input_size scales "
            f"images below {MIN_NATIVE_SIZE} px up to it: 8x8 digits train at 28x28)")


def _small_net_training(pick, shape: DataShape, name: str, passes: int, low: int, high: int) -> None:
    """One-cycle AdamW for a net trained from scratch; the fast recipe's peak for fastnet."""
    family = _family(name)
    fast = name == "fastnet"
    lr = 1e-2 if fast else (3e-3 if family == "small" else 1e-3)
    unmeasured = "" if fast else f"; {NOT_MEASURED} {name}, whose peak is lower ({lr:g})"
    note = BENCH_FAST + unmeasured
    pick("train.optimizer", "adamw", note)
    pick("train.scheduler", "onecycle", note)
    pick("train.lr", lr, note)
    pick("train.weight_decay", 0.05, note)
    pick("train.epochs", _epochs(shape.images, passes, low, high),
         f"about {passes:,} image-passes (3 epochs of 60,000 reached 92 %), {low} to {high}; {BENCH_FAST}"
         + ("" if fast else f"; {NOT_MEASURED} {name}"))


@dataclass
class Applied:
    """What :func:`apply` did: the rule, what it set, what the user's flags kept, and one line saying it."""

    rule: str
    shape: DataShape
    set: dict
    kept: dict
    reasons: dict
    line: str

    def record(self, user) -> dict:
        data = {**asdict(self.shape), "per_class": round(self.shape.per_class, 1),
                "size": list(self.shape.size) if self.shape.size else None}  # YAML lists, not tuples
        return {"user": sorted(user), "data": data,
                "rule": self.rule, "set": self.set, "kept": self.kept, "reasons": self.reasons, "line": self.line}


def apply(cfg: Config, dataset, task) -> Applied:
    """Set on ``cfg`` what the data calls for and the user did not give; record it in
    ``cfg.recipe_choices`` (written into config.yaml). Returns what was done."""
    record = cfg.recipe_choices or {}
    user = cfg.user_given()  # less the split options the data's own splits left unused (task_and_data)
    shape = describe_data(dataset, task)
    model = cfg.model.name if "model.name" in user else None
    lbfgs = "train.optimizer" in user and cfg.train.optimizer == "lbfgs"  # its one epoch, as documented
    rule, values, reasons = choose(shape, user, model=model, lbfgs=lbfgs)
    would = choose(shape, set(), model=model)[1]  # with nothing given: the recipe line names the user's first
    chosen = {}
    for key, value in values.items():
        if key in user:
            continue
        if key == "data.val_split" and cfg.train.time_budget:
            continue  # with a budget the head may be fine-tuned (vislab.train.lpft): validation chooses
        if key == "data.val_split" and "val" in getattr(dataset, "own_splits", {}):
            continue  # the data's own validation split is used whatever the value
        set_value(cfg, key, value, f"recipe auto ({rule})")
        chosen[key] = value
    # the user's settings (what to train on and where to write are not settings the recipe could pick)
    kept = {key: dotted_value(cfg, key) for key in sorted(user)
            if not key.startswith(("data.", "out", "seed", "task", "train.time_budget", "train.device"))}
    if cfg.train.optimizer == "lbfgs" and "train.scheduler" not in user:
        cfg.train.scheduler = "none"  # the L-BFGS head takes no schedule (a user's --optimizer lbfgs too)
    parts = [_model_words(cfg, _run_size(cfg, dataset, shape))]
    if cfg.train.optimizer != "lbfgs" and cfg.train.time_budget:
        # the budget sets the epochs and the schedule once training starts: the line says what it will train with
        from vislab.train.budget import budget_scheduler, duration_words

        parts.append(f"{_schedule_words(cfg.train.optimizer, budget_scheduler(cfg, user), cfg.train.lr)}, "
                     f"epochs from the {duration_words(cfg.train.time_budget)} budget")
    elif cfg.train.optimizer != "lbfgs":
        epochs = cfg.train.epochs
        parts.append(f"{_schedule_words(cfg.train.optimizer, cfg.train.scheduler, cfg.train.lr)}, {epochs} "
                     f"epoch{'s' * (epochs != 1)}")
    defaults = _code_defaults(cfg, user, chosen)
    if defaults and not rule.startswith("tiny grey images"):  # neither the user's nor the recipe's: say whose
        rule = rule.replace(" with your settings", "") + f"; the code defaults' {defaults}"
    if cfg.train.class_weights != "none" and not cfg.model.cache_features:
        parts.append(f"class weights {cfg.train.class_weights}")
    if task.name == "segmentation":
        parts.append(f"loss {cfg.train.loss}")
    shape = _trained_shape(shape, dataset, cfg, chosen)
    # the benchmarks behind what the recipe set, not one that measured another network than the user's
    bench = sorted({name for key, reason in reasons.items() if key in chosen and NOT_MEASURED not in reason
                    for name in re.findall(r"bench_\w+\.py", reason)})
    line = (f"recipe auto: {', '.join(parts)} -- {rule}, for {shape.describe()}"
            + (f" ({', '.join(bench)})" if bench else "")
            + (f"; yours: {_yours(kept, would, cfg)}" if kept else ""))
    applied = Applied(rule, shape, chosen, kept, reasons, line)
    cfg.recipe_choices = {**record, **applied.record(user)}  # with "not_used" (drop_unused_split_options)
    return applied


YOURS_SHOWN = 8  # the user's settings the recipe line names; a run's config.yaml given back holds about 60


def _yours(kept, would, cfg: Config | None = None) -> str:
    """The user's settings for the recipe line, at most :data:`YOURS_SHOWN`: first those that differ from what
    the recipe would have set (``would``: its choices with nothing given), then the rest it would have set;
    then how many more (config.yaml's recipe_choices.user lists them all). Each is named as the user gave it:
    the flag (``--lr``) for an option, the key (``train.lr``) for a YAML file's value."""
    names = sorted(kept, key=lambda key: (key not in would or would[key] == kept[key], key not in would, key))
    shown = [(option_flag(key) or key) if cfg is not None and cfg.typed(key) else key for key in names[:YOURS_SHOWN]]
    more = len(names) - YOURS_SHOWN
    return ", ".join(shown) + (f" and {more} more (recipe_choices.user in config.yaml)" if more > 0 else "")


def _trained_shape(shape: DataShape, dataset, cfg: Config, chosen: dict) -> DataShape:
    """``shape`` as the run trains: when the recipe holds out no validation split (the transfer rule's
    ``data.val_split 0``), the data is split again and the held-out validation images are trained on too."""
    val = dataset.splits.get("val")
    if chosen.get("data.val_split", 1) != 0 or val is None or "val" in getattr(dataset, "own_splits", {}):
        return shape
    counts = dataset.counts()
    merged = [t + v for t, v in zip(counts["train"], counts["val"])]
    if dataset.counted == "images":  # one class per image (--max-per-class caps each class again)
        cap = cfg.data.max_per_class
        merged = [min(c, cap) for c in merged] if cap else merged
        images = sum(merged)
    else:
        images = len(dataset.splits["train"]) + len(val)
    present = [c for c in merged if c > 0]
    imbalance = max(present) / min(present) if present else 1.0
    return replace(shape, images=images, imbalance=float(imbalance))


def _schedule_words(optimizer: str, scheduler: str, lr: float) -> str:
    """``adamw onecycle lr 0.01``; no schedule is said as ``adam, constant lr 0.001``."""
    return f"{optimizer}, constant lr {lr:g}" if scheduler == "none" else f"{optimizer} {scheduler} lr {lr:g}"


def _code_defaults(cfg: Config, user, chosen: dict) -> str | None:
    """Where the user owns the training piece (e.g. ``--optimizer sgd``), the parts of it they did not give and
    the recipe therefore left at the code's defaults, in words (``lr 0.001, no schedule``); None if none."""
    if not owned("train.optimizer", user) or cfg.train.optimizer == "lbfgs":
        return None
    default = Config().train
    words = {"train.optimizer": f"optimizer {default.optimizer}", "train.lr": f"lr {default.lr:g}",
             "train.scheduler": "no schedule" if default.scheduler == "none" else f"{default.scheduler} schedule"}
    parts = [text for key, text in words.items() if key not in user and key not in chosen
             and dotted_value(cfg, key) == getattr(default, key.split(".", 1)[1])]
    return ", ".join(parts) or None


def _run_size(cfg: Config, dataset, shape: DataShape) -> tuple[int, int] | None:
    """The size one of vislab's networks trains at where it is not the images' one size (files of several sizes,
    or a size the network does not take): what :func:`vislab.models.build.resolve_input_size` keeps, else the
    network's default. None where the line need not say it (another network's own configuration sizes it)."""
    from vislab.models.build import resolve_input_size
    from vislab.models.registry import model_defaults

    m = cfg.model
    if m.input_size or _family(m.name) != "small":
        return None
    size = resolve_input_size(m, getattr(dataset, "native_size", None))
    size = tuple(size) if size else tuple(model_defaults(m.name)["input_size"])
    return size if shape.size_words or not shape.size or tuple(shape.size) != size else None


def _model_words(cfg: Config, run_size=None) -> str:
    """The model part of the recipe line: the network, its weights, its head where it is not the usual one, and
    the size it trains at where that is not the images' own (``run_size``: see :func:`_run_size`)."""
    m = cfg.model
    size = f" at {'x'.join(map(str, m.input_size))}" if m.input_size else \
        f" at {'x'.join(map(str, run_size))}" if run_size else ""
    own = _family(m.name) == "small"  # vislab's networks: the cached head is their own dense head
    if m.cache_features:  # L-BFGS on a linear head fits a logistic regression; otherwise the head trains
        if m.head == "mlp":
            head = f"mlp head ({cfg.train.optimizer})"
        elif own:
            head = f"its own head ({cfg.train.optimizer})"
        else:
            head = "logistic-regression head" if cfg.train.optimizer == "lbfgs" else \
                f"linear head ({cfg.train.optimizer})"
        return f"{m.name} frozen features + {head}{size}"
    head = " with an mlp head" if m.head == "mlp" else ""
    return f"{m.name}{' pretrained' if m.pretrained else ''}{head}{size}"
