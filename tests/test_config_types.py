"""Each config field's declared type decides what it takes, for YAML files, flags and API keyword options alike.

A value of the wrong type is one line naming where it came from (``c.yaml [train]: ...``), never a traceback
or Python's own words; a flag overrides a YAML value with the flag's own type. Every check runs through the
real entry points (``vislab.cli.main``, ``vislab.api``) and fails before any training where it can.
"""

from __future__ import annotations

import pytest
import yaml

from vislab import api
from vislab.cli import main
from vislab.core.errors import ConfigError

TINY = ["--data", "digits", "--max-per-class", "10", "--no-figures", "--no-evaluate", "--no-progress"]


def _config(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _train(tmp_path, text: str, *flags: str) -> int:
    config = _config(tmp_path, text)
    return main(["train", "--config", str(config), *TINY, "--out", str(tmp_path / "run"), *flags])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# --------------------------------------------------------------------------- mappings and lists
@pytest.mark.parametrize("options", ["[1, 2]", "5", "abc"])
def test_model_options_that_are_no_mapping_are_one_line_naming_the_file(tmp_path, capsys, options):
    code = _train(tmp_path, f"model:\n  options: {options}\n", "--model", "mlp", "--epochs", "1")
    err = _one_line(capsys)
    assert code == 1
    assert "c.yaml [model]: model.options must be a mapping of KEY: VALUE, e.g. {dropout: 0.25}" in err
    assert "dictionary update sequence" not in err
    assert not (tmp_path / "run").exists()


def test_the_api_refuses_model_options_that_are_no_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"^the options given: model.options must be a mapping of KEY: VALUE"):
        api.train(data="digits", model="mlp", model_options=[1, 2], epochs=1, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, says", [
    ("train:\n  speed: 5\n", "c.yaml [train]: train.speed must be a mapping of KEY: VALUE"),
    ("recipe_choices: [1]\n", "c.yaml: recipe_choices must be a mapping of KEY: VALUE"),
    ("model:\n  options: {1: 2}\n", "c.yaml [model]: model.options must be a mapping of KEY: VALUE"),
])
def test_every_mapping_field_refuses_what_is_no_mapping(tmp_path, text, says):
    with pytest.raises(ConfigError) as info:
        api.make_config(config=str(_config(tmp_path, text)), data="digits", model="mlp")
    assert str(info.value).startswith(f"{tmp_path / says}"), info.value


# --------------------------------------------------------------------------- numbers: the declared type
def test_a_flag_overrides_a_yaml_fraction_with_its_own_whole_number(tmp_path):
    config = _config(tmp_path, "train:\n  epochs: 1.5\n  batch_size: 64.5\n  lr: '1e-3'\naugment:\n  width_shift: 1\n")
    cfg = api.make_config(config=str(config), data="digits", model="mlp", epochs=2, batch_size=64)
    assert type(cfg.train.epochs) is int and cfg.train.epochs == 2
    assert type(cfg.train.batch_size) is int and cfg.train.batch_size == 64
    # what was accepted before still is: a string number from YAML, a whole number for a float field
    assert cfg.train.lr == 0.001 and type(cfg.augment.width_shift) is float and cfg.augment.width_shift == 1


def test_a_run_with_yaml_fractions_overridden_by_flags_records_whole_numbers(tmp_path):
    code = _train(tmp_path, "train:\n  epochs: 1.5\n  batch_size: 64.5\n", "--model", "mlp", "--epochs", "1",
                  "--batch-size", "64")
    assert code == 0
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert type(written["epochs"]) is int and written["epochs"] == 1
    assert type(written["batch_size"]) is int and written["batch_size"] == 64


def test_a_yaml_fraction_for_a_whole_number_alone_is_refused_naming_the_file(tmp_path, capsys):
    code = _train(tmp_path, "train:\n  epochs: 1.5\n", "--model", "mlp")
    err = _one_line(capsys)
    assert code == 1 and "c.yaml [train]: train.epochs must be >= 1 (a whole number), not 1.5" in err


# --------------------------------------------------------------------------- booleans
@pytest.mark.parametrize("text, says", [
    ("train:\n  epochs: true\n", "c.yaml [train]: train.epochs=True is not a whole number, e.g. 10"),
    ("train:\n  batch_size: true\n", "c.yaml [train]: train.batch_size=True is not a whole number, e.g. 128"),
    ("train:\n  lr: true\n", "c.yaml [train]: train.lr=True is not a number"),
    ("augment:\n  hflip: 3\n", "c.yaml [augment]: augment.hflip=3 is not true or false, e.g. false"),
    ("train:\n  early_stopping:\n    patience: false\n",
     "c.yaml [train] [early_stopping]: train.early_stopping.patience=False is not a whole number"),
])
def test_a_bool_for_a_number_or_a_number_for_a_bool_is_refused_naming_the_file(tmp_path, capsys, text, says):
    code = _train(tmp_path, text, "--model", "mlp", "--epochs", "1") if "epochs" not in text else \
        _train(tmp_path, text, "--model", "mlp")
    err = _one_line(capsys)
    assert code == 1 and says in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, says", [
    ({"epochs": True}, "train.epochs=True is not a whole number"),
    ({"batch_size": True, "epochs": 1}, "train.batch_size=True is not a whole number"),
    ({"hflip": 3, "epochs": 1}, "augment.hflip=3 is not true or false"),
])
def test_the_api_refuses_the_same_bools_and_numbers(tmp_path, options, says):
    with pytest.raises(ConfigError, match=says):
        api.train(data="digits", model="mlp", max_per_class=10, out=str(tmp_path / "run"), figures=False,
                  evaluate=False, **options)
    assert not (tmp_path / "run").exists()


