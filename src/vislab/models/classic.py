"""The tutorials' networks, rebuilt in PyTorch with the same layers as their Keras originals.

Every network is a :class:`FeatureHeadNet`: ``features`` (convolutions, what
Grad-CAM and activation views look at) then ``head`` (flatten/pool and dense
layers, the last Linear being the classifier). They share timm's method names
(``forward_features``, ``forward_head(pre_logits=...)``, ``reset_classifier``,
``get_classifier``) so freezing, fine-tuning and explanation code treats a
seed network and a timm network the same way.

Keras ``Dense``/``Conv2D`` default to Glorot-uniform weights and zero biases;
the seeds' accuracy depends on that, so :func:`keras_init` reproduces it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vislab.models.registry import register_model


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper random mask on the CPU; the same maths and state.

    PyTorch's CPU dropout draws one ``bernoulli_`` sample per element, which made it a
    visible share of a vgg_like step (benchmarks/bench_step_costs.py: forward + backward
    on a 128x32x14x14 bf16 activation, 8.5 ms with torch's, 5.8 ms with this). This
    draws 64 random bits per 4 elements (``random_`` on int64) and keeps an element when
    its 16 bits are at or above the ``p`` quantile, so ``p`` is honoured to 1/65,536;
    kept values are scaled by ``1 / (1 - p)`` in the input's dtype, as PyTorch does.
    Other devices (CUDA's fused kernel is fast) and ``inplace=True`` use PyTorch's.

    Example:
        >>> layer = Dropout(0.25).train()
        >>> out = layer(torch.ones(1000, 1000))
        >>> round(float((out > 0).float().mean()), 2), round(float(out.mean()), 2)
        (0.75, 1.0)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.inplace or self.p >= 1:
            return super().forward(x)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, 2**63 - 1)  # all 64 bits random
        uniform16 = bits.view(torch.int16)[:n].view(x.shape)  # 4 independent int16 per word
        keep = uniform16 >= int(round(self.p * 65536)) - 32768
        return x * keep.to(x.dtype).div_(1 - self.p)


class FeatureHeadNet(nn.Module):
    """``features`` -> ``head``; the last ``nn.Linear`` of ``head`` is the classifier.

    A 2-class task may use one logit with a sigmoid (``binary=True``), as Keras'
    ``Dense(1, activation="sigmoid")``; losses and probabilities handle it.
    """

    def __init__(self, features: nn.Module, head: nn.Sequential, default_input_size: tuple[int, int]):
        super().__init__()
        self.features = features
        self.head = head
        self.default_input_size = default_input_size
        self.default_mean = (0.0,)  # the seeds scale by 1/255 and do not centre
        self.default_std = (1.0,)

    @property
    def num_classes(self) -> int:
        return self.get_classifier().out_features

    def get_classifier(self) -> nn.Linear:
        return self.head[-1]

    def reset_classifier(self, num_classes: int) -> None:
        old = self.get_classifier()
        self.head[-1] = nn.Linear(old.in_features, num_classes)
        keras_init(self.head[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        body = self.head[:-1](x)
        return body if pre_logits else self.head[-1](body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def keras_init(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases on every conv and linear layer (Keras defaults)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params():
            continue  # initialised by materialize() once the input size is known
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def _conv(in_ch: int, out_ch: int, padding: str = "valid", bn: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=0 if padding == "valid" else 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _outputs(num_classes: int, binary: bool) -> int:
    if binary and num_classes != 2:
        raise ValueError(f"binary=True needs exactly 2 classes, the data has {num_classes}")
    return 1 if binary else num_classes


def _finish(features: nn.Module, head: nn.Sequential, size: tuple[int, int]) -> FeatureHeadNet:
    return keras_init(FeatureHeadNet(features, head, size))


def _dense_head(layers: list[nn.Module]) -> nn.Sequential:
    """Lazy first Linear so the head fits any input size, like Keras' Flatten -> Dense."""
    return nn.Sequential(nn.Flatten(), *layers)


def materialize(model: nn.Module, input_size: tuple[int, int, int]) -> nn.Module:
    """Run one dummy batch so lazy layers get their shapes (and Keras init)."""
    has_lazy = any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules())
    if has_lazy:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
        model.train(was_training)
        keras_init(model)
    return model


@register_model
def mlp(num_classes: int, in_chans: int = 1, hidden=(512, 256), dropout: float = 0.0, input_size=(28, 28)):
    """Multi-layer perceptron: Flatten -> Dense(h, relu) x N -> Dense; dropout=P adds Dropout after each (seeds 003, 004)."""
    hidden = (hidden,) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.LazyLinear(width), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(nn.LazyLinear(num_classes) if not hidden else nn.Linear(hidden[-1], num_classes))
    return _finish(nn.Identity(), _dense_head(layers), tuple(input_size))


@register_model
def chollet_convnet(num_classes: int, in_chans: int = 1, input_size=(28, 28)):
    """Conv32-Pool-Conv64-Pool-Conv64 -> Dense64 -> Dense (Chollet, seed 002 listing 5.1)."""
    features = nn.Sequential(
        *_conv(in_chans, 32), nn.MaxPool2d(2),
        *_conv(32, 64), nn.MaxPool2d(2),
        *_conv(64, 64),
    )
    head = _dense_head([nn.LazyLinear(64), nn.ReLU(inplace=True), nn.Linear(64, num_classes)])
    return _finish(features, head, tuple(input_size))


