"""Batches of uint8 images at the model's size, from memory or streamed from disk.

Both loaders yield ``(images_uint8 (N, C, H, W), labels int64 (N,))``; the
model-side steps (channels, 0..1 scaling, augmentation, normalisation) then run
on the whole batch on the training device through :class:`Preprocessing`.

* :class:`TensorBatches` indexes one in-memory uint8 tensor per batch: no
  per-sample Python, no collation, no worker processes.
* :func:`file_loader` streams a folder/CSV dataset through DataLoader workers,
  which decode and resize each file; the data set is never held in memory whole.

Shuffling is seeded per epoch (``seed``, ``epoch``), so an interrupted run that
resumes at epoch k sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vislab.data.images import open_image, pil_to_tensor
from vislab.data.preprocess import Preprocessing
from vislab.data.sources import Split


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7_919 + stream)


def epoch_order(size: int, shuffle: bool, seed: int, epoch: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The epoch's image order: a seeded permutation, or with ``weights`` (``--sampler balanced``)
    a seeded weighted draw with replacement (:mod:`vislab.data.samplers`); in order when not shuffling."""
    if not shuffle:
        return torch.arange(size)
    if weights is not None:
        from vislab.data.samplers import balanced_order

        return balanced_order(weights, seed, epoch)
    return torch.randperm(size, generator=epoch_generator(seed, epoch))


def drop_short_batch(images: int, batch_size: int, drop_last: bool = False, processes: int = 1) -> bool:
    """Whether an epoch leaves out its short last batch: with ``--drop-last``, or when it holds fewer
    images than max(2, processes) (batch norm cannot train on one image, and under DDP every process
    needs a share of every batch). A split no larger than one batch is one batch, always trained on.

    Example:
        >>> drop_short_batch(50_000, 64), drop_short_batch(50_000, 64, drop_last=True)
        (False, True)
        >>> drop_short_batch(129, 64), drop_short_batch(100, 128, drop_last=True), drop_short_batch(70, 64, processes=8)
        (True, False, True)
    """
    if images <= batch_size:
        return False
    short = images % batch_size
    return drop_last or 0 < short < max(2, processes)


def batch_count(images: int, batch_size: int, drop_last: bool) -> int:
    """How many batches an epoch over ``images`` holds: the short last one counted unless ``drop_last``.

    Example:
        >>> batch_count(100, 32, drop_last=False), batch_count(100, 32, drop_last=True)
        (4, 3)
    """
    return images // batch_size if drop_last else -(-images // batch_size)


class TensorBatches:
    """Batches from an in-memory split, resized to the model's size on the fly when needed."""

    def __init__(self, split: Split, preprocessing: Preprocessing, batch_size: int,
                 shuffle: bool = False, drop_last: bool = False, weights: torch.Tensor | None = None):
        self.split = split
        self.weights = weights  # --sampler balanced: per-image draw weights
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed, self.epoch = 0, 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        n = len(self.split)
        return batch_count(n, self.batch_size, self.drop_last)

    def __iter__(self):
        n = len(self.split)
        order = epoch_order(n, self.shuffle, self.seed, self.epoch, self.weights).to(
            self.split.images.device)  # GPU-resident data
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            # index_select copies whole rows: 5x faster than advanced indexing on uint8 images
            yield self.split.images.index_select(0, index), self.split.labels.index_select(0, index)


class _FileImages(TorchDataset):
    def __init__(self, split: Split, preprocessing: Preprocessing):
        self.split = split
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        # decode (JPEG at a reduced scale when the model is small), convert and resize in the
        # worker with PIL, so batches have one shape and the main process only augments/normalises
        pre = self.preprocessing
        image = open_image(self.split.paths[index], draft=pre.draft_size)
        if pre.channels != (1 if image.mode == "L" else 3):
            image = image.convert("L" if pre.channels == 1 else "RGB")
        return pil_to_tensor(pre.resize_pil(image)), self.split.labels[index]


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, size: int, shuffle: bool, weights: torch.Tensor | None = None):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, 0, 0
        self.weights = weights

    def __len__(self):
        return self.size

    def __iter__(self):
        return iter(epoch_order(self.size, self.shuffle, self.seed, self.epoch, self.weights).tolist())


class FileBatches:
    """DataLoader over files with an epoch-seeded sampler."""

    def __init__(self, split: Split, preprocessing: Preprocessing, batch_size: int,
                 shuffle: bool = False, drop_last: bool = False, workers: int = 2, pin_memory: bool = False,
                 weights: torch.Tensor | None = None):
        self.sampler = _EpochSampler(len(split), shuffle, weights)
        self.weights = weights
        self.loader = DataLoader(
            _FileImages(split, preprocessing), batch_size=batch_size, sampler=self.sampler,
            drop_last=drop_last, num_workers=workers, pin_memory=pin_memory,
            persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
            # its own generator: worker seeding must not draw from the global RNG, or a resumed
            # run's dropout masks would differ from an uninterrupted one
            generator=torch.Generator().manual_seed(0),
        )
        self.split = split

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.sampler.seed, self.sampler.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def make_batches(split: Split, preprocessing: Preprocessing, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, workers: int = 2, pin_memory: bool = False, weights=None):
    """The right loader for a split: tensor batches in memory, DataLoader workers for files.
    ``weights``: per-image draw weights of ``--sampler balanced`` (shuffled batches only)."""
    if split.in_memory:
        return TensorBatches(split, preprocessing, batch_size, shuffle, drop_last, weights)
    return FileBatches(split, preprocessing, batch_size, shuffle, drop_last, workers, pin_memory, weights)
