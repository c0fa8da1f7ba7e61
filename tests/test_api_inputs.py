"""``vislab.api`` takes one path where it takes several: a string is one file or folder, never its characters."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import digits_arrays, write_image

from vislab import api
from vislab.core.config import ConfigError


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
