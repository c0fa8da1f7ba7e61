"""Freezing, fine-tuning and new heads, the same way on every model family.

A model is seen as *backbone* + *head*. The head is the classifier
(``get_classifier()``), the whole ``head`` of vislab's own :class:`FeatureHeadNet`,
or a head put on by :func:`replace_head`. The backbone's *blocks* are the model's own
units, not raw layers: timm's ``blocks`` / ``stages`` / ``layers`` / ``layerN``,
VGG's conv blocks (split at the pooling layers), a ``FeatureHeadNet``'s conv blocks,
and a Hugging Face encoder's layers.

Typical use (the training loop does this from ``--freeze``, ``--finetune-last``,
``--freeze-epochs``, ``--lr-backbone`` and ``--head``):

Example:
    >>> import torch, timm
    >>> model = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    >>> _ = freeze(model, "backbone")
    >>> _ = finetune_last(model, 2)      # blocks.5, blocks.6 and everything after them
    >>> [name for name, _ in backbone_blocks(model)][-2:]
    ['blocks.5', 'blocks.6']
    >>> groups = param_groups(model, lr=1e-3, lr_backbone=1e-4)
    >>> optimizer = torch.optim.Adam(groups)
    >>> _ = keep_frozen_bn_eval(model.train())   # frozen BatchNorm keeps its statistics
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from vislab.core.errors import ConfigError
from vislab.core.weights import parameter_counts
from vislab.models.classic import Dropout

FREEZE_MODES = ("none", "backbone")
HEAD_KINDS = ("linear", "mlp")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NO_DECAY_NDIM = 1  # biases and norm scales: weight decay only shrinks them towards useless values


# ---------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------
def make_head(in_features: int, num_classes: int, kind: str = "linear", hidden: int = 256,
              dropout: float = 0.5) -> nn.Module:
    """A classifier head on pooled features.

    Args:
        in_features: width of the pooled features (``model.num_features``).
        num_classes: outputs.
        kind: ``linear`` (one Linear) or ``mlp``: the seeds' GAP -> Dense(hidden, relu)
            -> Dropout -> Dense (the global average pooling is the backbone's own).
        hidden: width of the hidden Dense layer (``mlp``).
        dropout: dropout rate before the last Dense (``mlp``).

    Example:
        >>> make_head(1280, 10, "mlp", hidden=256)
        Sequential(
          (0): Linear(in_features=1280, out_features=256, bias=True)
          (1): ReLU(inplace=True)
          (2): Dropout(p=0.5, inplace=False)
          (3): Linear(in_features=256, out_features=10, bias=True)
        )
    """
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), Dropout(dropout), nn.Linear(hidden, num_classes)
        )
    raise ConfigError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")


def classifier_path(model: nn.Module) -> str:
    """Dotted name of the module ``get_classifier()`` returns (``classifier``, ``fc``, ``head.fc``...)."""
    target = model.get_classifier()
    for name, module in model.named_modules():
        if module is target and name:
            return name
    raise ValueError(f"{type(model).__name__}.get_classifier() is not a submodule; cannot replace the head")


def feature_width(model: nn.Module) -> int:
    """Width of the pooled features the classifier reads."""
    width = getattr(model, "num_features", None)
    if isinstance(width, int) and width > 0 and not hasattr(model, "features"):
        return width
    linears = [m for m in model.get_classifier().modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[0].in_features
    if isinstance(width, int) and width > 0:
        return width
    raise ValueError(f"cannot tell the feature width of {type(model).__name__}; pass in_features to make_head")


def replace_head(model: nn.Module, num_classes: int, kind: str = "linear", hidden: int = 256,
                 dropout: float = 0.5) -> nn.Module:
    """Put a new head (:func:`make_head`) in place of the model's classifier.

    timm models and Hugging Face models get it where ``get_classifier()`` was, so
    ``forward_head`` still pools first; a :class:`FeatureHeadNet` gets its last Linear
    replaced. The new head is remembered as ``model.vislab_head`` so freezing keeps
    all of it trainable.

    Example:
        >>> import timm
        >>> model = replace_head(timm.create_model("resnet18", num_classes=5), 5, "mlp")
        >>> model(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 5])
    """
    head = make_head(feature_width(model), num_classes, kind, hidden, dropout)
    path = classifier_path(model)
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = head
    else:
        setattr(parent, child, head)
    model.vislab_head_path = path
    return model


# ---------------------------------------------------------------------------
# which parts are the head and the blocks
# ---------------------------------------------------------------------------
def head_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules ``freeze(model, "backbone")`` leaves trainable."""
    path = getattr(model, "vislab_head_path", None)
    if path:
        return [(path, model.get_submodule(path))]
    if _is_feature_head_net(model):
        return [("head", model.head)]
    if hasattr(model, "get_classifier"):
        return [(classifier_path(model), model.get_classifier())]
    raise ValueError(
        f"{type(model).__name__} has no get_classifier(); vislab can only freeze models with timm's interface"
    )


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters outside the head (:func:`head_modules`): what ``freeze(model, "backbone")`` freezes.
    None for a network that is all head, such as vislab's ``mlp`` (its ``features`` hold nothing).

    Example:
        >>> import timm
        >>> from vislab.models.classic import mlp
        >>> len(backbone_parameters(mlp(10))), len(backbone_parameters(timm.create_model("resnet18"))) > 0
        (0, True)
    """
    head = {id(p) for _, module in head_modules(model) for p in module.parameters()}
    return [p for p in model.parameters() if id(p) not in head]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm layer (what ``--bn frozen`` and ``--bn reestimate`` act on)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _is_feature_head_net(model: nn.Module) -> bool:
    from vislab.models.classic import FeatureHeadNet

    return isinstance(model, FeatureHeadNet)


def _split_at_pools(seq: nn.Sequential, prefix: str) -> list[tuple[str, list[nn.Module]]]:
    """Conv blocks of a flat Sequential: everything up to and including each pooling layer
    (and the Dropout right after it), as the seeds' Keras listings group them."""
    blocks, current, names = [], [], []
    children = list(seq.named_children())
    for index, (name, module) in enumerate(children):
        current.append(module)
        names.append(name)
        following = children[index + 1][1] if index + 1 < len(children) else None
        closes = isinstance(module, _POOLS) or (
            isinstance(module, nn.Dropout) and any(isinstance(m, _POOLS) for m in current)
        )
        if closes and not isinstance(following, nn.Dropout):
            blocks.append((f"{prefix}.{names[0]}-{names[-1]}", current))
            current, names = [], []
    if current:
        blocks.append((f"{prefix}.{names[0]}-{names[-1]}", current))
    return [b for b in blocks if any(True for m in b[1] for _ in m.parameters())]