@register_model
def seed_cnn2(num_classes: int, in_chans: int = 3, input_size=(64, 64)):
    """Two Conv-Pool blocks (32, 64) -> Dense128 -> Dense (seed 000's CNN)."""
    features = nn.Sequential(
        *_conv(in_chans, 32), nn.MaxPool2d(2),
        *_conv(32, 64), nn.MaxPool2d(2),
    )
    head = _dense_head([nn.LazyLinear(128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)])
    return _finish(features, head, tuple(input_size))


@register_model
def model3(num_classes: int, in_chans: int = 1, dropout: float = 0.25, input_size=(28, 28)):
    """Conv64x2-Pool-Drop, Conv128x2-Pool-Drop, Conv256-Pool-Drop -> Dense256-Drop -> Dense (seed 004's model_3)."""
    features = nn.Sequential(
        *_conv(in_chans, 64, "same"), *_conv(64, 64, "same"), nn.MaxPool2d(2), Dropout(dropout),
        *_conv(64, 128, "same"), *_conv(128, 128, "same"), nn.MaxPool2d(2), Dropout(dropout),
        *_conv(128, 256, "same"), nn.MaxPool2d(2), Dropout(dropout),
    )
    head = _dense_head(
        [nn.LazyLinear(256), nn.ReLU(inplace=True), Dropout(2 * dropout), nn.Linear(256, num_classes)]
    )
    return _finish(features, head, tuple(input_size))


@register_model
def vgg_like(num_classes: int, in_chans: int = 1, dropout: float = 0.0, input_size=(28, 28)):
    """VGG-style blocks Conv32x2-Pool, Conv64x2-Pool, Conv128x2-Pool -> Dense512 -> Dense, optional dropout (seed 003 ch.06)."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        layers = [*_conv(cin, cout, "same"), *_conv(cout, cout, "same"), nn.MaxPool2d(2)]
        return layers + ([Dropout(dropout)] if dropout else [])

    features = nn.Sequential(*block(in_chans, 32), *block(32, 64), *block(64, 128))
    dense = [nn.LazyLinear(512), nn.ReLU(inplace=True)]
    if dropout:
        dense.append(Dropout(dropout))
    head = _dense_head(dense + [nn.Linear(512, num_classes)])
    return _finish(features, head, tuple(input_size))


@register_model
def cats_dogs_convnet(
    num_classes: int, in_chans: int = 3, dropout: float = 0.0, binary: bool = False, input_size=(150, 150)
):
    """Conv32-Pool-Conv64-Pool-Conv128-Pool-Conv128-Pool -> [Dropout] -> Dense512 -> Dense (seed 002 listing 5.2; binary=True gives Dense(1, sigmoid))."""
    features = nn.Sequential(
        *_conv(in_chans, 32), nn.MaxPool2d(2),
        *_conv(32, 64), nn.MaxPool2d(2),
        *_conv(64, 128), nn.MaxPool2d(2),
        *_conv(128, 128), nn.MaxPool2d(2),
    )
    dense: list[nn.Module] = [Dropout(dropout)] if dropout else []
    dense += [nn.LazyLinear(512), nn.ReLU(inplace=True), nn.Linear(512, _outputs(num_classes, binary))]
    return _finish(features, _dense_head(dense), tuple(input_size))


class _Residual(nn.Module):
    """x + (Conv-BN-ReLU) x 2; the second BN starts at zero so each block starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return x + self.body(x)


@register_model
def fastnet(num_classes: int, in_chans: int = 1, widths=(32, 64, 128), blocks=(0, 0), head_pool: int = 3,
            pool_early: bool = False, input_size=(28, 28)):
    """Small BN + residual network for the fast recipe: Conv-Pool, Conv [+Res], Pool, Conv [+Res] -> max pool -> Dense.

    Cost is kept away from full resolution: only a narrow stem convolution sees the
    full image, the wide layers and residual blocks run at 1/2 and 1/4 of it. ReLU,
    not GELU: oneDNN runs it in place at a fraction of the cost on CPU.

    Args:
        widths: channels of the stem, the 1/2-resolution stage and the 1/4-resolution stage.
        blocks: residual blocks after the 1/2- and 1/4-resolution convolutions.
        head_pool: side of the max-pooled map the classifier sees; 3 keeps a coarse layout
            (Fashion-MNIST's centred objects are told apart by where their parts are), 1 is
            global max pooling (position-free, for objects anywhere in the frame).
        pool_early: with no residual block at 1/2 resolution, pool straight after its
            convolution as the stem does, so BN and ReLU touch 4x fewer values.
    """
    w0, w1, w2 = (int(w) for w in widths)

    def conv_bn(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        # pool straight after the convolution: BN and ReLU then touch 4x fewer values
        pooled = [nn.MaxPool2d(2)] if pool else []
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), *pooled, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *conv_bn(in_chans, w0, pool=True),
        *(conv_bn(w0, w1, pool=True) if pool_early and not int(blocks[0]) else
          [*conv_bn(w0, w1, pool=False), *[_Residual(w1) for _ in range(int(blocks[0]))], nn.MaxPool2d(2)]),
        *conv_bn(w1, w2, pool=False), *[_Residual(w2) for _ in range(int(blocks[1]))],
    )
    head = nn.Sequential(nn.AdaptiveMaxPool2d(int(head_pool)), nn.Flatten(),
                         nn.Linear(w2 * int(head_pool) ** 2, num_classes))
    model = FeatureHeadNet(features, head, tuple(input_size))
    for layer in model.modules():  # He init for the ReLU stack
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    for block in model.modules():  # zero-init the last BN of each residual: blocks start as identity
        if isinstance(block, _Residual):
            nn.init.zeros_(block.body[-2].weight)
    return model
