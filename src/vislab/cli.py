"""``vislab`` command line: parse arguments, call the library, print.

Each subcommand is a pair ``_add_<name>(subparsers)`` + ``_cmd_<name>(args)``.
The same option means the same thing in every subcommand (``--data``,
``--data-dir``, ``--out``, ``--batch-size``, ``--device``, ``--top-k``, ``--seed``).
Usage errors exit with code 2, failures with code 1 and a message that names the
file and the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vislab.core.config import (
    BUILTIN_TASKS, DEVICES, EXPLAIN_METHODS, FILL_MODES, FREEZE_MODES, HEADS, LIME_SEGMENTATIONS, OPTIMIZERS,
    OUTPUT_FORMATS, PALETTES, PRECISIONS, RECIPES, SCHEDULERS, SEGMENTATION_LOSSES, SPLITS,
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a default only where the flag has one of its own: train's flags default to None
    (the recipe/YAML/code default applies) and say their default in the help text instead."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _parser(subparsers, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help_text, description=description or help_text,
                                 formatter_class=_Formatter, allow_abbrev=False)


# --------------------------------------------------------------------------- shared options
def _add_data_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, default=None,
                       help="built-in set (mnist, fashion-mnist, cifar10, digits), a class-per-folder "
                            "directory (optionally with train/ val/ test/), or a CSV of file,label")
    group.add_argument("--data-dir", default=None, help="folder holding (or receiving) the built-in sets' files")
    group.add_argument("--image-root", default=None, help="CSV: folder the file names are relative to")
    group.add_argument("--file-col", default=None, help="CSV: column with the file name")
    group.add_argument("--label-col", default=None, help="CSV: column with the label")
    group.add_argument("--labels", nargs="+", default=None, help="CSV: keep only these labels")
    group.add_argument("--test-csv", default=None, help="CSV of test files labelled by class name or numeric ID")
    group.add_argument("--val-split", type=float, default=None,
                       help="fraction (<1) or count of training images held out for validation (default 0.1)")
    group.add_argument("--test-split", type=float, default=None,
                       help="fraction or count held out for test when the data has no test split (default 0.2)")
    group.add_argument("--max-per-class", type=int, default=None, help="keep at most N training images per class")
    group.add_argument("--workers", type=int, default=None, help="data-loading worker processes (default 2)")


def _add_augment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("augmentation (Keras ImageDataGenerator meanings)")
    group.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips")
    group.add_argument("--vflip", action="store_true", default=None, help="random vertical flips")
    group.add_argument("--rotation", type=float, default=None, help="degrees, uniform in [-r, r]")
    group.add_argument("--zoom", type=float, default=None, help="scale uniform in [1-z, 1+z]")
    group.add_argument("--width-shift", type=float, default=None,
                       help="fraction of the width (< 1) or pixels (>= 1); a whole number n shifts by whole "
                            "pixels in -n..n: exact pixels, no interpolation")
    group.add_argument("--height-shift", type=float, default=None,
                       help="fraction of the height (< 1) or pixels (>= 1), as --width-shift")
    group.add_argument("--shear", type=float, default=None, help="shear angle in degrees")
    group.add_argument("--fill-mode", choices=FILL_MODES, default=None,
                       help="how pixels outside the image are filled (default nearest)")
    group.add_argument("--fill-value", type=float, default=None, help="0..255, with --fill-mode constant")


def _data_overrides(args) -> dict:
    return {
        "data.source": args.data, "data.data_dir": args.data_dir, "data.image_root": args.image_root,
        "data.file_col": args.file_col, "data.label_col": args.label_col, "data.labels": args.labels,
        "data.test_csv": args.test_csv, "data.val_split": args.val_split, "data.test_split": args.test_split,
        "data.max_per_class": args.max_per_class, "data.workers": args.workers,
    }


def _augment_overrides(args) -> dict:
    return {f"augment.{key}": getattr(args, key) for key in
            ("hflip", "vflip", "rotation", "zoom", "width_shift", "height_shift", "shear", "fill_mode", "fill_value")}


def _parse_options(pairs) -> dict:
    """``key=value`` pairs; values parsed as YAML scalars/lists (``hidden=[512,256]``, ``dropout=0.5``)."""
    import yaml

    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"vislab: error: --model-opt expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return options


# --------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = _parser(sub, "train", "train a model into a run folder",
                "Train a model and write a run folder (config.yaml, model.safetensors, model.json, history.csv,\n"
                "checkpoints/, tensorboard/, plots/, metrics.json, report.html).\n\n"
                "examples:\n"
                "  vislab train --data fashion-mnist --recipe fast --out runs/fmnist\n"
                "  vislab train --data digits --model chollet_convnet --epochs 10\n"
                "  vislab train --data photos/ --model resnet50 --pretrained --freeze backbone\n"
                "  vislab train --resume runs/fmnist --epochs 20")
    p.add_argument("--config", default=None, help="YAML file with data/augment/model/train sections")
    p.add_argument("--task", default=None, metavar="TASK",
                   help=f"what is learned: {', '.join(BUILTIN_TASKS)} (default classification)")
    p.add_argument("--recipe", default=None, choices=tuple(RECIPES),
                   help="a bundle of tuned defaults for 28 px grey images such as Fashion-MNIST: fast (under a "
                        "minute on 2 CPU cores, >= 92%% on Fashion-MNIST) or accurate (about 9 minutes, >= 94%%); "
                        "any other flag overrides it")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation at the end")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    _add_data_options(p)
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, help="model name: `vislab models` lists them (default fastnet)")
    m.add_argument("--model-opt", nargs="+", default=None, metavar="KEY=VALUE",
                   help="model options, e.g. hidden=[512,256] dropout=0.5 binary=true; they replace a "
                        "recipe's model options as a whole")
    m.add_argument("--input-size", type=int, nargs="+", default=None, metavar="PX",
                   help="model input size: one number or H W")
    m.add_argument("--pretrained", action="store_true", default=None, help="start from pretrained weights")
    m.add_argument("--weights", default=None, help="local pretrained weights file or folder")
    m.add_argument("--head", choices=HEADS, default=None,
                   help="classifier head: linear, or mlp (GAP -> Dense -> Dropout -> Dense)")
    m.add_argument("--freeze", choices=FREEZE_MODES, default=None, help="freeze the backbone")
    m.add_argument("--finetune-last", type=int, default=None, metavar="N",
                   help="train the last N blocks of the backbone (and the head)")
    m.add_argument("--freeze-epochs", type=int, default=None, metavar="K",
                   help="with --freeze backbone: unfreeze after K epochs")
    m.add_argument("--lr-backbone", type=float, default=None, help="learning rate for the backbone")
    m.add_argument("--cache-features", action="store_true", default=None,
                   help="with --freeze backbone: extract features once, train the head on them")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default 10)")
    t.add_argument("--batch-size", type=int, default=None, help="images per batch (default 128)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="(default adam); lbfgs: with --cache-features, fit the head as logistic regression "
                        "(full batch, so --lr and --batch-size do not apply; --weight-decay = L2 penalty, "
                        "default 1/N as scikit-learn's C=1)")
    t.add_argument("--momentum", type=float, default=None, help="sgd/rmsprop momentum (default 0.9)")
    t.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="learning-rate schedule (default none)")
    t.add_argument("--label-smoothing", type=float, default=None, help="(default 0)")
    t.add_argument("--weight-decay", type=float, default=None, help="(default 0)")
    t.add_argument("--device", choices=DEVICES, default=None, help="(default auto)")
    t.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="autocast dtype; auto uses bf16 where the device runs it natively, fp16 on GPUs "
                        "without bf16; fp16 trains with loss scaling (default auto)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    t.add_argument("--tta-flip", action="store_true", default=None, help="evaluate on image + mirror")
    t.add_argument("--patience", type=int, default=None,
                   help="early stopping: stop after N epochs without improvement of --monitor, as in Keras "
                        "(0 stops at the first one; default: no early stopping)")
    t.add_argument("--monitor", default=None, help="early stopping metric (default val_loss)")
    t.add_argument("--min-delta", type=float, default=None, help="smallest change that counts as improvement")
    t.add_argument("--no-restore-best", action="store_true", help="keep the last weights, not the best")
    _add_augment_options(p)
    _add_segmentation_options(p)


def _add_segmentation_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("segmentation (--task segmentation: DIR/images + DIR/masks by file stem)")
    g.add_argument("--palette", default=None, metavar="NAME_OR_FILE",
                   help=f"class colours and names: {', '.join(PALETTES)}, or a JSON/CSV of name, r, g, b; "
                        "RGB masks are mapped to class IDs through it")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, line i names ID i (default DIR/classes.txt, the palette, or the IDs found)")
    g.add_argument("--ignore-index", type=int, default=None, help="void mask value, never scored (default 255)")
    g.add_argument("--class-weights", choices=("auto",), default=None,
                   help="auto: cross-entropy weights from the training pixel frequencies (median frequency)")
    g.add_argument("--loss", choices=SEGMENTATION_LOSSES, default=None,
                   help="cross-entropy with the ignore index, Dice, or both (default ce)")


def _segmentation_overrides(args) -> dict:
    return {"segmentation.palette": getattr(args, "palette", None), "segmentation.classes": getattr(args, "classes", None),
            "segmentation.ignore_index": getattr(args, "ignore_index", None),
            "segmentation.class_weights": getattr(args, "class_weights", None),
            "segmentation.loss": getattr(args, "loss", None)}


def train_overrides(args) -> dict:
    input_size = args.input_size
    if input_size is not None and len(input_size) not in (1, 2):
        raise SystemExit("vislab train: error: --input-size takes one number or H W")
    overrides = {
        "recipe": args.recipe, "out": args.out, "seed": args.seed, "task": args.task,
        "model.name": args.model, "model.input_size": input_size and (input_size * 2)[:2],
        "model.pretrained": args.pretrained, "model.weights": args.weights, "model.head": args.head,
        "model.freeze": args.freeze, "model.finetune_last": args.finetune_last,
        "model.freeze_epochs": args.freeze_epochs, "model.lr_backbone": args.lr_backbone,
        "model.cache_features": args.cache_features,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.lr": args.lr,
        "train.optimizer": args.optimizer, "train.momentum": args.momentum, "train.scheduler": args.scheduler,
        "train.label_smoothing": args.label_smoothing, "train.weight_decay": args.weight_decay,
        "train.device": args.device, "train.precision": args.precision, "train.compile": args.compile,
        "train.tta_flip": args.tta_flip,
        "train.early_stopping.patience": args.patience, "train.early_stopping.monitor": args.monitor,
        "train.early_stopping.min_delta": args.min_delta,
        "train.early_stopping.restore_best": False if args.no_restore_best else None,
        **_data_overrides(args), **_augment_overrides(args), **_segmentation_overrides(args),
    }
    if args.model_opt:
        overrides["model.options"] = _parse_options(args.model_opt)
    return overrides


def _cmd_train(args) -> int:
    from vislab.core.config import resolve_config
    from vislab.pipelines import train
    from vislab.train.loop import resume_config

    if args.resume:
        extra = {k: v for k, v in train_overrides(args).items() if v is not None and k != "train.epochs"}
        if args.config:
            extra["--config"] = args.config
        resume_config(args.resume, args.epochs, **extra)  # only --epochs may change
        train(None, resume=args.resume, epochs=args.epochs, progress=not args.no_progress,
              evaluate=not args.no_evaluate)
        return 0
    cfg = resolve_config(args.config, train_overrides(args))
    train(cfg, progress=not args.no_progress, evaluate=not args.no_evaluate)
    return 0


# --------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = _parser(sub, "evaluate", "evaluate a run folder on test data",
                "Evaluate RUN_DIR's model: metrics.json, figures under plots/, misclassified.csv, report.html.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--data", default=None, help="evaluate on this data instead of the run's own test split")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch")
    p.add_argument("--device", choices=DEVICES, default="auto")


def _cmd_evaluate(args) -> int:
    from rich.console import Console

    from vislab import api

    api.evaluate(args.run, data=args.data, split=args.split, batch_size=args.batch_size, device=args.device,
                 console=Console(highlight=False))
    return 0


# --------------------------------------------------------------------------- predict
def _add_predict(sub) -> None:
    p = _parser(sub, "predict", "predict classes of image files",
                "Top-k classes for images or folders of images, from a run folder or an ImageNet model\n"
                "(imagenet:resnet50, imagenet:efficientnet_lite0, ...). A bad image is reported and the\n"
                "others are still predicted.")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=5, help="classes per image")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output format")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast dtype for inference. auto: bf16 where the device runs it natively, and "
                        "answers whose top-1 and top-2 probabilities are within 0.02 recomputed in fp32, so "
                        "top-1 matches fp32 on about 99.5%% of images at about 0.8x bf16's speed; bf16: full "
                        "speed, but bf16 can change the top-1 of near-tied images (3%% of the photo crops "
                        "in the README's benchmark); fp32: exact")
    p.add_argument("--figure", default=None, metavar="PNG", help="also draw the images titled with top-1")


def _cmd_predict(args) -> int:
    from vislab.infer import Predictor, predict_files
    from vislab.runs import load

    predictor = Predictor(load(args.model), device=args.device, precision=args.precision)
    results = predict_files(predictor, args.images, top_k=args.top_k, batch_size=args.batch_size)
    _print_predictions(results, args.format)
    if predictor.dtype is not None:  # say what reduced precision did (stderr: json/csv output stays clean)
        dtype = str(predictor.dtype).replace("torch.", "")
        if predictor.recheck_ties:
            print(f"precision auto: {dtype}, {predictor.rechecked} near-tied answer(s) recomputed in fp32",
                  file=sys.stderr)
        else:
            print(f"precision {dtype}: a near-tied top-1 can differ from fp32's; --precision auto re-checks "
                  "those in fp32", file=sys.stderr)
    if args.figure:
        from vislab.data.images import BadImageError, open_image
        from vislab.viz.predictions import plot_topk

        pairs = []
        for result in results:
            if "top" in result:
                try:
                    pairs.append((open_image(result["file"]), result["top"]))
                except BadImageError:
                    continue
        plot_topk([image for image, _ in pairs], [top for _, top in pairs], args.figure)
    return 1 if results and all("error" in r for r in results) else 0


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
            for rank, top in enumerate(r.get("top", []), 1):
                writer.writerow([r["file"], rank, top["class"], f"{top['probability']:.6f}", ""])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("file", "rank", "class", "probability"):
        table.add_column(col, justify="right" if col in ("rank", "probability") else "left")
    for r in results:
        if "error" in r:
            table.add_row(r["file"], "", f"[red]error: {r['error']}[/]", "")
        for rank, top in enumerate(r.get("top", []), 1):
            table.add_row(r["file"] if rank == 1 else "", str(rank), top["class"], f"{top['probability']:.4f}")
    Console(highlight=False).print(table)


# --------------------------------------------------------------------------- models & summary
def _add_models(sub) -> None:
    p = _parser(sub, "models", "list model names with their default input and description")
    p.add_argument("--timm", default=None, metavar="PATTERN", help="list timm models matching PATTERN (e.g. 'vit_*')")
    p.add_argument("--pretrained-only", action="store_true", help="with --timm: only names with pretrained weights")
    p.add_argument("--parameters", action="store_true", help="also build each model to count its parameters")
    p.add_argument("--num-classes", type=int, default=10, help="with --parameters: classes for the counts")


def _cmd_models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from vislab import api

    console = Console(highlight=False)
    if args.timm:
        import timm

        for name in timm.list_models(args.timm, pretrained=args.pretrained_only):
            print(name)
        return 0
    title = "vislab models" + (f" (parameters for {args.num_classes} classes)" if args.parameters else "")
    table = Table(title=title)
    columns = ["name", *(["parameters"] if args.parameters else []), "default input"]
    for col in columns:
        table.add_column(col, justify="right" if col == "parameters" else "left", no_wrap=True)
    table.add_column("description", overflow="fold")
    for row in api.models():
        size = "x".join(map(str, (row["in_chans"], *row["input_size"])))
        cells = [row["name"]]
        if args.parameters:
            from vislab.core.weights import parameter_counts
            from vislab.models import create_model

            model = create_model(row["name"], num_classes=args.num_classes, in_chans=row["in_chans"])
            cells.append(f"{parameter_counts(model)['total']:,}")
        table.add_row(*cells, size, row["description"])
    console.print(table)
    console.print("Any timm model name also works (`vislab models --timm 'resnet*'`), and hf:ORG/NAME.")
    return 0


def _add_summary(sub) -> None:
    p = _parser(sub, "summary", "layers, output shapes and parameter counts of a model (Keras model.summary())")
    p.add_argument("model", metavar="MODEL|RUN_DIR", help="a model name or a run folder")
    p.add_argument("--num-classes", type=int, default=10, help="classes (for a model name)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (for a model name)")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="PX", help="one number or H W")
    p.add_argument("--depth", type=int, default=3, help="how deep to list nested modules")


def _cmd_summary(args) -> int:
    from vislab import api

    print(api.summary(args.model, num_classes=args.num_classes, in_chans=args.in_chans,
                      input_size=args.input_size, depth=args.depth))
    return 0


# --------------------------------------------------------------------------- audit, augment-preview
def _add_audit(sub) -> None:
    p = _parser(sub, "audit", "audit a dataset: balance, sizes, colours, duplicates, bad files",
                "Write audit.json and plots/audit_*.png: images per class per split (with the imbalance\n"
                "ratio), image sizes/modes/formats, dominant colours, a samples grid, exact duplicates\n"
                "within and across splits (train/test leakage) and bad files.\n\n"
                "example:\n  vislab audit --data photos/ --out audits/photos")
    _add_data_options(p, required=True)
    p.add_argument("--config", default=None, help="YAML file with a data section")
    p.add_argument("--out", default=None, help="output folder (default audit-<data name>)")
    p.add_argument("--max-images", type=int, default=2000,
                   help="images decoded for the colour study (duplicates always check every image)")
    p.add_argument("--seed", type=int, default=None, help="random seed for the samples (default 0)")


def _cmd_audit(args) -> int:
    from rich.console import Console

    from vislab.core.config import resolve_config
    from vislab.data.audit import audit_dataset, print_audit
    from vislab.data.sources import load_dataset

    cfg = resolve_config(args.config, {**_data_overrides(args), "seed": args.seed})
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    out = Path(args.out or f"audit-{Path(str(dataset.name)).name or 'data'}")
    audit = audit_dataset(dataset, out, max_images=args.max_images, seed=cfg.seed)
    console = Console(highlight=False)
    print_audit(audit, console)
    console.print(f"wrote {out / 'audit.json'} and {len(audit['figures'])} figures under {out / 'plots'}")
    return 0


def _add_augment_preview(sub) -> None:
    p = _parser(sub, "augment-preview", "show images beside augmented versions of them",
                "Draw a few training images, each beside N augmented copies made with the given\n"
                "augmentation settings, to see what they do before training.\n\n"
                "example:\n  vislab augment-preview --data fashion-mnist --rotation 15 --zoom 0.1 --hflip")
    _add_data_options(p, required=True)
    p.add_argument("--config", default=None, help="YAML file with data/augment sections")
    p.add_argument("--out", default="augment_preview.png", help="PNG to write")
    p.add_argument("--count", type=int, default=6, help="how many images")
    p.add_argument("--versions", type=int, default=5, help="augmented copies of each image")
    p.add_argument("--split", default="train", choices=SPLITS, help="which split to draw from")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    _add_augment_options(p)


def _cmd_augment_preview(args) -> int:
    from vislab.core.config import resolve_config
    from vislab.data.audit import preview_augmentation
    from vislab.data.sources import load_dataset

    cfg = resolve_config(args.config, {**_data_overrides(args), **_augment_overrides(args), "seed": args.seed})
    if not cfg.augment.active:
        print("vislab augment-preview: note: no augmentation is set (e.g. --rotation 15 --hflip); "
              "the copies equal the originals", file=sys.stderr)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    path = preview_augmentation(dataset, cfg.augment, args.out, count=args.count, versions=args.versions,
                                split=args.split, seed=cfg.seed)
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- compare, report
def _add_compare(sub) -> None:
    p = _parser(sub, "compare", "leaderboard of several run folders",
                "Print a leaderboard (model, parameters, epochs, training time, test accuracy, macro-F1,\n"
                "AUC) and write it as leaderboard.csv and leaderboard.png.\n\n"
                "example:\n  vislab compare runs/cnn runs/resnet runs/vit --out runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=".", help="folder for leaderboard.csv and leaderboard.png")


def _cmd_compare(args) -> int:
    from rich.console import Console

    from vislab.evaluate.compare import compare_runs, print_leaderboard, write_leaderboard

    rows = compare_runs(args.runs)
    console = Console(highlight=False)
    print_leaderboard(rows, console)
    csv_path, png_path = write_leaderboard(rows, args.out)
    console.print(f"wrote {csv_path} and {png_path}")
    return 0


def _add_report(sub) -> None:
    p = _parser(sub, "report", "write a run folder's self-contained report.html",
                "Build RUN_DIR/report.html from what the run folder holds: config, dataset audit, training\n"
                "curves, metrics, every figure, misclassified examples and explanations. Images are\n"
                "embedded, so the file opens offline.")
    p.add_argument("run", metavar="RUN_DIR")


def _cmd_report(args) -> int:
    from vislab.report.html import build_report

    print(f"wrote {build_report(args.run)}")
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
    p.add_argument("--method", default="gradcam", choices=EXPLAIN_METHODS)
    p.add_argument("--target", default="top", help="class to explain: a name, an index, or 'top' (the prediction)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer, a model.named_modules() name (default: automatic)")
    p.add_argument("--num-samples", type=int, default=1000, help="LIME: perturbed images to score")
    p.add_argument("--segmentation", default="quickshift", choices=LIME_SEGMENTATIONS, help="LIME superpixels")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots/explain or explain-MODEL)")


def _cmd_explain(args) -> int:
    from vislab.explain.api import explain_files
    from vislab.runs import load

    opts = {"num_samples": args.num_samples, "segmentation": args.segmentation} if args.method == "lime" else {}
    results = explain_files(load(_model_spec(args.model)), args.images, args.out, method=args.method,
                            target=args.target, layer=args.layer, **opts)
    for r in results:
        if "error" in r:
            print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['file']}: {r['class']} ({r['probability']:.1%}) -> {r['png']}")
    return 1 if results and all("error" in r for r in results) else 0


def _add_activations(sub) -> None:
    p = _parser(sub, "activations", "every channel of a network's layers for one image",
                "Draw the activation maps of each layer for IMAGE, every channel in a grid normalised as in\n"
                "Chollet's DLwP 5.4, one PNG per layer (default: the first 8 layers).\n\n"
                "example:\n  vislab activations runs/cats cat.jpg --layers features.1 features.2")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="model.named_modules() names")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots/activations)")


def _cmd_activations(args) -> int:
    from vislab.data.images import read_image
    from vislab.explain.activations import activations, save_activations
    from vislab.explain.api import default_out_dir
    from vislab.runs import load

    loaded = load(_model_spec(args.model))
    grids = activations(loaded.model, loaded.preprocessing, read_image(args.image), layers=args.layers)
    paths = save_activations(grids, args.out or default_out_dir(loaded, "activations"))
    for grid, path in zip(grids, paths):
        print(f"{grid.name}: {grid.channels} channels of {grid.map_size[0]}x{grid.map_size[1]} -> {path}")
    return 0


def _add_filters(sub) -> None:
    p = _parser(sub, "filters", "patterns that excite a layer's filters (gradient ascent)",
                "Start from a grey noisy image and follow the gradient of each filter's mean activation;\n"
                "draw the first N patterns in an 8x8 grid.\n\n"
                "example:\n  vislab filters imagenet:vgg16 --layer features.10 --n 64 --out filters/")
    p.add_argument("model", metavar="RUN_DIR|imagenet:MODEL")
    p.add_argument("--layer", required=True, help="a model.named_modules() name (a wrong name lists them)")
    p.add_argument("--n", type=int, default=64, help="filters to draw")
    p.add_argument("--steps", type=int, default=40, help="gradient-ascent steps")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots/filters)")


def _cmd_filters(args) -> int:
    from vislab.explain.api import default_out_dir, safe_filename
    from vislab.explain.filters import filter_grid, save_filter_grid
    from vislab.runs import load

    loaded = load(_model_spec(args.model))
    result = filter_grid(loaded.model, loaded.preprocessing, args.layer, n=args.n, steps=args.steps)
    out = Path(args.out) if args.out else default_out_dir(loaded, "filters")
    print(f"wrote {save_filter_grid(result, out / f'filters_{safe_filename(args.layer)}.png')}")
    return 0


def _model_spec(text: str) -> str:
    """A run folder, imagenet:NAME, or a bare ImageNet model name (explaining random weights shows nothing)."""
    if ":" in text or Path(text).exists():
        return text
    return f"imagenet:{text}"


# --------------------------------------------------------------------------- segment
def _add_segment(sub) -> None:
    p = _parser(sub, "segment", "segment images: masks, colour masks, overlays, legends, pixel shares",
                "Segment images with a segmentation model. Per image, in --out: STEM_mask.png (class IDs,\n"
                "palette embedded), STEM_color.png, STEM_overlay.png, STEM_panel.png, STEM_legend.png; for all:\n"
                "legend.png, pixel_shares.csv, bad_files.csv. Masks are at the input's full resolution.\n\n"
                "examples:\n"
                "  vislab segment runs/fashion-seg photos/ --out seg/\n"
                "  vislab segment lraspp_mobilenet_v3_large street.jpg --weights lraspp.safetensors --out seg/\n"
                "  vislab segment hf:nvidia/segformer-b0-finetuned-cityscapes-1024-1024 street.jpg --out seg/ "
                "--class-maps road sky")
    p.add_argument("model", metavar="MODEL",
                   help="a segmentation run folder, a torchvision name (deeplabv3_resnet50, deeplabv3_resnet101, "
                        "deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large, fcn_resnet50) or "
                        "hf:NAME_OR_FOLDER (SegFormer)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", required=True, help="folder for the outputs")
    p.add_argument("--weights", default=None, help="local weights for a named torchvision architecture")
    p.add_argument("--palette", default=None, metavar="NAME_OR_FILE",
                   help=f"colours: {', '.join(PALETTES)} or a JSON/CSV of name, r, g, b (default: the model's)")
    p.add_argument("--alpha", type=float, default=1.0, help="overlay weight of the image (cv2.addWeighted)")
    p.add_argument("--beta", type=float, default=0.6, help="overlay weight of the colour mask")
    p.add_argument("--class-maps", nargs="+", default=(), metavar="CLASS", help="probability maps of these classes")
    p.add_argument("--no-panels", action="store_true", help="skip the 3-panel figures and per-image legends")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast dtype; auto uses bf16 where the device runs it natively")


def _cmd_segment(args) -> int:
    from vislab import api

    result = api.segment(args.model, args.images, out=args.out, weights=args.weights, palette=args.palette,
                         alpha=args.alpha, beta=args.beta, class_maps=args.class_maps, panels=not args.no_panels,
                         device=args.device, precision=args.precision)
    for path, reason in result.bad_files:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"segmented {len(result.files)} image(s) in {result.seconds:.1f}s -> {result.out_dir} "
          f"(pixel_shares.csv, legend.png)")
    return 0 if result.files else 1


# --------------------------------------------------------------------------- main
COMMANDS = ["train", "evaluate", "predict", "models", "summary", "audit", "augment-preview", "compare", "report",
            "explain", "activations", "filters", "segment"]


def build_parser() -> argparse.ArgumentParser:
    from vislab import __version__

    parser = argparse.ArgumentParser(
        prog="vislab", formatter_class=_Formatter, allow_abbrev=False,
        description="Image-classification workbench on PyTorch: train, evaluate, explain, compare.\n"
                    "Every command makes or reads a run folder.")
    parser.add_argument("--version", action="version", version=f"vislab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        globals()[f"_add_{name.replace('-', '_')}"](sub)
    return parser


def _reject_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """Unrecognised arguments: the subcommand's usage and, for a mistyped flag, the closest one."""
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = [flag for action in sub._actions for flag in action.option_strings if flag.startswith("--")]
    for token in unknown:
        if token.startswith("-"):
            close = difflib.get_close_matches(token.split("=", 1)[0], flags, n=1, cutoff=0.6)
            if close:
                sub.error(f"unrecognized argument {token}: did you mean {close[0]}? (vislab {command} --help)")
    sub.error(f"unrecognized arguments: {' '.join(unknown)} (vislab {command} --help lists the options)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _reject_unknown(parser, args.command, unknown)
    handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
    from vislab.core.errors import USER_ERRORS

    try:
        return handler(args) or 0
    except USER_ERRORS as exc:
        print(f"vislab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vislab {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``vislab`` command: :func:`main`, then exit without the interpreter's teardown.

    Everything is written and closed by then; what the teardown would do is free
    torch's and the modules' memory, which took 1.3-2 s after the last line of a
    training run on the 2-core machine. ``main`` itself returns normally for callers.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
