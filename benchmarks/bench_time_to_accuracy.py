"""Benchmark: wall-clock from command start to the first epoch at 90/92/93/94/95% Fashion-MNIST test accuracy.

Two measurements, each one JSON line:

* ``curve`` -- ``vislab train`` with the *test* split used as the validation split, so
  every epoch's ``val_acc`` is the test accuracy; each epoch line is timestamped as the
  child prints it, from the moment the command was started (Python start-up, imports,
  data loading included). The per-epoch test evaluation is extra work the plain
  command does not do, so these times are upper bounds.
* ``cold`` -- the plain command, exactly as a user types it
  (``vislab train --data fashion-mnist --recipe fast --out DIR --no-progress``): wall
  time to exit (training on all 60k images, test evaluation, figures, report) and the
  test accuracy it wrote to metrics.json.

Usage:
    python benchmarks/bench_time_to_accuracy.py                       # fast recipe: curve + cold
    python benchmarks/bench_time_to_accuracy.py --mode cold --repeat 3
    python benchmarks/bench_time_to_accuracy.py --mode curve -- --recipe fast --epochs 30   # the 94% run
    python benchmarks/bench_time_to_accuracy.py -- --model fastnet --model-opt widths=[24,48,96]

Arguments after ``--`` go to ``vislab train`` (default ``--recipe fast``). Needs
Debian's dataset-fashion-mnist files (/usr/share/datasets/fashion-mnist/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, emit, fmnist_available, machine, versions, vislab_command  # noqa: E402

THRESHOLDS = (0.90, 0.92, 0.93, 0.94, 0.95)  # 0.95: the GPU target (None: not reached)
_EPOCH = re.compile(r"^epoch (\d+)/(\d+)\s.*?val_acc ([0-9.]+)")


def _child(argv: list[str]) -> int:
    """Run ``vislab train`` in this process with the test split standing in for validation."""
    import vislab.data.sources as sources
    from vislab.cli import main

    original = sources.load_dataset  # the task's load_dataset looks it up here at call time

    def test_as_val(cfg, seed=0, **options):
        dataset = original(cfg, seed=seed, **options)
        dataset.splits["val"] = dataset.splits["test"]
        return dataset

    sources.load_dataset = test_as_val  # benchmark-only: the library never evaluates on test while training
    return main(["train", *argv, "--val-split", "0"])


def curve(train_args: list[str], out: Path) -> dict:
    """Timestamps of every epoch's test accuracy, from the start of the command."""
    command = [sys.executable, __file__, "--child", "--", *train_args, "--out", str(out), "--no-progress",
               "--no-evaluate"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    epochs, tail = [], []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        match = _EPOCH.match(line.strip())
        if match:
            epochs.append({"epoch": int(match[1]), "test_acc": float(match[3]),
                           "wall_s": round(time.perf_counter() - start, 2)})
            print(f"  {line.strip()}  (wall {epochs[-1]['wall_s']}s)", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise RuntimeError("vislab train failed:\n" + "\n".join(tail))
    reached = {f"{t:.2f}": next((e["wall_s"] for e in epochs if e["test_acc"] >= t), None) for t in THRESHOLDS}
    return {"mode": "curve", "seconds_to_accuracy": reached, "epochs": epochs,
            "best_test_acc": max((e["test_acc"] for e in epochs), default=None),
            "wall_s": round(time.perf_counter() - start, 2)}


def cold(train_args: list[str], out: Path) -> dict:
    """The plain command: wall time to exit and the test accuracy in metrics.json."""
    command = [*vislab_command(), "train", *train_args, "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError("vislab train failed:\n" + proc.stdout[-3000:] + proc.stderr[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    history = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    return {"mode": "cold", "wall_s": round(wall, 2), "test_accuracy": metrics["accuracy"],
            "epochs": len(history), "training_s": _training_seconds(out)}


def _training_seconds(run_dir: Path) -> float | None:
    import csv

    path = run_dir / "history.csv"
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        return round(sum(float(row["seconds"]) for row in csv.DictReader(handle)), 2)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    if "--child" in own:
        return _child(passthrough)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["curve", "cold", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each mode (alternating)")
    parser.add_argument("--data-dir", default=FMNIST_DIR, help="folder with the Fashion-MNIST idx files")
    args = parser.parse_args(own)
    if not fmnist_available(args.data_dir):
        print(f"bench_time_to_accuracy: {args.data_dir} not found; install dataset-fashion-mnist "
              "or pass --data-dir", file=sys.stderr)
        return 2
    train_args = ["--data", "fashion-mnist", "--data-dir", args.data_dir, *(passthrough or ["--recipe", "fast"])]
    modes = ["curve", "cold"] if args.mode == "both" else [args.mode]
    info = {"machine": machine(), "versions": versions()}
    for rep in range(args.repeat):
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="vislab-tta-") as tmp:
                info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
                result = (curve if mode == "curve" else cold)(train_args, Path(tmp) / "run")
            emit({"benchmark": "time_to_accuracy", "repeat": rep,
                  "command": "vislab train " + " ".join(train_args), **result, **info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
