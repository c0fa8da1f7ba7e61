"""What a filter responds to: gradient ascent on the input (Chollet, DLwP §5.4.2).

Start from a grey image with a little noise, repeatedly step the pixels along the
(L2-normalised) gradient of the filter's mean activation, then deprocess
(centre, scale to std 0.1 around 0.5, clip) and tile the patterns in an 8x8 grid.

Example:
    >>> from vislab.models import create_model
    >>> from vislab.data.preprocess import Preprocessing
    >>> model = create_model("seed_cnn2", num_classes=2, input_size=(32, 32))
    >>> pre = Preprocessing(input_size=(3, 32, 32))
    >>> result = filter_grid(model, pre, "features.3", n=4, steps=5)
    >>> result.patterns.shape, result.grid.shape
    ((4, 32, 32, 3), (32, 143, 3))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vislab.core.errors import ConfigError
from vislab.explain.base import model_device, no_inplace
from vislab.explain.targets import TargetLayer, _with_token_layout, get_layer

GRID_COLUMNS = 8
MARGIN = 5  # pixels between patterns, as Chollet's grid


class _Stop(Exception):
    """Raised by the hook: nothing after the chosen layer needs computing."""


@dataclass
class FilterGrid:
    """Patterns that maximise each filter of one layer.

    Attributes:
        layer: the layer's name.
        filters: the channel indices shown.
        patterns: uint8 (n, H, W, C) deprocessed input images.
        grid: uint8 patterns tiled 8 to a row with a 5-pixel black margin.
    """

    layer: str
    filters: list[int]
    patterns: np.ndarray
    grid: np.ndarray


def deprocess(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float -> uint8 (H, W, C): zero mean, std 0.1 around 0.5, clipped (Chollet's deprocess_image)."""
    image = image.detach().float().cpu()
    image = (image - image.mean()) / (image.std() + 1e-5) * 0.1 + 0.5
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def tile_patterns(patterns: np.ndarray, columns: int = GRID_COLUMNS, margin: int = MARGIN) -> np.ndarray:
    """(n, H, W, C) -> one (rows*(H+m)-m, cols*(W+m)-m, C) image."""
    count, height, width, channels = patterns.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * (height + margin) - margin, columns * (width + margin) - margin, channels), np.uint8)
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = row * (height + margin), col * (width + margin)
        grid[top : top + height, left : left + width] = patterns[index]
    return grid


def filter_grid(
    model: nn.Module,
    preprocessing,
    layer: str,
    n: int = 64,
    steps: int = 40,
    step_size: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> FilterGrid:
    """Gradient-ascent patterns for the first ``n`` filters of ``layer``.

    Args:
        model: any vislab model.
        preprocessing: its Preprocessing; patterns are made at its input size and
            pass through its normalisation, so they are in the model's colour space.
        layer: a ``model.named_modules()`` name (errors list the valid ones).
        n: filters to show (fewer if the layer has fewer channels); 64 fills the 8x8 grid.
        steps: ascent steps (Chollet: 40 steps of size 1 on the 0..255 scale).
        seed: for the starting noise.
        batch_size: filters optimised together (one forward pass each step).

    Example:
        >>> result = filter_grid(loaded.model, loaded.preprocessing, "blocks.2", n=64)  # doctest: +SKIP
    """
    target = _with_token_layout(model, TargetLayer(layer, get_layer(model, layer, preprocessing.input_size)), preprocessing.input_size)
    device = model_device(model)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(target.to_map(output))
        raise _Stop

    def layer_output(pixels: torch.Tensor) -> torch.Tensor:
        captured.clear()
        try:
            model(preprocessing.normalize(pixels / 255.0))
        except _Stop:
            pass
        if not captured:
            raise ConfigError(f"layer {layer!r} did not run in the forward pass; pick another")
        return captured[0]

    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    handle = target.module.register_forward_hook(hook)
    try:
        with no_inplace(model):
            with torch.no_grad():
                channels = layer_output(torch.full((1, *preprocessing.input_size), 128.0, device=device)).shape[1]
            filters = list(range(min(n, channels)))
            patterns = []
            for start in range(0, len(filters), batch_size):
                chunk = filters[start : start + batch_size]
                # Chollet: uniform noise *20 + 128 on the 0..255 scale
                noise = torch.rand((len(chunk), *preprocessing.input_size), generator=generator)
                pixels = (noise * 20 + 128).to(device)
                picks = torch.tensor(chunk, device=device)
                for _ in range(steps):
                    pixels.requires_grad_(True)
                    maps = layer_output(pixels)
                    loss = maps[torch.arange(len(chunk), device=device), picks].mean(dim=(1, 2)).sum()
                    (grads,) = torch.autograd.grad(loss, pixels)
                    # Normalising by the RMS keeps the step size steady across layers and filters.
                    grads = grads / (grads.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-5)
                    pixels = (pixels.detach() + step_size * grads)
                patterns.extend(deprocess(image) for image in pixels.detach())
    finally:
        handle.remove()
        model.train(was_training)
    stacked = np.stack(patterns)
    return FilterGrid(layer, filters, stacked, tile_patterns(stacked))


def save_filter_grid(result: FilterGrid, path) -> Path:
    """Write the grid as a PNG titled with the layer name."""
    from vislab.viz.explain import filter_grid_figure, save_figure

    title = f"{result.layer}: patterns that maximise filters {result.filters[0]}-{result.filters[-1]}"
    return save_figure(filter_grid_figure(result.grid, title), path)
