"""``--sampler balanced``: draw rare classes as often as common ones, seeded by (seed, epoch).

The task picks the weights (``Task.balanced_weights``); the two kinds are here:

* Single-label (:func:`class_balanced_weights`): each image is weighted by 1 / (images of its
  class), so every class is drawn with the same probability -- what
  ``torch.utils.data.WeightedRandomSampler`` does with those weights, drawn here from the
  epoch's own generator.
* Multi-label (:func:`rarest_label_weights`): an image carries several labels, and weighting by
  one of them says nothing of the others. Each image is weighted by its *rarest* label: 1 / (images carrying it), the
  all-negative images as one group of their own. A label's draw probability is then at least
  the sum of its images' weights, so the rarest label's frequency rises to at least
  1 / (number of groups) of the draws (tests/test_imbalance.py measures it).

The draw (N images with replacement per epoch, the epoch length unchanged) depends only on
(seed, epoch), like the shuffling in :mod:`vislab.data.loaders`: a resumed run draws the
same images, and under DDP every rank cuts its share from the same global draw.

Example:
    >>> import torch
    >>> w = class_balanced_weights(torch.tensor([0, 0, 0, 1]))
    >>> [round(float(v), 3) for v in w]
    [0.167, 0.167, 0.167, 0.5]
"""

from __future__ import annotations

import torch


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """One draw weight per image (they sum to 1) for (N,) class indices: 1 / (images of its class)."""
    labels = torch.as_tensor(labels).cpu()
    weights = 1.0 / torch.bincount(labels).double()[labels]
    return weights / weights.sum()


def rarest_label_weights(labels: torch.Tensor) -> torch.Tensor:
    """One draw weight per image (they sum to 1) for (N, K) 0/1 targets: 1 / (images carrying the
    rarest label it carries); the images without any label form one group of their own."""
    positive = torch.as_tensor(labels).cpu() > 0
    counts = positive.sum(0).double().clamp_min(1)
    per_label = torch.where(positive, 1.0 / counts, torch.zeros((), dtype=torch.float64))
    weights = per_label.max(1).values
    negative = ~positive.any(1)
    if negative.any():
        weights[negative] = 1.0 / float(negative.sum())
    return weights / weights.sum()


def balanced_order(weights: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """len(weights) indices drawn with replacement, from a generator of (seed, epoch) only."""
    from vislab.data.loaders import epoch_generator

    return torch.multinomial(weights, len(weights), replacement=True, generator=epoch_generator(seed, epoch))
