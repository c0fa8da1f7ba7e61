"""Gradient and perturbation attributions over the model input.

Each function takes the model, one preprocessed input (1, C, H, W) and a
:class:`~vislab.explain.base.ClassScore`, and returns an (H, W) float32 map in
0..1 over that input. The maths comes from libraries: pytorch-grad-cam for
Grad-CAM++ (Grad-CAM is its formula, computed here and tested against it), captum for
integrated gradients (occlusion is captum's ``Occlusion``, computed here and tested against it).

Example:
    >>> import torch
    >>> from vislab.models import create_model
    >>> from vislab.explain.base import ClassScore
    >>> from vislab.explain.targets import find_target_layer
    >>> model = create_model("seed_cnn2", num_classes=2, input_size=(32, 32)).eval()
    >>> layer = find_target_layer(model, (3, 32, 32))
    >>> grad_cam(model, torch.rand(1, 3, 32, 32), ClassScore(1), layer).shape
    (32, 32)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.explain.base import ClassScore, no_inplace, normalise_heatmap
from vislab.explain.targets import TargetLayer, not_run_error


def _require(package: str, pip_name: str):
    try:
        return __import__(package)
    except ImportError:
        raise ImportError(
            f"this explanation needs the {pip_name!r} package; install it with "
            f"`pip install {pip_name}` or `pip install vislab[explain]`"
        ) from None


def grad_cam(model: nn.Module, inputs: torch.Tensor, score: ClassScore, layer: TargetLayer, plus_plus: bool = False) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) or Grad-CAM++ (Chattopadhay et al.) at ``layer``.

    Grad-CAM is computed here, as pytorch-grad-cam's ``GradCAM`` computes it (a test holds the
    two to the same maps): importing pytorch-grad-cam imports torchvision, OpenCV and
    ``torch._dynamo``, several seconds of a short run's end-of-run panels. Grad-CAM++ is
    pytorch-grad-cam's.

    Returns:
        (H, W) map at the input size, 0..1 (pytorch-grad-cam's ReLU and min-max scaling).
    """
    if not plus_plus:
        return _grad_cam(model, inputs, score, layer)
    _require("pytorch_grad_cam", "grad-cam")
    from pytorch_grad_cam import GradCAMPlusPlus

    with no_inplace(model), GradCAMPlusPlus(model=model, target_layers=[layer.module],
                                            reshape_transform=layer.to_map) as cam:
        heat = cam(input_tensor=inputs, targets=[score])
    return normalise_heatmap(heat[0])


