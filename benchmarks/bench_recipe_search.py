"""The search behind the fast and accurate recipes: Fashion-MNIST test accuracy of variants.

Each variant is one ``vislab train --data fashion-mnist ...`` command (60k train, 10k
test, seed 0 unless given). Accuracy is what this measures, not time: to get through
many variants on a 2-core machine the commands run two at a time with one thread each
(``OMP_NUM_THREADS=1``), so their epoch times are not the recipes' speed (that is
``bench_time_to_accuracy.py``). bf16 results can differ a little between thread counts,
so a variant's accuracy here and in a 2-thread run may differ by about 0.1 point.

Groups:

* ``lr`` -- the one-cycle peak learning rate at 3 and 4 epochs (what made 3 epochs enough
  for 92 %); fastnet with ``pool_early``;
* ``width`` -- a narrower stem, and ``pool_early`` against the original layout, at the
  old 5-epoch, 2e-3 setting;
* ``accurate`` -- the 94 % candidates: wider stages, more epochs, whole-pixel shifts.

One JSON line per variant: its arguments, test accuracy, epochs and seconds of training (or
the command's last error line; the script then exits 1).

Usage:
    python benchmarks/bench_recipe_search.py --group lr
    python benchmarks/bench_recipe_search.py --group accurate --parallel 1
    python benchmarks/bench_recipe_search.py --group width --variants 1 --vislab-args --max-per-class 10 --epochs 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, emit, fmnist_available, machine, versions, vislab_command  # noqa: E402

FLIPS_ONLY = ["--width-shift", "0", "--height-shift", "0", "--fill-mode", "nearest"]
GROUPS = {
    "lr": [
        ["--recipe", "fast", "--epochs", "3", "--lr", "0.004"],
        ["--recipe", "fast", "--epochs", "3", "--lr", "0.008"],
        ["--recipe", "fast", "--epochs", "3", "--lr", "0.008", "--seed", "1"],
        ["--recipe", "fast", "--epochs", "3", "--lr", "0.012"],
        ["--recipe", "fast", "--epochs", "4", "--lr", "0.003"],
        ["--recipe", "fast", "--epochs", "4", "--lr", "0.006"],
        ["--recipe", "fast", "--epochs", "4", "--lr", "0.01"],
    ],
    "width": [
        # --model-opt replaces the recipe's model options as a whole
        ["--recipe", "fast", "--epochs", "5", "--lr", "0.002", "--model-opt", "widths=[32,64,128]"],
        ["--recipe", "fast", "--epochs", "5", "--lr", "0.002"],
        ["--recipe", "fast", "--epochs", "5", "--lr", "0.002", "--model-opt", "widths=[16,64,128]"],
    ],
    "accurate": [
        ["--recipe", "accurate"],  # whole-pixel shifts of up to 1 px
        ["--recipe", "accurate", *FLIPS_ONLY],
        ["--recipe", "accurate", *FLIPS_ONLY, "--weight-decay", "0.2"],
        ["--recipe", "accurate", "--width-shift", "2", "--height-shift", "2"],
        ["--recipe", "accurate", "--width-shift", "2", "--height-shift", "2", "--epochs", "24"],
        ["--recipe", "fast", "--epochs", "36", "--lr", "0.005", "--width-shift", "2", "--height-shift", "2",
         "--fill-mode", "constant"],
    ],
}


def run(args: list[str], data_dir: str, extra: list[str] = ()) -> dict:
    out = Path(tempfile.mkdtemp(prefix="vislab-search-")) / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*vislab_command(), "train", "--data", "fashion-mnist", "--data-dir", data_dir, *args, *extra,
               "--out", str(out), "--no-progress"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return {"args": args, "error": done.stderr.strip().splitlines()[-1:]}
        metrics = json.loads((out / "metrics.json").read_text())
        with open(out / "history.csv") as f:
            history = list(csv.DictReader(f))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return {"args": args, "test_accuracy": metrics["accuracy"], "epochs": len(history),
            "training_s": round(sum(float(h["seconds"]) for h in history), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=sorted(GROUPS), action="append", help="variants to run (repeatable)")
    parser.add_argument("--parallel", type=int, default=2, help="commands at a time, one thread each")
    parser.add_argument("--data-dir", default=FMNIST_DIR)
    parser.add_argument("--variants", type=int, default=None, metavar="N", help="only the first N variants")
    parser.add_argument("--vislab-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `vislab train` flags after each variant's, e.g. --max-per-class 100 (must come last)")
    args = parser.parse_args(argv)
    if not fmnist_available(args.data_dir):
        print(f"no Fashion-MNIST files in {args.data_dir}: apt-get install dataset-fashion-mnist "
              "or pass --data-dir", file=sys.stderr)
        return 1
    common = {"benchmark": "recipe_search", "threads_per_run": 1, "parallel": args.parallel,
              "machine": machine(), "versions": versions()}
    variants = [(group, v) for group in (args.group or ["lr"]) for v in GROUPS[group]][:args.variants]
    failed = 0
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        runs = pool.map(lambda gv: run(gv[1], args.data_dir, args.vislab_args), variants)
        for (group, variant), result in zip(variants, runs):
            emit({**common, "group": group, **result})
            failed += "error" in result
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
