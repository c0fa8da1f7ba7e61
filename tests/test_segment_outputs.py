"""`vislab segment`'s bad_files.csv: written only when an input was bad, never left stale by a clean run."""

from __future__ import annotations

import csv

import pytest

from conftest import trained_segmentation_run
from vislab.cli import build_parser, main


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    return trained_segmentation_run(root), root / "data" / "images"


def test_bad_files_csv_only_when_an_input_was_bad(seg_run, tmp_path, capsys):
    run, images = seg_run
    out = tmp_path / "seg"
    good = [str(images / "s0.png"), str(images / "s1.png")]
    assert main(["segment", str(run), *good, "--out", str(out), "--no-panels"]) == 0
    printed = capsys.readouterr()
    assert (out / "s0_mask.png").is_file() and (out / "pixel_shares.csv").is_file()
    assert not (out / "bad_files.csv").exists()
    assert "bad_files.csv" not in printed.out and "skipped" not in printed.err

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert main(["segment", str(run), *good, str(junk), "--out", str(out), "--no-panels"]) == 0
    printed = capsys.readouterr()
    with open(out / "bad_files.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [str(junk)] and rows[0]["reason"]
    assert f"skipped {junk}" in printed.err and "bad_files.csv" in printed.out

    # a clean rerun into the same folder: no list left claiming a bad file this run did not have
    assert main(["segment", str(run), *good, "--out", str(out), "--no-panels"]) == 0
    capsys.readouterr()
    assert not (out / "bad_files.csv").exists()
    assert (out / "s1_mask.png").is_file()


def test_segment_help_says_when_bad_files_csv_is_written():
    parser = build_parser()
    sub = next(action for action in parser._actions if action.dest == "command")
    text = " ".join(sub.choices["segment"].format_help().split())
    assert "bad_files.csv when some inputs could not be read" in text
