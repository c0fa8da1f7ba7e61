"""Same seed, same numbers: fingerprints of two fixed-seed CPU training runs.

The refactor that introduced the task layer had to leave every number
unchanged. This script trains two small runs with a fixed seed on the CPU, in fp32
and on one thread (so the kernels' reduction order is fixed), and prints a
fingerprint of each: the SHA-256 of model.safetensors and of history.csv without
its wall-clock ``seconds`` and its ``lr`` column (which now logs the rate each epoch trained at;
before, the schedule's next rate).

    python benchmarks/check_same_results.py                 # this checkout
    python benchmarks/check_same_results.py --base 890191b  # this checkout, then BASE (git archive), compared

Fingerprints are compared on one machine only: kernels differ between CPU generations and
instruction-set limits, so bit-exact weights are not portable. ``tests/test_same_results.py``
checks that two fresh runs here give the same fingerprint; ``--base`` checks that a change
left the numbers of an older commit as they were, on this machine.

Runs:
- ``fast-fmnist``: one epoch of ``--recipe fast`` on Fashion-MNIST at 200 images per class
  (needs Debian's dataset-fashion-mnist);
- ``chollet-digits``: chollet_convnet on scikit-learn's digits, 2 epochs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

RUNS = {
    "fast-fmnist": {"recipe": "fast", "data.source": "fashion-mnist", "data.max_per_class": 200,
                    "data.test_split": 0.0, "train.epochs": 1},
    "chollet-digits": {"data.source": "digits", "model.name": "chollet_convnet", "train.epochs": 2,
                       "train.batch_size": 64, "train.lr": 3e-3},
}
COMMON = {"train.device": "cpu", "train.precision": "fp32", "seed": 0}


def fingerprint(run_dir: Path) -> dict:
    weights = hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = io.StringIO()
    for row in rows:
        # wall-clock seconds vary; lr is left out since its meaning changed (the epoch's own rate, not the
        # schedule's next one): the weights' hash pins what the schedule did
        out.write(",".join(f"{k}={v}" for k, v in row.items() if k not in ("seconds", "lr")) + "\n")
    return {"weights": weights, "history": hashlib.sha256(out.getvalue().encode()).hexdigest(),
            "epochs": len(rows)}


def run_here(name: str, out_root: Path) -> dict:
    """Train RUNS[name] with the vislab importable in this process."""
    import torch

    torch.set_num_threads(1)
    try:
        from vislab.core.config import resolve_config
    except ImportError:  # the layout before the task layer
        from vislab.config import resolve_config
    try:
        from vislab.train.loop import train_run
    except ImportError:  # the name before the public API took `fit`
        from vislab.train.loop import fit as train_run

    overrides = {**RUNS[name], **COMMON, "out": str(out_root / name)}
    if name == "fast-fmnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        return {"skipped": "no /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)"}
    import inspect

    kwargs = {"evaluate": False} if "evaluate" in inspect.signature(train_run).parameters else {}
    train_run(resolve_config(overrides=overrides), progress=False, **kwargs)
    return fingerprint(out_root / name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="a git commit to compare against (built from git archive)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.child:
            print(json.dumps({name: run_here(name, Path(tmp)) for name in args.runs}))
            return 0
        here = _in_child(Path(__file__).resolve().parents[1] / "src", args.runs)
        result = {"bench": "same_results", "machine": machine(), "head": here}
        if args.base:
            src = Path(tmp) / "base"
            src.mkdir()
            archive = subprocess.run(["git", "archive", args.base, "src"], capture_output=True, check=True,
                                     cwd=Path(__file__).resolve().parents[1]).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            result["base"] = _in_child(src / "src", args.runs)
            result["same"] = all(result["base"][n] == here[n] for n in args.runs)
        print(json.dumps(result), flush=True)
        return 0 if result.get("same", True) else 1


def _in_child(src: Path, runs) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", "--runs", *runs], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training under {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
