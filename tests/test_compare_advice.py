"""What compare and evaluate say about folders and splits that are not there: vislab's own non-run output
among the folders compared, other data without the split asked for, and a run trained without a test split."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import digits_arrays, write_image
from vislab.cli import main

TINY = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--max-per-class", "20", "--no-figures",
        "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``runs/mlp`` (evaluated: metrics.json), ``runs/p2`` (trained with --val-split 0 --test-split 0) and
    ``runs/lr-find-mlp`` (what `vislab lr-find` writes by default), ``runs/audit-digits`` (an audit) and
    ``runs/explain-mlp`` (explain's default folder for a model outside a run)."""
    runs = tmp_path_factory.mktemp("work") / "runs"
    assert main(["train", *TINY, "--out", str(runs / "mlp")]) == 0
    assert main(["train", *TINY, "--val-split", "0", "--test-split", "0", "--out", str(runs / "p2")]) == 0
    assert main(["lr-find", "--data", "digits", "--model", "mlp", "--max-per-class", "20", "--steps", "10",
                 "--out", str(runs / "lr-find-mlp")]) == 0
    assert main(["audit", "--data", "digits", "--max-per-class", "20", "--out", str(runs / "audit-digits")]) == 0
    image = runs.parent / "digit.png"
    write_image(image, digits_arrays(per_class=1)[0][0], size=8)
    # explain's default folder name for a model outside a run
    assert main(["explain", str(runs / "mlp"), str(image), "--out", str(runs / "explain-mlp")]) == 0
    return runs


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _other_digits(folder: Path, split_folders: bool = False) -> Path:
    """Class folders of digit images (``train/`` and ``test/`` ones with ``split_folders``)."""
    images, labels = digits_arrays(per_class=4)
    for i, (image, label) in enumerate(zip(images, labels)):
        split = ("train" if i % 2 else "test") if split_folders else ""
        write_image(folder / split / str(label) / f"d{i}.png", image, size=8)
    return folder


