"""`vislab predict` and `vislab segment` when no input can be read: one `vislab CMD: error: FILE: REASON`
line per input on stderr, exit 1, and nothing written (no --figure, no --out folder, nothing changed in an
existing one); when some inputs can be read, the good ones are answered and the bad ones listed, exit 0."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import trained_segmentation_run
from vislab import api
from vislab.cli import build_parser, main

MISSING = "no such file or folder"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("unreadable") / "dig"
    api.train(data="digits", model="mlp", epochs=1, max_per_class=20, seed=0, out=str(out), evaluate=False,
              figures=False)
    return out


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    return trained_segmentation_run(tmp_path_factory.mktemp("unreadable-seg"), "seg1")


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """In a fresh working folder: a readable good.png, a junk.jpg that is not an image; nodir.png is absent."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save("good.png")
    with open("junk.jpg", "wb") as handle:
        handle.write(b"not an image")
    return tmp_path


def _error_lines(err: str, command: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith(f"vislab {command}: error: ")]


def _snapshot(folder):
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- nothing readable
@pytest.mark.parametrize("command, run, written", [("predict", "digits_run", ["--figure", "fig.png"]),
                                                    ("segment", "seg_run", ["--out", "x1"])])
def test_nothing_readable_is_one_error_line_per_input_and_writes_nothing(command, run, written, inputs, capfd,
                                                                         request):
    """predict draws no --figure and prints no table; segment makes no --out folder."""
    run_dir = request.getfixturevalue(run)
    capfd.readouterr()  # the run's training, when this test is the first to need it
    assert main([command, str(run_dir), "nodir.png", "junk.jpg", *written]) == 1
    printed = capfd.readouterr()
    assert printed.out == ""  # no table, no summary
    lines = printed.err.splitlines()
    assert _error_lines(printed.err, command) == lines and len(lines) == 2, printed.err
    assert lines[0] == f"vislab {command}: error: nodir.png: {MISSING}"
    assert lines[1].startswith(f"vislab {command}: error: junk.jpg: not an image")
    assert not (inputs / written[1]).exists()


# --------------------------------------------------------------------------- predict
def test_predict_partial_answers_the_good_then_nothing_readable_keeps_its_figure(digits_run, inputs, capfd):
    # some inputs bad: today's behaviour, the good one answered, the bad one a row with its error, exit 0
    assert main(["predict", str(digits_run), "nodir.png", "good.png", "--figure", "fig.png", "--top-k", "2"]) == 0
    printed = capfd.readouterr()
    assert f"error: {MISSING}" in printed.out and "good.png" in printed.out and "nodir.png" in printed.out
    assert not _error_lines(printed.err, "predict")
    figure = inputs / "fig.png"
    before = _snapshot(inputs)
    assert figure.stat().st_size > 0
    # then nothing readable: the figure of the run before is not overwritten with an empty one
    assert main(["predict", str(digits_run), "nodir.png", "--figure", "fig.png"]) == 1
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err.splitlines() == [f"vislab predict: error: nodir.png: {MISSING}"]
    assert _snapshot(inputs) == before


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_predict_json_csv_nothing_readable_keep_their_rows_and_add_error_lines(digits_run, inputs, capfd, fmt):
    assert main(["predict", str(digits_run), "nodir.png", "--format", fmt]) == 1
    printed = capfd.readouterr()
    if fmt == "json":
        assert json.loads(printed.out) == [{"file": "nodir.png", "error": MISSING}]
    else:
        assert list(csv.reader(io.StringIO(printed.out))) == [["file", "rank", "class", "probability", "error"],
                                                              ["nodir.png", "", "", "", MISSING]]
    assert printed.err.splitlines() == [f"vislab predict: error: nodir.png: {MISSING}"]
    assert "Traceback" not in printed.err


def test_api_predict_nothing_readable_answers_errors_and_draws_nothing(digits_run, inputs):
    results = api.predict(str(digits_run), ["nodir.png", "junk.jpg"], figure="fig.png")
    assert [r["file"] for r in results] == ["nodir.png", "junk.jpg"] and all("error" in r for r in results)
    assert results[0]["error"] == MISSING
    assert not (inputs / "fig.png").exists()
    results = api.predict(str(digits_run), ["nodir.png", "good.png"], figure="fig.png")
    assert "error" in results[0] and results[1]["top"] and (inputs / "fig.png").is_file()


def _help(command: str) -> str:
    sub = next(action for action in build_parser()._actions if action.dest == "command")
    return " ".join(sub.choices[command].format_help().split())


def test_help_says_what_happens_when_nothing_is_readable():
    assert "When no image could be read, each is one line on stderr" in _help("predict")
    assert "--format json/csv still print their rows" in _help("predict")
    assert "When no input could be read, each is one line" in _help("segment")


# --------------------------------------------------------------------------- segment
def test_segment_partial_lists_bad_files_then_nothing_readable_changes_nothing(seg_run, inputs, capfd):
    # some inputs bad: today's behaviour, the good one segmented, the bad one skipped and in bad_files.csv
    assert main(["segment", str(seg_run), "good.png", "nonexist.png", "--out", "o", "--no-panels"]) == 0
    printed = capfd.readouterr()
    assert f"skipped nonexist.png: {MISSING}" in printed.err and not _error_lines(printed.err, "segment")
    assert "segmented 1 image(s)" in printed.out and "bad_files.csv" in printed.out
    out = inputs / "o"
    with open(out / "bad_files.csv") as handle:
        assert list(csv.DictReader(handle)) == [{"path": "nonexist.png", "reason": MISSING}]
    assert (out / "good_mask.png").is_file()
    before = _snapshot(out)
    # then nothing readable into the same --out: the earlier run's files stay as they were
    assert main(["segment", str(seg_run), "nonexist.png", "--out", "o"]) == 1
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err.splitlines() == [f"vislab segment: error: nonexist.png: {MISSING}"]
    assert _snapshot(out) == before


def test_api_segment_nothing_readable_writes_nothing(seg_run, inputs):
    result = api.segment(str(seg_run), ["nonexist.png"], out="x2")
    assert result.files == {} and result.bad_files == [("nonexist.png", MISSING)]
    assert not (inputs / "x2").exists()


def test_segment_class_maps_names_the_classes_after_a_separator(seg_run, inputs, capfd):
    assert main(["segment", str(seg_run), "good.png", "--out", "o", "--class-maps", "blue"]) == 1
    printed = capfd.readouterr()
    assert printed.err.splitlines() == [
        f"vislab segment: error: --class-maps 'blue' is not a class of {seg_run}; its classes: 0, 1, 2"]
    assert main(["segment", str(seg_run), "good.png", "--out", "o", "--class-maps", "11"]) == 1
    printed = capfd.readouterr()
    assert printed.err.splitlines() == [f"vislab segment: error: --class-maps '11' is not a class of {seg_run} "
                                        "(did you mean '1'?); its classes: 0, 1, 2"]
    assert not (inputs / "o").exists()
