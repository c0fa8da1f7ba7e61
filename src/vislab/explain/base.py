"""What every explainer shares: the result type, target classes, image <-> input geometry."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.core.config import EXPLAIN_METHODS as METHODS  # noqa: F401  (one list: config, CLI, explain)
from vislab.core.device import model_device  # noqa: F401
from vislab.tasks.classification import ClassScore, probabilities, resolve_target  # noqa: F401


@dataclass
class Explanation:
    """One explained prediction.

    Attributes:
        heatmap: (H, W) float32 in 0..1 over the image that was explained, at its size (or at the smaller
            ``size`` :func:`~vislab.explain.explain` was given: the size the image is drawn at);
            1 marks what most supports ``target``. Parts of the image that the
            model never saw (cut off by the centre crop) are 0.
        target: the explained class index.
        target_name: its name, when class names are known.
        score: the model's probability for ``target``.
        method: the method used (one of ``METHODS``).
        layer: the layer explained (Grad-CAM methods), else None.
        mask: LIME only: (H, W) int8 (the heatmap's size), +1 for regions for the class, -1 against, 0 neither.
        predicted: the class the model predicts (``target`` when that was ``"top"``), None when not known.
        predicted_name: its name, when class names are known.
        predicted_score: the model's probability for ``predicted``.
    """

    heatmap: np.ndarray
    target: int
    target_name: str | None
    score: float
    method: str
    layer: str | None = None
    mask: np.ndarray | None = field(default=None, repr=False)
    predicted: int | None = None
    predicted_name: str | None = None
    predicted_score: float | None = None

    @property
    def title(self) -> str:
        name = self.target_name if self.target_name is not None else str(self.target)
        return f"{self.method}: {name} ({self.score:.1%})"


def as_image_tensor(image) -> torch.Tensor:
    """uint8 (C, H, W) tensor from a tensor or numpy array (C, H, W) or (H, W)."""
    tensor = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image.detach().cpu()
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"expected one image as uint8 (C, H, W) with C in 1, 3, 4; got shape {tuple(tensor.shape)}. "
            "Read files with vislab.data.images.read_image; numpy (H, W, C) arrays need .transpose(2, 0, 1)."
        )
    if tensor.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image (0..255), got {tensor.dtype}")
    return tensor


def heatmap_to_image(
    heatmap: np.ndarray | torch.Tensor, preprocessing, image_size: tuple[int, int], nearest: bool = False,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Map a heatmap over the model input back onto the original image.

    The inverse of :meth:`Preprocessing.resize`: the input covers the image
    stretched (``crop_pct == 1``) or a centre crop of it; outside the crop the
    map is 0, since the model never saw those pixels.

    ``size``: the (height, width) to return the map at, the image's ``image_size`` shrunk with its aspect
    ratio kept (the size it is drawn at); the crop is placed by ``image_size``, as the model's was.

    Example:
        >>> from vislab.data.preprocess import Preprocessing
        >>> pre = Preprocessing(input_size=(3, 8, 8), crop_pct=0.5)
        >>> heatmap_to_image(np.ones((8, 8)), pre, (4000, 4000), size=(16, 16))[:, 8].tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))[None, None]
    in_h, in_w = image_size
    height, width = preprocessing.size
    if (in_h, in_w) != (height, width) and preprocessing.crop_pct < 1.0:
        # Same arithmetic as Preprocessing.resize, so the crop lands where the model's did.
        scale_h = int(height / preprocessing.crop_pct)
        scale_w = int(width / preprocessing.crop_pct)
        ratio = max(scale_h / in_h, scale_w / in_w)
        resized = (max(height, round(in_h * ratio)), max(width, round(in_w * ratio)))
        top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
        canvas = torch.zeros(1, 1, *resized)
        canvas[..., top : top + height, left : left + width] = heat
        heat = canvas
    out = tuple(size) if size is not None else (in_h, in_w)
    if tuple(heat.shape[-2:]) != out:
        if nearest:  # label maps (LIME's -1/0/+1 mask) must not blend
            heat = F.interpolate(heat, size=out, mode="nearest")
        else:
            heat = F.interpolate(heat, size=out, mode="bilinear", align_corners=False)
    return (heat[0, 0] if nearest else heat[0, 0].clamp(0, 1)).numpy().astype(np.float32)


def normalise_heatmap(values: np.ndarray | torch.Tensor, positive_only: bool = True) -> np.ndarray:
    """Scale to 0..1 by the maximum (negatives dropped); a map with no positive evidence stays 0."""
    values = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float32)
    if positive_only:
        values = np.maximum(values, 0)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)


@contextlib.contextmanager
def no_inplace(model: nn.Module):
    """Turn off ``inplace=True`` activations while hooks read and differentiate layer outputs.

    An in-place ReLU after a hooked conv overwrites the saved activation and breaks
    tensor gradient hooks, so Grad-CAM would read post-ReLU maps with wrong gradients.
    """
    changed = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for module in changed:
        module.inplace = False
    try:
        yield model
    finally:
        for module in changed:
            module.inplace = True