def test_yaml_spellings_of_true_and_false_are_still_bools(tmp_path):
    config = _config(tmp_path, "augment:\n  hflip: yes\n  vflip: 'off'\ntrain:\n  tta_flip: 'true'\n  epochs: 3.0\n")
    cfg = api.make_config(config=str(config), data="digits", model="mlp")
    assert (cfg.augment.hflip, cfg.augment.vflip, cfg.train.tta_flip) == (True, False, True)
    assert type(cfg.train.epochs) is int and cfg.train.epochs == 3  # a whole float is a whole number
    with pytest.raises(ConfigError, match=r"c.yaml \[augment\]: augment.vflip=1 is not true or false"):
        api.make_config(config=str(_config(tmp_path, "augment:\n  vflip: 1\n")), data="digits", model="mlp")


# --------------------------------------------------------------------------- no value, choices, text
def test_a_key_without_a_value_is_refused_unless_the_field_is_optional(tmp_path, capsys):
    code = _train(tmp_path, "train:\n  epochs:\n  threshold:\n", "--model", "mlp")
    err = _one_line(capsys)
    assert code == 1 and "c.yaml [train]: train.epochs has no value; give a whole number, e.g. 10" in err
    cfg = api.make_config(config=str(_config(tmp_path, "train:\n  threshold:\nmodel:\n  options:\n")),
                          data="digits", model="mlp")
    assert cfg.train.threshold is None and cfg.model.options == {}


def test_a_wrong_choice_or_a_yaml_bool_for_text_names_the_file(tmp_path, capsys):
    assert _train(tmp_path, "train:\n  optimizer: adamm\n", "--model", "mlp") == 1
    assert "c.yaml [train]: train.optimizer='adamm' is not valid; choose one of adam" in _one_line(capsys)
    assert _train(tmp_path, "train:\n  scheduler: off\n", "--model", "mlp") == 1
    err = _one_line(capsys)
    assert "c.yaml [train]: train.scheduler=False is not text" in err and "quote" in err


def test_an_input_size_of_three_numbers_names_the_file(tmp_path, capsys):
    assert _train(tmp_path, "model:\n  input_size: [8, 8, 8]\n", "--model", "mlp", "--epochs", "1") == 1
    assert "c.yaml [model]: model.input_size takes one number or [H, W], not 3 numbers" in _one_line(capsys)


# --------------------------------------------------------------------------- the model's name
def test_an_unknown_model_from_a_yaml_file_names_the_file(tmp_path, capsys):
    code = _train(tmp_path, "model:\n  name: mlpp\n", "--epochs", "1")
    err = _one_line(capsys)
    assert code == 1 and "c.yaml [model]: unknown model 'mlpp'. Did you mean: mlp?" in err
    assert not (tmp_path / "run").exists()
    # a --model flag overrides the file's name: its error names no file
    code = _train(tmp_path, "model:\n  name: mlp\n", "--epochs", "1", "--model", "mlpq")
    err = _one_line(capsys)
    assert code == 1 and "unknown model 'mlpq'" in err and "c.yaml" not in err


def test_the_api_names_the_yaml_file_of_an_unknown_model(tmp_path):
    config = _config(tmp_path, "model:\n  name: mlpp\n")
    with pytest.raises(ConfigError, match=r"c.yaml \[model\]: unknown model 'mlpp'"):
        api.train(config=str(config), data="digits", epochs=1, out=str(tmp_path / "run"))


def test_a_time_budget_runs_config_replays_its_epochs_and_a_flag_wins_over_the_file(tmp_path):
    # a budget run's config.yaml holds the epochs the budget reached beside the budget itself
    import yaml

    from vislab.core.config import resolve_config

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "digits"}, "model": {"name": "mlp"},
                                      "train": {"epochs": 6, "time_budget": 20.0}}))
    with pytest.warns(UserWarning, match=r"sets both train.epochs \(6\) and train.time_budget: its 6 epochs"):
        cfg = resolve_config(config, {})
    assert (cfg.train.epochs, cfg.train.time_budget) == (6, None)
    cfg = resolve_config(config, {"train.epochs": 3})  # --epochs 3: that many, no budget
    assert (cfg.train.epochs, cfg.train.time_budget) == (3, None)
    cfg = resolve_config(config, {"train.time_budget": "30s"})  # --time-budget 30s: it plans the epochs
    assert cfg.train.time_budget == 30.0
    with pytest.raises(ConfigError, match="give --epochs or --time-budget, not both"):
        resolve_config(config, {"train.epochs": 3, "train.time_budget": "30s"})


def test_a_typed_zero_weight_decay_for_the_lbfgs_head_is_refused_not_read_as_its_default():
    from vislab.core.config import resolve_config

    head = {"model.name": "efficientnet_lite0", "model.pretrained": True, "model.freeze": "backbone",
            "model.cache_features": True, "train.optimizer": "lbfgs", "train.scheduler": "none"}
    with pytest.raises(ConfigError, match=r"--weight-decay 0 with --optimizer lbfgs: .*leave --weight-decay out "
                                          r"for 1/N"):
        resolve_config(None, {**head, "train.weight_decay": 0.0})
    assert resolve_config(None, head).train.weight_decay == 0.0  # not given: the head's 1/N
    assert resolve_config(None, {**head, "train.weight_decay": 1e-3}).train.weight_decay == 1e-3
