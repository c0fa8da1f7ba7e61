"""Stratified hold-outs, torch-free (a run's helper interpreter computes them: :mod:`vislab.core.background`).

Single-label: scikit-learn's ``train_test_split`` with ``stratify`` where it can, in proportion otherwise
(:func:`stratified_indices`).

Multi-label, by iterative stratification, so rare labels appear in every split.

A random split of a multi-label set can leave a label that 10 images carry with none in
validation, and per-class thresholds could not be tuned for it. Iterative stratification
(Sechidis, Tsoumakas and Vlahavas, 2011; the ``iterative-stratification`` package) deals
the rarest labels out first, in proportion.

Example:
    >>> import numpy as np
    >>> y = np.zeros((40, 3), dtype=np.float32); y[::4, 0] = 1; y[1::2, 1] = 1; y[:8, 2] = 1
    >>> rest, held = multilabel_split(y, 10, seed=0)
    >>> len(rest), len(held), bool(y[held, 2].sum() >= 1)
    (30, 10, True)
"""

from __future__ import annotations

import numpy as np


def multilabel_split(labels, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) sorted indices of an (N, K) 0/1 label matrix; ``count`` held out, seeded."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    y = np.asarray(labels).astype(np.int64)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=int(count), random_state=seed)
    rest, held = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(rest), np.sort(held)


def stratified_indices(y, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) sorted indices of ``y``: ``count`` held out with the classes in proportion, seeded.

    scikit-learn's ``train_test_split(stratify=y)`` where it can stratify (every class has two images or
    more, and each part at least one image a class) and its split leaves every class a training image;
    otherwise :func:`_proportional_indices`: a class with a single image stays in the rest, the others are
    held out in proportion (largest remainders, ties drawn by the seed), and a class's last image is held out
    only when ``count`` leaves no other way (``--val-split 0.99``).

    Example:
        >>> rest, held = stratified_indices(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 2, seed=0)
        >>> len(rest), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[held].tolist())
        (6, [0, 1])
        >>> y = np.array([0] * 7 + [1] * 7 + [2] * 7 + [3])  # class 3 has one image: it stays
        >>> rest, held = stratified_indices(y, 4, seed=0)
        >>> sorted(set(y[held].tolist())), 21 in rest
        ([0, 1, 2], True)
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    indices = np.arange(len(y))
    counts = np.bincount(y)
    classes = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and count >= classes and len(y) - count >= classes
    if can_stratify:
        rest, held = train_test_split(indices, test_size=count, random_state=seed, stratify=y)
        if (np.bincount(y[rest], minlength=len(counts)) > 0).sum() == classes:
            return np.sort(rest), np.sort(held)
    return _proportional_indices(y, count, seed)


def _proportional_indices(y: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) sorted indices: ``count`` held out, each class's share in proportion to its size by
    largest remainders (ties drawn by ``seed``), a class never giving its last image while another can give one.

    Example:
        >>> rest, held = _proportional_indices(np.array([0, 0, 0, 1, 1, 1, 2]), 2, seed=0)
        >>> sorted(np.array([0, 0, 0, 1, 1, 1, 2])[held].tolist()), 6 in rest
        ([0, 1], True)
    """
    rng = np.random.default_rng(seed)
    counts = np.bincount(y).astype(np.int64)
    order = rng.permutation(len(counts))  # the seeded tie-break: a lower rank wins a tie
    rank = np.empty_like(order)
    rank[order] = np.arange(len(counts))
    spare = np.maximum(counts - 1, 0)  # what a class can give and keep an image to train on
    if spare.sum() >= count:
        quota = count * counts / max(len(y), 1)
        take = np.minimum(np.floor(quota).astype(np.int64), spare)
        for _ in range(count - int(take.sum())):
            deficit = np.where(take < spare, quota - take, -np.inf)
            best = np.flatnonzero(deficit == deficit.max())
            take[best[np.argmin(rank[best])]] += 1
    else:  # too few images left to train on: classes give their last image, in the seeded order
        take = spare.copy()
        short = count - int(spare.sum())
        last = [c for c in order if counts[c] > 0][:short]
        take[last] += 1
    held = []
    for label in np.flatnonzero(take):
        members = np.flatnonzero(y == label)
        held.extend(rng.permutation(members)[:take[label]].tolist())
    held = np.sort(np.asarray(held, dtype=np.int64))
    rest = np.setdiff1d(np.arange(len(y)), held)
    return rest, held
