"""Stratified hold-outs, torch-free (a run's helper interpreter computes them: :mod:`vislab.core.background`).

Single-label: scikit-learn's ``train_test_split`` with ``stratify`` (:func:`stratified_indices`).

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
    """(rest, held_out) sorted indices of ``y``: ``count`` held out with the classes in proportion, seeded;
    unstratified when a class has a single image, or either part would have fewer images than there are
    classes (``--val-split 0.99`` leaves the training part a few images).

    Example:
        >>> rest, held = stratified_indices(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 2, seed=0)
        >>> len(rest), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[held].tolist())
        (6, [0, 1])
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    indices = np.arange(len(y))
    counts = np.bincount(y)
    classes = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and count >= classes and len(y) - count >= classes
    rest, held = train_test_split(indices, test_size=count, random_state=seed,
                                  stratify=y if can_stratify else None)
    return np.sort(rest), np.sort(held)
