"""timm models through vislab's registry.

timm already gives every model ``forward_features``/``forward_head``/``reset_classifier``
and a ``pretrained_cfg`` with its preprocessing; vislab reads those rather than copying them.
"""

from __future__ import annotations

import torch.nn as nn

from vislab.core.errors import ConfigError


def create_timm_model(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    """``timm.create_model`` with vislab's error messages.

    Pretrained weights go through :mod:`vislab.models.pretrained`, which also covers
    offline files (``weights=PATH``) and the shipped EfficientNet-Lite0 weights.
    """
    import timm

    if pretrained or kwargs.get("weights"):
        from vislab.models import pretrained as pretrained_mod

        return pretrained_mod.create_pretrained_timm(name, num_classes, in_chans, **kwargs)
    input_size = kwargs.pop("input_size", None)
    try:
        model = timm_create(timm, name, input_size, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                            **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad option for timm model {name!r}: {exc}") from None
    if input_size is not None:
        model.vislab_input_size = tuple(input_size)
    model.vislab_name = name
    return model


def timm_create(timm, name: str, input_size=None, **kwargs) -> nn.Module:
    """``timm.create_model`` built for ``input_size`` (H, W) where the architecture fixes it.

    Patch-embedding models (ViT, DeiT, BEiT, Swin, MobileViT...) size their position
    embeddings at construction and refuse other inputs, so they get ``img_size``; timm
    resamples pretrained position embeddings to it. Convolutional networks take any size
    and have no such argument: they are built as they are.

    Example:
        >>> import timm, torch
        >>> vit = timm_create(timm, "vit_tiny_patch16_224", (64, 64), num_classes=3)
        >>> vit(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 3])
    """
    if input_size is None:
        return timm.create_model(name, **kwargs)
    size = tuple(int(v) for v in input_size)[-2:]
    try:
        return timm.create_model(name, img_size=size, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
    return timm.create_model(name, **kwargs)