def test_compare_over_a_runs_glob_skips_its_own_output_lr_finds_and_audits(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs.parent)
    for attempt in range(2):  # the first writes runs/compare, which the second one's glob holds
        given = sorted(str(path.relative_to(runs.parent)) for path in runs.iterdir())
        assert main(["compare", *given]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "skipped runs/lr-find-mlp: lr-find's output, not a run" in _lines(out)
        assert "skipped runs/audit-digits: `vislab audit`'s output (no model), not a run" in _lines(out)
        assert "skipped runs/explain-mlp: explain's output, not a run" in _lines(out)
        assert ("skipped runs/compare: compare's own output, not a run" in _lines(out)) == (attempt == 1)
    ranked = [row["run"] for row in csv.DictReader(open(runs / "compare" / "leaderboard.csv"))]
    assert ranked == ["mlp"]


def test_compare_given_only_vislab_output_or_a_plain_folder_is_one_line_error(runs, tmp_path, capsys):
    out = tmp_path / "board"
    assert main(["compare", str(runs / "mlp"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(runs / "lr-find-mlp"), "--out", str(tmp_path / "again")]) == 1
    err = capsys.readouterr().err
    assert _lines(err) == [f"vislab compare: error: no run folder to compare: {out} is compare's own output, "
                           f"{runs / 'lr-find-mlp'} is lr-find's output; give the folders `vislab train --out DIR` "
                           "wrote"]
    assert not (tmp_path / "again").exists()
    plain = tmp_path / "notes"
    plain.mkdir()
    assert main(["compare", str(plain), "--out", str(tmp_path / "again")]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and f"{plain} is not a vislab run folder" in err
    assert "vislab audit" not in err  # compare ranks trained runs: an audit's folder is no answer
    # another command given compare's output says what it is
    assert main(["report", str(out)]) == 1
    assert f"{out} is compare's own output, not a vislab run folder" in capsys.readouterr().err


def test_compare_over_a_runs_glob_skips_stray_files_and_plain_folders(runs, tmp_path, capsys):
    folder = tmp_path / "runs"
    shutil.copytree(runs / "mlp", folder / "mlp")
    (folder / "cnn.log").write_text("epoch 1\n")
    (folder / "notes").mkdir()
    given = sorted(str(path) for path in folder.iterdir())
    assert main(["compare", *given, "--out", str(tmp_path / "board")]) == 0, capsys.readouterr().err
    out = _lines(capsys.readouterr().out)
    assert f"skipped {folder / 'cnn.log'}: a file, not a run" in out
    assert f"skipped {folder / 'notes'}: a folder with none of a run's files, not a run" in out
    ranked = [row["run"] for row in csv.DictReader(open(tmp_path / "board" / "leaderboard.csv"))]
    assert ranked == ["mlp"]
    # nothing left to rank: one error naming each path; one path that is not a run: its own error
    assert main(["compare", str(folder / "cnn.log"), str(folder / "notes"), "--out", str(tmp_path / "no")]) == 1
    assert _lines(capsys.readouterr().err) == [
        f"vislab compare: error: no run folder to compare: {folder / 'cnn.log'} is a file, {folder / 'notes'} is a "
        "folder with none of a run's files; give the folders `vislab train --out DIR` wrote"]
    assert main(["compare", str(folder / "cnn.log"), "--out", str(tmp_path / "no")]) == 1
    assert _lines(capsys.readouterr().err) == [
        f"vislab compare: error: {folder / 'cnn.log'}: a file, not a run folder; give a folder written by "
        "`vislab train --out DIR`"]
    assert main(["compare", str(folder / "mlp"), str(folder / "typo"), "--out", str(tmp_path / "no")]) == 1
    assert f"{folder / 'typo'}: no such run folder" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_evaluate_without_the_val_split_names_what_is_missing_and_the_fix(runs, tmp_path, capsys):
    other = _other_digits(tmp_path / "other")
    assert main(["evaluate", str(runs / "mlp"), "--data", str(other), "--split", "val", "--no-figures"]) == 1
    err = capsys.readouterr().err
    assert _lines(err) == [f"vislab evaluate: error: {other}: has no val/ folder; data other than the run's is "
                           "evaluated whole, as the test split: give --split test, or split "
                           f"{other} into train/ and val/ folders"]
    assert "--val-split" not in err  # the run's val_split is 0.1: not what is wrong
    # the fix it gives: all 40 images, scored as the test split
    assert main(["evaluate", str(runs / "mlp"), "--data", str(other), "--split", "test", "--no-figures"]) == 0
    assert "evaluated 40 test images" in " ".join(capsys.readouterr().out.split())

    split = _other_digits(tmp_path / "split", split_folders=True)
    assert main(["evaluate", str(runs / "mlp"), "--data", str(split), "--split", "val", "--no-figures"]) == 1
    assert _lines(capsys.readouterr().err) == [
        f"vislab evaluate: error: {split}: has no val/ folder (has train/, test/); data other than the run's is "
        "split only by its own folders: give --split train or --split test, or add a val/ folder beside its train/"]
    # the run's own data: the run's setting is what is wrong
    assert main(["evaluate", str(runs / "p2"), "--split", "val", "--no-figures"]) == 1
    err = capsys.readouterr().err
    assert "digits: has no 'val' split (has train) (this run's --val-split was 0" in err
    assert "train with --val-split (e.g. 0.1)" in err and len(_lines(err)) == 1


def test_compare_advises_other_data_for_a_run_trained_without_a_test_split(runs, tmp_path, capsys):
    fresh = tmp_path / "fresh"  # trained with a test split, never evaluated
    shutil.copytree(runs / "mlp", fresh)
    (fresh / "metrics.json").unlink()
    assert main(["compare", str(runs / "mlp"), str(runs / "p2"), str(fresh), "--out", str(tmp_path / "b")]) == 0
    out = _lines(capsys.readouterr().out)
    assert ("not evaluated (no metrics.json), so not ranked: p2: trained with --test-split 0 on data with no test "
            "split of its own; run `vislab evaluate RUN --data DATA` on other data with its classes, then compare "
            "with --evaluation DATA_test") in out
    assert "not evaluated (no metrics.json), so not ranked: fresh: run `vislab evaluate RUN`" in out
    # what the plain advice would have led to
    assert main(["evaluate", str(runs / "p2"), "--no-figures"]) == 1
    assert "has no 'test' split" in capsys.readouterr().err


def test_has_test_split_reads_what_evaluate_would_find(tmp_path):
    from vislab.evaluate.runner import has_test_split

    assert has_test_split({"source": "digits", "test_split": 0.0}) is False
    assert has_test_split({"source": "digits", "test_split": 0.2}) is True
    assert has_test_split({"source": "digits"}) is True  # the default test_split
    assert has_test_split({"source": "fashion-mnist", "test_split": 0}) is True
    split = _other_digits(tmp_path / "split", split_folders=True)
    whole = _other_digits(tmp_path / "whole")
    (tmp_path / "labels.csv").write_text("file,label\n")
    for source, expected in ((split, True), (whole, False), (tmp_path / "labels.csv", False),
                             (tmp_path / "gone", None)):
        assert has_test_split({"source": str(source), "test_split": 0}) is expected, source
    assert has_test_split({"source": str(tmp_path / "labels.csv"), "test_split": 0,
                           "test_csv": "test.csv"}) is True
    (whole / "Test" / "images").mkdir(parents=True)  # a segmentation set's test/images
    assert has_test_split({"source": str(whole), "test_split": 0}) is True


def test_compare_of_runs_without_a_test_split_alone_names_other_data(runs, tmp_path, capsys):
    assert main(["compare", str(runs / "p2"), "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "`vislab evaluate RUN --data DATA`" in err, err
    assert "run `vislab evaluate RUN` first" not in err
