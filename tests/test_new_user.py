"""What a new user hits: each case as the user meets it, on the CPU and offline.

Most checks call ``vislab.cli.main`` in-process (what `vislab ...` runs) and read its exit code
and stderr; one small chollet_convnet run on scikit-learn's digits is trained once for the
commands that read a run folder.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import digits_arrays, write_image
from vislab import api
from vislab.cli import build_parser, main
from vislab.core.config import ConfigError
from vislab.core.errors import DataError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("newuser") / "run"
    api.train(data="digits", model="chollet_convnet", epochs=1, seed=0, max_per_class=40, out=str(out))
    return out


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    images, labels = digits_arrays(per_class=1)
    folder = tmp_path_factory.mktemp("pngs")
    return [write_image(folder / f"d{label}.png", image) for image, label in zip(images[:3], labels[:3])]


@pytest.fixture
def offline(monkeypatch):
    """No network, whatever this machine has: the hub host does not resolve, and huggingface_hub
    reads only its (empty, per-test) cache."""
    from vislab.models import pretrained

    monkeypatch.setattr(pretrained, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- 1-4: tracebacks, dead ends
def test_every_model_loading_command_takes_weights():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("predict", "explain", "activations", "filters", "summary", "train"):
        flags = {flag for action in sub[command]._actions for flag in action.option_strings}
        assert "--weights" in flags, command


def test_offline_imagenet_model_is_one_message_and_weights_work(tmp_path, digit_pngs, offline, capsys):
    import timm
    from safetensors.torch import save_file

    assert main(["predict", "imagenet:resnet18", str(digit_pngs[0])]) == 1
    err = _error(capsys)
    assert "offline" in err and "--weights PATH" in err
    assert main(["train", "--data", "digits", "--model", "resnet18", "--pretrained", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 1
    assert "--weights PATH" in _error(capsys)
    # the flag the message names exists and works: a local state dict, no network
    weights = tmp_path / "resnet18.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18").state_dict(), str(weights))
    assert main(["predict", "imagenet:resnet18", str(digit_pngs[0]), "--weights", str(weights),
                 "--format", "json", "--precision", "fp32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out[0]["top"]) == 5


def test_unknown_imagenet_model_is_unknown_not_offline(digit_pngs, offline, capsys):
    assert main(["predict", "imagenet:resnet5", str(digit_pngs[0])]) == 1
    err = _error(capsys)
    assert "unknown model 'resnet5'" in err and "imagenet:resnet50" in err and "offline" not in err.split(".")[0]
    assert main(["predict", "imagenet:nosuch", str(digit_pngs[0])]) == 1
    assert "unknown model 'nosuch'" in _error(capsys)


def test_hf_offline_is_one_message_without_a_nonsense_command(digit_pngs, offline, capsys):
    assert main(["predict", "hf:google/vit-base-patch16-224-in21k", str(digit_pngs[0])]) == 1
    err = _error(capsys)
    assert "offline" in err and "--weights DIR" in err
    assert "vislab train --out hf:" not in err
    assert main(["predict", "no-such-run", str(digit_pngs[0])]) == 1
    assert "imagenet:MODEL" in _error(capsys)


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_missing_device_exits_2(device, digit_pngs, capsys):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"this machine has {device}")
    assert main(["predict", "imagenet:efficientnet_lite0", str(digit_pngs[0]), "--device", device]) == 2
    assert f"--device {device}" in _error(capsys)
    assert main(["train", "--data", "digits", "--device", device, "--epochs", "1"]) == 2


def test_grey_data_becomes_rgb_for_models_that_need_it():
    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model

    # --model-opt in_chans=3 no longer collides with the in_chans vislab passes
    model, pre = build_model(ModelConfig(name="chollet_convnet", options={"in_chans": 3}), 10, 1)
    assert pre.channels == 3 and model.features[0].in_channels == 3
    assert pre(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape[1] == 3  # grey repeated


# --------------------------------------------------------------------------- 5-7: silent wrong results
def test_frozen_random_backbone_is_refused_unless_asked():
    with pytest.raises(ConfigError, match="--allow-random-backbone"):
        api.make_config(data="digits", model="resnet18", freeze="backbone", cache_features=True)
    assert api.make_config(data="digits", model="resnet18", freeze="backbone", allow_random_backbone=True)
    assert api.make_config(data="digits", model="efficientnet_lite0", freeze="backbone", pretrained=True)
    assert api.make_config(data="digits", model="resnet18", freeze="backbone", weights="w.safetensors")


@pytest.mark.parametrize("value", [1.5, -0.1, 2.25])
def test_split_fractions_must_be_fractions_or_counts(value):
    with pytest.raises(ConfigError, match="neither a fraction in \\(0, 1\\) nor a whole count"):
        api.make_config(data="digits", val_split=value)
    with pytest.raises(ConfigError, match="--test-split"):
        api.make_config(data="digits", test_split=value)


def test_split_counts_must_leave_training_images():
    from vislab.data.sources import load_dataset

    with pytest.raises(DataError, match="leaves none to train on"):
        load_dataset(api.make_config(data="digits", val_split=5000).data)


def test_max_per_class_caps_validation_too_and_notes_a_larger_test_split():
    from vislab.data.sources import load_dataset, split_notes

    dataset = load_dataset(api.make_config(data="digits", max_per_class=10, val_split=0.5).data)
    counts = dataset.counts()
    assert max(counts["train"]) == 10 and max(counts["val"]) <= 10
    assert sum(counts["val"]) <= sum(counts["train"])
    notes = split_notes(dataset)
    assert len(notes) == 1 and "test split" in notes[0] and "caps train and val only" in notes[0]


@pytest.mark.parametrize("value", [300, -1])
def test_fill_value_must_be_a_grey_level(value):
    with pytest.raises(ConfigError, match="outside 0..255"):
        api.make_config(rotation=10, fill_mode="constant", fill_value=value)
    assert api.make_config(rotation=10, fill_mode="constant", fill_value=255).augment.fill_value == 255


# --------------------------------------------------------------------------- 8, 10, 11: files
def test_evaluate_val_keeps_test_metrics_and_compare_says_which(run_dir, tmp_path, capsys):
    before = json.loads((run_dir / "metrics.json").read_text())
    assert main(["evaluate", str(run_dir), "--split", "val"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text()) == before
    val = json.loads((run_dir / "metrics_val.json").read_text())
    assert val["split"] == "val" and val["num_images"] != before["num_images"]
    capsys.readouterr()
    # another run on other data, with a name longer than an 80-column terminal
    other = tmp_path / ("other-data-run-with-a-name-much-longer-than-eighty-columns-" + "x" * 30)
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"name": "mlp", "parameters": 10}))
    (other / "metrics.json").write_text(json.dumps({"accuracy": 0.99, "split": "test", "data": "photos/"}))
    assert main(["compare", str(run_dir), str(other), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert other.name in out  # not cut to "…"
    assert "digits" in out and "photos/" in out and "different data sets" in out
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert {(r["data"], r["split"]) for r in rows} == {("digits", "test"), ("photos/", "test")}
    assert main(["compare", str(run_dir), "--evaluation", "val", "--out", str(tmp_path)]) == 0
    assert "Leaderboard (val split)" in capsys.readouterr().out
    row = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))[0]
    assert row["split"] == "val" and float(row["accuracy"]) == val["accuracy"]


def test_gradcam_plus_plus_does_not_overwrite_gradcam(run_dir, digit_pngs, tmp_path):
    first = api.explain(run_dir, digit_pngs[:1], method="gradcam", out=tmp_path)[0]["png"]
    second = api.explain(run_dir, digit_pngs[:1], method="gradcam++", out=tmp_path)[0]["png"]
    assert first != second and os.path.exists(first) and os.path.exists(second)
    assert first.endswith("_gradcam.png") and second.endswith("_gradcam-pp.png")


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a vislab run folder" in _error(capsys)
    assert not (tmp_path / "report.html").exists()


def test_compare_refuses_what_is_not_a_run_folder(run_dir, digit_pngs, tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "audit.json").write_text("{}")
    image = str(digit_pngs[0])
    cases = {str(Path(image).parent): "not a vislab run folder", image: "a file, not a run folder",
             str(tmp_path / "model.onnx"): "an ONNX graph", str(tmp_path / "typo"): "no such run folder"}
    for path, said in cases.items():
        assert main(["compare", path, "--out", str(tmp_path / "cmp")]) == 1
        error = _error(capsys)
        assert said in error and path in error, error
    # beside a run, a path that is not there is still an error (a stray file or folder is skipped)
    assert main(["compare", str(run_dir), str(tmp_path / "typo"), "--out", str(tmp_path / "cmp")]) == 1
    assert "no such run folder" in _error(capsys)
    assert not (tmp_path / "cmp").exists()
    # an audit's folder beside a run is skipped (`compare runs/*`); alone, there is nothing to compare
    assert main(["compare", str(tmp_path / "audit"), "--out", str(tmp_path / "cmp")]) == 1
    assert "`vislab audit`'s output (no model)" in _error(capsys)


@pytest.mark.parametrize("mistake, said", [(["--model-opt", "hidden=abc"], "hidden='abc'"),
                                           (["--model-opt", "dropotu=0.3"], "did you mean 'dropout'?"),
                                           (["--monitor", "val_acuracy", "--patience", "1"], "--monitor val_acuracy (train.early_stopping.monitor) is not a metric of the classification task; did you mean val_acc?")])
def test_a_train_mistake_found_in_the_set_up_leaves_no_half_run_folder(mistake, said, tmp_path, capsys):
    """Options checked once the data is read (the model's options, the monitored metric) fail after the
    run folder was begun (a class-weights file that is not there is refused before, with the other flags):
    the folder this run made is removed, so `vislab compare` never lists a run without a model; one the
    user made beforehand stays, with what it held."""
    out = tmp_path / "runs" / "new"
    command = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--max-per-class", "10", *mistake]
    assert main([*command, "--out", str(out)]) == 1
    error = _error(capsys)
    assert said in error, error
    assert not out.exists() and (tmp_path / "runs").is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert main([*command, "--out", str(mine)]) == 1
    assert (mine / "notes.txt").read_text() == "kept"


def test_model_files_get_the_umask_mode(run_dir):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.json", "model.safetensors", "metrics.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_run_folder_file_is_written_whole_and_a_killed_writers_partial_goes(tmp_path, monkeypatch):
    """Weights, checkpoints and JSON reach their name whole (a partial file, fsync, rename). A writer killed
    midway leaves its hidden partial; the next write to that folder removes it once it is an hour old, and
    leaves a user's own hidden files and a younger partial (another run's, being written) alone."""
    import time

    from vislab.core import weights

    folder = tmp_path / "run"
    folder.mkdir()
    hour_ago = time.time() - 3700
    stale = folder / f".model.safetensors.{os.getpid() + 1}.partial"
    young = folder / f".metrics.json.{os.getpid() + 2}.partial"
    mine = [folder / ".notes.2024", folder / ".model.safetensors.x1y2.tmp"]
    for path in (stale, young, *mine):
        path.write_text("half")
    for path in (stale, *mine):
        os.utime(path, (hour_ago, hour_ago))
    fsynced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])
    weights.save_weights(torch.nn.Linear(2, 1), folder / "model.safetensors")
    assert fsynced
    assert not stale.exists() and young.exists() and all(path.exists() for path in mine)
    model = torch.nn.Linear(2, 1)
    weights.load_weights(model, folder / "model.safetensors")

    def killed(partial):
        Path(partial).write_text("{\"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        weights.atomic_write(folder / "model.json", killed)
    assert not (folder / "model.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([young.name, "model.safetensors", *(p.name for p in mine)])


def test_run_folder_weights_flag_reads_another_checkpoint(run_dir, digit_pngs, tmp_path, capsys):
    best = run_dir / "checkpoints" / "best.safetensors"
    assert best.is_file()
    assert main(["predict", str(run_dir), str(digit_pngs[0]), "--weights", str(best), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"]
    assert main(["predict", str(run_dir), str(digit_pngs[0]), "--weights", str(tmp_path / "nope.safetensors")]) == 1
    assert "no such file" in _error(capsys)


# --------------------------------------------------------------------------- 9: leakage
def test_audit_finds_pixel_duplicates_across_formats_and_train_warns(tmp_path, capsys):
    images, labels = digits_arrays(per_class=6)
    root = tmp_path / "data"
    for split in ("train", "test"):
        for i, (image, label) in enumerate(zip(images, labels)):
            if (i % 6 < 4) == (split == "train"):
                write_image(root / split / str(label) / f"{i}.png", image)
    leaked = [(i, image, label) for i, (image, label) in enumerate(zip(images, labels)) if i % 6 == 0][:3]
    big = [Image.fromarray(image).resize((16, 16), Image.NEAREST) for _, image, _ in leaked]
    big[0].save(root / "test" / str(leaked[0][2]) / "copy.bmp")  # same pixels, another format
    big[1].save(root / "test" / str(leaked[1][2]) / "copy1.png", compress_level=0)  # another compression
    big[2].convert("RGB").save(root / "test" / str(leaked[2][2]) / "copy2.png")  # grey stored as RGB
    big[0].resize((15, 15), Image.BILINEAR).save(root / "test" / str(leaked[0][2]) / "near.png")  # not pixel-equal
    result = api.audit(str(root), out=str(tmp_path / "audit"))
    duplicates = result["duplicates"]
    assert duplicates["across_splits"]["groups"] == 3 and duplicates["leakage"]
    assert "decoded pixels" in duplicates["method"]
    near = duplicates["near"]
    assert near["checked"] and "perceptual" in near["method"]
    assert any(example["sources"][1].endswith("near.png") for example in near["examples"])
    capsys.readouterr()
    assert main(["train", "--data", str(root), "--model", "mlp", "--epochs", "1", "--no-evaluate",
                 "--val-split", "0", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "warning: 3 image(s) are in more than one split" in out


# --------------------------------------------------------------------------- smaller things
def test_activations_help_matches_what_it_writes(run_dir, digit_pngs, tmp_path, capsys):
    from vislab.explain.activations import DEFAULT_LAYERS

    with pytest.raises(SystemExit):
        main(["activations", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"up to {DEFAULT_LAYERS} layers" in help_text and "first 8 layers)" not in help_text
    written = api.activations(run_dir, digit_pngs[0], out=tmp_path)
    assert 0 < len(written) <= DEFAULT_LAYERS


def test_activations_of_two_images_keep_both_and_say_which_image(run_dir, digit_pngs, tmp_path, monkeypatch,
                                                                 capsys):
    import shutil

    import vislab.viz.explain as figures

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    image = Path(shutil.copy(digit_pngs[1], tmp_path / "my digit.png"))
    titles = []
    drawn = figures.activation_grid_figure
    monkeypatch.setattr(figures, "activation_grid_figure",
                        lambda grid, title: (titles.append(title), drawn(grid, title))[1])
    layers = ["features.1", "features.4"]
    assert main(["activations", str(run), str(digit_pngs[0]), "--layers", *layers]) == 0
    written = api.activations(run, image, layers=layers)
    folder = run / "plots" / "activations"
    assert sorted(p.name for p in folder.iterdir()) == [
        "activations_d0_00_features_1.png", "activations_d0_01_features_4.png",
        "activations_my_digit_00_features_1.png", "activations_my_digit_01_features_4.png"]
    assert [path for _, path in written] == [folder / "activations_my_digit_00_features_1.png",
                                            folder / "activations_my_digit_01_features_4.png"]
    assert [title.split(",")[0] for title in titles] == ["d0.png", "d0.png", "my digit.png", "my digit.png"]
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert all(f"plots/activations/{p.name}" in html for p in folder.iterdir())


def test_summary_lists_the_head_and_mlp_description_is_true():
    from vislab.models import create_model
    from vislab.models.registry import describe

    text = api.summary("chollet_convnet")
    head = next(line for line in text.splitlines() if line.startswith("head (Sequential)"))
    assert head.split()[-1] == "37,578" and head.split()[2] == "10"
    model = create_model("mlp", 10, 1)
    has_dropout = any("Dropout" in type(m).__name__ for m in model.modules())
    assert not has_dropout and "dropout=P adds Dropout" in describe("mlp")


def test_summary_of_a_run_counts_the_parameters_its_training_left_frozen(tmp_path, run_dir):
    """`vislab summary RUN` reports what `vislab train` printed: a frozen backbone is non-trainable
    there too, though the reloaded network's parameters all require gradients again."""
    from vislab.core.weights import parameter_counts

    result = api.train(data="digits", model="chollet_convnet", freeze="backbone", allow_random_backbone=True,
                       epochs=1, out=str(tmp_path / "frozen"), evaluate=False, figures=False, seed=0)
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert (spec["parameters"], spec["trainable_parameters"]) == (93_322, 37_578)  # the head alone trained
    lines = api.summary(str(result.run_dir)).splitlines()[-3:]
    assert lines == ["Total params: 93,322", "Trainable params: 37,578", "Non-trainable params: 55,744"]
    assert parameter_counts(api.load_model(str(result.run_dir)).model)["trainable"] == 93_322
    # a run trained without freezing, and one written before model.json held the count: all trainable
    assert api.summary(str(run_dir)).splitlines()[-1] == "Non-trainable params: 0"
    spec.pop("trainable_parameters")
    (result.run_dir / "model.json").write_text(json.dumps(spec))
    assert api.summary(str(result.run_dir)).splitlines()[-2:] == ["Trainable params: 93,322",
                                                                  "Non-trainable params: 0"]


