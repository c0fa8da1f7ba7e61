"""``vislab.api``'s inputs and errors: one path where it takes several (a string is one file or folder, never
its characters), and a mistake is a :class:`vislab.core.errors.UserError` worded for the flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import digits_arrays, write_image

from vislab import api
from vislab.cli import main
from vislab.core.config import ConfigError
from vislab.core.errors import UserError


@pytest.fixture(scope="module")
def run_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-inputs")
    run = api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, max_per_class=20,
                    out=str(root / "run"), device="cpu", figures=False).run_dir
    images, labels = digits_arrays(per_class=1)
    folder = root / "new"
    paths = [write_image(folder / f"{label}.png", image, size=8) for image, label in zip(images[:3], labels[:3])]
    return Path(run), folder, paths


def test_predict_reads_one_string_as_one_file(run_and_images, monkeypatch):
    run, folder, paths = run_and_images
    monkeypatch.chdir(folder)  # a "." among the characters would read every image here
    answers = api.predict(run, paths[0].name, device="cpu")
    assert [Path(a["file"]).name for a in answers] == [paths[0].name]
    assert "error" not in answers[0]
    assert [Path(a["file"]).name for a in api.predict(run, Path(paths[1]), device="cpu")] == [paths[1].name]


def test_predict_reads_one_folder_string_as_that_folder(run_and_images):
    run, folder, paths = run_and_images
    answers = api.predict(run, str(folder), device="cpu")
    assert sorted(Path(a["file"]).name for a in answers) == sorted(p.name for p in paths)


def test_explain_reads_one_string_as_one_file(run_and_images, tmp_path, monkeypatch):
    run, folder, paths = run_and_images
    monkeypatch.chdir(folder)
    answers = api.explain(run, paths[0].name, method="occlusion", out=tmp_path / "explained")
    assert len(answers) == 1 and "error" not in answers[0]
    assert len(list((tmp_path / "explained").glob("*.png"))) == 1


def test_compare_reads_one_string_as_one_run(run_and_images, tmp_path):
    run, _, _ = run_and_images
    api.evaluate(run, device="cpu", figures=False)
    rows, table, _ = api.compare(str(run), out=tmp_path / "compare")
    assert [Path(r["run"]).name for r in rows] == [run.name] and table.is_file()


@pytest.mark.parametrize("images", [5, [1, 2]])
def test_something_that_is_not_a_path_is_one_clear_error(run_and_images, images):
    run, _, _ = run_and_images
    with pytest.raises(ConfigError, match="give a path or a list of paths"):
        api.predict(run, images, device="cpu")


@pytest.mark.parametrize("call", [
    lambda run: api.summary("chollet_convnt"),
    lambda run: api.explain(run[0], run[2][0], method="gradcm"),
    lambda run: api.filters(run[0], "featurs.0"),
    lambda run: api.compare([]),
])
def test_a_mistake_in_python_is_a_user_error(run_and_images, call):
    with pytest.raises(UserError):
        call(run_and_images)


def test_train_options_from_python_are_not_called_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as raised:
        api.train(data="digits", epochs="two", out=str(tmp_path / "run"))
    assert "command line" not in str(raised.value) and "train.epochs" in str(raised.value)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "run"
    return api.train(data="digits", model="chollet_convnet", epochs=1, max_per_class=10, out=str(out),
                     device="cpu", figures=False).run_dir


def test_filters_without_a_layer_lists_the_layers(conv_run, capsys):
    with pytest.raises(SystemExit) as info:  # a missing flag: a usage error, exit 2 as argparse's
        main(["filters", str(conv_run)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--layer NAME" in err and "features.0" in err


def test_the_api_takes_one_layer_name_and_lists_the_layers_without_one(conv_run, tmp_path):
    image = write_image(tmp_path / "digit.png", digits_arrays(per_class=1)[0][0])
    grids = api.activations(conv_run, image, layers="features.0", out=tmp_path / "act")
    assert [grid.name for grid, _ in grids] == ["features.0"]  # one name, not its characters
    with pytest.raises(ConfigError, match=r"filters needs --layer NAME.*features\.0"):
        api.filters(conv_run)


def test_a_layer_without_a_feature_map_is_worded_for_the_flag(conv_run, capsys):
    assert main(["filters", str(conv_run), "--layer", "head.3"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--layer NAME" in err and "layer=NAME" not in err and "explanations" not in err


def test_a_training_result_prints_short(tmp_path):
    result = api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, max_per_class=10,
                       out=str(tmp_path / "run"), device="cpu", figures=False)
    text = repr(result)
    assert len(text) < 300 and "accuracy=" in text and str(result.run_dir) in text
