"""Which layer to explain, and how to turn its output into a spatial map.

Grad-CAM needs a layer whose output is a grid of feature vectors:

* vislab's own :class:`~vislab.models.classic.FeatureHeadNet` models: the last
  convolution or activation of ``model.features`` (after it only pooling and
  dropout follow, which add nothing but lose resolution);
* timm (and other) CNNs: the module whose output *is* ``forward_features(x)``,
  the last conv stage, found by running one dummy batch with hooks;
* vision transformers: the last block's first norm (``blocks[-1].norm1`` in
  timm, ``layernorm_before`` in Hugging Face), whose patch tokens are reshaped
  to a grid after dropping the class/prefix tokens. The final norm would not
  do: after it only the class token reaches the classifier, so patch tokens
  get zero gradient.

``layer="NAME"`` overrides the choice with any ``model.named_modules()`` name but an
``nn.Identity`` of a model without convolutions (an MLP's ``features`` passes the image through):
it has no feature map of its own.

Example:
    >>> from vislab.models import create_model
    >>> model = create_model("seed_cnn2", num_classes=2, input_size=(32, 32))
    >>> find_target_layer(model, (3, 32, 32)).name
    'features.4'
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from vislab.core.device import model_device
from vislab.core.errors import ConfigError

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Sigmoid, nn.Tanh, nn.PReLU,
)
# Layers that only shrink or regularise a map; the explanation looks before them.
_SKIP = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
)


class NoFeatureMapError(ValueError):
    """Grad-CAM asked of a model without convolution layers (an MLP): it has no feature map to weight.

    ``model`` names the model in the message: its class here; :func:`vislab.explain.explain_files` names
    it as the run does (``mlp``).
    """

    def __init__(self, model: str, detail: str = ""):
        super().__init__(
            f"{model} has no convolution layers{detail}, so there is no feature map to explain with Grad-CAM; "
            "use the lime, occlusion or integrated-gradients method (`--method occlusion`)."
        )
        self.model = model
        self.detail = detail

    def __reduce__(self):  # the same error after a trip through pickle (a worker process)
        return type(self), (self.model, self.detail)


@dataclass
class TargetLayer:
    """A layer chosen for explanation.

    Attributes:
        name: its ``model.named_modules()`` name.
        module: the module itself.
        prefix_tokens: for token outputs (N, T, D), how many leading tokens are
            not patches (class / distillation / register tokens).
        grid: for token outputs, the (height, width) of the patch grid.
        flag: the command-line option that named it, for the advice in an error
            (``--layer`` for explain and filters, ``--layers`` for activations).
    """

    name: str
    module: nn.Module
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    flag: str = "--layer"

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """Layer output -> (N, C, h, w); token outputs are reshaped to the patch grid."""
        if output.dim() == 4:
            return output
        if output.dim() == 3:
            tokens = output[:, self.prefix_tokens :, :]
            height, width = self.grid or _square_grid(tokens.shape[1])
            return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)
        raise ConfigError(
            f"layer {self.name!r} gives a {output.dim()}-D output {tuple(output.shape)}; "
            "this needs a 4-D feature map (N, C, H, W) or 3-D tokens (N, T, D). "
            f"Pick a convolution or block layer with {self.flag} NAME (`vislab summary MODEL` lists them)."
        )


def layer_names(model: nn.Module) -> list[str]:
    """Every name ``layer=`` accepts (``model.named_modules()`` without the root)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str, input_size: tuple[int, int, int] | None = None) -> nn.Module:
    """The module called ``name``; an unknown name is an error that lists valid ones (with ``input_size``,
    only the layers that run in a forward pass: :func:`layers_that_run`).

    Raises:
        ValueError: ``name`` is not in ``model.named_modules()``.
    """
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    names = _listed_names(model, input_size)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"the model has no layer {name!r}.{hint} {layer_listing(model, input_size)}")


def layers_that_run(model: nn.Module, input_size: tuple[int, int, int]) -> set[str]:
    """The ``model.named_modules()`` names whose forward runs and gives a tensor when the model runs on one
    dummy batch of ``input_size``: a container its parent slices (fastnet's ``head``, whose
    ``forward_head`` calls ``head[:-1]`` and ``head[-1]``) never runs itself, so no hook on it fires."""
    finished, _ = _record_outputs(model, input_size, features=False)
    return {name for name, _ in finished}