def _grad_cam(model: nn.Module, inputs: torch.Tensor, score, layer: TargetLayer) -> np.ndarray:
    """pytorch-grad-cam's ``GradCAM`` for one image: the layer's maps weighted by their mean
    gradients, summed, ReLU, min-max scaled, resized bilinearly (half-pixel centres, as OpenCV's
    ``resize``) to the input, scaled again. ``score`` follows pytorch-grad-cam's target protocol
    (called on one sample's output)."""
    captured: list[torch.Tensor] = []
    handle = layer.module.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with no_inplace(model), torch.enable_grad():
            inputs = inputs.detach().clone().requires_grad_(True)  # a path for gradients through frozen layers
            outputs = model(inputs)
            if not captured or not isinstance(captured[0], torch.Tensor):  # find_target_layer refuses such a layer
                raise not_run_error(model, layer.name, tuple(inputs.shape[1:]), layer.flag,
                                    gave=type(captured[0]).__name__ if captured else None)
            total = sum(score(output) for output in outputs)
            (gradient,) = torch.autograd.grad(total, captured[0])
    finally:
        handle.remove()
    activation = layer.to_map(captured[0].detach()).float()
    gradient = layer.to_map(gradient).float()
    cam = (gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(1)[0].clamp(min=0)
    cam = cam - cam.min()
    cam = cam / (cam.max() + 1e-7)
    cam = F.interpolate(cam[None, None], size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    return normalise_heatmap(cam - cam.min())


def occlusion(
    model: nn.Module, inputs: torch.Tensor, score: ClassScore, window: int | None = None, stride: int | None = None
) -> np.ndarray:
    """Occlusion (Zeiler & Fergus): how much the score drops when a square is set to the mean colour.

    Args:
        window: side of the occluding square in input pixels; default about 1/8 of the input, an even
            number (28 px: 4), so that the default stride overlaps the squares by exactly half.
        stride: step between squares; default half the window.
    """
    height, width = inputs.shape[2:]
    window = window or occlusion_window(min(height, width))
    stride = stride or max(1, window // 2)
    # Normalised input 0 is the dataset mean colour: a neutral grey, not black.
    return normalise_heatmap(_occlusion(_score_function(model, score), inputs, window, stride,
                                        _perturbations_per_eval(inputs)))


def _occlusion(forward, inputs: torch.Tensor, window: int, stride: int, per_eval: int) -> torch.Tensor:
    """captum's ``Occlusion(forward).attribute(inputs, sliding_window_shapes=(C, window, window),
    strides=(C, stride, stride), baselines=0)``, summed over the channels (a test holds the two equal):
    for each pixel, the mean drop of the score over the squares that cover it, the square's every channel
    set to 0, times C. The squares start every ``stride`` pixels; the last may reach past the edge. Here,
    because importing captum imports matplotlib's pyplot and captum's language-model attribution, about
    half a second of a short run's end-of-run panels."""
    channels, height, width = inputs.shape[1:]
    if not 1 <= window <= min(height, width) or not 1 <= stride <= window:
        raise ValueError(f"occlusion: window {window} and stride {stride} for a {height}x{width} input; the window "
                         f"fits the input, and the stride is at most the window (no pixel left uncovered)")
    rows = [k * stride for k in range(math.ceil((height - window) / stride) + 1)]
    columns = [k * stride for k in range(math.ceil((width - window) / stride) + 1)]
    squares = [(top, left) for top in rows for left in columns]
    with torch.no_grad():
        initial = forward(inputs).reshape(-1)[0]
        total = torch.zeros(height, width, dtype=inputs.dtype, device=inputs.device)
        counts = torch.zeros(height, width, dtype=inputs.dtype, device=inputs.device)
        for start in range(0, len(squares), per_eval):
            chunk = squares[start:start + per_eval]
            batch = inputs.repeat(len(chunk), 1, 1, 1)
            for i, (top, left) in enumerate(chunk):
                batch[i, :, top:top + window, left:left + window] = 0
            drops = initial - forward(batch).reshape(len(chunk))
            for drop, (top, left) in zip(drops, chunk):
                total[top:top + window, left:left + window] += drop
                counts[top:top + window, left:left + window] += 1
    return channels * total / counts


def occlusion_window(side: int) -> int:
    """The default occluding square for an input side: about 1/8 of it, even, at least 2 (Zeiler and
    Fergus' half-overlapping squares; an odd window's half-window stride would overlap by more).

    Example:
        >>> [occlusion_window(s) for s in (8, 28, 32, 64, 224)]
        [2, 4, 4, 8, 28]
    """
    return max(2, 2 * round(side / 16))


def _perturbations_per_eval(inputs: torch.Tensor) -> int:
    """Occluded copies per forward pass: 32, or more for small inputs (up to 256 of about 1M values
    per batch), where a forward pass costs mostly its fixed overhead. The same attributions either way.

    Example:
        >>> _perturbations_per_eval(torch.zeros(1, 1, 28, 28)), _perturbations_per_eval(torch.zeros(1, 3, 224, 224))
        (256, 32)
    """
    return max(32, min(256, 2**20 // max(1, inputs[0].numel())))


def integrated_gradients(
    model: nn.Module, inputs: torch.Tensor, score: ClassScore, steps: int = 32, smooth: float | None = None
) -> np.ndarray:
    """Integrated gradients (Sundararajan et al.) from the mean-colour image.

    Pixel attributions are summed over channels, kept where positive and blurred a
    little (``smooth`` pixels, default 1/64 of the input side) so the map shows
    regions rather than single pixels.
    """
    _require("captum", "captum")
    from captum.attr import IntegratedGradients

    with no_inplace(model):
        attributions = IntegratedGradients(_score_function(model, score)).attribute(
            inputs, baselines=torch.zeros_like(inputs), n_steps=steps, internal_batch_size=8
        )
    heat = attributions[0].sum(0).clamp(min=0)
    sigma = smooth if smooth is not None else max(inputs.shape[-2:]) / 64
    if sigma > 0:
        heat = _gaussian_blur(heat, sigma)
    return normalise_heatmap(heat)


def _score_function(model: nn.Module, score: ClassScore):
    def forward(batch: torch.Tensor) -> torch.Tensor:
        return score(model(batch))

    return forward


def _gaussian_blur(heat: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=heat.dtype, device=heat.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    image = heat[None, None]
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return image[0, 0]
