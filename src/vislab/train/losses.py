"""Loss and probabilities for K-way softmax heads and single-logit (sigmoid) binary heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy; a (N, 1) output is a binary sigmoid head (Keras ``Dense(1, 'sigmoid')``)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        soft = targets.float() * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0], soft, reduction=reduction)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) class probabilities; a single logit becomes [1 - p, p]."""
    logits = logits.float()
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return logits.softmax(dim=1)


def correct_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many predictions are right, as a tensor on the logits' device (no host read)."""
    if logits.shape[1] == 1:
        return ((logits[:, 0] > 0).long() == targets).sum()
    return (logits.argmax(1) == targets).sum()


def running_sums(device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loss sum (float64) and a correct count (int64) that stay on ``device`` until read once:
    a read per step would stall a GPU's queue."""
    return (torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device))
