"""From a :class:`ModelConfig` and the data's shape to a model plus its :class:`Preprocessing`.

The one place that decides input size and normalisation for a new model; a saved
run reads them back from ``model.json`` instead.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vislab.core.errors import ConfigError
from vislab.data.preprocess import Preprocessing
from vislab.models.classic import FeatureHeadNet
from vislab.models.registry import create_model, input_too_small, needs_rgb

MIN_NATIVE_SIZE = 28  # smaller images (e.g. 8x8 digits) are upsampled to the model's default size


def resolve_input_size(model_cfg, native_size) -> tuple[int, int] | None:
    if model_cfg.input_size:
        size = model_cfg.input_size
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[-1]))
    if native_size and min(native_size) >= MIN_NATIVE_SIZE and not model_cfg.pretrained and not model_cfg.weights:
        return tuple(native_size)
    return None


def build_model(model_cfg, num_classes: int, in_chans: int, native_size=None,
                load_pretrained: bool = True) -> tuple[nn.Module, Preprocessing]:
    """Create the model described by ``model_cfg`` for ``num_classes`` and ``in_chans`` inputs.

    Args:
        model_cfg: a :class:`vislab.core.config.ModelConfig`.
        native_size: (H, W) of the data when every image shares it (in-memory sets).
        load_pretrained: False when the weights will come from a run folder anyway.
    """
    size = resolve_input_size(model_cfg, native_size)
    options = dict(model_cfg.options or {})
    if "in_chans" in options:  # --model-opt in_chans=3: the user's channel count (gray data is repeated)
        try:
            in_chans = int(options.pop("in_chans"))
        except (TypeError, ValueError):
            raise ConfigError(f"model option in_chans={model_cfg.options['in_chans']!r} is not a whole number; "
                              "use --model-opt in_chans=3 (RGB) or in_chans=1 (gray)") from None
    if in_chans == 1 and needs_rgb(model_cfg.name, bool(model_cfg.pretrained or model_cfg.weights)):
        # pretrained filters and Hugging Face models are RGB: gray images are repeated to 3 channels
        # (Preprocessing.convert_channels), as in the tutorials
        in_chans = 3
    pretrained = bool(model_cfg.pretrained) and load_pretrained
    if model_cfg.weights and load_pretrained:
        options["weights"] = model_cfg.weights
    if size is not None:
        options["input_size"] = size
    model = create_model(model_cfg.name, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained, **options)
    if model_cfg.head != "linear":
        from vislab.models.finetune import replace_head

        replace_head(model, num_classes, kind=model_cfg.head)
    if size is not None and min(size) < SMALL_INPUT:
        _check_runs_at(model, model_cfg.name, in_chans, size)
    return model, model_preprocessing(model, in_chans, size)


SMALL_INPUT = 32  # below this many pixels a network's pooling may leave nothing: one forward checks it


def _check_runs_at(model: nn.Module, name: str, in_chans: int, size) -> None:
    """One forward of a blank image at ``size`` (cheap at such sizes): a network whose pooling or
    strides leave no pixels says so now, naming --input-size, not as a shape error mid-epoch."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, *size))
    except (RuntimeError, ValueError) as exc:
        raise input_too_small(name, size, exc) from None
    finally:
        model.train(was_training)


def model_preprocessing(model: nn.Module, in_chans: int, size=None) -> Preprocessing:
    if isinstance(model, FeatureHeadNet):
        height, width = size or model.default_input_size
        return Preprocessing((in_chans, height, width), model.default_mean, model.default_std)
    if hasattr(model, "vislab_preprocessing"):  # set by pretrained loaders (HF models, lite0 weights)
        pre = model.vislab_preprocessing
        return pre if size is None else Preprocessing((in_chans, *size), pre.mean, pre.std, pre.interpolation)
    pre = Preprocessing.from_timm(model, in_chans=in_chans)
    if pre.crop_pct < 1.0:
        # a new data set: resize the whole image; ImageNet's centre crop cut 2-3 points off
        # Fashion-MNIST transfer in benchmarks/bench_transfer.py (imagenet:NAME keeps the crop)
        pre = Preprocessing(pre.input_size, pre.mean, pre.std, pre.interpolation, 1.0)
    if size is not None:
        pre = Preprocessing((in_chans, *size), pre.mean, pre.std, pre.interpolation, 1.0)
    return pre
