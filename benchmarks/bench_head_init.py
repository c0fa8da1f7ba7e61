"""A pretrained model's new classifier: zero (vislab's) against timm's initialisation.

A few Fashion-MNIST images per class (``--train-per-class``, 40 by default; the test images
``--test-per-class`` of each class) are written as PNG class folders, and the user's command runs on
them through the CLI, once per side and seed:

    vislab train --data DIR --model efficientnet_lite0 --pretrained --freeze backbone --cache-features
                 --epochs E [--finetune-last N]

* ``zero``: as shipped: the classifier that no checkpoint filled starts at zero
  (``vislab.models.pretrained.start_new_head``);
* ``timm``: the same command with ``start_new_head`` turned into a no-op, so the classifier keeps
  the initialisation timm gives it (EfficientNet's: uniform +-1/sqrt(classes)).

``--finetune-last N`` fine-tunes the last N blocks instead of the frozen backbone's head alone (no
``--cache-features`` then). One JSON line per run (test accuracy, first epoch's training loss,
seconds), then one per side with the mean; every line records the CPU model, the effective ISA and
the load average. Needs Debian's dataset-fashion-mnist and the shipped EfficientNet-Lite0 weights.

    python benchmarks/bench_head_init.py                           # 400 images, 15 epochs, seeds 0-2
    python benchmarks/bench_head_init.py --finetune-last 2 --epochs 6 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, REPO, emit, fmnist_available, machine, versions  # noqa: E402

# the timm side: the CLI in a child whose start_new_head does nothing
TIMM_SIDE = ("import sys; import vislab.models.pretrained as p; p.start_new_head = lambda model, keys: None; "
             "from vislab.cli import main; sys.exit(main(sys.argv[1:]))")


def write_selection(root: Path, train_per_class: int, test_per_class: int, seed: int) -> Path:
    """root/train/<class>/ and root/test/<class>/ PNGs of a seeded selection of Fashion-MNIST."""
    from PIL import Image

    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset

    data = load_dataset(DataConfig(source="fashion-mnist", data_dir=FMNIST_DIR, val_split=0)).splits
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        images, labels = data[split].images[:, 0].numpy(), data[split].labels.numpy()
        for c in range(10):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(labels == c), count, replace=False):
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    return root


def run(side: str, data: Path, out: Path, args, seed: int) -> dict:
    flags = ["train", "--data", str(data), "--model", "efficientnet_lite0", "--pretrained", "--epochs",
             str(args.epochs), "--seed", str(seed), "--out", str(out), "--no-progress", "--no-figures"]
    flags += ["--finetune-last", str(args.finetune_last)] if args.finetune_last else ["--freeze", "backbone",
                                                                                      "--cache-features"]
    command = [sys.executable, "-m", "vislab", *flags] if side == "zero" else [sys.executable, "-c", TIMM_SIDE,
                                                                                *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"),
                                                                       os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench_head_init: the {side} side failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv") as handle:
        first = next(csv.DictReader(handle))
    return {"test_accuracy": round(metrics["accuracy"], 4), "first_epoch_train_loss": round(float(first["train_loss"]), 4),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="selections of the images (and the runs' seeds)")
    parser.add_argument("--finetune-last", type=int, default=0, help="fine-tune the last N blocks (0: frozen backbone)")
    args = parser.parse_args()
    if not fmnist_available():
        sys.exit(f"bench_head_init: needs Fashion-MNIST in {FMNIST_DIR} (apt install dataset-fashion-mnist)")
    results: dict[str, list[float]] = {"zero": [], "timm": []}
    with tempfile.TemporaryDirectory(prefix="vislab-bench-head-") as tmp:
        for seed in args.seeds:
            data = write_selection(Path(tmp) / f"data{seed}", args.train_per_class, args.test_per_class, seed)
            for side in ("zero", "timm") if seed % 2 == 0 else ("timm", "zero"):  # alternating which goes first
                row = run(side, data, Path(tmp) / f"{side}{seed}", args, seed)
                results[side].append(row["test_accuracy"])
                emit({"benchmark": "head_init", "side": side, "seed": seed, "train_per_class": args.train_per_class,
                      "test_per_class": args.test_per_class, "epochs": args.epochs,
                      "finetune_last": args.finetune_last, **row, "machine": machine(), "versions": versions()})
    for side, values in results.items():
        emit({"benchmark": "head_init_mean", "side": side, "seeds": args.seeds, "finetune_last": args.finetune_last,
              "epochs": args.epochs, "test_accuracy_mean": round(float(np.mean(values)), 4),
              "test_accuracies": values, "machine": machine(), "versions": versions()})


if __name__ == "__main__":
    main()
