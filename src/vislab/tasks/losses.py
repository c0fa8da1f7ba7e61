"""Losses for imbalanced data: class weights, focal losses, the asymmetric loss.

* ``--class-weights auto``: single-label, inverse class frequency normalised to mean 1
  (``F.cross_entropy(weight=...)``); multi-label, BCE's ``pos_weight`` = negatives / positives
  per label (the meaning ``torch.nn.BCEWithLogitsLoss`` documents), capped at
  :data:`MAX_POS_WEIGHT`. ``--class-weights FILE``: a JSON ``{"class": weight}`` mapping or
  list, or a CSV ``class,weight``.
* ``--loss focal``: multi-label, torchvision's ``sigmoid_focal_loss`` (RetinaNet); single-label,
  the softmax focal loss ``-(1 - p_t)^gamma log p_t`` (Lin et al. 2017), class-weighted as
  cross-entropy is.
* ``--loss asymmetric`` (multi-label): timm's ``AsymmetricLossMultiLabel`` (Ridnik et al. 2021).

Weights and focusing are training devices: the loss summed for validation and test
(``reduction="sum"``) is the plain cross-entropy / BCE, so val_loss compares across runs
(label smoothing is dropped there the same way).

Example:
    >>> import torch
    >>> [round(float(w), 3) for w in inverse_frequency_weights([90, 10])]
    [0.2, 1.8]
    >>> logits = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
    >>> bool(softmax_focal_loss(logits, y, gamma=2.0) < torch.nn.functional.cross_entropy(logits, y))
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from vislab.core.errors import ConfigError
from vislab.core.files import read_csv_rows, read_json

MAX_POS_WEIGHT = 100.0  # a label on 1 image of 10,000 would otherwise weigh 9,999: the loss spikes


def inverse_frequency_weights(counts: Sequence[int]) -> torch.Tensor:
    """1 / count per class, normalised to mean 1 over the classes that have images (absent ones: 0)."""
    counts = torch.as_tensor(list(counts), dtype=torch.float64)
    weights = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros((), dtype=torch.float64))
    present = counts > 0
    return (weights / weights[present].mean()).float()


def positive_weights(positives: Sequence[int], images: int) -> torch.Tensor:
    """Multi-label ``pos_weight``: negatives / positives per label, capped at MAX_POS_WEIGHT."""
    positives = torch.as_tensor(list(positives), dtype=torch.float64)
    return ((images - positives) / positives.clamp_min(1)).clamp(1.0 / MAX_POS_WEIGHT, MAX_POS_WEIGHT).float()


def resolve_class_weights(spec: str, auto, class_names: Sequence[str], what: str, console=None) -> torch.Tensor:
    """``--class-weights``: ``auto()``'s weights for "auto", else the file's; printed as ``what (spec): ...``."""
    weights = auto() if spec == "auto" else read_class_weights(spec, class_names)
    if console is not None:
        shown = ", ".join(f"{n}: {float(w):.3g}" for n, w in zip(class_names, weights))
        console.print(f"{what} ({spec}): {shown}")
    return weights


def read_class_weights(path: str | Path, class_names: Sequence[str]) -> torch.Tensor:
    """Weights from a file: JSON ``{"class": w}`` (every class) or ``[w, ...]``, or CSV ``class,weight``."""
    path = Path(path).expanduser()
    names = [str(n) for n in class_names]
    if not path.exists():
        raise ConfigError(f"--class-weights {path}: no such file; give none, auto, or a JSON/CSV file of one weight "
                          "per class")
    fix = 'expected JSON {"cat": 1.0, "dog": 3.5} or a CSV with rows class,weight'
    if path.suffix.lower() == ".csv":
        rows = [row for row in read_csv_rows(path, "a class-weights CSV", fix) if row]
    else:
        data = read_json(path, "a class-weights JSON file", fix)
    try:
        if path.suffix.lower() == ".csv":
            if rows and rows[0] and rows[0][0].strip().lower() in ("class", "label", "name"):
                rows = rows[1:]
            data = {row[0].strip(): float(row[1]) for row in rows}
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"--class-weights {path}: not readable as weights ({exc}); expected JSON "
                          '{"cat": 1.0, "dog": 3.5} or a CSV with rows class,weight') from None
    if isinstance(data, list):
        if len(data) != len(names):
            raise ConfigError(f"--class-weights {path}: {len(data)} weights for {len(names)} classes ({names})")
        values = data
    elif isinstance(data, dict):
        missing = [n for n in names if n not in data]
        unknown = [k for k in data if k not in names]
        if missing or unknown:
            raise ConfigError(f"--class-weights {path}: classes missing {missing}, unknown {unknown}; give one "
                              f"weight for each of {names}")
        values = [data[n] for n in names]
    else:
        raise ConfigError(f"--class-weights {path}: expected a JSON object or list of weights")
    weights = torch.tensor([float(v) for v in values], dtype=torch.float32)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ConfigError(f"--class-weights {path}: weights must be finite and >= 0")
    return weights


def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                       weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Single-label focal loss: cross-entropy scaled by (1 - p_t)^gamma; ``weight`` per class
    (a weighted mean, as ``F.cross_entropy`` normalises by the targets' weights)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, targets.view(-1, 1)).squeeze(1)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    if weight is not None:
        w = weight.to(loss.device)[targets]
        loss = loss * w
        if reduction == "mean":
            return loss.sum() / w.sum().clamp_min(1e-12)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "auto", gamma: float = 2.0,
                    pos_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """BCE with logits (``auto``), torchvision's sigmoid focal loss (``focal``) or timm's asymmetric loss
    (``asymmetric``) on (N, K) 0/1 targets; averaged over labels per image, then over the batch (``mean``)
    or summed over it (``sum``, what evaluation divides by the image count)."""
    logits, targets = logits.float(), targets.float()
    pw = pos_weight.to(logits.device) if pos_weight is not None else None
    if kind == "auto":
        per = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw, reduction="none")
    elif kind == "focal":
        from torchvision.ops import sigmoid_focal_loss

        # alpha=-1: no fixed positive/negative balance; pos_weight (--class-weights) balances per label
        per = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=gamma, reduction="none")
        if pw is not None:
            per = per * (1 + (pw - 1) * targets)
    elif kind == "asymmetric":
        from timm.loss import AsymmetricLossMultiLabel

        per = AsymmetricLossMultiLabel(reduction="none", pos_weight=pw)(logits, targets)
    else:
        raise ConfigError(f"train.loss={kind!r} is not a multi-label loss; choose auto, focal or asymmetric")
    per_image = per.mean(1)
    if reduction == "mean":
        return per_image.mean()
    return per_image.sum() if reduction == "sum" else per_image
