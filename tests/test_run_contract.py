"""The run-folder contract: model.json formats, resume rules, history columns, Keras' patience."""

from __future__ import annotations

import json

import pytest
import torch

from vislab.core.errors import ConfigError
from vislab.train.callbacks import EarlyStopping, append_history


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from vislab import api

    out = tmp_path_factory.mktemp("contract") / "run"
    return api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, out=str(out), device="cpu",
                     evaluate=False).run_dir


def test_version_1_model_json_loads_as_classification(digits_run, tmp_path):
    import shutil

    from vislab.runs import load

    new = load(digits_run)
    old_dir = tmp_path / "old"
    shutil.copytree(digits_run, old_dir)
    spec = json.loads((old_dir / "model.json").read_text())
    assert spec["format"] == "vislab-model/2" and spec["task"] == "classification"
    for key in ("task", "num_outputs"):  # what /1 files did not have
        spec.pop(key)
    spec["format"] = "vislab-model/1"
    (old_dir / "model.json").write_text(json.dumps(spec))
    old = load(old_dir)
    assert old.task.name == "classification"
    x = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(old.model(old.preprocessing(x)), new.model(new.preprocessing(x)))
    spec["format"] = "vislab-model/9"
    (old_dir / "model.json").write_text(json.dumps(spec))
    with pytest.raises(Exception, match="not one this vislab reads"):
        load(old_dir)


def test_resume_refuses_any_change_but_epochs_in_the_library(digits_run):
    from vislab import api

    before = (digits_run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"only --epochs may change \(got --lr\)"):
        api.train(resume=str(digits_run), lr=0.1, epochs=3)
    assert (digits_run / "config.yaml").read_text() == before


def test_history_refuses_a_value_without_a_column(tmp_path):
    columns = ["epoch", "train_loss", "lr", "seconds"]
    append_history(tmp_path / "history.csv", {"epoch": 1, "train_loss": 0.5, "lr": 0.1, "seconds": 1.0}, columns)
    with pytest.raises(KeyError, match="val_miou"):
        append_history(tmp_path / "history.csv", {"epoch": 2, "val_miou": 0.5}, columns)


def test_patience_has_keras_meanings():
    zero = EarlyStopping("val_loss", patience=0, mode="min")
    zero.on_epoch_end(0, {"val_loss": 1.0})
    assert not zero.stop_training
    zero.on_epoch_end(1, {"val_loss": 1.5})  # the first epoch without improvement
    assert zero.stop_training
    off = EarlyStopping("val_loss", patience=None, mode="min")
    for epoch, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        off.on_epoch_end(epoch, {"val_loss": value})
    assert not off.stop_training and off.best_epoch == 0
    up = EarlyStopping("val_miou", patience=1, mode="max")
    for epoch, value in enumerate([0.1, 0.2, 0.3]):
        up.on_epoch_end(epoch, {"val_miou": value})
    assert not up.stop_training and up.best_epoch == 2


def test_default_config_has_no_early_stopping_and_rejects_negative_patience():
    from vislab.core.config import resolve_config

    assert resolve_config().train.early_stopping.patience is None
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        resolve_config(overrides={"train.early_stopping.patience": -1})


def test_a_run_trained_at_a_forced_precision_is_evaluated_at_it(tmp_path):
    """--precision fp32 measures nothing in training; its test evaluation must not time bf16 either
    (the evaluation's numbers would then depend on which precision won on this machine)."""
    from vislab import api
    from vislab.evaluate.runner import measure_run

    forced = api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, out=str(tmp_path / "fp32"),
                       device="cpu", precision="fp32", evaluate=False).run_dir
    assert measure_run(forced).predictor.choice.source == "forced"
    auto = api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, out=str(tmp_path / "auto"),
                     device="cpu", evaluate=False).run_dir
    assert measure_run(auto).predictor.precision == "auto"


def test_a_loaded_model_is_a_model_for_predict_and_explain(digits_run, tmp_path):
    """Loaded once (api.load_model), used by several calls: the same answers as from the run folder."""
    from conftest import digits_arrays, write_image
    from vislab import api

    images, labels = digits_arrays(per_class=1)
    files = [write_image(tmp_path / f"d{label}.png", image) for image, label in zip(images[:3], labels[:3])]
    loaded = api.load_model(digits_run)
    assert api.load_model(loaded) is loaded
    from_loaded = api.predict(loaded, files, precision="fp32", top_k=2)
    assert [r["top"] for r in from_loaded] == [r["top"] for r in api.predict(digits_run, files, precision="fp32", top_k=2)]
    assert api.explain(loaded, files[:1], method="occlusion", out=tmp_path / "x")[0]["png"]
    with pytest.raises(ConfigError, match="already loaded"):
        api.predict(loaded, files, weights=str(tmp_path / "other.safetensors"))
