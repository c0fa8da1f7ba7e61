"""``vislab train`` with no flags but the data: the default recipe's table, cold start to exit.

Each row runs ``python -m vislab train --data DATA [--task TASK] [--test-csv ...]`` in a fresh
process (nothing else: ``--recipe auto`` picks the rest) and times it from spawn to exit. One JSON
line per row: the test headline (accuracy, mIoU or mAP), the target, whether it was met, wall
seconds, the epochs, the recipe's one line (from config.yaml), the CPU model, the kernels' ISA and
the load average before and after (a loaded machine inflates every time; the accuracies are not).

Rows (the data is written to ``--workdir`` first, outside the timed window):

| row | data | target |
|---|---|---|
| digits | the built-in digits | accuracy >= 0.985 in <= 60 s |
| fmnist6000 | train/: 6,000 Fashion-MNIST images (600 a class), test/: 2,000 | >= 0.88 in <= 90 s |
| fmnist400 | train/: 400 images (40 a class), test/: 2,000 | >= 0.80 in <= 300 s |
| segmentation | ``make_segmentation_data``: 1,500 train / 300 test composites, 72 px | mIoU >= 0.55 in <= 600 s |
| mosaics | 2x2 mosaics (mosaic_data.py), 3,000 train / 500 test, multi-label CSV | mAP >= 0.90 in <= 600 s |

Usage (on a quiet machine; the targets are for a 2-core CPU):
    python benchmarks/bench_auto_recipe.py                         # every row
    python benchmarks/bench_auto_recipe.py --rows digits fmnist400
    python benchmarks/bench_auto_recipe.py --tiny                  # plumbing check: tiny data, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, REPO, emit, machine, vislab_command  # noqa: E402

# row -> (headline metric, target value, target seconds)
TARGETS = {"digits": ("accuracy", 0.985, 60), "fmnist6000": ("accuracy", 0.88, 90),
           "fmnist400": ("accuracy", 0.80, 300), "segmentation": ("miou", 0.55, 600),
           "mosaics": ("map", 0.90, 600)}
FULL = {"fmnist6000": (600, 200), "fmnist400": (40, 200), "segmentation": (1500, 300), "mosaics": (3000, 500)}
TINY = {"fmnist6000": (12, 4), "fmnist400": (10, 4), "segmentation": (12, 6), "mosaics": (60, 20)}


def class_folder(root: Path, per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """train/CLASS/*.png (``per_class`` each, a seeded choice from the train split) and test/CLASS/*.png."""
    import numpy as np
    from PIL import Image

    from mosaic_data import NAMES, fashion

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
        images, labels = fashion(split)
        for c, name in enumerate(NAMES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            picked = rng.choice(np.flatnonzero(labels == c), count, replace=False)
            for i in picked:
                Image.fromarray(images[i]).save(folder / f"{i}.png")
    return root


def prepare(row: str, work: Path, sizes: dict) -> list[str]:
    """Write the row's data under ``work``; returns its ``vislab train`` data arguments."""
    if row == "digits":
        return ["--data", "digits"]
    if row in ("fmnist6000", "fmnist400"):
        per_class, test = sizes[row]
        return ["--data", str(class_folder(work / row, per_class, test))]
    if row == "segmentation":
        from vislab.api import make_segmentation_data

        train, test = sizes[row]
        return ["--task", "segmentation", "--data", str(make_segmentation_data(work / row, train=train, test=test,
                                                                                size=72, seed=0))]
    if row == "mosaics":
        from mosaic_data import write_mosaics

        train, test = sizes[row]
        train_csv, test_csv = write_mosaics(work / row, train, test, seed=0)
        return ["--task", "multilabel", "--data", str(train_csv), "--test-csv", str(test_csv)]
    raise ValueError(row)


def run_row(row: str, data_args: list[str], out: Path, extra: list[str]) -> dict:
    command = [*vislab_command(), "train", *data_args, "--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    metric, target, seconds = TARGETS[row]
    metrics = json.loads((out / "metrics.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    value = metrics.get(metric)
    return {"bench": "auto_recipe", "row": row, "command": " ".join(command[2:]), metric: value,
            "target": {metric: target, "seconds": seconds},
            "met": value is not None and value >= target and wall <= seconds,
            "wall_s": round(wall, 1), "epochs": config["train"]["epochs"],
            "recipe": (config.get("recipe_choices") or {}).get("line"),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--workdir", default=None, help="where the data and runs go (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny data and --epochs 1 --no-figures: checks the plumbing, not the targets")
    args = parser.parse_args(argv)
    if any(row != "digits" for row in args.rows) and not Path(FMNIST_DIR).is_dir():
        raise SystemExit(f"{FMNIST_DIR} is missing (Debian's dataset-fashion-mnist); run --rows digits")
    sizes = TINY if args.tiny else FULL
    extra = ["--epochs", "1", "--no-figures"] if args.tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        for row in args.rows:
            data_args = prepare(row, work / "data", sizes)
            out = work / "runs" / row
            if out.exists():
                raise SystemExit(f"{out} exists: give another --workdir")
            emit(run_row(row, data_args, out, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
