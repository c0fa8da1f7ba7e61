"""Intermediate activations: every channel of a layer as a small image (Chollet, DLwP §5.4).

Each channel is normalised on its own (subtract its mean, divide by its std,
x64 +128, clip to 0..255) so weak and strong channels are equally visible, and
the channels of one layer are tiled 16 to a row.

Example:
    >>> import torch
    >>> from vislab.models import create_model
    >>> from vislab.data.preprocess import Preprocessing
    >>> model = create_model("seed_cnn2", num_classes=2, input_size=(32, 32))
    >>> pre = Preprocessing(input_size=(3, 32, 32))
    >>> grids = activations(model, pre, torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    >>> [(g.name, g.channels, g.grid.shape) for g in grids][:2]
    [('features.1', 32, (60, 480)), ('features.2', 32, (30, 240))]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vislab.core.errors import ConfigError
from vislab.explain.base import as_image_tensor, model_device, no_inplace
from vislab.explain.targets import (_ACTIVATIONS, _SKIP, TargetLayer, _record_outputs, _with_token_layout, get_layer,
                                   has_convolutions)

IMAGES_PER_ROW = 16  # as Chollet's listing 5.30
DEFAULT_LAYERS = 8  # "the first 8 layers"
_POOLING = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass
class ActivationGrid:
    """One layer's channels tiled into one uint8 image.

    Attributes:
        name: layer name (``model.named_modules()``).
        channels: number of channels shown (all of them).
        map_size: (h, w) of one channel's map.
        grid: uint8 (rows*h, 16*w); unused cells at the end are 0.
    """

    name: str
    channels: int
    map_size: tuple[int, int]
    grid: np.ndarray


def default_layers(model: nn.Module, input_size: tuple[int, int, int], count: int = DEFAULT_LAYERS) -> list[str]:
    """The first ``count`` layers worth looking at.

    vislab's own networks: the activation and pooling outputs of ``features``
    (what Keras calls its conv and pooling layers, conv outputs being post-ReLU there).
    Other models: timm's ``feature_info`` stages (a segmentation network's timm encoder too, then its
    decoder's blocks), else the top-level modules with 4-D output (a level down under a wrapper).
    """
    if not has_convolutions(model):
        raise ConfigError("this model has no convolution layers (an MLP sees the pixels as one vector), "
                         "so there are no activation maps to show; `vislab explain --method occlusion` shows what it "
                         "looks at")
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and hasattr(model, "head"):
        prefix = next(name for name, module in model.named_modules() if module is features)
        names = []
        for index, child in enumerate(features):
            following = features[index + 1] if index + 1 < len(features) else None
            is_output = isinstance(child, _ACTIVATIONS + _POOLING) or (
                not isinstance(child, _SKIP) and not isinstance(following, (nn.BatchNorm2d, *_ACTIVATIONS))
            )
            if is_output:
                names.append(f"{prefix}.{index}")
        if not names:
            raise ConfigError(f"{type(model).__name__} has no convolution layers, so there are no activation maps to show")
        return names[:count]
    names = _feature_info_layers(model)
    decoder = next(((name, module) for name, module in model.named_modules() if name.endswith("decoder.blocks")),
                   None)
    if decoder is not None:  # an encoder-decoder (smp): the decoder's blocks after the encoder's stages
        prefix, blocks = decoder
        names += [f"{prefix}.{child}" for child, _ in blocks.named_children()]
    if names:
        return names[:count]
    finished, _ = _record_outputs(model, input_size)
    four_d = [name for name, shape in finished if len(shape) == 4]
    # the top-level modules with 4-D outputs; under a wrapper (one module holding the network), a level down
    for depth in range(4):
        names = [name for name in four_d if name.count(".") == depth]
        if len(names) >= 2:
            return names[:count]
    if not four_d:
        raise ConfigError("cannot pick activation layers automatically; give them by name (layers=[...])")
    return four_d[:count]


def _feature_info_layers(model: nn.Module) -> list[str]:
    """timm's ``feature_info`` stages of the model or of the first module in it that has them (a
    segmentation network's timm encoder), as ``model.named_modules()`` names."""
    for prefix, module in model.named_modules():
        info = getattr(module, "feature_info", None)
        if info is None:
            continue
        try:
            names = [entry["module"] for entry in info]
        except (TypeError, KeyError):
            names = list(info.module_name()) if hasattr(info, "module_name") else []
        names = [name for name in names if name]
        if names:
            return [f"{prefix}.{name}" if prefix else name for name in names]
    return []


