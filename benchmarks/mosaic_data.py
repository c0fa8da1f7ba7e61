"""Offline data for the multi-label and imbalance tests and benchmarks, made from Fashion-MNIST (seeded).

* :func:`write_mosaics`: 2 x 2 mosaics (56 x 56 px) of 1-4 Fashion-MNIST items; an image's labels
  are the set of item classes present. Test mosaics use only test-split items.
* :func:`write_long_tail`: a class-per-folder set whose training classes fall geometrically
  from ``head`` images to ``tail`` (2,000 down to 10), with the balanced test split.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> train_csv, test_csv = write_mosaics(Path(tempfile.mkdtemp()), 20, 10, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

FMNIST = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FMNIST / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def _mosaics(folder: Path, split: str, count: int, rng, classes: list[int], max_items: int = 4) -> list[list[str]]:
    images, labels = fashion(split)
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        n = int(rng.integers(1, max_items + 1))
        cells = rng.permutation(4)[:n]
        canvas = np.zeros((56, 56), np.uint8)
        present = set()
        for cell in cells:
            c = int(rng.choice(classes))
            item = images[int(rng.choice(by_class[c]))]
            r, q = divmod(int(cell), 2)
            canvas[r * 28:(r + 1) * 28, q * 28:(q + 1) * 28] = item
            present.add(NAMES[c])
        name = f"{split}_{i:05d}.png"
        Image.fromarray(canvas).save(folder / name)
        rows.append([name, " ".join(sorted(present))])
    return rows


def write_mosaics(root: Path, train: int, test: int, seed: int = 0, classes=None) -> tuple[Path, Path]:
    """``root/labels.csv`` (train mosaics) and ``root/test.csv`` (test mosaics: test-split items only)."""
    rng = np.random.default_rng(seed)
    classes = list(range(10)) if classes is None else list(classes)
    paths = []
    for split, count, csv_name in (("train", train, "labels.csv"), ("test", test, "test.csv")):
        rows = _mosaics(root / split, split, count, rng, classes)
        path = root / csv_name
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "labels"])
            writer.writerows([[f"{split}/{name}", labels] for name, labels in rows])
        paths.append(path)
    return paths[0], paths[1]


def long_tail_counts(head: int = 2000, tail: int = 10, classes: int = 10) -> list[int]:
    """Geometric counts from ``head`` down to ``tail`` over ``classes`` classes."""
    return [int(round(head * (tail / head) ** (c / (classes - 1)))) for c in range(classes)]


def write_long_tail(root: Path, head: int = 2000, tail: int = 10, seed: int = 0, test_per_class: int | None = None):
    """``root/train/<class>/*.png`` long-tailed, ``root/test/<class>/*.png`` balanced (Fashion-MNIST's test split)."""
    rng = np.random.default_rng(seed)
    counts = long_tail_counts(head, tail)
    for split in ("train", "test"):
        images, labels = fashion(split)
        for c, name in enumerate(NAMES):
            members = np.flatnonzero(labels == c)
            take = counts[c] if split == "train" else (test_per_class or len(members))
            chosen = rng.permutation(members)[:take]
            folder = root / split / f"{c}_{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(images[i]).save(folder / f"{i}.png")
    return counts
