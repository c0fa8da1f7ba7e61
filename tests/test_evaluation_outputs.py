"""What an evaluation other than the run's own test split writes, and what the report says of lost figures.

- ``vislab evaluate RUN --data more.csv`` names its files ``..._more_test...`` (no ``.csv`` in them), a
  folder keeps its name, and a second data set of the same name does not overwrite the first's numbers;
- a named evaluation's figures are in ``plots/<name>/`` (never ``plots/<name>/plots/``), its
  ``misclassified_<name>.csv`` beside its ``metrics_<name>.json``, its panels in ``plots/explain/<name>/``,
  and the report and ``vislab compare`` find them;
- ``vislab report`` names a figure the evaluation drew that is no longer there (one warning line per
  evaluation, with the command that draws it again, which does), and never one the run did not draw.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import digits_arrays, write_image

from vislab import api
from vislab.cli import main
from vislab.evaluate.runner import evaluation_name

EVALUATION_PNGS = {"confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_accuracy.png", "roc.png",
                   "pr.png", "reliability.png", "predictions_sample.png", "predictions_confident_wrong.png",
                   "predictions_unsure_right.png"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``more.csv`` naming PNGs of real digits in ``images/``; ``other/more/``: the same images as class
    folders (another data set named ``more``); ``threes.csv``: images of one class."""
    root = tmp_path_factory.mktemp("data")
    images, labels = digits_arrays(per_class=4)
    rows, threes = ["file,label"], ["file,label"]
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(root / "images" / f"{i}.png", image, size=8)
        write_image(root / "other" / "more" / str(label) / f"{i}.png", image, size=8)
        rows.append(f"images/{i}.png,{label}")
        if label == 3:
            threes.append(f"images/{i}.png,{label}")
    (root / "more.csv").write_text("\n".join(rows) + "\n")
    (root / "threes.csv").write_text("\n".join(threes) + "\n")
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, data) -> Path:
    """A digits run evaluated on its test split (by training), on ``more.csv`` and on its val split."""
    out = tmp_path_factory.mktemp("evaluations") / "run"
    run = api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, val_split=0.2, max_per_class=40,
                    out=str(out), device="cpu").run_dir
    api.evaluate(run, data=str(data / "more.csv"), device="cpu")
    api.evaluate(run, split="val", device="cpu")
    return Path(run)


@pytest.fixture
def run(evaluated, tmp_path) -> Path:
    """A copy of the evaluated run that a test may damage."""
    return Path(shutil.copytree(evaluated, tmp_path / "run"))


def test_a_data_file_is_named_without_its_extension_and_a_folder_by_its_name(tmp_path):
    (tmp_path / "photos.v2").mkdir()
    assert evaluation_name("test", "new/more.csv") == "more_test"
    assert evaluation_name("val", str(tmp_path / "more.csv"), 0.5) == "more_val_threshold0.5"
    assert evaluation_name("test", str(tmp_path / "photos.v2") + "/") == "photos.v2_test"
    assert evaluation_name("test", "my photos/") == "my-photos_test"
    assert evaluation_name("test", "digits") == "digits_test" and evaluation_name("val", None) == "val"
    assert evaluation_name("test", "a/more.csv", distinct=True) != evaluation_name("test", "b/more.csv", distinct=True)


def test_a_named_evaluation_writes_its_files_under_its_name(evaluated):
    run = evaluated
    for name in ("more_test", "val"):
        for file in (f"metrics_{name}.json", f"metrics_{name}_curves.json", f"predictions_{name}.npz",
                     f"misclassified_{name}.csv"):
            assert (run / file).is_file(), file
        assert {p.name for p in (run / "plots" / name).glob("*.png")} == EVALUATION_PNGS
        assert not (run / "plots" / name / "plots").exists() and not (run / "plots" / name / "misclassified.csv").exists()
        assert sorted(p.name for p in (run / "plots" / "explain" / name).glob("*.png"))
        recorded = json.loads((run / f"metrics_{name}.json").read_text())["figures"]
        assert {f for f in recorded if f.startswith(f"plots/{name}/")} == {f"plots/{name}/{p}" for p in EVALUATION_PNGS}
        assert all((run / f).is_file() for f in recorded)
    assert not list(run.glob("*.csv_*")) and not (run / "plots" / "more.csv_test").exists()
    # the run's own test split is where it was
    assert {p.name for p in (run / "plots").glob("*.png")} >= EVALUATION_PNGS
    assert (run / "misclassified.csv").is_file()
    assert "plots/val/confusion_matrix.png" in json.loads((run / "metrics_val.json").read_text())["figures"]


def test_the_report_and_compare_find_a_named_evaluation(evaluated, tmp_path, capsys):
    page = api.report(evaluated).read_text()
    for name in ("more_test", "val"):
        # an MLP has no feature maps: its panels are occlusion's, and named so
        assert f"plots/{name}/confusion_matrix.png" in page and f"plots/explain/{name}/occlusion_samples.png" in page
        assert "gradcam" not in page
    assert "Missing figures" not in page
    from vislab.evaluate.compare import compare_runs, evaluations

    assert evaluations([evaluated]) == ["test", "more_test", "val"]
    row = compare_runs([evaluated], evaluation="more_test")[0]
    assert row["data"].endswith("more.csv") and row["accuracy"] is not None
    assert main(["compare", str(evaluated), "--evaluation", "more_test", "--out", str(tmp_path)]) == 0
    assert "more.csv" in capsys.readouterr().out


