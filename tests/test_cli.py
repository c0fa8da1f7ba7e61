"""The command line: help everywhere, usage errors exit 2, user errors exit 1 with the fix."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import digits_arrays, write_image
from vislab.cli import COMMANDS, build_parser, main


def run_cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "vislab", *args], capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


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
    # the error, the suggestion and where the options are: not train's 50 lines of usage above them
    assert "usage:" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    assert "vislab train --help" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "--optimizer", "adamm")
    assert result.returncode == 2 and "invalid choice: 'adamm'" in result.stderr
    assert "did you mean 'adam'?" in result.stderr
    with pytest.raises(SystemExit) as info:
        main(["predict", "run", "img.png", "--topk", "3"])
    assert info.value.code == 2 and "did you mean --top-k?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "run", "stray"])
    assert "vislab evaluate: error: unrecognized arguments: stray" in capsys.readouterr().err
    result = run_cli("trian")
    assert result.returncode == 2 and "invalid choice: 'trian'" in result.stderr
    assert "did you mean 'train'?" in result.stderr


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


@pytest.mark.parametrize("key, value, says", [("train.epochs", "three", "is not a whole number, e.g. 10"),
                                               ("train.lr", "fast", "is not a number, e.g. 0.001"),
                                               ("train.tta_flip", "maybe", "is not true or false, e.g. false")])
def test_a_wrong_type_in_a_config_says_what_it_takes(key, value, says):
    from vislab.core.config import Config, ConfigError, set_value

    with pytest.raises(ConfigError, match=rf"^run.yaml: {key}='{value}' {re.escape(says)}$"):
        set_value(Config(), key, value, "run.yaml")


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

    result = run_cli("predict", str(run), str(files[0]), "--format", "csv", "--top-k", "2",
                     env={"VISLAB_CACHE": str(tmp_path / "empty-cache")})  # no choice an earlier job measured
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["file", "rank", "class", "probability", "error"] and len(rows) == 3

    # one image is too few for auto to time the precisions (tests/test_measure.py has a job that does, and
    # its notes): it answers in fp32, exactly, and has nothing to say on stderr (stdout stays parseable)
    assert "precision" not in result.stderr
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
    # per-pixel tasks only (a task another test registered may join them): never classification
    assert "segmentation" in rows["unet"]["tasks"] and "classification" not in rows["unet"]["tasks"]
    assert "classification" in rows["mlp"]["tasks"]
    assert "deeplabv3_resnet50" in models_for_task(get_task("segmentation"))
    assert "unet" not in models_for_task(get_task("classification"))


def test_train_refuses_a_model_that_cannot_do_the_task(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "no-such-data"), "--task", "segmentation", "--model", "resnet18",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "--task segmentation" in err and "unet" in err and "deeplabv3_resnet50" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err  # one clean line, not torch's text
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


# --------------------------------------------------------------------------- numeric ranges
def _commands() -> dict:
    import argparse

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def _numeric_flags():
    """(command, flag, action) for every int/float flag of every subcommand."""
    for command, sub in _commands().items():
        for action in sub._actions:
            if action.option_strings and (action.type in (int, float) or hasattr(action.type, "range_name")):
                yield command, action.option_strings[0], action


def _required_arguments(sub) -> list[str]:
    """Placeholder values for a subcommand's positionals and required options (never read: the
    out-of-range flag ends the parse first)."""
    values = ["x" for action in sub._actions if not action.option_strings]
    for action in sub._actions:
        if action.option_strings and action.required:
            values += [action.option_strings[0], "x"]
    return values


def _outside(spec) -> list[str]:
    """Values just outside a range (and a fraction for a whole-number one)."""
    if spec.count:
        return ["-1", "1.5"]
    values = []
    if spec.low is not None:
        values.append(repr(spec.low if spec.low_open else spec.low - 1))
    if spec.high is not None:
        values.append(repr(spec.high if spec.high_open else spec.high + 1))
    if spec.integer:
        values.append("2.5")
    return values


def test_every_numeric_flag_has_its_range_from_the_one_table():
    from vislab.core.config import RANGES

    flags = list(_numeric_flags())
    assert len(flags) > 40
    plain = sorted({f"{command} {flag}" for command, flag, action in flags if action.type in (int, float)})
    assert not plain, f"numeric flags without a range in vislab.core.config.RANGES: {plain}"
    for command, flag, action in flags:
        assert action.dest in RANGES and "[range: " in action.help, (command, flag)


@pytest.mark.parametrize("command,flag", sorted({(c, f) for c, f, _ in _numeric_flags()}))
def test_each_numeric_flag_out_of_range_is_one_line_naming_flag_and_range(command, flag, capsys):
    from vislab.core.config import RANGES

    sub = _commands()[command]
    action = next(a for a in sub._actions if flag in a.option_strings)
    spec = getattr(action.type, "spec", None) or RANGES[action.dest]  # a command's own range, e.g. lr-find's --steps
    for value in _outside(spec):
        with pytest.raises(SystemExit) as info:
            main([command, *_required_arguments(sub), flag, value])
        err = capsys.readouterr().err
        assert info.value.code in (1, 2), (flag, value)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert flag in err and ("neither a fraction" if spec.count else spec.describe()) in err, err


def test_ranges_are_in_the_help_and_the_reported_cases_are_refused(capsys):
    help_text = _commands()["serve"].format_help()
    assert "[range: in 1..65535 (a whole number)]" in " ".join(help_text.split())
    for argv, expected in ((["summary", "mlp", "--input-size", "-5"], ">= 1"),
                           (["summary", "mlp", "--input-size", "0"], ">= 1"),
                           (["serve", "run", "--port", "99999"], "1..65535"),
                           (["train", "--num-classes", "0"], None),  # not a train flag: unrecognised
                           (["models", "--num-classes", "0"], ">= 1"),
                           (["train", "--lr-backbone", "-3"], "> 0"),
                           (["train", "--threshold", "1"], "a probability in (0, 1)"),
                           (["train", "--val-split", "1.5"], "neither a fraction"),
                           (["evaluate", "run", "--threshold", "0"], "(0, 1)")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert expected is None or expected in err, (argv, err)


def test_the_api_and_config_files_refuse_the_same_ranges(tmp_path):
    from vislab import api
    from vislab.core.config import ConfigError, resolve_config

    with pytest.raises(ConfigError, match=r"input_size must be >= 1 \(a whole number\), not -5 \(--input-size\)"):
        api.summary("mlp", input_size=-5)
    with pytest.raises(ConfigError, match="num_classes must be >= 1"):
        api.summary("mlp", num_classes=0)
    with pytest.raises(ConfigError, match="port must be in 1..65535"):
        api.serve("run", port=99999)
    with pytest.raises(ConfigError, match=r"model.lr_backbone must be > 0, not -3 \(--lr-backbone\)"):
        api.train(data=str(tmp_path / "never-read"), lr_backbone=-3, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="model.input_size must be >= 1"):
        api.make_config(input_size=0)
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        api.make_config(epochs=0)
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        api.predict("run", ["x.png"], top_k=0)
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        resolve_config(config)
    assert not (tmp_path / "run").exists()


def test_keras_metric_names_are_monitor_aliases():
    from vislab import api
    from vislab.tasks import get_task

    for keras, ours in (("val_accuracy", "val_acc"), ("accuracy", "train_acc"), ("loss", "train_loss"),
                        ("val_loss", "val_loss"), ("val_mean_io_u", "val_miou")):
        assert api.make_config(monitor=keras).train.early_stopping.monitor == ours, keras
    assert get_task("classification").mode(api.make_config(monitor="val_accuracy").train.early_stopping.monitor) \
        == "max"


# --------------------------------------------------------------------------- compare
def _evaluated_run(folder, accuracy, val_accuracy=None):
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"name": "mlp", "parameters": 1000}))
    (folder / "history.csv").write_text("epoch,seconds\n1,2.0\n")
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "split": "test", "data": "digits"}))
    if val_accuracy is not None:
        (folder / "metrics_val.json").write_text(json.dumps({"accuracy": val_accuracy, "split": "val",
                                                               "data": "digits"}))
    return folder


def test_compare_lists_unevaluated_runs_apart_and_refuses_an_unknown_evaluation(tmp_path, capsys):
    good = _evaluated_run(tmp_path / "good", 0.9, val_accuracy=0.8)
    fresh = tmp_path / "fresh"  # trained, never evaluated
    fresh.mkdir()
    (fresh / "model.json").write_text(json.dumps({"name": "mlp", "parameters": 1000}))
    out = tmp_path / "cmp"
    assert main(["compare", str(good), str(fresh), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    table, _, after = text.partition("not evaluated")
    assert "good" in table and "fresh" not in table and "?" not in text
    assert "fresh" in after and "vislab evaluate RUN" in " ".join(after.split())
    assert [row["run"] for row in csv.DictReader((out / "leaderboard.csv").open())] == ["good"]

    assert main(["compare", str(good), str(fresh), "--evaluation", "val", "--out", str(out)]) == 0
    assert "vislab evaluate RUN --split val" in " ".join(capsys.readouterr().out.split())

    assert main(["compare", str(good), str(fresh), "--evaluation", "vall", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--evaluation vall" in err and "test, val" in err and len(err.strip().splitlines()) == 1

    assert main(["compare", str(fresh), "--out", str(out)]) == 1
    assert "has been evaluated" in capsys.readouterr().err


def _option_help(command: str, flag: str):
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next((a for a in sub._actions if flag in a.option_strings), None)


def test_device_is_worded_alike_in_every_command_that_has_it():
    helps = {command: _option_help(command, "--device") for command in COMMANDS}
    helps = {command: action.help for command, action in helps.items() if action is not None}
    assert {"train", "evaluate", "predict", "segment", "serve"} <= set(helps)
    assert all(text and text.startswith("where the model runs") for text in helps.values()), helps
    assert len({text.replace(" (default: auto)", "") for text in helps.values()}) == 1


def test_help_texts_write_defaults_one_way(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = re.sub(r"\s+", " ", capsys.readouterr().out)
        assert not re.search(r"\(default [^:]", text), (command, re.findall(r"\(default [^:][^)]*\)", text))


@pytest.mark.parametrize("typo", [["train", "--bach-size", "3"], ["train", "--foo"], ["trian"]])
def test_a_usage_error_points_to_help_one_way(typo, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(typo)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("--help` lists the options)"), err


def test_predict_table_keeps_long_paths_whole(monkeypatch, capsys):
    from vislab.cli import _print_predictions

    monkeypatch.setenv("COLUMNS", "80")
    files = [f"photos/cat/nested/deeper/and/deeper/still/{name}.png" for name in ("first_picture", "second_picture")]
    _print_predictions([{"file": f, "top": [{"class": "cat", "probability": 0.9}]} for f in files], "table")
    text = capsys.readouterr().out
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)
    assert all(f in cells for f in files), cells


@pytest.mark.parametrize("argv, said, code", [
    (["--unfreeze-at", "-1:2"], "'-1:2' is not EPOCH:BLOCKS", 1),  # checked once the options are read
    (["--lr", "-1e-3"], "--lr: -0.001 must be > 0", 2),  # argparse's own check
    (["--epochs", "-2"], "--epochs: -2 must be >= 1", 2),
])
def test_a_value_starting_with_minus_is_the_options_value(argv, said, code, capsys):
    # argparse takes "-1:2" for an option of its own and says only "expected one argument"
    try:
        status = main(["train", "--data", "digits", "--model", "efficientnet_lite0", *argv, "--out", "unused"])
    except SystemExit as stopped:
        status = stopped.code
    assert status == code
    err = capsys.readouterr().err
    assert said in err and "expected" not in err, err


def test_every_flag_a_message_names_is_one_train_takes():
    # messages and the recipe line name an option by option_flag: a flag train does not have misleads
    import argparse

    from vislab.core.config import option_flag, option_keys

    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    flags = {s for action in train._actions for s in action.option_strings}
    named = {key: option_flag(key) for key in set(option_keys().values())}
    assert {key: flag for key, flag in named.items() if flag is not None and flag not in flags} == {}
    assert option_flag("model.options") == "--model-opt"
