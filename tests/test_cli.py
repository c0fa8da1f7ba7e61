"""The command line: help everywhere, usage errors exit 2, user errors exit 1 with the fix."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from conftest import digits_arrays, write_image
from vislab.cli import COMMANDS, build_parser, main


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vislab", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vislab " + command)
    assert "(default: None)" not in out  # unset flags fall back to recipe/YAML/code defaults, named in the text


def test_top_level_help_lists_every_command():
    text = build_parser().format_help()
    assert all(command in text for command in COMMANDS)


def test_bad_flag_exits_2_with_message(capsys):
    result = run_cli("train", "--data", "digits", "--epoch", "3")  # typo of --epochs; no abbreviations
    assert result.returncode == 2
    assert "vislab train: error: unrecognized argument --epoch: did you mean --epochs?" in result.stderr
    assert "usage: vislab train" in result.stderr  # the subcommand's usage, not the top level's
    result = run_cli("train", "--optimizer", "adamm")
    assert result.returncode == 2 and "invalid choice: 'adamm'" in result.stderr
    with pytest.raises(SystemExit) as info:
        main(["predict", "run", "img.png", "--topk", "3"])
    assert info.value.code == 2 and "did you mean --top-k?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "run", "stray"])
    assert "vislab evaluate: error: unrecognized arguments: stray" in capsys.readouterr().err
    result = run_cli("trian")
    assert result.returncode == 2 and "invalid choice: 'trian'" in result.stderr


def test_wrong_data_path_exits_1_naming_it(tmp_path):
    result = run_cli("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope'}" in result.stderr and "no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_yaml_key_names_valid_keys(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochz: 3\n")
    result = run_cli("train", "--config", str(config))
    assert result.returncode == 1
    assert "unknown key 'epochz'" in result.stderr and "Did you mean 'epochs'" in result.stderr


def test_evaluate_missing_run_folder(tmp_path):
    result = run_cli("evaluate", str(tmp_path / "missing"))
    assert result.returncode == 1 and "no such run folder" in result.stderr


def test_train_yaml_then_flags_then_predict(tmp_path):
    """YAML sets values, flags override them; predict reports a bad image and predicts the rest."""
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  source: digits\nmodel:\n  name: mlp\n  options: {hidden: [64]}\n"
                      "train:\n  epochs: 5\n  lr: 0.003\n")
    run = tmp_path / "run"
    result = run_cli("train", "--config", str(config), "--epochs", "2", "--out", str(run), "--no-progress")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "images per class per split" in result.stdout and "test accuracy" in result.stdout
    import yaml

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["train"]["lr"] == 0.003
    assert resolved["model"]["options"] == {"hidden": [64]}

    images, labels = digits_arrays(per_class=1)
    files = [write_image(tmp_path / "imgs" / f"digit{label}.png", image) for image, label in zip(images, labels)]
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG broken")
    result = run_cli("predict", str(run), str(tmp_path / "imgs"), str(tmp_path / "missing.png"),
                     "--format", "json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    by_file = {p["file"]: p for p in predictions}
    assert "error" in by_file[str(tmp_path / "imgs" / "broken.png")]
    assert by_file[str(tmp_path / "missing.png")]["error"] == "no such file or folder"
    good = [by_file[str(f)] for f in files]
    assert all(len(p["top"]) == 3 for p in good)
    assert sum(p["top"][0]["class"] == str(label) for p, label in zip(good, labels)) >= 5

    result = run_cli("predict", str(run), str(files[0]), "--format", "csv", "--top-k", "2")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["file", "rank", "class", "probability", "error"] and len(rows) == 3

    # auto says what it measured and chose, and reduced precision what it did, on stderr (stdout stays
    # parseable); which precision wins depends on the CPU
    assert "precision auto: precision " in result.stderr and " measured " in result.stderr
    if "precision auto: precision bf16" in result.stderr:
        assert "recomputed in fp32" in result.stderr
    result = run_cli("predict", str(run), str(files[0]), "--format", "json", "--precision", "bf16")
    assert "can differ from fp32" in result.stderr and json.loads(result.stdout)[0]["top"]
    result = run_cli("predict", str(run), str(files[0]), "--precision", "fp32")
    assert result.returncode == 0 and "precision" not in result.stderr


def test_no_figures_writes_the_metrics_and_the_report_without_the_figures(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--max-per-class", "30",
                 "--precision", "fp32", "--no-figures", "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["accuracy"] > 0.3
    assert (run / "report.html").is_file() and (run / "plots" / "curves.png").is_file()
    assert not (run / "plots" / "confusion_matrix.png").exists() and not (run / "plots" / "explain").exists()
    assert (run / "audit.json").is_file() and not list((run / "plots").glob("audit_*.png"))
    assert main(["evaluate", str(run), "--split", "val", "--no-figures"]) == 0
    assert (run / "metrics_val.json").is_file() and not (run / "plots" / "val").exists()
    assert main(["evaluate", str(run)]) == 0  # the figures, when asked for
    assert (run / "plots" / "confusion_matrix.png").is_file()


def test_resume_refuses_other_flags(tmp_path):
    result = run_cli("train", "--resume", str(tmp_path), "--lr", "0.1")
    assert result.returncode != 0 and "only --epochs may change" in result.stderr


def test_unknown_model_fails_before_loading_data(tmp_path):
    result = run_cli("train", "--data", "digits", "--model", "resnet5O", "--out", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "unknown model 'resnet5O'" in result.stderr and "resnet50" in result.stderr
    assert "images per class" not in result.stdout and not (tmp_path / "r").exists()


def test_models_lists_every_family_with_its_tasks(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("unet", "deeplabv3_resnet50", "efficientnet_lite0", "fastnet", "hf:ORG/NAME"):
        assert name in out, name
    assert main(["models", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "unet" in out and "deeplabv3_resnet50" in out and "fastnet" not in out and "efficientnet_lite0" not in out


def test_model_registry_answers_per_task():
    from vislab import api
    from vislab.models.registry import models_for_task
    from vislab.tasks import get_task

    rows = {row["name"]: row for row in api.models()}
    assert rows["efficientnet_lite0"]["weights"] == "shipped" and rows["efficientnet_lite1"]["input_size"] == (240, 240)
    assert rows["unet"]["tasks"] == ["segmentation"] and "classification" in rows["mlp"]["tasks"]
    assert "deeplabv3_resnet50" in models_for_task(get_task("segmentation"))
    assert "unet" not in models_for_task(get_task("classification"))


def test_train_refuses_a_model_that_cannot_do_the_task(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "no-such-data"), "--task", "segmentation", "--model", "resnet18",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "--task segmentation" in err and "unet" in err and "deeplabv3_resnet50" in err
    assert "no-such-data" not in err and not (tmp_path / "run").exists()  # refused before the data is read


def test_every_train_flag_is_an_api_option():
    """The CLI hands train's flags to the API by name: each must be a name the one mapping knows."""
    import argparse

    from vislab.cli import _NOT_OPTIONS
    from vislab.core.config import option_keys

    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    dests = {action.dest for action in train._actions if action.dest != "help"} - _NOT_OPTIONS
    assert dests and not dests - set(option_keys()), sorted(dests - set(option_keys()))


def test_audit_reads_and_audits_segmentation_masks(tmp_path, capsys):
    from vislab.data.composites import make_fashion_composites

    data = make_fashion_composites(tmp_path / "data", train=6, test=2, size=32, seed=0)
    assert main(["audit", "--data", str(data), "--task", "segmentation", "--out", str(tmp_path / "audit")]) == 0
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert audit["task"] == "segmentation" and set(audit["masks"]) >= {"train", "test"}
    assert sum(audit["masks"]["train"]["pixels_per_class"].values()) > 0
    assert "Pixels per class" in capsys.readouterr().out