def backbone_blocks(model: nn.Module) -> list[tuple[str, nn.Module | list[nn.Module]]]:
    """The backbone's own blocks, first to last, as ``(name, module or modules)``.

    Looked up in this order: a Hugging Face encoder's layers; ``blocks``; ``stages``;
    ``layers``; ResNet-style ``layer1..layerN``; a ``features`` Sequential split into
    conv blocks at its pooling layers (VGG, vislab's networks); else the model's direct
    children that hold parameters, less the head (Inception-v3's ``Mixed_*``...).

    Example:
        >>> import timm
        >>> [name for name, _ in backbone_blocks(timm.create_model("resnet18"))]
        ['layer1', 'layer2', 'layer3', 'layer4']
    """
    head_ids = {id(m) for _, m in head_modules(model)}
    hf_blocks = getattr(model, "_block_path", None)
    if hf_blocks is not None and getattr(model, "blocks", None) is not None:
        prefix = f"{_name_of(model, model.blocks)}"
        return [(f"{prefix}.{i}", m) for i, m in enumerate(model.blocks)]
    for attr in ("blocks", "stages", "layers"):
        container = getattr(model, attr, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container):
            return [(f"{attr}.{name}", m) for name, m in container.named_children()]
    numbered = [(n, m) for n, m in model.named_children() if re.fullmatch(r"layer\d+", n)]
    if numbered:
        return numbered
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return _split_at_pools(features, "features")
    return [
        (n, m) for n, m in model.named_children()
        if id(m) not in head_ids and any(True for _ in m.parameters())
    ]