def test_lbfgs_defaults_to_one_epoch():
    common = dict(data="digits", model="chollet_convnet", freeze="backbone", cache_features=True,
                  optimizer="lbfgs", allow_random_backbone=True)
    assert api.make_config(**common).train.epochs == 1
    assert api.make_config(epochs=3, **common).train.epochs == 3
    assert api.make_config(data="digits").train.epochs == 10


def test_report_lists_roc_and_ap_rows_once(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.3, "roc_auc": 0.97,
                                                       "average_precision_macro": 0.91}))
    page = api.report(tmp_path).read_text()
    assert page.count(">roc auc<") == 1 and page.count(">average precision macro<") == 1
    assert ">roc_auc<" not in page and ">average_precision_macro<" not in page  # once, not again by its key


def _csv(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["file", "label"], *rows])
    return path


def test_labels_filter_the_test_csv_and_numeric_ids_need_a_mapping(tmp_path):
    from vislab.data.sources import load_dataset

    images, labels = digits_arrays(per_class=6)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        if label < 3:
            write_image(tmp_path / f"{i}.png", image)
            rows.append([f"{i}.png", str(label)])
    train_csv = _csv(tmp_path / "train.csv", [r for n, r in enumerate(rows) if n % 6 < 4])
    test_csv = _csv(tmp_path / "test.csv", [r for n, r in enumerate(rows) if n % 6 >= 4])
    dataset = load_dataset(api.make_config(data=str(train_csv), labels=["0", "1"], test_csv=str(test_csv),
                                           val_split=0).data)
    assert dataset.class_names == ["0", "1"] and sorted(set(dataset.splits["test"].labels.tolist())) == [0, 1]
    assert len(dataset.splits["test"]) == 4  # the two label-2 rows are left out, not an error

    # word-named classes, numeric test labels: the error explains the rule and the fix
    word_rows = [[f, {"0": "zero", "1": "one", "2": "two"}[y]] for f, y in rows]
    word_csv = _csv(tmp_path / "words.csv", [r for n, r in enumerate(word_rows) if n % 6 < 4])
    with pytest.raises(DataError, match="--class-ids FILE"):
        load_dataset(api.make_config(data=str(word_csv), test_csv=str(test_csv), val_split=0).data)
    ids = tmp_path / "ids.csv"
    ids.write_text("id,class\n0,zero\n1,one\n2,two\n")
    dataset = load_dataset(api.make_config(data=str(word_csv), test_csv=str(test_csv), class_ids=str(ids),
                                           val_split=0).data)
    names = dataset.class_names
    assert [names[i] for i in dataset.splits["test"].labels.tolist()] == \
        [{"0": "zero", "1": "one", "2": "two"}[y] for n, (_, y) in enumerate(rows) if n % 6 >= 4]


