"""Label issues on planted noise: `vislab audit --label-issues` against a raw-pixel baseline.

Fashion-MNIST training images (``--per-class`` of each class, 300 by default: 3,000 images) are
written as PNGs into class folders; ``--noise`` of them (6 %) are moved into another, random class's
folder. Both sides then rank the images whose label is probably wrong with cleanlab:

* ``vislab``: ``api.audit(DIR, label_issues=True)``: out-of-fold probabilities from the models
  vislab picks for the images (28 px Fashion-MNIST: the mean of a small CNN per fold and logistic
  regressions on the shipped EfficientNet-Lite0's features; larger images: the regressions alone);
* ``baseline``: cleanlab with its defaults (``filter_by="prune_by_noise_rate"``, ranked by
  self-confidence) on out-of-fold probabilities of a 5-fold logistic regression on raw pixels
  (scikit-learn, standardised pixels).

Per side, one JSON line: images flagged; precision of the top-k rows (k = the number planted);
recall (planted errors flagged); suggestion accuracy (flagged planted images whose suggested label
is the true one); seconds. Each line records the CPU model (lscpu), the effective ISA (torch's CPU
capability and ONEDNN_MAX_CPU_ISA), the load average and the torch version. The targets:
top-k precision >= 85 %, recall >= 85 %, suggestion accuracy >= 70 %, <= 10 minutes on 2 cores.

    python benchmarks/bench_label_issues.py                       # 3,000 images, 6 % planted
    python benchmarks/bench_label_issues.py --per-class 40        # a quick check that it runs

The feature cache is emptied first (``VISLAB_CACHE`` points at a fresh folder) so the time includes
the backbone pass; ``--warm-cache`` keeps ``$VISLAB_CACHE`` instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, emit, fmnist_available, machine, versions  # noqa: E402


def platform_record() -> dict:
    """CPU model (lscpu), the ISA the kernels use, load average, torch version."""
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                     None)
    except (OSError, subprocess.SubprocessError):
        model = None
    return {"cpu_model": model, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset: the CPU's best)"),
            "load_avg": [round(v, 2) for v in os.getloadavg()], "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def plant(out: Path, per_class: int, noise: float, seed: int) -> tuple[dict, list[str]]:
    """Write the PNG folders; returns {resolved path: true class name} of the planted images, and class names."""
    from PIL import Image

    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset

    data = load_dataset(DataConfig(source="fashion-mnist", data_dir=FMNIST_DIR, val_split=0, test_split=0), seed=0)
    train, names = data.splits["train"], data.class_names
    rng = np.random.default_rng(seed)
    labels = train.labels.numpy()
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                             for c in range(len(names))])
    planted_idx = set(rng.choice(chosen, int(round(noise * len(chosen))), replace=False).tolist())
    folders = [name.replace("/", "-") for name in names]
    planted = {}
    for i in chosen:
        given = int(labels[i])
        if i in planted_idx:
            given = int(rng.choice([c for c in range(len(names)) if c != labels[i]]))
        path = out / folders[given] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[i, 0].numpy()).save(path)
        if i in planted_idx:
            planted[str(path.resolve())] = folders[int(labels[i])]
    return planted, folders


def score(rows: list[dict], planted: dict) -> dict:
    """top-k precision, recall, suggestion accuracy of ranked rows (file, suggested)."""
    k = len(planted)
    top = rows[:k]
    found = [r for r in rows if r["file"] in planted]
    return {"planted": k, "flagged": len(rows),
            "top_k_precision": round(sum(r["file"] in planted for r in top) / max(k, 1), 4),
            "recall": round(len(found) / max(k, 1), 4),
            "suggestion_accuracy": round(sum(r["suggested"] == planted[r["file"]] for r in found) / max(len(found), 1), 4)}


def baseline(folder: Path, folds: int, seed: int) -> list[dict]:
    """cleanlab on out-of-fold probabilities of a logistic regression on raw pixels."""
    from cleanlab.filter import find_label_issues
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((folder / name).glob("*.png"))]
    x = np.stack([np.asarray(Image.open(f), dtype=np.float32).ravel() / 255 for f, _ in files])
    y = np.array([c for _, c in files])
    probs = np.zeros((len(y), len(classes)))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], y[train])
        probs[held] = model.predict_proba(x[held])
    order = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    others = probs.copy()
    others[np.arange(len(y)), y] = -1
    return [{"file": str(files[i][0].resolve()), "suggested": classes[int(others[i].argmax())]} for i in order]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.06, help="fraction of images moved to a wrong class")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rank-by", default="self_confidence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-cache", action="store_true", help="keep $VISLAB_CACHE (features may be cached)")
    parser.add_argument("--sides", nargs="+", default=["vislab", "baseline"], choices=["vislab", "baseline"])
    args = parser.parse_args(argv)
    if not fmnist_available():
        print(f"Fashion-MNIST not found in {FMNIST_DIR} (Debian: apt-get install dataset-fashion-mnist)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "planted"
        planted, _ = plant(folder, args.per_class, args.noise, args.seed)
        if not args.warm_cache:
            os.environ["VISLAB_CACHE"] = str(Path(tmp) / "cache")
        common = {"bench": "label_issues", "images": args.per_class * 10, "noise": args.noise, "folds": args.folds,
                  "machine": machine(), "platform": platform_record(), "versions": versions()}
        for side in args.sides:
            start = time.perf_counter()
            if side == "vislab":
                from vislab import api

                audit = api.audit(str(folder), out=Path(tmp) / "audit", label_issues=True, folds=args.folds,
                                  rank_by=args.rank_by, val_split=0, test_split=0, seed=args.seed)
                import csv

                with open(Path(audit["out"]) / "label_issues.csv") as handle:
                    rows = list(csv.DictReader(handle))
                extra = {"model": audit["label_issues"]["model"], "rank_by": args.rank_by,
                         "filter_by": audit["label_issues"]["filter_by"],
                         "out_of_fold_accuracy": audit["label_issues"]["out_of_fold_accuracy"],
                         "out_of_fold_accuracy_per_model": audit["label_issues"]["out_of_fold_accuracy_per_model"],
                         "feature_seconds": audit["label_issues"]["seconds"]["features"]}
            else:
                rows = baseline(folder, args.folds, args.seed)
                extra = {"model": "raw pixels + logistic regression", "rank_by": "self_confidence"}
            seconds = round(time.perf_counter() - start, 1)
            emit({**common, "side": side, **score(rows, planted), "seconds": seconds, **extra,
                  "platform": {**platform_record()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
