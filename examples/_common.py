"""What the examples share (not vislab's API): their command line, output folder, sanity floors,
result tables and the offline stand-ins that ``--smoke`` uses.

Every example is ``get_args_parser()`` + ``main(args)``, run through :func:`run`, which turns a
vislab error (a wrong path, an unknown model, an offline download) or a missed floor into one
message and exit status 1, never a traceback.

Stand-ins for ``--smoke`` (each one is printed as a ``smoke:`` line when it is used):

* :func:`random_torchvision_weights`: a torchvision architecture with random weights, saved as
  safetensors once (in ``$VISLAB_CACHE/example-weights``), then read back by vislab's ``--weights``
  loader, the code a user's downloaded torchvision file goes through;
* :func:`tiny_hf_vit`: a small ViT with random weights written by ``save_pretrained``, the folder
  ``huggingface-cli download`` gives, loaded through ``hf:FOLDER``;
* :func:`fashion`, :func:`write_images`: real Fashion-MNIST images written as the files a
  tutorial's data set comes in (class folders, a CSV of ids).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MARKER = ".vislab-example"  # written into --out, so a rerun may clear the folder it made itself
LITE0_NOTE = "the shipped ImageNet EfficientNet-Lite0 (real weights, offline) stands in for {what}"


class CheckFailed(Exception):
    """A printed number fell below its stated floor: the example no longer does what it says."""


# --------------------------------------------------------------------------- command line
def get_args_parser(doc: str, name: str, data: str | None = None) -> argparse.ArgumentParser:
    """The options every example takes: --smoke, --out, --device, --seed; ``data`` (what it is) adds --data,
    the folder full mode reads (see :func:`full_data`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if data:
        parser.add_argument("--data", type=Path, help=f"{data} (full mode)")
    parser.add_argument("--smoke", action="store_true",
                        help="run in seconds on offline data and stand-ins (each is said in the output)")
    parser.add_argument("--out", type=Path, default=Path("runs/examples") / name,
                        help="folder for the run folders and figures (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(main, argv=None) -> None:
    """Run ``main(argv)`` and exit: 0, or 1 with one message for a user error or a missed floor."""
    import warnings

    from vislab.core.errors import USER_ERRORS

    def one_line(message, category, filename, lineno, file=None, line=None):  # as `vislab` prints warnings:
        print(f"warning: {message}", file=sys.stderr)                         # no source file, no code line

    warnings.showwarning = one_line
    code = 0
    try:
        main(argv)
    except (CheckFailed, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as the vislab command does: skip the interpreter's slow teardown of torch


def start(args, title: str, *smoke: str) -> Path:
    """Print the title, the machine and (in smoke mode) each ``smoke`` substitution, and make ``args.out``
    ready (a folder this example wrote before is cleared; any other non-empty folder is refused)."""
    from vislab.core.errors import ConfigError

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ConfigError(f"--out {out} is not empty and was not written by an example; "
                              "give a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by a vislab example; it clears this folder when it runs again\n")
    print(f"{title} ({'smoke' if args.smoke else 'full'} mode) -> {out}")
    print(f"machine: {machine()}")
    for text in smoke if args.smoke else ():
        print(f"smoke: {text}")
    return out


def machine() -> str:
    """CPU model (lscpu's model name), usable cores, the load when it started, torch, and the GPU if any."""
    import torch

    info = _benchmark_module("_common").machine()  # the benchmarks' record of the machine
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{info['cpu']}, {info['cores']} cores, load {info['load_1min']}, torch {torch.__version__}{gpu}"


def full_data(args, what: str) -> Path:
    """``--data``, which full mode needs: a clear error without it."""
    from vislab.core.errors import ConfigError

    if args.data is None:
        raise ConfigError(f"full mode needs --data {what}, or run with --smoke")
    return args.data


def speed(args, training: bool = True) -> dict:
    """Options that only make a smoke run faster: fp32 without the speed probe and, for training, no
    DataLoader worker processes (the smoke sets are a few hundred small images)."""
    if not args.smoke:
        return {"device": args.device}
    return {"device": args.device, "precision": "fp32", **({"workers": 0} if training else {})}


# --------------------------------------------------------------------------- floors and tables
class Checks:
    """The floors a run's printed numbers must clear; :meth:`verify` fails the example if one is missed.

    Example:
        >>> checks = Checks()
        >>> checks.at_least("mlp test accuracy", 0.91, 0.8)
        check mlp test accuracy: 0.91 >= 0.8  ok
        >>> checks.verify()
        all 1 checks passed
    """

    def __init__(self):
        self.failed: list[str] = []
        self.count = 0

    def that(self, what: str, ok: bool, detail: str) -> None:
        self.count += 1
        print(f"check {what}: {detail}  {'ok' if ok else 'FAILED'}")
        if not ok:
            self.failed.append(f"{what}: {detail}")

    def at_least(self, what: str, value: float, floor: float) -> None:
        self.that(what, value is not None and value >= floor, f"{_number(value)} >= {floor:g}")

    def at_most(self, what: str, value: float, ceiling: float) -> None:
        self.that(what, value is not None and value <= ceiling, f"{_number(value)} <= {ceiling:g}")

    def verify(self) -> None:
        if self.failed:
            raise CheckFailed("below the stated floor: " + "; ".join(self.failed))
        print(f"all {self.count} checks passed")


def _number(value) -> str:
    return "None" if value is None else f"{value:.4g}"


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    """A plain aligned text table (numbers to 4 significant digits), one row per dict."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print()


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def leaderboard(run_dirs, out: Path, title: str = "test_metrics") -> list[dict]:
    """``vislab compare`` over ``run_dirs``: print the table, write leaderboard.csv/.png into ``out``."""
    import vislab.api as api

    rows, csv_path, png_path = api.compare(run_dirs, out=out)
    keys = [k for k in ("accuracy", "map", "miou") if any(r.get(k) is not None for r in rows)]
    print_table(title, rows, ["run", "model", "epochs", "train_seconds", *keys, "macro_f1", "loss"])
    print(f"wrote {csv_path} and {png_path}")
    return rows


def confusion_matrix_figure(run_dir: Path) -> Path:
    """RUN/plots/confusion_matrix.png from the run's metrics_curves.json: the one evaluation figure a smoke
    run draws (a run trained with figures draws it among the others)."""
    import json

    from vislab.viz.evaluation import plot_confusion_matrix

    curves = json.loads((Path(run_dir) / "metrics_curves.json").read_text())
    names = json.loads((Path(run_dir) / "model.json").read_text())["class_names"]
    return plot_confusion_matrix(curves["confusion_matrix"], names, Path(run_dir) / "plots" / "confusion_matrix.png")


# --------------------------------------------------------------------------- offline data
def _benchmark_module(name: str):
    """A module of benchmarks/ (the offline data generators, the machine record), loaded from its file
    without putting benchmarks/ on sys.path (its _common would shadow this one)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def mosaic_data():
    """benchmarks/mosaic_data.py: Fashion-MNIST multi-label mosaics and a long-tailed class-folder set."""
    return _benchmark_module("mosaic_data")


@functools.cache
def _fashion_pool(split: str):
    """One split of Fashion-MNIST, decompressed once per process."""
    from vislab.core.errors import DataError

    module = mosaic_data()
    if not (module.FMNIST / "train-images-idx3-ubyte.gz").exists():
        raise DataError(f"--smoke reads Fashion-MNIST from {module.FMNIST}: apt-get install dataset-fashion-mnist")
    return module.fashion(split)


def fashion(split: str = "train", per_class: int | None = None, classes=None, seed: int = 0):
    """Fashion-MNIST (Debian's dataset-fashion-mnist files) as (N, 28, 28) uint8 images and 0..9 labels;
    ``per_class`` images of each of ``classes`` (a seeded draw)."""
    images, labels = _fashion_pool(split)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in (classes or range(10))]
    keep = np.concatenate(keep)
    return images[keep], labels[keep]


FASHION_NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def fashion_folders(root: Path, counts: dict, classes=None, names=FASHION_NAMES, seed: int = 0,
                    ext: str = ".png") -> Path:
    """Fashion-MNIST as class folders ``root/SPLIT/NAME/N.png``, ``counts[SPLIT]`` images per class: the
    test split from Fashion-MNIST's test items, the others from its training items, none in two splits."""
    classes = list(classes or range(10))
    for pool, splits in (("train", [s for s in counts if s != "test"]), ("test", [s for s in counts if s == "test"])):
        if not splits:
            continue
        per_class = sum(counts[s] for s in splits)
        images, labels = fashion(pool, per_class=per_class, classes=classes, seed=seed)
        for c, label in enumerate(classes):  # fashion() returns the classes' draws one after another
            start = c * per_class
            for split in splits:
                chunk = slice(start, start + counts[split])
                write_images(root / split / names[label], images[chunk],
                             [f"{pool}{start + i}" for i in range(counts[split])], ext)
                start += counts[split]
    return Path(root)


def write_images(folder: Path, images, names, ext: str = ".png") -> list[Path]:
    """Write each image as ``folder/NAME.ext`` (NAME may hold sub-folders); returns the paths."""
    from PIL import Image

    paths = []
    for image, name in zip(images, names):
        path = Path(folder) / f"{name}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image)).save(path)
        paths.append(path)
    return paths


def photos(out: Path, names) -> list[Path]:
    """scikit-image's photos as PNG files (offline)."""
    import skimage.data

    return write_images(out, [getattr(skimage.data, n)() for n in names], names)


def link_files(pairs, hint: str) -> None:
    """Symlink each (source, destination), making folders; a missing source is a DataError naming ``hint``."""
    from vislab.core.errors import DataError

    for source, destination in pairs:
        source, destination = Path(source), Path(destination)
        if not source.is_file():
            raise DataError(f"{source} is missing: {hint}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source.resolve(), destination)


# --------------------------------------------------------------------------- offline models
def _cache(sub: str) -> Path:
    folder = Path(os.environ.get("VISLAB_CACHE", Path.home() / ".cache" / "vislab")) / sub
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def random_torchvision_weights(name: str, **options) -> Path:
    """``torchvision.models.NAME(weights=None)`` (seed 0) saved as safetensors, once per torchvision version:
    the layout of torchvision's published file, for ``--weights`` where nothing can be downloaded."""
    from importlib.metadata import version

    path = _cache("example-weights") / f"{name}-random-seed0-torchvision{version('torchvision')}.safetensors"
    if not path.exists():
        import torch
        import torchvision
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None, **options)
        partial = path.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
        os.replace(partial, path)
    return path


def tiny_hf_vit(folder: Path, image_size: int = 32) -> Path:
    """A 2-layer ViTForImageClassification with random weights and its image processor, written by
    ``save_pretrained``: the folder layout of ``huggingface-cli download google/vit-base-patch16-224-in21k``."""
    import torch
    import transformers

    config = transformers.ViTConfig(image_size=image_size, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=128)
    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar for a 300 kB file
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(folder)
    return folder
