"""timm models through vislab's registry.

timm already gives every model ``forward_features``/``forward_head``/``reset_classifier``
and a ``pretrained_cfg`` with its preprocessing; vislab reads those rather than copying them.
"""

from __future__ import annotations

import torch.nn as nn


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
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad option for timm model {name!r}: {exc}") from None
    if input_size is not None:
        model.vislab_input_size = tuple(input_size)
    model.vislab_name = name
    return model
