"""Where commands write: never into the images they read, never into a run another call took, and
`vislab summary` reads a folder only when it is a run folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import digits_arrays, write_image, write_segmentation_set
from vislab import api
from vislab.cli import main
from vislab.core.errors import UserError


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"vislab {command}: error: "), err
    return err


@pytest.fixture(scope="module")
def digits_csv_run(tmp_path_factory):
    """``data/folders/<class>/`` images, ``data/labels.csv`` naming them, and an MLP trained from the CSV with
    ``--image-root data/folders`` into ``data/run``: beside the CSV, outside the image root, which is accepted."""
    root = tmp_path_factory.mktemp("guards")
    images, labels = digits_arrays(per_class=6)
    folders = root / "data" / "folders"
    rows = ["file,label"]
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(folders / str(label) / f"{i}.png", image)
        rows.append(f"{label}/{i}.png,{label}")
    (root / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    run = root / "data" / "run"
    api.train(data=str(root / "data" / "labels.csv"), image_root=str(folders), model="mlp", epochs=1,
              out=str(run), evaluate=False, figures=False, seed=0)
    assert (run / "model.json").is_file()
    return run, folders


# --------------------------------------------------------------------------- explain, activations, train
def test_explain_refuses_the_folder_of_its_image(digits_csv_run, capsys):
    run, folders = digits_csv_run
    before = _files(folders)
    assert main(["explain", str(run), str(folders / "0" / "0.png"), "--out", str(folders / "0")]) == 1
    err = _error_line(capsys, "explain")
    assert f"--out {folders / '0'} is the folder of the input image {folders / '0' / '0.png'}" in err
    assert "give --out a folder outside it, e.g. --out " in err and "0-explain" in err
    assert _files(folders) == before


def test_explain_refuses_out_inside_an_input_folder(digits_csv_run, capsys):
    run, folders = digits_csv_run
    before = _files(folders)
    out = folders / "3" / "explained"
    assert main(["explain", str(run), str(folders), "--out", str(out)]) == 1
    err = _error_line(capsys, "explain")
    assert f"--out {out} is inside the input folder {folders}" in err and "folders-explain" in err
    assert _files(folders) == before and not out.exists()


def test_explain_default_out_inside_an_input_folder_is_refused_naming_the_default(digits_csv_run):
    run, _ = digits_csv_run
    parent = run.parent  # holds the run: its default RUN/plots/explain would be read the next time
    with pytest.raises(UserError, match=r"the output folder .*plots/explain \(the default; choose another with "
                                        r"--out\) is inside the input folder"):
        api.explain(run, [parent], device="cpu")


def test_explain_default_and_sibling_outs_still_work(digits_csv_run, capsys):
    run, folders = digits_csv_run
    image = folders / "0" / "0.png"
    assert main(["explain", str(run), str(image), "--method", "occlusion"]) == 0
    assert (run / "plots" / "explain" / "0_occlusion.png").is_file()
    sibling = folders / "0-explain"
    assert main(["explain", str(run), str(image), "--method", "occlusion", "--out", str(sibling)]) == 0
    assert (sibling / "0_occlusion.png").is_file()
    capsys.readouterr()


def test_train_refuses_out_inside_the_image_root(digits_csv_run, capsys):
    run, folders = digits_csv_run
    before = _files(folders)
    labels = run.parent / "labels.csv"
    out = folders / "0" / "run"
    assert main(["train", "--data", str(labels), "--image-root", str(folders), "--model", "mlp", "--epochs", "1",
                 "--out", str(out), "--no-figures"]) == 1
    err = _error_line(capsys, "train")
    assert f"--out {out} is inside the --image-root folder {folders}" in err
    assert _files(folders) == before and not out.exists()


# --------------------------------------------------------------------------- segment
@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-guards")
    write_segmentation_set(root / "data", count=4)
    run = root / "run"
    api.train(data=str(root / "data"), task="segmentation", model="unet", epochs=1, out=str(run), evaluate=False,
              figures=False, seed=0, model_options={"decoder_channels": [8, 8, 8, 8, 8]})
    return run, root / "data" / "images"


def test_segment_refuses_to_write_into_its_input_folder(seg_run, capsys):
    run, images = seg_run
    before = _files(images)
    for out in (images, images / "masks"):
        assert main(["segment", str(run), str(images), "--out", str(out), "--no-panels"]) == 1
        err = _error_line(capsys, "segment")
        assert f"--out {out} is inside the input folder {images}" in err and "images-segment" in err
    assert main(["segment", str(run), str(images / "s0.png"), "--out", str(images), "--no-panels"]) == 1
    assert "is the folder of the input image" in _error_line(capsys, "segment")
    assert _files(images) == before


def test_segment_into_a_new_sibling_folder_twice_keeps_the_inputs(seg_run, capsys):
    run, images = seg_run
    before = _files(images)
    out = images.parent / "images-segment"
    for _ in range(2):
        assert main(["segment", str(run), str(images), "--out", str(out), "--no-panels"]) == 0
    capsys.readouterr()
    assert len(list(out.glob("*_mask.png"))) == len(before)
    assert _files(images) == before


def test_activations_refuse_the_folder_of_their_image(seg_run, capsys, tmp_path):
    run, images = seg_run
    before = _files(images)
    image = images / "s1.png"
    assert main(["activations", str(run), str(image), "--out", str(images)]) == 1
    err = _error_line(capsys, "activations")
    assert f"--out {images} is the folder of the input image {image}" in err and "images-activations" in err
    assert _files(images) == before
    assert main(["activations", str(run), str(image), "--layers", "net.segmentation_head.0",
                 "--out", str(tmp_path / "acts")]) == 0
    assert list((tmp_path / "acts").glob("*.png"))
    capsys.readouterr()


# --------------------------------------------------------------------------- default run folders
def test_default_run_folders_never_collide(tmp_path, monkeypatch):
    import time

    from vislab.train.loop import default_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = api.make_config(data="digits", model="mlp", epochs=1)
    # the folders the next seconds' default names would take already hold runs (a sweep started earlier)
    start = time.time()
    for second in range(60):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(start + second))
        taken = Path("runs") / f"mlp-digits-{stamp}"
        taken.mkdir(parents=True, exist_ok=True)
        (taken / "model.json").write_text("{}")
    assert default_run_dir(cfg).is_dir()
    results = [api.train(data="digits", model="mlp", lr=lr, epochs=1, evaluate=False, figures=False, seed=0)
               for lr in (1e-3, 3e-3)]
    dirs = [Path(result.run_dir) for result in results]
    assert dirs[0] != dirs[1]
    for run_dir in dirs:
        assert run_dir.name.rsplit("-", 1)[-1] in {"2", "3"} and (run_dir / "model.json").is_file()


def test_default_run_folders_are_taken_atomically(tmp_path, monkeypatch):
    from vislab.train.loop import make_default_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = api.make_config(data="digits", model="mlp", epochs=1)
    made, barrier = [], threading.Barrier(6)

    def take():
        barrier.wait()
        made.append(make_default_run_dir(cfg))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 6 and all(path.is_dir() for path in made)


def test_an_out_holding_a_run_is_a_user_error_in_one_line(digits_csv_run, capsys):
    run, _ = digits_csv_run
    data = run.parent / "labels.csv"
    with pytest.raises(UserError, match=f"{run} already holds a run; choose another --out, or --resume {run}"):
        api.train(data=str(data), model="mlp", epochs=1, out=str(run), evaluate=False, figures=False)
    assert main(["train", "--data", str(data), "--model", "mlp", "--epochs", "1", "--out", str(run)]) == 1
    assert "already holds a run" in _error_line(capsys, "train")


# --------------------------------------------------------------------------- summary
def test_summary_a_folder_named_like_a_model_is_not_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("fastnet").mkdir()
    from vislab.models.summary import model_summary

    assert api.summary("fastnet", depth=1) == model_summary("fastnet", depth=1)
    assert main(["summary", "fastnet", "--depth", "1"]) == 0
    assert "Total params: 104,426" in capsys.readouterr().out
    Path("notamodel").mkdir()  # neither a run nor a model name: the run folder's message, as before
    assert main(["summary", "notamodel"]) == 1
    assert "notamodel" in _error_line(capsys, "summary")
    # a path to no folder is a mistyped run folder, said as every other command says it, not an unknown model
    assert main(["summary", "runs/nosuch"]) == 1
    assert "runs/nosuch: no such run folder" in _error_line(capsys, "summary")


def test_summary_of_an_unfinished_run_named_like_a_model_keeps_its_message(tmp_path, monkeypatch, capsys):
    from vislab.train.loop import _write_config

    monkeypatch.chdir(tmp_path)
    run = Path("mlp")  # stopped before its first epoch ended: only the config.yaml `vislab train` writes first
    run.mkdir()
    _write_config(run, api.make_config(data="digits", model="mlp", epochs=1, out="mlp"))
    assert main(["summary", "mlp"]) == 1
    assert "mlp: an unfinished run" in _error_line(capsys, "summary")


def test_summary_of_a_run_folder_refuses_the_options_for_building_a_model(digits_csv_run, capsys):
    run, _ = digits_csv_run
    assert main(["summary", str(run), "--num-classes", "3", "--in-chans", "3", "--input-size", "8"]) == 1
    err = _error_line(capsys, "summary")
    assert f"--num-classes, --in-chans, --input-size do not apply to the run folder {run}" in err
    with pytest.raises(UserError, match="--in-chans does not apply to the run folder"):
        api.summary(str(run), in_chans=3)
    assert api.summary(str(run), depth=1)  # without them, as before


def test_outputs_outside_a_run_go_under_runs_never_into_the_current_folder(tmp_path, monkeypatch, capsys):
    # a user's working folder (often the one holding the images) gets runs/ and nothing else
    from types import SimpleNamespace

    from vislab.explain.explainers import default_out_dir

    monkeypatch.chdir(tmp_path)
    assert main(["audit", "--data", "digits", "--max-images", "60", "--max-per-class", "12"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert (tmp_path / "runs" / "audit-digits" / "audit.json").is_file()
    assert "runs/audit-digits/audit.json" in capsys.readouterr().out.replace("\n", "")
    model = SimpleNamespace(run_dir=None, spec={"name": "imagenet:efficientnet_lite0"})
    assert default_out_dir(model, "explain") == Path("runs/explain-efficientnet_lite0")
    assert default_out_dir(SimpleNamespace(run_dir="runs/a", spec={}), "filters") == Path("runs/a/plots/filters")


def test_an_audit_into_an_earlier_audits_folder_leaves_none_of_its_files(tmp_path):
    # a stale label_issues.csv beside a new audit.json would be read as this data's
    folder = tmp_path / "audit"
    (folder / "plots").mkdir(parents=True)
    for name in ("audit.json", "label_issues.csv", "report.html", "plots/audit_image_geometry.png",
                 "plots/label_issues.png", "notes.txt", "plots/mine.png"):
        (folder / name).write_text("earlier")
    result = api.audit("digits", out=str(folder), max_images=60, max_per_class=12)
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert left == sorted(["audit.json", "notes.txt", "plots/mine.png", *result["figures"]]), left
    assert (folder / "audit.json").read_text() != "earlier"


def test_predict_figure_is_a_png_said_on_stderr_and_never_inside_an_input_folder(digits_csv_run, tmp_path,
                                                                                   monkeypatch, capsys):
    run, folders = digits_csv_run
    image = next(folders.rglob("*.png"))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(run), str(image), "--figure", "fig"]) == 0
    assert (tmp_path / "fig.png").is_file() and "figure -> fig.png" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    for figure, says in ((str(tmp_path / "out"), "is a folder"), (str(folders / "0" / "f.png"), "inside the input folder"),
                         ("f.jpg", "the figure is a PNG")):
        assert main(["predict", str(run), str(folders), "--figure", figure]) == 1
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not (folders / "0" / "f.png").exists() and not list(tmp_path.glob("f.*"))


def test_compare_never_writes_into_a_run_folder_or_a_folder_of_images(digits_csv_run, capsys):
    run, folders = digits_csv_run
    for out, says in ((run, "is a run folder"), (folders / "0", "holds images")):
        before = sorted(p.name for p in Path(out).iterdir())
        assert main(["compare", str(run), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert says in err and "leaderboard" in err and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in Path(out).iterdir()) == before


def test_compare_writes_again_into_its_own_earlier_leaderboard_folder(digits_csv_run, tmp_path):
    run, _ = digits_csv_run
    api.evaluate(run, figures=False) if not (run / "metrics.json").is_file() else None
    for _ in range(2):  # the second finds leaderboard.png there: its own output, not a folder of images
        assert main(["compare", str(run), "--out", str(tmp_path / "board")]) == 0
    assert (tmp_path / "board" / "leaderboard.png").is_file()


def test_a_mistyped_run_folder_names_the_close_one(digits_csv_run, capsys):
    run, _ = digits_csv_run
    typo = run.with_name(run.name + "x")
    for command in (["evaluate", str(typo)], ["predict", str(typo), "x.png"], ["train", "--resume", str(typo)],
                    ["report", str(typo)]):
        assert main(command) == 1
        error = _error_line(capsys, command[0])
        assert f"{typo}: no such run folder (did you mean {run}?)" in error, error