def normalise_channels(maps: torch.Tensor) -> np.ndarray:
    """(C, h, w) floats -> uint8, each channel: (x - mean) / std * 64 + 128, clipped."""
    maps = maps.detach().float().cpu()
    mean = maps.mean(dim=(1, 2), keepdim=True)
    std = maps.std(dim=(1, 2), keepdim=True, unbiased=False)
    # +1e-5 so a dead (constant) channel shows as flat grey instead of NaN.
    scaled = (maps - mean) / (std + 1e-5) * 64 + 128
    return scaled.clamp(0, 255).to(torch.uint8).numpy()


def tile(maps: np.ndarray, per_row: int = IMAGES_PER_ROW) -> np.ndarray:
    """(C, h, w) -> (rows*h, per_row*w) with the channels in reading order."""
    channels, height, width = maps.shape
    per_row = min(per_row, channels)
    rows = math.ceil(channels / per_row)
    grid = np.zeros((rows * height, per_row * width), maps.dtype)
    for index in range(channels):
        row, col = divmod(index, per_row)
        grid[row * height : (row + 1) * height, col * width : (col + 1) * width] = maps[index]
    return grid


def activations(
    model: nn.Module, preprocessing, image, layers: Sequence[str] | None = None, per_row: int = IMAGES_PER_ROW
) -> list[ActivationGrid]:
    """Every channel of each layer for one image, one grid per layer.

    Args:
        model: any vislab model.
        preprocessing: its :class:`~vislab.data.preprocess.Preprocessing`.
        image: uint8 (C, H, W).
        layers: ``model.named_modules()`` names; default :func:`default_layers` (the first 8).
        per_row: channels per grid row.

    Raises:
        ValueError: a layer name is unknown (the message lists valid names) or its output is not a map.

    Example:
        >>> grids = activations(loaded.model, loaded.preprocessing, read_image("cat.jpg"))  # doctest: +SKIP
    """
    image = as_image_tensor(image)
    names = list(layers) if layers else default_layers(model, preprocessing.input_size)
    targets = [_with_token_layout(model, TargetLayer(name, get_layer(model, name, preprocessing.input_size), flag="--layers"),
                                  preprocessing.input_size) for name in names]
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for target in targets:
        def hook(_module, _inputs, output, target=target):
            if isinstance(output, torch.Tensor) and target.name not in outputs:
                outputs[target.name] = target.to_map(output.detach())

        handles.append(target.module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), no_inplace(model):
            model(preprocessing(image).unsqueeze(0).to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    grids = []
    for target in targets:
        if target.name not in outputs:
            raise ConfigError(f"layer {target.name!r} did not run in the forward pass (or gave no tensor); pick another")
        maps = outputs[target.name][0]
        grids.append(ActivationGrid(target.name, maps.shape[0], tuple(maps.shape[1:]), tile(normalise_channels(maps), per_row)))
    return grids


def save_activations(grids: Sequence[ActivationGrid], out_dir, prefix: str = "activations", image=None) -> list[Path]:
    """One PNG per layer in ``out_dir``: ``{prefix}_{image stem}_{NN}_{layer}.png`` (``{prefix}_{NN}_{layer}.png``
    without ``image``, the file the grids were drawn for), each titled with the image's name."""
    from vislab.explain.explainers import safe_filename
    from vislab.viz.explain import activation_grid_figure, save_figure

    stem = f"_{safe_filename(Path(image).stem)}" if image is not None else ""
    shown = f"{Path(image).name}, " if image is not None else ""
    paths = []
    for number, grid in enumerate(grids):
        title = f"{shown}{grid.name}: {grid.channels} channels of {grid.map_size[0]}x{grid.map_size[1]}"
        name = f"{prefix}{stem}_{number:02d}_{grid.name.replace('.', '_')}.png"
        paths.append(save_figure(activation_grid_figure(grid.grid, title), Path(out_dir) / name))
    return paths