def _dummy_forward(model: nn.Module, input_size, hooks: list, features: bool = False):
    """One zero batch of ``input_size`` through ``model`` in eval mode, without gradients (``features``: its
    ``forward_features`` when it has one); then the ``hooks`` (forward-hook handles) removed and the mode
    restored. Returns the output."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            dummy = torch.zeros(1, *input_size, device=model_device(model))
            return model.forward_features(dummy) if features and hasattr(model, "forward_features") else model(dummy)
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)


def _listed_names(model: nn.Module, input_size) -> list[str]:
    """:func:`layer_names`, without those that never run when ``input_size`` says how to run the model."""
    names = layer_names(model)
    if input_size is None:
        return names
    try:
        ran = layers_that_run(model, input_size)
    except Exception:  # the listing is advice: a model that cannot run here keeps every name
        return names
    return [name for name in names if name in ran] or names


def layer_listing(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> str:
    """"Valid layer names: ..." for an error message; a timm model's hundreds of leaves as its blocks. With
    ``input_size``, the layers that never run in a forward pass (:func:`layers_that_run`) are left out."""
    names = _listed_names(model, input_size)
    if len(names) <= 60:
        return f"Valid layer names: {', '.join(names)}"
    shallow = [n for n in names if n.count(".") <= 1]
    return (f"Valid layer names include: {', '.join(shallow[:80])}{' ...' if len(shallow) > 80 else ''} "
            f"(all {len(names)}: `vislab summary MODEL` or vislab.explain.layer_names(model))")


def passes_through(module: nn.Module) -> bool:
    """Whether ``module`` computes nothing, its output being its input (``nn.Identity``): no feature map."""
    return isinstance(module, nn.Identity)


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` has any convolution (1-, 2- or 3-D): without one it has no feature maps (an MLP)."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def _refuse_pass_through(model: nn.Module, target: TargetLayer) -> None:
    """An nn.Identity of a model without convolutions passes the image itself on (an MLP's ``features``): no
    feature map. In a network with convolutions an nn.Identity passes a feature map on (timm's ``norm_pre``,
    ``final_conv`` placeholders): it is explained as the layer before it."""
    if passes_through(target.module) and not has_convolutions(model):
        raise ConfigError(f"layer {target.name!r} is an nn.Identity: it passes its input through unchanged, so it has "
                          "no feature map of its own, and the model has no convolution layers, so no layer has one; "
                          "`vislab explain --method occlusion` shows what it looks at")


def find_target_layer(model: nn.Module, input_size: tuple[int, int, int], layer: str | None = None) -> TargetLayer:
    """Pick the layer to explain (see the module docstring for the rules).

    Args:
        model: any vislab model (eval mode is not required; the dummy pass runs without grad).
        input_size: (C, H, W) of the model input, used for one dummy forward pass.
        layer: a ``model.named_modules()`` name to use instead of the automatic choice.

    Raises:
        NoFeatureMapError: the model has no convolution layers (an MLP).
        ValueError: the name is unknown, or an ``nn.Identity`` of a model without convolutions, or no spatial
            layer is found automatically.
    """
    if layer is not None:
        module = get_layer(model, layer, input_size)
        if passes_through(module) and not has_convolutions(model):
            raise NoFeatureMapError(type(model).__name__,
                                    f" (its layer {layer!r} is an nn.Identity that passes the image through unchanged)")
        return _with_token_layout(model, TargetLayer(layer, module), input_size)
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module) and hasattr(model, "head"):
        if not any(isinstance(m, nn.Conv2d) for m in features.modules()):
            raise NoFeatureMapError(type(model).__name__)
        if isinstance(features, nn.Sequential):
            return _feature_head_target(model, features)
    finished, features = _record_outputs(model, input_size)
    if isinstance(features, torch.Tensor) and features.dim() == 4:
        return _forward_features_target(model, finished, features)
    # Tokens (timm ViT) or a pooled vector (Hugging Face wrappers): a transformer's last
    # pre-attention norm, else the last spatial map before pooling (HF ResNet/ConvNeXt).
    shapes = dict(finished)
    for name in _transformer_norm_names(model):
        if len(shapes.get(name, ())) == 3:
            return _with_token_layout(model, TargetLayer(name, get_layer(model, name)), input_size)
    for name, shape in reversed(finished):
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            return TargetLayer(name, get_layer(model, name))
    shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
    raise ConfigError(
        f"cannot find a spatial layer automatically: forward_features gives {shape} and no layer "
        "gives a feature map. Name one with --layer NAME (`vislab summary MODEL` lists them)."
    )


def _feature_head_target(model: nn.Module, features: nn.Sequential) -> TargetLayer:
    prefix = next(name for name, module in model.named_modules() if module is features)
    for index in range(len(features) - 1, -1, -1):
        child = features[index]
        if isinstance(child, _SKIP):
            continue
        return TargetLayer(f"{prefix}.{index}", child)
    raise NoFeatureMapError(type(model).__name__, " (its `features` is empty)")


def _transformer_norm_names(model: nn.Module) -> list[str]:
    # The last block's pre-attention norm: attention still mixes patch tokens into the class token there.
    names = [n for n, _ in model.named_modules() if n.endswith(("norm1", "layernorm_before"))]
    return names[-1:]


def _record_outputs(model: nn.Module, input_size,
                    features: bool = True) -> tuple[list[tuple[str, tuple]], torch.Tensor]:
    """Run one dummy batch (through ``forward_features`` where the model has it, unless ``features`` is False:
    the whole model); return (name, tensor output shape) in order of completion, and the output."""
    finished: list[tuple[str, tuple]] = []
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor):
                finished.append((name, tuple(output.shape)))

        hooks.append(module.register_forward_hook(hook))
    return finished, _dummy_forward(model, input_size, hooks, features=features)


def _forward_features_target(model: nn.Module, finished, features: torch.Tensor) -> TargetLayer:
    # Hooks fire when a module finishes, so the last module whose output has the
    # forward_features shape is the outermost one that produced it (e.g. resnet's layer4).
    for name, shape in reversed(finished):
        if shape == tuple(features.shape):
            return TargetLayer(name, get_layer(model, name))
    raise ConfigError("no module produces the forward_features output; name one with --layer NAME")


def not_run_error(model: nn.Module, name: str, input_size=None, flag: str = "--layer",
                  gave: str | None = None) -> ConfigError:
    """The one refusal of a layer that does not run in the forward pass (or gives no tensor), for explain,
    activations and filters alike; it names a layer that does run, the automatic Grad-CAM choice, when there
    is one. ``gave``: the type of the non-tensor output it gave, when it ran."""
    what = (f"layer {name!r} gives a {gave}, not a tensor, in the forward pass" if gave else
            f"layer {name!r} did not run in the forward pass")
    suggestion = ""
    if input_size is not None:
        try:
            automatic = find_target_layer(model, input_size)
            if automatic.name != name:
                suggestion = f", e.g. {flag} {automatic.name} (the layer `vislab explain` picks by default)"
        except Exception:  # no feature map (an MLP) or none found: the advice goes without an example
            pass
    return ConfigError(f"{what}; pick another{suggestion}")


def _with_token_layout(model: nn.Module, target: TargetLayer, input_size) -> TargetLayer:
    """For a layer with (N, T, D) output, work out the prefix tokens and the patch grid; a layer that
    computes nothing (:func:`passes_through`), or that does not run in the forward pass (or gives no tensor:
    :func:`not_run_error`), is refused."""
    _refuse_pass_through(model, target)
    gave, shape = _output_shape(model, target.module, input_size)
    if shape is None:
        raise not_run_error(model, target.name, input_size, target.flag, gave=gave)
    if len(shape) != 3:
        return target
    tokens = shape[1]
    grid = None
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "grid_size", None) is not None:
        grid = tuple(int(v) for v in patch_embed.grid_size)
    prefix = getattr(model, "num_prefix_tokens", None)
    if grid is None:
        side = math.isqrt(tokens - (prefix or 0))
        grid = (side, side)
    if prefix is None:
        prefix = tokens - grid[0] * grid[1]
    if prefix < 0 or tokens - prefix != grid[0] * grid[1]:
        raise ValueError(
            f"layer {target.name!r} has {tokens} tokens, which do not form a {grid[0]}x{grid[1]} patch grid; "
            "pick a layer inside the transformer blocks"
        )
    target.prefix_tokens, target.grid = int(prefix), grid
    return target


def _output_shape(model: nn.Module, module: nn.Module, input_size) -> tuple[str | None, tuple | None]:
    """(the type name of the module's first output when it is no tensor, else None; the shape of its first
    tensor output, None when it gave none or did not run)."""
    seen: list[tuple] = []
    other: list[str] = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            if not seen:
                seen.append(tuple(output.shape))
        elif not other:
            other.append(type(output).__name__)

    _dummy_forward(model, input_size, [module.register_forward_hook(hook)])
    return (None if seen else (other[0] if other else None)), (seen[0] if seen else None)


def _square_grid(patches: int) -> tuple[int, int]:
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"{patches} patch tokens do not form a square grid")
    return side, side