def test_another_data_set_of_the_same_name_does_not_overwrite_the_first(run, data):
    before = (run / "metrics_more_test.json").read_text()
    api.evaluate(run, data=str(data / "other" / "more"), device="cpu", figures=False)
    assert (run / "metrics_more_test.json").read_text() == before
    (other,) = [p for p in run.glob("metrics_more-*_test.json")]
    assert json.loads(other.read_text())["data"] == str(data / "other" / "more")
    # the same data again goes to the same files
    api.evaluate(run, data=str(data / "more.csv"), device="cpu", figures=False)
    api.evaluate(run, data=str(data / "other" / "more"), device="cpu", figures=False)
    assert len(list(run.glob("metrics_more*_test.json"))) == 2


def test_report_names_each_deleted_figure_and_the_command_that_draws_it(run):
    (run / "plots" / "confusion_matrix.png").unlink()
    (run / "plots" / "val" / "roc.png").unlink()
    result = subprocess.run([sys.executable, "-m", "vislab", "report", str(run)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    test_line, = [line for line in lines if "plots/confusion_matrix.png" in line]
    val_line, = [line for line in lines if "plots/val/roc.png" in line]
    assert test_line.startswith("vislab report: warning: plots/confusion_matrix.png:")
    assert test_line.endswith(f"`vislab evaluate {run}` draws it again")
    assert val_line.endswith(f"`vislab evaluate {run} --split val` draws it again")
    page = (run / "report.html").read_text()
    assert "Missing figures" in page and "<code>plots/val/roc.png</code>" in page


def test_the_command_the_warning_names_draws_the_figure_again(run, data):
    (run / "plots" / "confusion_matrix.png").unlink()
    (run / "plots" / "more_test" / "pr.png").unlink()
    with pytest.warns(UserWarning) as caught:
        api.report(run)
    commands = sorted(str(w.message).split("`")[1] for w in caught)
    assert commands == [f"vislab evaluate {run}", f"vislab evaluate {run} --data {data / 'more.csv'}"]
    for command in commands:
        assert main(shlex.split(command)[1:] + ["--device", "cpu"]) == 0
    assert (run / "plots" / "confusion_matrix.png").is_file() and (run / "plots" / "more_test" / "pr.png").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = api.report(run).read_text()
    assert "Missing figures" not in page


def test_a_figure_the_run_never_drew_is_not_missing(run, data):
    # one class: no ROC or PR curve to draw for it
    api.evaluate(run, data=str(data / "threes.csv"), device="cpu")
    drawn = json.loads((run / "metrics_threes_test.json").read_text())["figures"]
    assert "plots/threes_test/confusion_matrix.png" in drawn and "plots/threes_test/roc.png" not in drawn
    # figures never recorded: a --no-figures evaluation, and a metrics file from before the record
    api.evaluate(run, split="train", device="cpu", figures=False)
    assert "figures" not in json.loads((run / "metrics_train.json").read_text())
    shutil.rmtree(run / "plots" / "val")
    shutil.rmtree(run / "plots" / "explain" / "val")
    metrics = json.loads((run / "metrics_val.json").read_text())
    del metrics["figures"]
    (run / "metrics_val.json").write_text(json.dumps(metrics))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = api.report(run).read_text()
    assert "Missing figures" not in page


def test_bad_files_of_other_data_are_said_and_listed(run, data, tmp_path, capsys):
    # as train and audit say them: a count on the console, the files and reasons in a CSV beside the metrics
    photos = Path(shutil.copytree(data / "other" / "more", tmp_path / "photos"))
    (photos / "3" / "zero.jpg").write_bytes(b"")
    (photos / "3" / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert main(["evaluate", str(run), "--data", str(photos), "--no-figures"]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    listed = run / "bad_files_photos_test.csv"
    assert f"2 bad files skipped (listed in {listed})" in out, out
    rows = listed.read_text().splitlines()
    assert rows[0] == "path,reason" and sorted(r.split(",")[0].rsplit("/", 1)[-1] for r in rows[1:]) == [
        "corrupt.jpg", "zero.jpg"]
    assert json.loads((run / "metrics_photos_test.json").read_text())["bad_files"] == 2
    (photos / "3" / "zero.jpg").unlink()
    (photos / "3" / "corrupt.jpg").unlink()
    assert main(["evaluate", str(run), "--data", str(photos), "--no-figures"]) == 0
    assert "bad files" not in capsys.readouterr().out and not listed.exists()  # no stale list


def test_the_test_pass_shows_a_bar_on_a_terminal_and_nothing_in_a_log(run):
    # 10,000 test images at 224 px take minutes on a CPU: a terminal sees them counted, a log the result alone
    import io

    from rich.console import Console

    for terminal in (True, False):
        out = io.StringIO()
        api.evaluate(run, split="val", device="cpu", figures=False,
                     console=Console(file=out, force_terminal=terminal, width=100))
        text = out.getvalue()
        assert ("evaluating val" in text) == terminal, text
        assert "evaluated " in text
