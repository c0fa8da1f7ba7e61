"""Benchmark: images/s through a folder of JPEGs -- decode, resize, augment -- vislab vs torchvision.

The folder: ``--images`` (default 5,000) JPEG files in 10 class folders, random
``--source-size`` crops (default 256 px) of scikit-learn's two sample photographs,
written once to a temporary folder. Both sides produce the same thing: augmented
float batches of ``--batch-size`` at ``--size`` px (default 128), RGB, with random
horizontal flips and a random +-10 degree / +-10% zoom affine, using ``--workers``
DataLoader worker processes:

* ``vislab``: :class:`vislab.data.loaders.FileBatches` (workers decode and resize each
  file to uint8), then the batch-wise :class:`~vislab.data.preprocess.Preprocessing`
  with :class:`~vislab.data.augment.Augment` in the main process, as the fit loop does;
* ``torchvision``: ``ImageFolder`` with its PIL loader and
  ``Resize -> RandomHorizontalFlip -> RandomAffine -> ToTensor -> Normalize`` per image
  in the workers, default collation.

Each side runs ``--epochs`` passes (the first includes starting the workers); the
JSON line per side and epoch gives images/s; sides alternate.

Usage:
    python benchmarks/bench_dataloading.py
    python benchmarks/bench_dataloading.py --workers 2 --images 5000 --size 128 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402


def write_folder(root: Path, count: int, source_size: int, seed: int = 0) -> list[tuple[str, int]]:
    """``count`` JPEG crops of sklearn's sample images into ``root/class_k/``; returns (path, label)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 RGB photographs shipped with scikit-learn
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        label = i % 10
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - source_size)
        left = rng.integers(0, photo.shape[1] - source_size)
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(photo[top : top + source_size, left : left + source_size]).save(path, quality=90)
        samples.append((str(path), label))
    return samples


def vislab_epochs(samples, size: int, batch_size: int, workers: int, epochs: int):
    import torch

    from vislab.core.config import AugmentConfig
    from vislab.data.augment import Augment
    from vislab.data.loaders import FileBatches, epoch_generator
    from vislab.data.preprocess import Preprocessing
    from vislab.data.sources import Split

    split = Split(torch.tensor([y for _, y in samples]), paths=[p for p, _ in samples])
    pre = Preprocessing((3, size, size), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    augment = Augment(AugmentConfig(hflip=True, rotation=10, zoom=0.1))
    batches = FileBatches(split, pre, batch_size, shuffle=True, workers=workers)
    for epoch in range(epochs):
        batches.set_epoch(0, epoch)
        generator = epoch_generator(0, epoch, stream=1)
        start, seen = time.perf_counter(), 0
        for images, labels in batches:
            x = pre(images, augment=lambda b: augment(b, generator=generator))
            seen += len(x)
        yield epoch, seen / (time.perf_counter() - start), tuple(x.shape[1:])


def torchvision_epochs(root: Path, size: int, batch_size: int, workers: int, epochs: int):
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
        transforms.RandomAffine(10, scale=(0.9, 1.1)), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    dataset = datasets.ImageFolder(str(root), transform=transform)  # PIL loader
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for x, _ in loader:
            seen += len(x)
        yield epoch, seen / (time.perf_counter() - start), tuple(x.shape[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="JPEG files to write")
    parser.add_argument("--source-size", type=int, default=256, help="px of the square JPEG crops")
    parser.add_argument("--size", type=int, default=128, help="px of the model input")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (both sides)")
    parser.add_argument("--epochs", type=int, default=3, help="passes per side (the first starts the workers)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds of both sides")
    args = parser.parse_args(argv)
    info = {"machine": machine(), "versions": versions()}
    with tempfile.TemporaryDirectory(prefix="vislab-bench-jpeg-") as tmp:
        root = Path(tmp) / "jpegs"
        samples = write_folder(root, args.images, args.source_size)
        common = {"images": args.images, "source_px": args.source_size, "input_px": args.size,
                  "batch_size": args.batch_size, "workers": args.workers}
        for rep in range(args.repeat):
            sides = ["vislab", "torchvision"] if rep % 2 == 0 else ["torchvision", "vislab"]
            for side in sides:
                info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
                runs = (vislab_epochs(samples, args.size, args.batch_size, args.workers, args.epochs)
                        if side == "vislab" else
                        torchvision_epochs(root, args.size, args.batch_size, args.workers, args.epochs))
                for epoch, speed, shape in runs:
                    emit({"benchmark": "dataloading", "side": side, "repeat": rep, "epoch": epoch,
                          "images_per_s": round(speed, 1), "batch_shape": list(shape), **common, **info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
