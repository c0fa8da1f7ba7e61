"""An offline segmentation set made of real images: Fashion-MNIST items pasted on a canvas.

Each composite is a ``size`` x ``size`` grey canvas with 1..``max_items`` Fashion-MNIST items
pasted at random places; the mask is the item's class (1..10) where its pixel is above
``threshold`` and background (0) elsewhere: 11 classes. A later item covers an earlier one.
It is seeded, and train composites use only Fashion-MNIST's train items, test composites only
its test items, so no garment is seen in both. The folder it writes is a ``--task
segmentation`` data set (``train/``, ``test/`` with ``images/`` and ``masks/``, plus
``classes.txt``); val is carved from train by ``--val-split``.

Example:
    >>> from vislab.data.composites import make_fashion_composites
    >>> make_fashion_composites("data/fashion-seg", train=2000, test=400, seed=0)   # doctest: +SKIP
    PosixPath('data/fashion-seg')

Then ``vislab train --task segmentation --data data/fashion-seg --model unet --pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vislab.data.sources import FASHION_CLASSES

COMPOSITE_CLASSES = ["background", *FASHION_CLASSES]


def composite(items: np.ndarray, labels: np.ndarray, rng: np.random.Generator, size: int = 64,
              max_items: int = 3, threshold: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size) uint8 image and its mask from a pool of (N, 28, 28) items and their 0..9 labels."""
    image = np.zeros((size, size), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    height, width = items.shape[1:]
    for _ in range(int(rng.integers(1, max_items + 1))):
        index = int(rng.integers(len(items)))
        top, left = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1))
        item = items[index]
        window = image[top:top + height, left:left + width]
        labelled = item > threshold
        window[:] = np.where(labelled, item, np.maximum(window, item))
        mask[top:top + height, left:left + width][labelled] = int(labels[index]) + 1
    return image, mask


def make_fashion_composites(out_dir, train: int = 2000, test: int = 400, size: int = 64, max_items: int = 3,
                            threshold: int = 40, seed: int = 0, data_dir: str | None = None) -> Path:
    """Write the composite set to ``out_dir`` (train/ and test/, images/ + masks/, classes.txt)."""
    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset

    source = load_dataset(DataConfig(source="fashion-mnist", data_dir=data_dir, val_split=0, test_split=0), seed=0)
    out = Path(out_dir)
    (out / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(COMPOSITE_CLASSES) + "\n")
    for offset, (split, count) in enumerate((("train", train), ("test", test))):
        pool = source.splits[split]
        items, labels = pool.images[:, 0].numpy(), pool.labels.numpy()
        rng = np.random.default_rng([seed, offset])
        for folder in ("images", "masks"):
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, mask = composite(items, labels, rng, size, max_items, threshold)
            Image.fromarray(image).save(out / split / "images" / f"{index:05d}.png")
            Image.fromarray(mask).save(out / split / "masks" / f"{index:05d}.png")
    return out