def test_keras_flag_names_are_aliases_and_typos_suggest_the_flag(capsys):
    args = build_parser().parse_args(["train", "--rotation-range", "15", "--horizontal-flip", "--vertical-flip",
                                      "--width-shift-range", "0.1", "--height-shift-range", "0.2",
                                      "--zoom-range", "0.1", "--shear-range", "5"])
    assert (args.rotation, args.hflip, args.vflip, args.width_shift, args.height_shift, args.zoom, args.shear) == \
        (15.0, True, True, 0.1, 0.2, 0.1, 5.0)
    for typed, meant in (("--rot", "--rotation"), ("--epoch", "--epochs"), ("--horizontal_flip", "--horizontal-flip")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", typed, "3"])
        assert exit_info.value.code == 2
        assert f"did you mean {meant}?" in capsys.readouterr().err, typed


def test_predict_says_nothing_about_ties_when_nothing_was_predicted(run_dir, tmp_path, capsys):
    assert main(["predict", str(run_dir), str(tmp_path / "missing.png")]) == 1
    err = _error(capsys)
    assert "near-tied" not in err


# --------------------------------------------------------------------------- hf: offline, end to end
@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A ViTForImageClassification built from a small ViTConfig and saved with save_pretrained: the
    layout `huggingface-cli download google/vit-base-patch16-224-in21k --local-dir DIR` gives."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return folder


def test_hf_model_needs_no_in_chans_on_grey_data(tiny_vit, offline):
    from vislab.core.config import ModelConfig
    from vislab.models.build import build_model

    for cfg in (ModelConfig(name=f"hf:{tiny_vit}"),  # random weights, grey data: RGB on its own
                ModelConfig(name=f"hf:{tiny_vit}", options={"in_chans": 3}),  # the old advice no longer crashes
                ModelConfig(name="hf:google/vit-base-patch16-224-in21k", weights=str(tiny_vit))):  # --weights DIR
        model, pre = build_model(cfg, 10, 1)
        assert pre.channels == 3 and pre.size == (16, 16)
        assert model(pre(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))).shape == (2, 10)


