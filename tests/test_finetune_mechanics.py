"""Fine-tuning mechanics and small-data regularisation, each opt-in and each checked
against what it must compute: staged unfreezing, layer-wise LRs, BatchNorm frozen / re-estimated,
warm-up, weight decay off norms and biases, the augmentation policy, Mixup, EMA, and the recipe."""

from __future__ import annotations

import pytest
import timm
import torch

from vislab.core.config import ConfigError, RECIPES, parse_unfreeze_at, resolve_config
from vislab.models import finetune


@pytest.fixture(scope="module")
def lite0():
    return timm.create_model("tf_efficientnet_lite0", num_classes=5)  # random weights: structure only


def _lr_of(groups, param):
    return next(g["lr"] for g in groups if any(p is param for p in g["params"]))


def test_layerwise_lr_decay_per_block_group(lite0):
    groups = finetune.param_groups(lite0, lr=1e-2, lr_backbone=1e-3, weight_decay=0.05, lr_decay=0.5)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len(list(lite0.parameters())) == len({id(p) for p in params})  # each once
    assert _lr_of(groups, lite0.classifier.weight) == 1e-2
    assert _lr_of(groups, lite0.conv_head.weight) == 1e-3  # after the blocks: the backbone's LR
    assert _lr_of(groups, lite0.blocks[6][0].conv_pwl.weight) == pytest.approx(1e-3)
    assert _lr_of(groups, lite0.blocks[5][0].conv_pwl.weight) == pytest.approx(5e-4)
    assert _lr_of(groups, lite0.blocks[0][0].conv_pw.weight) == pytest.approx(1e-3 * 0.5 ** 6)
    assert _lr_of(groups, lite0.conv_stem.weight) == pytest.approx(1e-3 * 0.5 ** 7)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(lite0.bn1.weight)] == 0 and decay[id(lite0.classifier.bias)] == 0
    assert decay[id(lite0.blocks[3][0].conv_pwl.weight)] == 0.05
    assert groups[-1]["name"].startswith("head")  # the loop logs the last group's LR


def test_staged_unfreeze_callback(lite0):
    from rich.console import Console

    from vislab.train.callbacks import StagedUnfreeze

    model = finetune.freeze(lite0, "backbone")
    stages = parse_unfreeze_at(["2:all", "1:2"])
    assert stages == [(1, 2), (2, None)]
    callback = StagedUnfreeze(model, stages, Console(quiet=True))
    callback.on_epoch_begin(0)
    assert not model.blocks[6][0].conv_pwl.weight.requires_grad
    callback.on_epoch_begin(1)
    assert model.blocks[5][0].conv_pwl.weight.requires_grad and not model.blocks[4][0].conv_pwl.weight.requires_grad
    callback.on_epoch_begin(2)
    assert all(p.requires_grad for p in model.parameters())


def test_reestimate_bn_computes_the_new_data_statistics():
    model = timm.create_model("resnet10t", num_classes=3)
    x = torch.rand(6, 3, 32, 32) * 3 + 1
    batches = [x[:4], x[4:]]
    finetune.reestimate_bn(model, batches)
    with torch.no_grad():
        stem = model.conv1[0](x)  # the first BatchNorm normalises this
    expected_mean = stem.mean((0, 2, 3))
    # cumulative average over the two batches' means, weighted per batch as torch does with momentum=None
    means = [model.conv1[0](b).mean((0, 2, 3)) for b in batches]
    assert torch.allclose(model.conv1[1].running_mean, (means[0] + means[1]) / 2, atol=1e-4)
    assert not torch.allclose(model.conv1[1].running_mean, torch.zeros_like(expected_mean))
    assert model.conv1[1].momentum == 0.1  # restored
    finetune.set_bn_eval(model.train())
    before = model.conv1[1].running_mean.clone()
    model(x)
    assert torch.equal(before, model.conv1[1].running_mean)  # frozen statistics stay


def test_warmup_then_cosine_schedule():
    from vislab.train.optim import make_scheduler

    cfg = resolve_config(overrides={"train.scheduler": "cosine", "train.warmup_epochs": 1, "train.epochs": 3})
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler, per_batch = make_scheduler(optimizer, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert per_batch and lrs[0] == pytest.approx(0.01) and lrs[10] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:11]))  # rising through the warm-up
    assert all(b < a for a, b in zip(lrs[10:29], lrs[11:30]))  # then cosine down
    assert lrs[-1] < 0.02


