"""lr-find after a recipe and into a config: the transfer recipe's L-BFGS head is refused in one line that
names the flag to add, and with that flag the sweep runs on what the recipe trains (the head, on cached
features) instead of asking to drop a flag the user never gave; a suggestion written into a config that
sets model.lr_backbone says in one line how that value changed and why."""

from __future__ import annotations

import io
import json
import math

import pytest
import yaml
from rich.console import Console

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the transfer recipe's EfficientNet-Lite0 kept small: 32 px inputs, 20 images per class, random weights
TRANSFER = ["lr-find", "--recipe", "transfer", "--data", "digits", "--allow-random-backbone", "--input-size", "32",
            "--max-per-class", "20", "--steps", "20"]


def test_lr_find_with_the_transfer_recipe_names_the_flag_to_add_and_then_sweeps_its_head(tmp_path, capsys):
    from vislab.cli import main

    assert main(TRANSFER + ["--out", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--optimizer adam" in err and "--cache-features" not in err, err  # the recipe set it, not the user

    assert main(TRANSFER + ["--optimizer", "adam", "--out", str(tmp_path / "lr")]) == 0
    out = capsys.readouterr().out
    assert "of the head on cached features" in out and "suggestions: valley" in out, out
    curve = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert curve["steps"] >= 10 and all(math.isfinite(loss) for loss in curve["losses"])
    assert min(curve["smoothed"]) < curve["smoothed"][0]  # the head learns from the cached features


def test_a_suggestion_written_into_a_config_with_lr_backbone_says_how_that_changed(tmp_path):
    from vislab import api

    config = tmp_path / "tune.yaml"
    config.write_text("train:\n  lr: 0.001\nmodel:\n  lr_backbone: 0.0001\n")
    shown = io.StringIO()
    result = api.lr_find(config=str(config), data="digits", model="chollet_convnet", steps=20,
                         out=str(tmp_path / "lr"), write_config=str(config), console=Console(file=shown, width=400))
    written = yaml.safe_load(config.read_text())
    lr = float(f"{result.suggestions['valley']:.3g}")
    backbone = float(f"{lr * 0.1:.3g}")  # the ratio the sweep kept: 1e-4 / 1e-3
    assert written["train"]["lr"] == lr and written["model"]["lr_backbone"] == backbone
    lines = [line for line in shown.getvalue().splitlines() if line.startswith("lr-find:") and "lr_backbone" in line]
    assert len(lines) == 1, shown.getvalue()
    assert lines[0].startswith(f"lr-find: also changed model.lr_backbone 0.0001 -> {backbone:g} in {config}")
    assert "0.1x" in lines[0] and "set 0.0001 back" in lines[0]

    plain = tmp_path / "plain.yaml"  # no lr_backbone in the file: nothing else changes, nothing more is said
    plain.write_text("train:\n  lr: 0.001\n")
    shown = io.StringIO()
    api.lr_find(config=str(plain), data="digits", model="chollet_convnet", steps=20, out=str(tmp_path / "lr2"),
                write_config=str(plain), console=Console(file=shown, width=400))
    assert "lr_backbone" not in plain.read_text() and "also changed" not in shown.getvalue()


def test_lr_backbone_is_left_alone_when_only_the_head_trained_on_cached_features(tmp_path, capsys):
    from vislab.cli import main

    config = tmp_path / "cfg1.yaml"  # not read by the sweep (no --config): only written into
    config.write_text("model:\n  lr_backbone: 0.0001\ntrain:\n  lr: 0.001\n")
    assert main(TRANSFER + ["--optimizer", "adam", "--out", str(tmp_path / "lr"), "--write-config", str(config)]) == 0
    out = capsys.readouterr().out
    written = yaml.safe_load(config.read_text())
    assert written["model"]["lr_backbone"] == 0.0001 and written["train"]["lr"] != 0.001, written
    assert "also changed" not in out and "moved it with" not in out, out
    lines = [line for line in out.splitlines() if "model.lr_backbone" in line]
    assert len(lines) == 1 and "only the head, on cached features" in lines[0], out


def test_the_transfer_recipe_with_adam_trains_the_default_epochs_not_the_lbfgs_heads(tmp_path, capsys):
    """--recipe transfer's 2 epochs are its L-BFGS head's; with --optimizer adam the head takes the default
    epochs, in the run and in the config lr-find writes (2 Adam epochs on digits: 66 % against the recipe's 96 %)."""
    from vislab.cli import main
    from vislab.core.config import Config, resolve_config

    default = Config().train.epochs
    assert resolve_config(overrides={"recipe": "transfer", "train.optimizer": "adam"}).train.epochs == default
    assert resolve_config(overrides={"recipe": "transfer", "train.optimizer": "adam", "train.epochs": 3}).train.epochs == 3
    assert resolve_config(overrides={"recipe": "transfer"}).train.epochs == 2
    config = tmp_path / "new.yaml"
    assert main(TRANSFER + ["--optimizer", "adam", "--out", str(tmp_path / "lr"), "--write-config", str(config)]) == 0
    written = yaml.safe_load(config.read_text())
    assert written["train"]["optimizer"] == "adam" and written["train"].get("epochs", default) == default, written


@pytest.mark.parametrize("target, content", [("folder", None), ("list.yaml", "- a\n- b\n"),
                                             ("broken.yaml", "train: [lr\n")])
def test_a_bad_write_config_target_is_refused_before_the_sweep_naming_it(tmp_path, capsys, target, content):
    from vislab.cli import main

    path = tmp_path / target
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    assert main(["lr-find", "--data", "digits", "--model", "fastnet", "--steps", "10", "--out", str(tmp_path / "lr"),
                 "--write-config", str(path)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(path) in err, err
    assert ".partial" not in err and "suggestions" not in captured.out, captured  # no sweep ran
    assert not (tmp_path / "lr").exists()
    if content is not None:
        assert path.read_text() == content  # left as it was


def test_an_lr_find_error_says_lr_find_once(tmp_path, capsys):
    from vislab.cli import main

    assert main(TRANSFER + ["--out", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vislab lr-find: error: ") and err.count("lr-find:") == 1, err