def _name_of(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    return "blocks"


def _params_of(item) -> list[nn.Parameter]:
    modules = item if isinstance(item, list) else [item]
    return [p for m in modules for p in m.parameters()]


# ---------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------
def freeze(model: nn.Module, mode: str = "backbone") -> nn.Module:
    """Freeze the backbone (train only the head), or unfreeze everything with ``mode="none"``.

    Args:
        model: a vislab, timm or Hugging Face model.
        mode: ``backbone``: every parameter but the head's stops training (feature
            extraction); ``none``: every parameter trains.

    Example:
        >>> import timm
        >>> model = freeze(timm.create_model("resnet18", num_classes=3), "backbone")
        >>> sum(p.numel() for p in model.parameters() if p.requires_grad)   # fc only
        1539
    """
    if mode not in FREEZE_MODES:
        raise ConfigError(f"unknown freeze mode {mode!r}; choose one of {', '.join(FREEZE_MODES)}")
    if mode == "none":
        return unfreeze(model)
    for param in model.parameters():
        param.requires_grad_(False)
    for _, head in head_modules(model):
        for param in head.parameters():
            param.requires_grad_(True)
    return model


def unfreeze(model: nn.Module, last: int | None = None) -> nn.Module:
    """Make parameters trainable again: all of them, or (``last=N``) the last N blocks and after.

    Used for gradual unfreezing: train the head for ``freeze_epochs`` epochs, then
    call this and keep training (the optimiser already holds every parameter when it
    was built with :func:`param_groups`).
    """
    if last:
        return finetune_last(model, last)
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def unfreeze_stage(model: nn.Module, blocks: int | None) -> str:
    """One ``--unfreeze-at`` stage: the top ``blocks`` backbone blocks train (None, or as many as the backbone
    has: all of it); returns what was unfrozen, in words (``"the top 2 blocks"``, ``"the whole backbone"``)."""
    whole = blocks is None or blocks >= len(backbone_blocks(model))
    unfreeze(model, None if whole else blocks)
    return "the whole backbone" if whole else f"the top {blocks} blocks"


def finetune_last(model: nn.Module, n: int) -> nn.Module:
    """Unfreeze the last ``n`` blocks of the backbone and everything after them (final norm/conv, head).

    Blocks are counted in the model's own units (:func:`backbone_blocks`); what comes
    after the last block in the model's parameter order (EfficientNet's ``conv_head``,
    a ViT's final ``norm``, the head) trains too. Parameters before stay as they are
    (frozen after :func:`freeze`).

    Raises:
        ConfigError: ``n`` is not in 1..number of blocks (a ValueError, named as the flag ``--finetune-last``).

    Example:
        >>> import timm
        >>> model = freeze(timm.create_model("vit_tiny_patch16_224", num_classes=2), "backbone")
        >>> _ = finetune_last(model, 2)
        >>> model.blocks[10].attn.qkv.weight.requires_grad, model.blocks[9].attn.qkv.weight.requires_grad
        (True, False)
    """
    blocks = backbone_blocks(model)
    if not 1 <= n <= len(blocks):
        names = ", ".join(name for name, _ in blocks) or "none"
        raise ConfigError(
            f"--finetune-last {n}: {type(model).__name__} has {len(blocks)} blocks ({names}); choose 1..{len(blocks)}"
        )
    first_params = _params_of(blocks[-n][1])
    if not first_params:
        raise ValueError(f"block {blocks[-n][0]} holds no parameters; cannot fine-tune from it")
    start = id(first_params[0])
    started = False
    for param in model.parameters():  # registration order: the blocks, then what follows them
        started = started or id(param) == start
        if started:
            param.requires_grad_(True)
    for param in first_params:  # whatever the order, the chosen blocks themselves train
        param.requires_grad_(True)
    for _, block in blocks[-n:]:
        for param in _params_of(block):
            param.requires_grad_(True)
    return model


def _all_frozen(module: nn.Module, recurse: bool = False) -> bool | None:
    params = list(module.parameters(recurse=recurse))
    if not params:
        return None
    return not any(p.requires_grad for p in params)


def keep_frozen_bn_eval(model: nn.Module) -> nn.Module:
    """Put frozen BatchNorm layers in eval mode; call it after every ``model.train()``.

    A frozen BatchNorm in train mode would still normalise with the batch's statistics
    and overwrite its running mean/var, so the "frozen" features would drift. A BatchNorm
    without affine parameters counts as frozen when its parent module is.

    Example:
        >>> import timm
        >>> model = freeze(timm.create_model("resnet18", num_classes=3), "backbone")
        >>> _ = model.train(); _ = keep_frozen_bn_eval(model)
        >>> model.bn1.training
        False
    """
    parents: dict[int, nn.Module] = {}
    for module in model.modules():
        for child in module.children():
            parents[id(child)] = module
    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        frozen = _all_frozen(module)
        if frozen is None:
            parent = parents.get(id(module))
            frozen = bool(parent is not None and _all_frozen(parent, recurse=True))
        if frozen:
            module.eval()
    return model


# ---------------------------------------------------------------------------
# optimiser groups and reporting
# ---------------------------------------------------------------------------
def param_groups(model: nn.Module, lr: float, lr_backbone: float | None = None, weight_decay: float = 0.0,
                 include_frozen: bool = True, lr_decay: float = 1.0) -> list[dict]:
    """Optimiser parameter groups: the head at ``lr``, the backbone at ``lr_backbone`` (discriminative LR).

    Biases and normalisation scales (1-D tensors) get no weight decay. Frozen parameters
    are included by default, so unfreezing later (gradual unfreezing) needs no new
    optimiser: a parameter without a gradient is skipped by every torch optimiser.
    The head's groups come last (the loop logs the last group's learning rate).

    Args:
        model: the model.
        lr: learning rate of the head.
        lr_backbone: learning rate of the backbone (None: ``lr``).
        weight_decay: decay of weight matrices / kernels.
        include_frozen: also hold parameters that do not train now.
        lr_decay: discriminative LRs per block group (layer-wise decay): the backbone's top
            block and what follows it get ``lr_backbone``, each block below it ``lr_decay``
            times the one above, the stem ``lr_decay`` times the first block. 1: one backbone LR.

    Example:
        >>> import timm
        >>> groups = param_groups(timm.create_model("resnet18", num_classes=3), 1e-3, 1e-5, 1e-4)
        >>> [(g["name"], g["lr"]) for g in groups]
        [('backbone', 1e-05), ('backbone_no_decay', 1e-05), ('head', 0.001), ('head_no_decay', 0.001)]
    """
    head_ids = {id(p) for _, m in head_modules(model) for p in m.parameters()}
    lr_backbone = lr if lr_backbone is None else lr_backbone
    if lr_decay != 1:
        return _layerwise_groups(model, lr, lr_backbone, weight_decay, include_frozen, lr_decay, head_ids)
    buckets: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_no_decay": [], "head": [], "head_no_decay": []}
    for param in model.parameters():
        if not include_frozen and not param.requires_grad:
            continue
        part = "head" if id(param) in head_ids else "backbone"
        no_decay = weight_decay and param.ndim <= _NO_DECAY_NDIM
        buckets[part + ("_no_decay" if no_decay else "")].append(param)
    groups = []
    for name, params in buckets.items():
        if params:
            groups.append({
                "name": name, "params": params, "lr": lr if name.startswith("head") else lr_backbone,
                "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay,
            })
    return groups


def _layerwise_groups(model, lr, lr_backbone, weight_decay, include_frozen, lr_decay, head_ids) -> list[dict]:
    """Per-block groups for :func:`param_groups` with ``lr_decay`` (stem first, head last)."""
    blocks = backbone_blocks(model)
    depth_of: dict[int, int] = {}  # parameter -> how many blocks below the top it sits
    for index, (_, block) in enumerate(blocks):
        for param in _params_of(block):
            depth_of.setdefault(id(param), len(blocks) - 1 - index)
    first_block = {id(p) for p in _params_of(blocks[0][1])} if blocks else set()
    seen_block = False
    order: list[str] = []
    buckets: dict[str, tuple[float, float, list]] = {}
    for param in model.parameters():
        seen_block = seen_block or id(param) in first_block
        if not include_frozen and not param.requires_grad:
            continue
        if id(param) in head_ids:
            name, group_lr = "head", lr
        elif id(param) in depth_of:
            depth = depth_of[id(param)]
            name, group_lr = f"block{len(blocks) - 1 - depth}", lr_backbone * lr_decay ** depth
        elif not seen_block:  # the stem, before the first block
            name, group_lr = "stem", lr_backbone * lr_decay ** len(blocks)
        else:  # after the blocks (EfficientNet's conv_head/bn2, a ViT's final norm)
            name, group_lr = "neck", lr_backbone
        no_decay = bool(weight_decay) and param.ndim <= _NO_DECAY_NDIM
        key = name + ("_no_decay" if no_decay else "")
        if key not in buckets:
            buckets[key] = (group_lr, 0.0 if no_decay else weight_decay, [])
            order.append(key)
        buckets[key][2].append(param)
    order.sort(key=lambda k: k.startswith("head"))  # stable: the head's groups last, as the loop logs it
    return [{"name": k, "params": buckets[k][2], "lr": buckets[k][0], "weight_decay": buckets[k][1]} for k in order]


def set_bn_eval(model: nn.Module) -> nn.Module:
    """Every BatchNorm in eval mode (its running statistics used and kept); affine weights still train.

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet18", num_classes=3).train()
        >>> set_bn_eval(model).bn1.training, model.training
        (False, True)
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches) -> nn.Module:
    """Recompute every BatchNorm's running mean/var on ``batches`` (model inputs), then keep them.

    ImageNet statistics are off for upsampled grey 28 px images; one pass over the new
    training data in train mode with a cumulative average (``momentum=None``) replaces them,
    with no weight changing. Use :func:`set_bn_eval` while training afterwards.

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet18", num_classes=3)
        >>> _ = reestimate_bn(model, [torch.randn(4, 3, 32, 32) + 5])
        >>> float(model.bn1.running_mean.abs().mean()) > 0
        True
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch
    model.train()
    seen = 0
    for x in batches:
        model(x)
        seen += len(x)
    if not seen:
        raise ValueError("reestimate_bn: no batches to estimate the BatchNorm statistics from")
    for norm, (momentum, training) in zip(norms, saved):
        norm.momentum = momentum
    model.train(was_training)
    return model


def trainable_modules(model: nn.Module) -> list[tuple[str, int]]:
    """The largest modules all of whose parameters train, as ``(name, parameter count)``."""
    out: list[tuple[str, int]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        params = list(module.parameters())
        if not params or not any(p.requires_grad for p in params):
            return
        if all(p.requires_grad for p in params) and prefix:
            out.append((prefix, sum(p.numel() for p in params)))
            return
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            out.append((f"{prefix or '<model>'} (own parameters)", sum(p.numel() for p in own)))
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return out


def trainable_report(model: nn.Module) -> str:
    """Which modules train, and the trainable / non-trainable parameter counts, as text.

    Example:
        >>> import timm
        >>> print(trainable_report(freeze(timm.create_model("resnet18", num_classes=3))))
        trainable modules: fc (1,539)
        parameters: 1,539 trainable, 11,176,512 non-trainable, 11,178,051 total
    """
    counts = parameter_counts(model)
    trainable, frozen = counts["trainable"], counts["non_trainable"]
    modules = trainable_modules(model)
    if not frozen:
        listing = "all"
    elif not modules:
        listing = "none"
    else:
        listing = ", ".join(f"{name} ({count:,})" for name, count in modules)
    return (
        f"trainable modules: {listing}\n"
        f"parameters: {trainable:,} trainable, {frozen:,} non-trainable, {trainable + frozen:,} total"
    )


class GradualUnfreeze:
    """Keep the backbone frozen for ``freeze_epochs`` epochs, then unfreeze it (all, or the last N blocks).

    Example:
        >>> import timm
        >>> model = freeze(timm.create_model("resnet18", num_classes=3))
        >>> schedule = GradualUnfreeze(model, freeze_epochs=2)
        >>> [schedule.on_epoch_start(epoch) for epoch in range(4)]
        [False, False, True, False]
    """

    def __init__(self, model: nn.Module, freeze_epochs: int, last: int | None = None):
        self.model, self.freeze_epochs, self.last = model, int(freeze_epochs), last

    def on_epoch_start(self, epoch: int) -> bool:
        """Unfreeze at the start of epoch ``freeze_epochs`` (0-based); True when it did."""
        if self.freeze_epochs and epoch == self.freeze_epochs:
            unfreeze(self.model, self.last)
            return True
        return False