def test_augment_policy_per_image_and_repeatable():
    from vislab.data.policies import AugmentPolicy

    images = torch.from_numpy(__import__("skimage.data", fromlist=["camera"]).camera()[::8, ::8].copy())
    batch = images.expand(16, 1, *images.shape).contiguous()
    policy = AugmentPolicy("trivialaugment")
    first = policy(batch, torch.Generator().manual_seed(3))
    again = policy(batch, torch.Generator().manual_seed(3))
    assert first.dtype == torch.uint8 and first.shape == batch.shape
    assert torch.equal(first, again)  # the epoch generator decides everything
    changed = [not torch.equal(first[i], batch[i]) for i in range(16)]
    assert sum(changed) >= 8  # most images altered (TrivialAugment's identity op is one of 14)
    distinct = {first[i].float().mean().item() for i in range(16)}
    assert len(distinct) >= 6  # different operations per image, not one op for the whole batch
    state = torch.random.get_rng_state()
    policy(batch, torch.Generator().manual_seed(4))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


def test_config_refuses_options_that_cannot_act():
    with pytest.raises(ConfigError, match="freeze backbone"):
        resolve_config(overrides={"model.unfreeze_at": ["1:2"]})
    with pytest.raises(ConfigError, match="EPOCH:BLOCKS"):
        resolve_config(overrides={"model.freeze": "backbone", "model.unfreeze_at": ["two:3"]})
    with pytest.raises(ConfigError, match="lr_decay"):
        resolve_config(overrides={"model.lr_decay": 1.5})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        resolve_config(overrides={"train.warmup_epochs": 10, "train.epochs": 5})
    with pytest.raises(ConfigError, match="ema"):
        resolve_config(overrides={"train.ema": 1.0})
    with pytest.raises(ConfigError, match="cache-features"):
        resolve_config(overrides={"model.freeze": "backbone", "model.cache_features": True, "train.mixup": 0.2})


def test_mixup_ema_policy_train_end_to_end_and_the_ema_is_what_is_saved(tmp_path):
    import vislab

    common = dict(data="digits", model="fastnet", epochs=2, batch_size=64, val_split=0.2, seed=0, evaluate=False)
    plain = vislab.fit(out=str(tmp_path / "plain"), **common)
    rich = vislab.fit(out=str(tmp_path / "rich"), mixup=0.4, cutmix=1.0, ema=0.9, policy="trivialaugment",
                      warmup_epochs=0.5, scheduler="cosine", no_decay_norm_bias=True, weight_decay=0.05, **common)
    for result in (plain, rich):
        assert (result.run_dir / "model.safetensors").is_file() and len(result.history) == 2
    assert rich.history[-1]["val_acc"] > 0.3  # it learns with every option on
    assert rich.history[-1]["train_loss"] != plain.history[-1]["train_loss"]
    # the saved model is the EMA: its BatchNorm statistics are the averaged ones, unlike the last step's
    state = torch.load(rich.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert "ema" in state and state["global_step"] > 0
    from safetensors.torch import load_file

    saved = load_file(str(rich.run_dir / "model.safetensors"))
    ema_keys = [k for k in state["ema"] if state["ema"][k].is_floating_point()]
    assert all(torch.equal(saved[k], state["ema"][k]) for k in ema_keys if k in saved)
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in ema_keys)


def test_transfer_recipe_is_registered_and_overridable():
    assert "transfer" in RECIPES
    cfg = resolve_config(overrides={"recipe": "transfer", "train.epochs": 3})
    assert cfg.model.pretrained and cfg.train.epochs == 3
    assert cfg.model.name == "efficientnet_lite0" and cfg.model.cache_features and cfg.train.optimizer == "lbfgs"
    # any flag overrides it, e.g. a stronger shipped backbone
    assert resolve_config(overrides={"recipe": "transfer", "model.name": "efficientnet_lite2"}).model.name == \
        "efficientnet_lite2"
