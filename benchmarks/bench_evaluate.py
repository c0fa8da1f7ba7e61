"""Benchmark: `vislab evaluate` on the 10,000 Fashion-MNIST test images, figures and report included.

Quality bar (issue 3): under 60 s on a 2-core CPU. The small CNN is trained briefly
first (not timed) so the figures show a real model; only the evaluation is timed:
predictions, metrics, every figure, misclassified.csv and report.html.

Usage:
    python benchmarks/bench_evaluate.py                 # train a small CNN, then time evaluate
    python benchmarks/bench_evaluate.py --run RUN_DIR   # time evaluate of an existing run

Prints one JSON line: machine, versions, seconds, accuracy. Needs Debian's
``dataset-fashion-mnist`` files (/usr/share/datasets/fashion-mnist/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": usable, "system": platform.system(), "python": platform.python_version()}


def versions() -> dict:
    import matplotlib
    import numpy
    import sklearn
    import torch

    import vislab

    return {"vislab": vislab.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "sklearn": sklearn.__version__, "matplotlib": matplotlib.__version__}


def train_small_cnn(out: Path, data_dir: str) -> Path:
    """A quick, small CNN on a slice of the training set; the run folder is what is evaluated."""
    from vislab.core.config import resolve_config
    from vislab.train.loop import train_run

    cfg = resolve_config(None, {
        "data.source": "fashion-mnist", "data.data_dir": data_dir, "data.max_per_class": 300,
        "model.name": "chollet_convnet", "train.epochs": 1, "out": str(out), "seed": 0,
    })
    train_run(cfg, progress=False)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="existing Fashion-MNIST run folder to evaluate")
    parser.add_argument("--data-dir", default=FMNIST_DIR, help="folder with the Fashion-MNIST idx files")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(f"bench_evaluate: {args.data_dir} not found; install Debian's dataset-fashion-mnist "
              "or pass --data-dir", file=sys.stderr)
        return 2

    from vislab.pipelines import run_evaluation as evaluate_run

    with tempfile.TemporaryDirectory(prefix="vislab-bench-eval-") as tmp:
        run_dir = Path(args.run) if args.run else train_small_cnn(Path(tmp) / "run", args.data_dir)
        start = time.perf_counter()
        metrics = evaluate_run(run_dir, batch_size=args.batch_size, device="cpu", figures=True, report=True)
        seconds = time.perf_counter() - start
        plots = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
        report_bytes = (run_dir / "report.html").stat().st_size
    print(json.dumps({
        "benchmark": "evaluate_fashion_mnist_test",
        "images": metrics.get("num_samples"),
        "seconds": round(seconds, 2),
        "limit_seconds": 60,
        "accuracy": round(metrics["accuracy"], 4),
        "figures": len(plots),
        "report_bytes": report_bytes,
        "machine": machine(),
        "versions": versions(),
        "torch_threads": __import__("torch").get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
