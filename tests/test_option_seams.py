"""Training options where they meet the model, the recipe line, resume and the heads: each option either acts,
is refused in one line naming it, the model and the fix, or is warned of; what is printed agrees with itself."""

from __future__ import annotations

import warnings

import pytest
import torch

from vislab.cli import main
from vislab.core.config import ConfigError, resolve_config

TINY = ["--data", "digits", "--max-per-class", "10", "--no-figures", "--no-evaluate", "--no-progress"]
# a timm network with four blocks (layer1..layer4), quick at 32 px; no weights offline, so a random backbone
RESNET = ["--model", "test_resnet", "--input-size", "32", "--allow-random-backbone"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("vislab train: error: "), err
    return lines[0]


# --------------------------------------------------------------------------- a model with no backbone
@pytest.mark.parametrize("flags, named", [
    (["--freeze", "backbone"], "--freeze backbone: "),
    (["--finetune-last", "1"], "--finetune-last 1: "),
    (["--freeze", "backbone", "--unfreeze-at", "1:all"], "--freeze backbone, --unfreeze-at 1:all: "),
])
def test_backbone_options_on_a_network_that_is_all_head_are_refused(tmp_path, capsys, flags, named):
    """mlp's layers are all its head: --freeze backbone froze nothing and trained everything, silently."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--model", "mlp", "--allow-random-backbone", *flags, "--epochs", "2",
                 "--out", str(run)]) == 1
    line = _error(capsys)
    assert named in line and "mlp has no backbone" in line, line
    assert "drop" in line and "--pretrained" in line, line  # the fix: drop it, or a pretrained model
    assert not run.exists()


# --------------------------------------------------------------------------- --bn without BatchNorm
def test_bn_frozen_on_a_network_without_batchnorm_is_warned_of_in_one_line(tmp_path, capsys):
    assert main(["train", *TINY, "--model", "mlp", "--bn", "frozen", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--bn" in line]
    assert said == ["vislab train: warning: --bn frozen: mlp has no BatchNorm layers, so it changes nothing; "
                    "drop it"], said


# --------------------------------------------------------------------------- --unfreeze-at
@pytest.mark.parametrize("stages, bad", [(["1:4", "3:2"], "stage 3:2 comes after 1:4"),
                                         (["1:2", "3:2"], "stage 3:2 comes after 1:2"),
                                         (["1:all", "3:4"], "stage 3:4 comes after 1:all")])
def test_unfreeze_at_refuses_a_stage_that_unfreezes_nothing(stages, bad):
    options = {"model.name": "efficientnet_lite0", "model.pretrained": True, "model.freeze": "backbone",
               "model.unfreeze_at": stages, "train.epochs": 5}
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=options)
    message = str(info.value)
    assert message.startswith(f"--unfreeze-at {' '.join(stages)}: {bad}"), message
    assert "unfreezes nothing" in message and "more blocks than the one before" in message, message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolve_config(overrides={**options, "model.unfreeze_at": ["1:2", "3:4", "5:all"], "train.epochs": 6})


def test_unfreeze_at_refuses_more_blocks_than_the_model_has(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, *RESNET, "--freeze", "backbone", "--unfreeze-at", "1:99", "--epochs", "2",
                 "--out", str(run)]) == 1
    line = _error(capsys)
    assert line == ("vislab train: error: --unfreeze-at 1:99: stage 1:99 asks for more blocks than test_resnet has "
                    "(4 backbone blocks: layer1, layer2, layer3, layer4); give each stage 1 to 4 blocks, or all"), line
    assert not run.exists()


def test_unfreezing_messages_count_epochs_as_the_epoch_lines_do():
    """EPOCH in --unfreeze-at and K in --freeze-epochs: the stage comes after epoch EPOCH as `epoch N/M` counts;
    no message speaks of 0-based epochs."""
    from vislab import api

    base = dict(data="digits", model="efficientnet_lite0", pretrained=True, freeze="backbone")
    for options, said in (
            (dict(unfreeze_at=["2:2"], epochs=2), "--unfreeze-at 2:2 unfreezes after epoch 2, but --epochs 2 ends the "
                                                  "run after epoch 2, so that stage never comes; give --epochs 3"),
            (dict(freeze_epochs=3, epochs=2), "--freeze-epochs 3 unfreezes after epoch 3, but --epochs 2 ends the run "
                                              "after epoch 2, so the backbone stays frozen; give --epochs 4")):
        with pytest.warns(UserWarning) as seen:
            api.make_config(**base, **options)
        assert [str(w.message) for w in seen if str(w.message).startswith(said)], [str(w.message) for w in seen]
        assert not [w for w in seen if "0-based" in str(w.message)]
    with pytest.raises(ConfigError, match=r"write e\.g\. 2:3 \(after epoch 2, the top 3 blocks train too\)"):
        api.make_config(**base, unfreeze_at=["two:3"], epochs=3)


# --------------------------------------------------------------------------- resume: what trains, what may change
def test_a_resumed_staged_unfreezing_run_prints_one_count_of_what_trains(tmp_path, capsys):
    """Epoch 2 unfreezes the top 2 blocks (--unfreeze-at 1:2); the run resumed for epoch 3 says what trains as its
    checkpoint left it, and its two lines agree (the report said only the head, the model line more)."""
    import re

    run = tmp_path / "run"
    assert main(["train", *TINY, *RESNET, "--freeze", "backbone", "--unfreeze-at", "1:2", "--epochs", "2",
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    stage = out.index("epoch 2: unfreezing the top 2 blocks")
    assert out[stage - 1].startswith("epoch 1/2 ") and out[stage + 1].startswith("epoch 2/2 "), out
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress", "--no-evaluate",
                 "--no-figures"]) == 0
    out = capsys.readouterr().out
    reported = [int(n.replace(",", "")) for n in re.findall(r"^parameters: ([\d,]+) trainable", out, re.M)]
    model = [int(n.replace(",", "")) for n in re.findall(r"^model test_resnet: .*\(([\d,]+) trainable\)", out, re.M)]
    assert len(reported) == 1 and reported == model, out
    assert "layer4" in out and "layer3" in out and "layer2 " not in out, out


def test_a_refused_resume_names_the_flags_not_the_config_keys(tmp_path, capsys):
    from vislab import api

    for options, flags in ((dict(lr_backbone=1e-4), "(got --lr-backbone)"), (dict(lr=0.1, lr_decay=0.8),
                                                                              "(got --lr, --lr-decay)")):
        with pytest.raises(ConfigError) as info:
            api.train(resume=str(tmp_path), epochs=3, **options)
        assert flags in str(info.value) and "model." not in str(info.value) and "train." not in str(info.value)
    assert main(["train", "--resume", str(tmp_path), "--lr-backbone", "1e-4"]) == 1
    line = _error(capsys)
    assert "only --epochs may change (got --lr-backbone)" in line and "model.lr_backbone" not in line, line
    with pytest.raises(ConfigError) as info:
        api.train(resume=str(tmp_path), epochs=0)
    assert "--epochs must be >= 1" in str(info.value) and "train.epochs" not in str(info.value), str(info.value)


# --------------------------------------------------------------------------- the recipe line
def _line(**options) -> str:
    from vislab.core.config import option_overrides
    from vislab.tasks import task_for_config
    from vislab.train import recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = resolve_config(overrides=option_overrides({"data": "digits", **options}), default_recipe="auto")
    task = task_for_config(cfg)
    return recipe.apply(cfg, task.load_dataset(cfg.data, seed=0), task).line


def test_the_recipe_line_says_one_epoch_in_the_singular():
    line = _line(epochs=1)
    assert ", 1 epoch -- " in line and "1 epochs" not in line, line
    assert ", 10 epochs -- " in _line()


def test_the_recipe_line_never_gives_its_reason_for_a_model_the_user_named():
    """--model mlp: not "enough small images: mlp (bench_time_to_accuracy.py)", a benchmark of fastnet."""
    line = _line(model="mlp")
    assert "-- your mlp: the fast recipe's one-cycle AdamW and epochs, measured on fastnet, not on mlp" in line, line
    assert "enough small images" not in line and "bench_" not in line, line
    named = _line(model="efficientnet_lite0", pretrained=True, freeze="backbone", allow_random_backbone=True)
    assert "-- your efficientnet_lite0 with your options instead of the transfer recipe: " in named, named
    assert "bench_time_to_accuracy" not in named, named
    shipped = _line(model="efficientnet_lite0")  # 8 px grey digits: chosen for the named backbone, not the images
    assert "-- your efficientnet_lite0: its frozen pretrained features + a logistic-regression head, " in shipped
    assert "(bench_lpft.py, bench_transfer.py)" in shipped, shipped


def test_the_recipe_line_names_the_head_the_run_trains():
    from vislab.core.config import Config
    from vislab.train import recipe

    assert _line(model="efficientnet_lite0", head="mlp").startswith(
        "recipe auto: efficientnet_lite0 with an mlp head, "), "linear"
    cfg = Config()
    cfg.model.name, cfg.model.cache_features, cfg.model.head = "efficientnet_lite0", True, "mlp"
    for optimizer in ("lbfgs", "adamw"):
        cfg.train.optimizer = optimizer
        assert recipe._model_words(cfg) == f"efficientnet_lite0 frozen features + mlp head ({optimizer})"
    cfg.model.name, cfg.model.head = "chollet_convnet", "linear"  # its own dense head: no logistic regression
    assert recipe._model_words(cfg) == "chollet_convnet frozen features + its own head (adamw)"


# --------------------------------------------------------------------------- the L-BFGS head
def test_an_lbfgs_head_that_stops_at_its_iteration_limit_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "chollet_convnet", "--freeze", "backbone",
                 "--cache-features", "--optimizer", "lbfgs", "--allow-random-backbone", "--seed", "0",
                 "--no-figures", "--no-evaluate", "--no-progress", "--epochs", "1", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    if torch.load(run / "checkpoints" / "last.pt", weights_only=False).get("converged"):
        pytest.skip("L-BFGS converged within one epoch on this machine's numbers")
    said = [line for line in out.splitlines() if "has not converged" in line]
    assert said == [f"lbfgs: the head has not converged: epoch 1 used all 100 L-BFGS iterations an epoch allows; "
                    f"train on with `vislab train --resume {run} --epochs 2` (or more), or start again with more "
                    "--epochs"], out


# --------------------------------------------------------------------------- hf: models
def test_loading_an_hf_folder_shows_no_progress_bar_and_keeps_the_setting(tmp_path, capfd):
    transformers = pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from vislab.models.registry import create_model

    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=1000)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    before = hf_logging.is_progress_bar_enabled()
    try:
        for enabled in (True, False):
            (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
            capfd.readouterr()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the new classifier's line
                model = create_model(f"hf:{tmp_path / 'vit'}", num_classes=10, pretrained=True)
            err = capfd.readouterr().err
            assert "Loading weights" not in err and "it/s" not in err, err
            assert hf_logging.is_progress_bar_enabled() is enabled
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


# --------------------------------------------------------------------------- mlp: the no-backbone refusal comes first
@pytest.mark.parametrize("flags, named", [
    (["--freeze", "backbone"], "--freeze backbone: "),
    (["--finetune-last", "99"], "--finetune-last 99: "),
    (["--freeze-epochs", "1"], "--freeze-epochs 1: "),
    (["--unfreeze-at", "1:2"], "--unfreeze-at 1:2: "),
    (["--cache-features"], "--cache-features: "),
    (["--freeze", "backbone", "--pretrained"], "--freeze backbone: "),
])
def test_backbone_options_on_mlp_are_refused_for_its_missing_backbone_first(tmp_path, capsys, flags, named):
    """Each earlier refusal's fix (add --pretrained, --freeze backbone, --allow-random-backbone) led to the next."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--model", "mlp", *flags, "--epochs", "2", "--out", str(run)]) == 1
    line = _error(capsys)
    assert named in line and "mlp has no backbone" in line, line
    assert not run.exists()


def test_pretrained_on_a_from_scratch_network_suggests_weights_that_are_installed(tmp_path, capsys):
    assert main(["train", *TINY, "--model", "mlp", "--pretrained", "--out", str(tmp_path / "run")]) == 1
    line = _error(capsys)
    assert "--model efficientnet_lite0 --pretrained" in line and "resnet50" not in line, line


# --------------------------------------------------------------------------- --unfreeze-at 0:...
def test_a_stage_at_0_trains_from_the_start_and_the_counts_say_so(tmp_path, capsys):
    assert main(["train", *TINY, *RESNET, "--freeze", "backbone", "--unfreeze-at", "0:all", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert " 0 non-trainable" in out and "unfreezing" not in out, out


def test_a_stage_of_0_blocks_is_said_to_unfreeze_nothing():
    from vislab.core.config import parse_unfreeze_at

    with pytest.raises(ConfigError) as info:
        parse_unfreeze_at(["1:0"])
    message = str(info.value)
    assert "not EPOCH:BLOCKS" not in message and "unfreezes 0 blocks" in message and "1:all" in message, message


# --------------------------------------------------------------------------- --bn frozen on random filters
def test_bn_frozen_on_a_random_backbone_is_warned_of_in_one_line(tmp_path, capsys):
    assert main(["train", *TINY, *RESNET, "--freeze", "backbone", "--bn", "frozen", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--bn" in line]
    assert len(said) == 1 and "warning: --bn frozen" in said[0] and "randomly initialised" in said[0], said


# --------------------------------------------------------------------------- the L-BFGS hint
@pytest.mark.parametrize("scale, hint", [(300.0, True), (10.0, False)])
def test_the_lbfgs_hint_comes_only_while_the_loss_still_falls(scale, hint):
    """Both epochs use every L-BFGS iteration; only the one whose objective still fell at its end is worth
    another epoch (a flat one at the limit is the optimum for practical purposes)."""
    import timm

    from vislab.train.features import CachedTraining, FeatureSet
    from vislab.train.optim import build_optimizer

    torch.manual_seed(0)
    cached = CachedTraining(timm.create_model("test_resnet", num_classes=4), None, train=range(300))
    width = cached.head.in_features
    features = torch.randn(300, width, generator=torch.Generator().manual_seed(0)) * scale
    cached.train_features = FeatureSet(features, torch.arange(300) % 4)
    optimizer = build_optimizer(cached.head.parameters(), "lbfgs", 1.0)
    cached.train_epoch(optimizer, 0, 0)
    assert not cached.converged  # the iteration limit ended the epoch
    assert (cached.not_converged("RUN", 1) is not None) == hint, cached.not_converged("RUN", 1)


# --------------------------------------------------------------------------- --resume of a finished run
def test_resuming_a_finished_run_without_epochs_words_it_from_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--model", "mlp", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 1
    line = _error(capsys)
    assert "its 1 epoch is trained" in line and "--epochs 2 or more" in line and "vislab evaluate" in line, line
    assert "leaves nothing" not in line, line


@pytest.mark.parametrize("flags", [["--finetune-last", "1"], ["--freeze", "backbone"]])
def test_a_from_scratch_network_is_not_told_to_add_pretrained(flags, tmp_path, capsys):
    # vislab's own networks have no pretrained weights: --pretrained would be the next refusal
    assert main(["train", "--data", "digits", "--model", "chollet_convnet", *flags, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "chollet_convnet is one of vislab's from-scratch networks" in err and "Add --pretrained" not in err, err
    assert main(["train", "--data", "digits", "--model", "resnet18", *flags, "--out", str(tmp_path / "r")]) == 1
    assert "Add --pretrained (or --weights PATH)" in capsys.readouterr().err  # a timm network has them


def test_a_mistyped_class_weights_value_is_refused_before_the_data_loads(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "no-data-here"), "--class-weights", "autoo",
                 "--out", str(tmp_path / "r")]) == 1  # refused before --data is even read
    err = capsys.readouterr().err
    assert "--class-weights autoo: no such file; did you mean auto?" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
