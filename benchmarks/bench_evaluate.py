"""Benchmark: `vislab evaluate` on the 10,000 Fashion-MNIST test images, figures and report included.

Quality bar: under 60 s on a 2-core CPU. The small CNN is trained briefly
first (not timed) so the figures show a real model; only the evaluation is timed:
predictions, metrics, every figure, misclassified.csv and report.html.

Usage:
    python benchmarks/bench_evaluate.py                 # train a small CNN, then time evaluate
    python benchmarks/bench_evaluate.py --run RUN_DIR   # time evaluate of an existing run
    python benchmarks/bench_evaluate.py --metrics-only  # the metrics alone (scikit-learn's part), 10 and 100 classes

Prints one JSON line: machine, versions, seconds, accuracy. Needs Debian's
``dataset-fashion-mnist`` files (/usr/share/datasets/fashion-mnist/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, machine  # noqa: E402


def versions() -> dict:
    import matplotlib
    import numpy
    import sklearn
    import torch

    import vislab

    return {"vislab": vislab.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "sklearn": sklearn.__version__, "matplotlib": matplotlib.__version__}


def train_small_cnn(out: Path, data_dir: str, per_class: int = 300) -> Path:
    """A quick, small CNN on a slice of the training set; the run folder is what is evaluated."""
    from vislab.core.config import resolve_config
    from vislab.train.loop import train_run

    cfg = resolve_config(None, {
        "data.source": "fashion-mnist", "data.data_dir": data_dir, "data.max_per_class": per_class,
        "model.name": "chollet_convnet", "train.epochs": 1, "out": str(out), "seed": 0,
    })
    train_run(cfg, progress=False)
    return out


def test_slice(run_dir: Path, per_class: int):
    """The run's data set with its test split cut to the first ``per_class`` images of each class."""
    import numpy as np

    from vislab.data.sources import load_dataset
    from vislab.runs import read_config

    cfg = read_config(run_dir)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    test = dataset.splits["test"]
    labels = test.labels.numpy()
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))
    dataset.splits["test"] = test.subset(keep, "test")
    return dataset


def metrics_seconds(classes: int, images: int, repeat: int) -> dict:
    """``classification_metrics`` (every number and curve of metrics.json) on seeded random probabilities
    whose argmax is right about 70 % of the time: median seconds of ``repeat`` calls, in this process
    (a run computes them in its helper interpreter, beside the explanation panels)."""
    import statistics

    import numpy as np

    from vislab.tasks.classification_metrics import classification_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, images)
    logits = rng.normal(size=(images, classes)) + 2.5 * np.eye(classes)[y]
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    names = [f"class{i}" for i in range(classes)]
    classification_metrics(y, probs, names)  # first call: imports, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        classification_metrics(y, probs, names)
        times.append(time.perf_counter() - start)
    return {"benchmark": "classification_metrics", "classes": classes, "images": images, "repeat": repeat,
            "seconds": round(statistics.median(times), 3), "machine": machine(), "versions": versions()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="existing Fashion-MNIST run folder to evaluate")
    parser.add_argument("--data-dir", default=FMNIST_DIR, help="folder with the Fashion-MNIST idx files")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-per-class", type=int, default=300, help="training images per class of the small CNN")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="evaluate on the first N test images of each class (default: all 10,000)")
    parser.add_argument("--metrics-only", action="store_true",
                        help="time the metrics alone on seeded random predictions (10 and 100 classes)")
    parser.add_argument("--repeat", type=int, default=5, help="--metrics-only: calls per size (median)")
    args = parser.parse_args(argv)
    if args.metrics_only:
        for classes in (10, 100):
            print(json.dumps(metrics_seconds(classes, 10_000, args.repeat)), flush=True)
        return 0
    if not Path(args.data_dir).is_dir():
        print(f"bench_evaluate: {args.data_dir} not found; install Debian's dataset-fashion-mnist "
              "or pass --data-dir", file=sys.stderr)
        return 2

    from vislab.pipelines import run_evaluation as evaluate_run

    with tempfile.TemporaryDirectory(prefix="vislab-bench-eval-") as tmp:
        run_dir = (Path(args.run) if args.run else
                   train_small_cnn(Path(tmp) / "run", args.data_dir, args.train_per_class))
        dataset = test_slice(run_dir, args.test_per_class) if args.test_per_class else None
        start = time.perf_counter()
        metrics = evaluate_run(run_dir, dataset=dataset, batch_size=args.batch_size, device="cpu", figures=True,
                               report=True)
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
