"""Every registered model builds, runs on a tiny batch and has the shared methods."""

from __future__ import annotations

import re

import pytest
import torch

from vislab.core.errors import ConfigError
from vislab.models import create_model, vislab_models
from vislab.models.summary import model_summary

RGB_DEFAULT = {"seed_cnn2", "cats_dogs_convnet"}


@pytest.mark.parametrize("name", vislab_models())
def test_vislab_model_forward_and_methods(name):
    in_chans = 3 if name in RGB_DEFAULT else 1
    model = create_model(name, num_classes=7, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, *model.default_input_size)
    assert model(x).shape == (2, 7)
    features = model.forward_features(x)
    assert torch.allclose(model.forward_head(features), model(x), atol=1e-5)
    assert model.forward_head(features, pre_logits=True).shape[0] == 2
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


def test_keras_parameter_counts():
    # Chollet DLwP listing 5.1 prints 93,322 parameters for the MNIST convnet
    assert sum(p.numel() for p in create_model("chollet_convnet", 10, 1).parameters()) == 93322
    # listing 5.2 (cats vs dogs, 150x150x3, Dense(1, sigmoid)): 3,453,121
    binary = create_model("cats_dogs_convnet", 2, 3, binary=True)
    assert sum(p.numel() for p in binary.parameters()) == 3453121
    assert binary(torch.zeros(1, 3, 150, 150)).shape == (1, 1)


def test_model_options_and_bad_options():
    mlp = create_model("mlp", 10, 1, hidden=[64, 32], dropout=0.2)
    assert [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [64, 32, 10]
    assert any(isinstance(m, torch.nn.Dropout) for m in create_model("vgg_like", 10, 1, dropout=0.3).modules())
    with pytest.raises(ValueError, match="model 'mlp' has no option 'depth'"):
        create_model("mlp", 10, 1, depth=3)
    with pytest.raises(ValueError, match="binary=True needs exactly 2 classes"):
        create_model("cats_dogs_convnet", 5, 3, binary=True)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "vit_tiny_patch16_224"])
def test_timm_models_from_scratch(name):
    model = create_model(name, num_classes=4, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 224)).shape == (1, 4)


def test_patch_models_are_built_for_the_input_size():
    # a ViT's position embeddings fix its input size: other sizes must reach timm as img_size
    vit = create_model("vit_tiny_patch16_224", num_classes=3, in_chans=1, input_size=(64, 48)).eval()
    resnet = create_model("resnet18", num_classes=3, in_chans=1, input_size=(64, 48)).eval()
    with torch.no_grad():
        assert vit(torch.randn(2, 1, 64, 48)).shape == (2, 3)
        assert resnet(torch.randn(2, 1, 64, 48)).shape == (2, 3)
    assert vit.pos_embed.shape[1] == 1 + (64 // 16) * (48 // 16)


def test_unknown_model_suggests_names():
    with pytest.raises(ValueError, match="unknown model 'chollet_convent'.*chollet_convnet"):
        create_model("chollet_convent", 10, 1)


def test_summary_counts_trainable_and_frozen():
    text = model_summary("chollet_convnet")
    assert "Total params: 93,322" in text and "Non-trainable params: 0" in text
    assert "features.0 (Conv2d)" in text and "32x26x26" in text


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_fast_dropout_matches_torch_dropout_statistics(p, dtype):
    """vislab's CPU Dropout keeps 1 - p of the elements (in every one of the 4 lanes a random
    word feeds), scales them by 1 / (1 - p), is the identity in eval mode, passes gradients
    through the same mask, and repeats under the same seed."""
    from vislab.models.classic import Dropout

    layer = Dropout(p).train()
    x = torch.ones(1_000_000, dtype=dtype, requires_grad=True)
    torch.manual_seed(0)
    out = layer(x)
    keep = out.detach() != 0
    for lane in range(4):  # each int16 of the int64 words, the top one included
        assert abs(float(keep[lane::4].float().mean()) - (1 - p)) < 0.004, lane
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    assert torch.equal(out.detach()[keep], scale.expand(int(keep.sum())))
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # d(sum)/dx = the scaled mask
    torch.manual_seed(0)
    assert torch.equal(layer(x).detach(), out.detach())
    assert torch.equal(layer.eval()(x), x) and isinstance(layer, torch.nn.Dropout)


@pytest.mark.parametrize("options, says", [
    ({"dropotu": 0.3}, "model 'mlp' has no option 'dropotu' (did you mean 'dropout'?); its options (with their "
                       "defaults): hidden=(512, 256), dropout=0.0"),
    ({"dropout": "abc"}, "model 'mlp' takes a number for dropout (default 0.0)"),
])
def test_a_model_option_is_checked_against_the_networks_arguments(options, says):
    # the network's own TypeError ("'<' not supported between 'str' and 'int'") says nothing a user can act on
    with pytest.raises(ConfigError, match=re.escape(says)):
        create_model("mlp", num_classes=3, in_chans=1, **options)
    assert create_model("mlp", num_classes=3, in_chans=1, dropout=0.1, hidden=[16]) is not None