def test_hf_vit_fine_tune_predict_explain_reload_offline(tiny_vit, digit_pngs, tmp_path, offline, capsys):
    import shutil

    source = shutil.copytree(tiny_vit, tmp_path / "downloaded-vit")
    out = tmp_path / "vit-run"
    result = api.train(data="digits", model=f"hf:{source}", pretrained=True, epochs=2, lr=3e-3, seed=0,
                       max_per_class=40, out=str(out))
    spec = json.loads((out / "model.json").read_text())
    assert spec["in_chans"] == 3 and spec["arch"] == f"hf:{source}" and spec["hf_config"]["model_type"] == "vit"
    shutil.rmtree(source)  # the run folder is self-contained: it reloads without the checkpoint it came from
    # the new 10-class head starts at zero (uniform predictions: loss ln 10 = 2.303), and training moves it
    assert result.history[0]["train_loss"] < 2.35
    assert api.load_model(str(out)).model.hf.classifier.weight.abs().sum() > 0
    first = api.predict(out, digit_pngs, precision="fp32")
    second = api.predict(out, digit_pngs, precision="fp32")  # a second, independent load of the run
    assert [r["top"] for r in first] == [r["top"] for r in second]
    again = api.evaluate(out)  # the reloaded model reproduces the end-of-training evaluation
    assert again["accuracy"] == result.metrics["accuracy"]
    for method, opts in (("gradcam", {}), ("lime", {"num_samples": 40})):
        explained = api.explain(out, digit_pngs[:1], method=method, out=tmp_path / "explain", **opts)[0]
        assert "error" not in explained and os.path.getsize(explained["png"]) > 0, explained
    # the checkpoint itself, with its own labels, is a model for predict too (hf:FOLDER)
    capsys.readouterr()
    assert main(["predict", f"hf:{tiny_vit}", str(digit_pngs[0]), "--format", "json", "--top-k", "2"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert {t["class"] for t in top} <= {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_counts_must_be_positive(capsys):
    for argv in (["predict", "run", "x.png", "--top-k", "0"], ["predict", "run", "x.png", "--top-k", "-2"],
                 ["explain", "run", "x.png", "--num-samples", "0"], ["filters", "run", "--layer", "a", "--n", "-1"],
                 ["evaluate", "run", "--batch-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "must be >= 1 (a whole number)" in capsys.readouterr().err, argv



# --------------------------------------------------------------------------- splits, folders, resumes
def test_evaluate_val_names_its_split_in_the_printed_line(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--split", "val", "--no-figures"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "val images: val accuracy:" in out and "val loss:" in out and "test accuracy" not in out


def _class_folders(root, classes=(0, 1, 2), per_class=4):
    images, labels = digits_arrays(per_class=per_class * 2)
    for split, keep in (("train", lambda n: n % 2 == 0), ("test", lambda n: n % 2 == 1)):
        for n, (image, label) in enumerate(zip(images, labels)):
            if label in classes and keep(n):
                write_image(root / split / str(label) / f"{n}.png", image)
    return root


def test_labels_filter_every_split_of_a_folder_set(tmp_path):
    from vislab.data.sources import load_dataset

    data = _class_folders(tmp_path / "data")
    dataset = load_dataset(api.make_config(data=str(data), labels=["0", "2"], val_split=0).data)
    assert dataset.class_names == ["0", "2"]
    for name in ("train", "test"):
        split = dataset.splits[name]
        assert sorted(set(split.labels.tolist())) == [0, 1], name
        assert len(split) == len(list((data / name / "0").iterdir())) + len(list((data / name / "2").iterdir()))


def test_resume_of_a_missing_folder_says_no_such_run_folder(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nosuch")]) == 1
    err = _error(capsys)
    assert "no such run folder" in err and "config.yaml" not in err


def test_out_inside_the_data_or_an_image_folder_is_refused(tmp_path, capsys):
    data = _class_folders(tmp_path / "data")
    before = sorted(p.name for p in (data / "train" / "0").iterdir())
    for out in (data / "run", data / "train" / "0"):
        with pytest.raises(ConfigError, match="inside the data folder"):
            api.train(data=str(data), model="mlp", epochs=1, out=str(out))
    assert not (data / "run").exists()
    pictures = tmp_path / "pictures"
    write_image(pictures / "cat.png", digits_arrays(per_class=1)[0][0])
    with pytest.raises(ConfigError, match="holds images"):
        api.train(data="digits", model="mlp", epochs=1, out=str(pictures))
    assert main(["audit", "--data", str(data), "--out", str(data / "audit")]) == 1
    assert "inside the data folder" in _error(capsys) and not (data / "audit").exists()
    assert main(["augment-preview", "--data", str(data), "--out", str(data / "train" / "0")]) == 1
    assert "inside the data folder" in _error(capsys)
    assert sorted(p.name for p in (data / "train" / "0").iterdir()) == before  # the data set as it was


def test_augment_preview_writes_where_it_says(tmp_path, capsys):
    folder = tmp_path / "outdir"
    assert main(["augment-preview", "--data", "digits", "--rotation", "10", "--count", "2", "--versions", "1",
                 "--out", str(folder)]) == 0
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said == f"wrote {folder / 'augment_preview.png'}" and (folder / "augment_preview.png").is_file()
    assert not (tmp_path / "outdir.png").exists()
    assert main(["augment-preview", "--data", "digits", "--count", "2", "--versions", "1",
                 "--out", str(tmp_path / "aug.png")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {tmp_path / 'aug.png'}") and (tmp_path / "aug.png").is_file()
    assert main(["augment-preview", "--data", "digits", "--out", str(tmp_path / "aug.jpg")]) == 1
    assert ".png" in _error(capsys)


def test_a_resumed_run_counts_every_segment_of_its_training_time(tmp_path, capsys):
    from vislab.evaluate.compare import compare_runs

    run = tmp_path / "run"
    common = ["--no-evaluate", "--no-progress"]
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--max-per-class", "10",
                 "--out", str(run), *common]) == 0
    history = run / "history.csv"
    lines = history.read_text().splitlines()
    seconds = lines[0].split(",").index("seconds")
    first = lines[1].split(",")
    first[seconds] = "1000.0"  # the first segment's time, made unmistakable
    history.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", *common]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(history.open()))
    total = sum(float(row["seconds"]) for row in rows)
    assert len(rows) == 2 and total > 1000
    assert f"training time: {total:.1f}s" in out
    assert compare_runs([run])[0]["train_seconds"] == pytest.approx(total, abs=1e-3)
    # nothing left to train: one line, and the run as it was (config.yaml never takes the smaller count)
    config = (run / "config.yaml").read_bytes()
    for fewer in (["--epochs", "1"], ["--epochs", "2"], []):
        assert main(["train", "--resume", str(run), *fewer, *common]) == 1
        error = _error(capsys)
        assert ("its checkpoint has 2 epoch(s) trained" in error if fewer else "its 2 epochs are all trained" in error) \
            and "--epochs 3 or more" in error, error
        assert (run / "config.yaml").read_bytes() == config
    assert main(["train", "--resume", str(run), "--epochs", "3", *common]) == 0
    assert len(list(csv.DictReader(history.open()))) == 3


def test_fp16_on_a_cpu_is_one_warning_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vislab", "train", "--data", "digits", "--model", "mlp",
                             "--epochs", "1", "--max-per-class", "10", "--precision", "fp16", "--device", "cpu",
                             "--no-figures", "--no-progress", "--out", str(tmp_path / "run")],  # trains, evaluates
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "fp16" in line]
    assert len(lines) == 1 and lines[0].startswith("vislab train: warning: --precision fp16 on the CPU"), \
        result.stderr
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr


@pytest.mark.parametrize("argv", [["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", "{f}/run"],
                                  ["audit", "--data", "digits", "--out", "{f}/audit"]])
def test_an_out_path_the_system_refuses_is_one_line_naming_it(argv, capsys):
    """An --out the system refuses (sysfs takes no new folders, even from root; a read-only or full disk
    alike): the system's refusal, the path and the fix in one line, never a traceback."""
    blocker = "/sys/vislab-test"
    if not os.path.isdir("/sys") or os.path.exists(blocker):
        pytest.skip("needs Linux's sysfs at /sys")
    code = main([a.replace("{f}", blocker) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err, err
    assert lines[-1].startswith(f"vislab {argv[0]}: error: {blocker}") and "give a path" in lines[-1], err


def test_a_file_where_a_folder_or_model_is_wanted_is_named_as_such(digit_pngs, tmp_path, capsys):
    image = str(digit_pngs[0])
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    assert main(["summary", str(tmp_path / "model.onnx")]) == 1
    assert "an ONNX graph" in _error(capsys)
    assert main(["summary", image]) == 1
    assert "a file, not a run folder" in _error(capsys)
    for command in (["train", "--data", "digits", "--epochs", "1"], ["audit", "--data", "digits"]):
        assert main([*command, "--out", image]) == 1
        assert f"--out {image} is a file" in _error(capsys)
        assert main([*command, "--out", f"{image}/run"]) == 1
        assert f"--out {image}/run is inside {image}, a file" in _error(capsys)


def test_a_bad_model_option_is_named_with_its_value(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--model", "mlp", "--model-opt", "hidden", "--out",
                 str(tmp_path / "a")]) == 1
    assert "vislab train: error: --model-opt expects key=value, got 'hidden'" in _error(capsys)
    assert main(["train", "--data", "digits", "--model", "fastnet", "--model-opt", "widths=abc", "--epochs", "1",
                 "--out", str(tmp_path / "b")]) == 1
    assert "--model-opt widths='abc': model 'fastnet' takes a list for widths (default [32,64,128])" in _error(capsys)


def test_an_input_size_the_network_cannot_take_is_refused_before_training(tmp_path, capsys):
    assert main(["summary", "fastnet", "--input-size", "3", "3", "3", "3"]) == 1
    assert "--input-size takes one number or H W, got 4 numbers" in _error(capsys)
    for command in (["summary", "chollet_convnet", "--input-size", "8"],  # lazy layers: built by a forward
                    ["train", "--data", "digits", "--model", "fastnet", "--input-size", "3", "--epochs", "1",
                     "--out", str(tmp_path / "run")]):
        assert main(command) == 1
        error = _error(capsys)
        assert "is too small for" in error and "--input-size" in error, error
    assert not (tmp_path / "run" / "history.csv").exists()


def test_models_timm_pattern_lists_names_and_says_when_none_match(capsys):
    assert main(["models", "--timm", "resnet1*"]) == 0
    assert "resnet18" in capsys.readouterr().out.split()
    assert main(["models", "--timm", "zzz*"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no timm model name matches 'zzz*'" in captured.err


def test_evaluate_on_a_folder_of_some_classes_scores_all_its_images_by_class_name(run_dir, tmp_path, capsys):
    """New photos of two of the model's ten digits: every image is scored (no test split carved out of
    them), each under the model's index of its class name; a class the model lacks is named."""
    import json

    images, labels = digits_arrays(per_class=6)
    folder = tmp_path / "new"
    for i, (image, label) in enumerate(zip(images, labels)):
        if label in (3, 7):
            write_image(folder / str(label) / f"{i}.png", image)
    assert main(["evaluate", str(run_dir), "--data", str(folder), "--no-figures"]) == 0
    metrics = json.loads((run_dir / "metrics_new_test.json").read_text())
    assert metrics["num_images"] == 12
    per_class = {row["class"]: row for row in metrics["per_class"]}
    assert per_class["3"]["support"] == 6 and per_class["7"]["support"] == 6 and per_class["0"]["support"] == 0
    # photos of a single class are enough to score, without scikit-learn's warnings
    single = tmp_path / "sevens"
    for i, (image, label) in enumerate(zip(images, labels)):
        if label == 7:
            write_image(single / "7" / f"{i}.png", image)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(single)]) == 0
    assert "Warning" not in capsys.readouterr().err
    assert json.loads((run_dir / "metrics_sevens_test.json").read_text())["num_images"] == 6
    write_image(folder / "cat" / "c.png", images[0])
    assert main(["evaluate", str(run_dir), "--data", str(folder), "--no-figures"]) == 1
    assert f"{folder}: 1 of its classes are not the model's (['cat']); the model knows 10: 0, 1, 2" in _error(capsys)


def test_serve_on_a_port_in_use_says_so_before_loading_the_model(run_dir, capsys):
    import socket

    pytest.importorskip("uvicorn")
    with socket.socket() as holder:  # another program listening on a loopback port
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 1
    error = _error(capsys)
    assert f"--port {port}: another program is listening on 127.0.0.1:{port}; choose another --port" in error


def test_evaluate_reads_another_csv_by_its_own_folder_or_the_one_given(run_dir, tmp_path, capsys):
    """A CSV's file names are relative to its own folder, not to the training data's; --image-root,
    --file-col and --label-col say otherwise, as they do for train."""
    images, labels = digits_arrays(per_class=3)
    pictures = tmp_path / "pictures"
    rows = ["path,digit"]
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(pictures / f"{i}.png", image)
        rows.append(f"{i}.png,{label}")
    table = tmp_path / "tables" / "test.csv"
    table.parent.mkdir()
    table.write_text("\n".join(rows) + "\n")
    assert main(["evaluate", str(run_dir), "--data", str(table)]) == 1
    assert "--label-col" in _error(capsys)  # 'digit' is no label column's usual name
    assert main(["evaluate", str(run_dir), "--data", str(table), "--label-col", "digit"]) == 1
    assert "--image-root" in _error(capsys)  # the files are not beside the CSV
    assert main(["evaluate", str(run_dir), "--data", str(table), "--image-root", str(pictures),
                 "--file-col", "path", "--label-col", "digit", "--no-figures"]) == 0
    assert (run_dir / "metrics_test_test.json").is_file()


def test_evaluating_a_split_the_run_never_held_out_names_the_flag_that_holds_it_out(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--max-per-class", "10",
                 "--val-split", "0", "--out", str(run), "--no-evaluate", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val", "--no-figures"]) == 1
    error = _error(capsys)
    assert "has no 'val' split (has train, test) (this run's --val-split was 0: " in error, error
    assert "train with --val-split (e.g. 0.1) or give --data with a val/ folder" in error
