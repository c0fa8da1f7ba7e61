"""`vislab summary --depth 1` lists the head of a FeatureHeadNet (which runs head[:-1] then head[-1], so the
head's own forward hook never fires), with its output shape and all its parameters."""

from __future__ import annotations

import re

import pytest

from vislab import api
from vislab.cli import main


def _rows(text: str) -> dict[str, tuple[str, int]]:
    """Top-level rows of the table: name -> (output shape, parameters)."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+) \((\w+)\)\s+(\S+)\s+([\d,]+)$", line)
        if match:
            rows[match.group(1)] = (match.group(3), int(match.group(4).replace(",", "")))
    return rows


def _total(text: str) -> int:
    return int(re.search(r"Total params: ([\d,]+)", text).group(1).replace(",", ""))


@pytest.mark.parametrize("model", ["mlp", "fastnet", "chollet_convnet"])
def test_depth_one_lists_every_top_level_child_with_parameters(model, capsys):
    assert main(["summary", model, "--depth", "1"]) == 0
    text = capsys.readouterr().out
    rows = _rows(text)
    assert "head" in rows, text
    assert rows["head"][0] == "10" and rows["head"][1] > 0
    assert sum(params for _, params in rows.values()) == _total(text)  # the rows hold every parameter


def test_depth_one_of_mlp_matches_depth_two_head_row():
    one, two = _rows(api.summary("mlp", depth=1)), _rows(api.summary("mlp", depth=2))
    assert one["head"] == two["head"] == ("10", 535_818)
    assert one["features"] == ("1x28x28", 0)


def test_depth_one_of_a_run_folder(tmp_path, capsys):
    result = api.train(data="digits", model="mlp", model_options={"hidden": [16]}, epochs=1,
                       out=str(tmp_path / "run"), evaluate=False, figures=False, seed=0)
    capsys.readouterr()
    assert main(["summary", str(result.run_dir), "--depth", "1"]) == 0
    text = capsys.readouterr().out
    rows = _rows(text)
    assert "head" in rows and rows["head"][1] == _total(text) > 0, text
