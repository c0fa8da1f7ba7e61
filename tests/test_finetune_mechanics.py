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
    with pytest.raises(ConfigError, match="--warmup-epochs 10 must be below --epochs 5"):
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


# --------------------------------------------------------------------------- options that conflict
PRETRAINED = dict(data="digits", model="efficientnet_lite0", pretrained=True, freeze="backbone")
TINY = ["--data", "digits", "--max-per-class", "10", "--no-figures", "--no-evaluate", "--no-progress"]


def _warned(options) -> list[str]:
    """What api.make_config(**options) warns, one line each; it must still resolve."""
    import warnings

    from vislab import api

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        api.make_config(**options)
    return [str(w.message) for w in seen if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("options, says", [
    (dict(finetune_last=2), "--finetune-last 2 trains backbone blocks, so the backbone's features cannot be cached: "
                            "drop --cache-features or --finetune-last"),
    (dict(freeze_epochs=1), "--freeze-epochs 1 unfreezes the backbone, so the backbone's features cannot be cached: "
                            "drop --cache-features or --freeze-epochs"),
    (dict(lr_backbone=1e-4), "--lr-backbone 0.0001 is for the backbone, but with --cache-features only the head "
                             "trains: drop --lr-backbone"),
    (dict(lr_decay=0.8), "--lr-decay 0.8 is for the backbone, but with --cache-features only the head trains: "
                         "drop --lr-decay"),
])
def test_cached_features_refuse_options_that_train_the_backbone(options, says):
    from vislab import api

    with pytest.raises(ConfigError) as info:
        api.make_config(cache_features=True, **PRETRAINED, **options)
    assert str(info.value) == says


def test_a_recipes_cached_features_are_named_as_the_recipes():
    with pytest.raises(ConfigError, match=r"drop --cache-features \(set by --recipe transfer\) or --finetune-last$"):
        resolve_config(overrides={"recipe": "transfer", "model.finetune_last": 2})


def test_a_stage_that_unfreezes_only_finetune_last_blocks_is_refused():
    from vislab import api

    with pytest.raises(ConfigError) as info:
        api.make_config(finetune_last=2, unfreeze_at=["1:2", "3:all"], **PRETRAINED)
    assert str(info.value) == ("--unfreeze-at 1:2 3:all: 1:2 unfreezes only blocks that --finetune-last 2 trains from "
                               "the start; give each stage more than 2 blocks, or drop --finetune-last")
    cfg = api.make_config(finetune_last=2, unfreeze_at=["1:3", "3:all"], **PRETRAINED)  # more blocks: fine
    assert cfg.model.unfreeze_at == ["1:3", "3:all"]


def test_freeze_backbone_with_finetune_last_warns_that_the_last_blocks_train():
    assert _warned(dict(finetune_last=2, **PRETRAINED)) == [
        "--finetune-last 2 with --freeze backbone: the last 2 blocks of the backbone train with the head, those below "
        "stay frozen (as with --finetune-last 2 alone); drop --finetune-last to train only the head"]
    assert _warned(dict(data="digits", model="efficientnet_lite0", pretrained=True, finetune_last=2)) == []


def test_freeze_epochs_with_finetune_last_warns_and_gives_the_stage():
    assert _warned(dict(finetune_last=3, freeze_epochs=2, epochs=5, **PRETRAINED)) == [
        "--finetune-last 3 trains the last 3 blocks from the first epoch and --freeze-epochs 2 the whole backbone "
        "after epoch 2; for the last 3 blocks alone after epoch 2, give --unfreeze-at 2:3 instead of both"]


def test_a_backbone_learning_rate_on_a_backbone_frozen_all_run_warns():
    assert _warned(dict(lr_backbone=1e-4, **PRETRAINED)) == [
        "--lr-backbone 0.0001 is for the backbone, but --freeze backbone keeps it frozen all run; it trains with "
        "--finetune-last, --freeze-epochs or --unfreeze-at"]
    assert _warned(dict(lr_backbone=1e-4, freeze_epochs=1, epochs=3, **PRETRAINED)) == []


def test_unfreezing_after_the_last_epoch_warns_with_the_epochs_it_needs():
    assert _warned(dict(unfreeze_at=["5:2"], epochs=1, **PRETRAINED)) == [
        "--unfreeze-at 5:2 unfreezes after epoch 5, but --epochs 1 ends the run after epoch 1, so that stage never "
        "comes; give --epochs 6 or more (or train on later with --resume RUN --epochs 6)"]
    assert _warned(dict(unfreeze_at=["1:2", "3:4", "5:all"], epochs=3, **PRETRAINED)) == [
        "--unfreeze-at 1:2 3:4 5:all unfreezes after epochs 3, 5, but --epochs 3 ends the run after epoch 3, so those "
        "stages never come; give --epochs 6 or more (or train on later with --resume RUN --epochs 6)"]
    assert _warned(dict(freeze_epochs=2, epochs=2, **PRETRAINED)) == [
        "--freeze-epochs 2 unfreezes after epoch 2, but --epochs 2 ends the run after epoch 2, so the backbone stays "
        "frozen; give --epochs 3 or more (or train on later with --resume RUN --epochs 3)"]
    assert _warned(dict(freeze_epochs=2, epochs=3, **PRETRAINED)) == []
    assert _warned(dict(unfreeze_at=["5:2"], time_budget="5m", **PRETRAINED)) == []  # the budget plans the epochs


def test_recipe_auto_warns_of_late_unfreezing_once_it_has_chosen_the_epochs():
    import warnings

    from vislab.core.config import check_new_run

    options = {"recipe": "auto", "model.name": "efficientnet_lite0", "model.pretrained": True,
               "model.freeze": "backbone", "model.freeze_epochs": 4}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = resolve_config(overrides=options)  # auto sets the epochs from the data, later
    assert not seen
    cfg.train.epochs = 3  # what recipe auto chose
    cfg.recipe_choices = {**cfg.recipe_choices, "set": {"train.epochs": 3}}
    with pytest.warns(UserWarning, match=r"^--freeze-epochs 4 unfreezes after epoch 4, but --epochs 3 \(set "
                                         r"by --recipe auto\) ends the run after epoch 3"):
        check_new_run(cfg)


def test_the_command_line_warns_of_an_unfreeze_after_the_last_epoch_in_one_line(tmp_path, capsys):
    from vislab.cli import main

    assert main(["train", *TINY, "--model", "chollet_convnet", "--freeze", "backbone", "--allow-random-backbone",
                 "--unfreeze-at", "5:2", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--unfreeze-at" in line]
    assert said == ["vislab train: warning: --unfreeze-at 5:2 unfreezes after epoch 5, but --epochs 1 ends "
                    "the run after epoch 1, so that stage never comes; give --epochs 6 or more (or train on later with "
                    "--resume RUN --epochs 6)"]


def test_the_command_line_refuses_cached_features_with_finetune_last_before_any_work(tmp_path, capsys):
    from vislab.cli import main

    assert main(["train", *TINY, "--model", "efficientnet_lite0", "--pretrained", "--freeze", "backbone",
                 "--cache-features", "--finetune-last", "2", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err == ("vislab train: error: --finetune-last 2 trains backbone blocks, so the backbone's features cannot "
                   "be cached: drop --cache-features or --finetune-last\n")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- messages name what was typed
@pytest.mark.parametrize("options, says", [
    (dict(freeze_epochs=2), "--freeze-epochs 2 needs --freeze backbone"),
    (dict(unfreeze_at=["1:2"]), "--unfreeze-at 1:2 unfreezes a frozen backbone in stages: add --freeze backbone"),
    (dict(unfreeze_at=["two:3"], **PRETRAINED), "--unfreeze-at: 'two:3' is not EPOCH:BLOCKS"),
    (dict(unfreeze_at=["1:2", "1:3"], **PRETRAINED), "--unfreeze-at 1:2 1:3 names an epoch twice"),
    (dict(unfreeze_at=["1:2"], freeze_epochs=2, **PRETRAINED),
     "--unfreeze-at 1:2 and --freeze-epochs 2 both schedule the unfreezing; keep one"),
    (dict(unfreeze_at=["1:2"], cache_features=True, **PRETRAINED),
     "--unfreeze-at 1:2 changes the backbone, so its features cannot be cached: drop --cache-features"),
    (dict(cache_features=True), "--cache-features needs --freeze backbone (the features must not change)"),
    (dict(bn="frozen", cache_features=True, **PRETRAINED),
     "--bn frozen only matters when the backbone trains; with --cache-features it is frozen"),
    (dict(optimizer="lbfgs"), "--optimizer lbfgs fits a head on cached features: add --freeze backbone and "
                              "--cache-features"),
    (dict(optimizer="lbfgs", scheduler="cosine", cache_features=True, **PRETRAINED),
     "--optimizer lbfgs takes no learning-rate schedule (its line search sets the steps); use --scheduler none"),
    (dict(warmup_epochs=3, epochs=2), "--warmup-epochs 3 must be below --epochs 2"),
    (dict(warmup_epochs=1, scheduler="step"), "--warmup-epochs 1 works with --scheduler cosine, onecycle or none"),
    (dict(time_budget="5x"), "--time-budget 5x is not a positive duration"),
    (dict(optimizer="adamm"), "--optimizer adamm is not valid; choose one of adam, adamw"),
])
def test_the_apis_fine_tuning_refusals_name_the_flags(options, says):
    from vislab import api

    with pytest.raises(ConfigError) as info:
        api.make_config(**options)
    assert str(info.value).startswith(says), str(info.value)


def test_a_refusal_names_a_yaml_files_keys_and_the_flags_beside_them(tmp_path, capsys):
    from vislab.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("model:\n  freeze_epochs: 2\n")
    run = ["train", "--config", str(config), *TINY, "--model", "efficientnet_lite0", "--out", str(tmp_path / "run")]
    assert main(run) == 1
    assert capsys.readouterr().err == f"vislab train: error: {config} [model]: model.freeze_epochs=2 needs " \
                                      "model.freeze='backbone'\n"
    assert main([*run, "--freeze", "none"]) == 1  # the flag the user typed is named as typed
    assert capsys.readouterr().err == f"vislab train: error: {config} [model]: model.freeze_epochs=2 needs " \
                                      "--freeze backbone\n"
    config.write_text("model:\n  cache_features: true\n")
    assert main(["train", "--config", str(config), *TINY, "--model", "efficientnet_lite0", "--pretrained",
                 "--freeze", "backbone", "--finetune-last", "2", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == ("vislab train: error: --finetune-last 2 trains backbone blocks, so the "
                                       f"backbone's features cannot be cached: drop model.cache_features ({config} "
                                       "[model]) or --finetune-last\n")


def test_finetune_last_beyond_the_blocks_names_the_flag(lite0):
    with pytest.raises(ConfigError, match=r"^--finetune-last 9: EfficientNet has 7 blocks \(blocks.0, .*\); "
                                          r"choose 1\.\.7$"):
        finetune.finetune_last(lite0, 9)


def test_a_resume_whose_new_epochs_end_before_an_unfreezing_warns_once(tmp_path, capsys):
    """`vislab train --resume RUN --epochs 3` of a run whose stage unfreezes at epoch 5: the stage never comes,
    said once; a resume refused (nothing left to train) says only why."""
    from vislab.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "fastnet", "--freeze", "backbone", "--allow-random-backbone", "--unfreeze-at",
                 "5:2", "--epochs", "1", "--out", str(run), *TINY]) == 0
    assert "--unfreeze-at 5:2 unfreezes after epoch 5" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warned == ["vislab train: warning: --unfreeze-at 5:2 unfreezes after epoch 5, but --epochs 3 ends "
                      "the run after epoch 3, so that stage never comes; give --epochs 6 or more (or train on later "
                      "with --resume RUN --epochs 6)"]
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "leaves nothing to train" in err and "warning" not in err


def test_finetune_last_on_random_weights_is_refused_as_freeze_backbone_is():
    """--finetune-last without weights froze the lower blocks at their random values, silently."""
    from vislab import api
    from vislab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--finetune-last 2 without --pretrained or --weights freezes the blocks "
                                          r"below .*--allow-random-backbone"):
        api.make_config(data="digits", model="fastnet", finetune_last=2)
    assert api.make_config(data="digits", model="fastnet", finetune_last=2, allow_random_backbone=True)
    assert api.make_config(data="digits", model="efficientnet_lite0", pretrained=True, finetune_last=2)


def test_freeze_backbone_without_weights_from_a_yaml_file_names_the_file_and_key(tmp_path, capsys):
    from vislab.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("model:\n  name: efficientnet_lite0\n  freeze: backbone\n")
    assert main(["train", "--config", str(config), "--data", "digits", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.startswith(f"vislab train: error: {config} [model]: model.freeze='backbone' "
                                              "without --pretrained or --weights freezes randomly initialised filters")
    assert main(["train", "--model", "efficientnet_lite0", "--freeze", "backbone", "--data", "digits",
                 "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.startswith("vislab train: error: --freeze backbone without --pretrained")
