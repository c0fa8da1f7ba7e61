"""Dataset audit, evaluation figures, leaderboard and the HTML report on small real data.

The dataset is sklearn's 8x8 digits written as PNG files in class folders, with an
exact duplicate injected across train/test (leakage) and one within train.
"""

import base64
import csv
import io
import json
import re
import shutil
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageStat  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from vislab.data.audit import audit_dataset, dominant_colour  # noqa: E402
from vislab.data.sources import Dataset, Split  # noqa: E402
from vislab.evaluate.compare import compare_runs, print_leaderboard, write_leaderboard  # noqa: E402
from vislab.tasks.classification_figures import write_evaluation_figures  # noqa: E402
from vislab.tasks.base import write_metrics  # noqa: E402
from vislab.tasks.classification_metrics import classification_metrics  # noqa: E402
from vislab.core.errors import RunError  # noqa: E402
from vislab.report.html import build_report  # noqa: E402

CLASSES = ["zero", "one", "two"]
TRAIN_PER_CLASS = [15, 10, 5]  # imbalance ratio 3
TEST_PER_CLASS = [4, 4, 4]


def assert_not_blank(path, min_std=5.0):
    """A real figure has ink on it: several colours and a clear spread of pixel values."""
    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
    assert rgb.width > 50 and rgb.height > 50, path
    assert max(ImageStat.Stat(rgb).stddev) > min_std, f"{path} looks blank"
    assert len(rgb.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 10, f"{path} has almost no colours"


def _png(array: np.ndarray, path):
    Image.fromarray(array, mode="L").save(path)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    splits = {"train": {}, "test": {}}
    for c, name in enumerate(CLASSES):
        members = np.flatnonzero(digits.target == c)
        chosen = {"train": members[: TRAIN_PER_CLASS[c]], "test": members[100 : 100 + TEST_PER_CLASS[c]]}
        for split, indices in chosen.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            splits[split][c] = []
            for i in indices:
                path = folder / f"d{i}.png"
                _png(images[i], path)
                splits[split][c].append(str(path))
    # leakage: a train image copied byte for byte into test (same class)
    leaked_src = splits["train"][1][0]
    leaked_dst = str(root / "test" / "one" / "leaked_copy.png")
    shutil.copyfile(leaked_src, leaked_dst)
    splits["test"][1].append(leaked_dst)
    # duplicate within train, filed under another class (a label conflict)
    dup_dst = str(root / "train" / "two" / "dup_of_zero.png")
    shutil.copyfile(splits["train"][0][0], dup_dst)
    splits["train"][2].append(dup_dst)
    built = {}
    for split, per_class in splits.items():
        paths = [p for c in sorted(per_class) for p in per_class[c]]
        labels = [c for c in sorted(per_class) for _ in per_class[c]]
        built[split] = Split(labels=torch.tensor(labels), paths=paths, name=split)
    bad = [(str(root / "train" / "zero" / "broken.png"), "zero-byte file")]
    dataset = Dataset("digits", CLASSES, built, bad_files=bad)
    return types.SimpleNamespace(root=root, dataset=dataset, leaked=(leaked_src, leaked_dst), dup=dup_dst)


def test_audit_file_dataset(digits_folder, tmp_path):
    audit = audit_dataset(digits_folder.dataset, tmp_path, max_images=20)
    on_disk = json.loads((tmp_path / "audit.json").read_text())
    assert on_disk == audit

    balance = audit["class_balance"]
    assert [row["train"] for row in balance["table"]] == [15, 10, 6]  # + the injected duplicate
    assert [row["test"] for row in balance["table"]] == [4, 5, 4]
    assert balance["imbalance_ratio"]["train"] == pytest.approx(15 / 6)
    assert balance["imbalance_ratio"]["test"] == pytest.approx(5 / 4)

    dup = audit["duplicates"]
    assert dup["images_hashed"] == 31 + 13
    assert dup["leakage"] is True and dup["across_splits"] == {"groups": 1, "pairs": {"test/train": 1}}
    assert dup["within_split"]["train"] == {"groups": 1, "extra_copies": 1}
    assert dup["within_split"]["test"] == {"groups": 0, "extra_copies": 0}
    assert dup["label_conflicts"] == 1
    groups = [set(example["sources"]) for example in dup["examples"]]
    assert set(digits_folder.leaked) in groups
    assert any("leakage" in w for w in audit["warnings"])

    geometry = audit["geometry"]
    assert geometry["formats"] == {"PNG": 44} and geometry["modes"] == {"L": 44}
    assert geometry["width"] == {"min": 8.0, "max": 8.0, "mean": 8.0}
    assert audit["dominant_colour"]["images_sampled"] == 20  # capped by max_images
    assert audit["bad_files"][0]["reason"] == "zero-byte file"

    for name in audit["figures"]:
        assert_not_blank(tmp_path / name)
    # the images share one size (8x8), which the table says: no figure of a single point
    assert {p.split("/")[-1] for p in audit["figures"]} == {
        "audit_class_balance.png",
        "audit_dominant_colours.png",
        "audit_samples.png",
    }


def test_audit_in_memory_leakage_and_unreadable_file(tmp_path):
    images = torch.randint(0, 256, (12, 3, 6, 6), dtype=torch.uint8)
    test_images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    test_images[2] = images[5]  # leaked
    dataset = Dataset(
        "toy",
        ["a", "b"],
        {
            "train": Split(torch.tensor([0] * 6 + [1] * 6), images=images, name="train"),
            "test": Split(torch.tensor([0, 0, 1, 1]), images=test_images, name="test"),
        },
    )
    audit = audit_dataset(dataset, tmp_path)
    assert audit["duplicates"]["across_splits"]["groups"] == 1
    assert sorted(audit["duplicates"]["examples"][0]["sources"]) == ["test#2", "train#5"]
    assert audit["geometry"]["channels"] == {"3": 16}

    # a listed file that vanished is reported as bad, not a crash
    missing = Split(torch.tensor([0, 1]), paths=[str(tmp_path / "gone.png"), str(tmp_path / "gone2.png")], name="train")
    audit = audit_dataset(Dataset("gone", ["a", "b"], {"train": missing}), tmp_path / "gone")
    assert {b["path"] for b in audit["bad_files"]} == {str(tmp_path / "gone.png"), str(tmp_path / "gone2.png")}


def test_in_memory_images_hash_as_files_do(tmp_path):
    """The whole-array hashing of in-memory splits gives each image the digest of ``pixel_digest``, so a grey
    picture stored as RGB still matches its grey copy in a file."""
    from conftest import write_image
    from vislab.data.audit import _pixel_digests, pixel_digest

    import hashlib

    images = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    images[2] = images[2, :1]  # grey stored as RGB
    expected = [hashlib.blake2b(image[:1].tobytes() if i == 2 else image.tobytes(), digest_size=16,
                                key=b"1x5x5" if i == 2 else b"3x5x5").hexdigest()
                for i, image in enumerate(images.numpy())]
    assert _pixel_digests(images.numpy()) == expected
    assert [pixel_digest(image) for image in images.numpy()] == expected

    grey = tmp_path / "files" / "a" / "grey.png"
    write_image(grey, images[2, 0].numpy(), size=5)
    dataset = Dataset("mixed", ["a", "b"], {
        "train": Split(torch.tensor([0, 0, 0, 1, 1, 1]), images=images, name="train"),
        "test": Split(torch.tensor([0]), paths=[str(grey)], name="test"),
    })
    audit = audit_dataset(dataset, tmp_path / "audit", figures=False)
    assert audit["duplicates"]["across_splits"]["groups"] == 1
    assert sorted(audit["duplicates"]["examples"][0]["sources"]) == [str(grey), "train#2"]


def test_dominant_colour_picks_the_mode_not_the_mean():
    image = np.zeros((3, 10, 10), np.uint8)
    image[2] = 200  # blue background ...
    image[:, :3, :3] = 255  # ... with a small white patch
    assert dominant_colour(image).tolist() == [0, 0, 200]
    assert dominant_colour(np.full((1, 4, 4), 90, np.uint8)).tolist() == [90, 90, 90]


def test_dominant_colours_of_an_array_are_each_image_s_own():
    """The whole-array computation gives every image the colour of the plain one-image recipe: the
    fullest cell of 8 levels per channel (the first, on a tie), its pixels averaged and rounded."""
    from vislab.data.audit import dominant_colours

    def one(image):  # the recipe, spelled out
        image = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
        pixels = image[:3].reshape(3, -1).T.astype(np.int64)
        keys = [tuple(p // 32) for p in pixels]
        counts = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        cell_order = sorted(counts, key=lambda k: (-counts[k], (k[0] * 8 + k[1]) * 8 + k[2]))
        members = pixels[[key == cell_order[0] for key in keys]]
        return np.round(members.mean(axis=0)).astype(np.uint8).tolist()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, 6, 6), dtype=np.uint8)
    images[:20] //= 64  # few distinct cells: ties between the fullest ones
    images[5] = images[5, :1]  # grey stored as RGB
    assert dominant_colours(images).tolist() == [one(image) for image in images]
    grey = rng.integers(0, 256, (7, 1, 5, 9), dtype=np.uint8)
    assert dominant_colours(grey).tolist() == [one(image) for image in grey]


def test_the_common_sizes_are_counted_and_ordered_as_counter_orders_them(tmp_path):
    """Most common first; equal counts in the order the sizes were first seen."""
    sizes = [(40, 10), (30, 20), (40, 10), (25, 25), (30, 20), (7, 3)]
    splits = {}
    for n, (w, h) in enumerate(sizes):
        splits[f"s{n}"] = Split(torch.zeros(1, dtype=torch.long), images=torch.zeros(1, 1, h, w, dtype=torch.uint8),
                                name=f"s{n}")
    audit = audit_dataset(Dataset("sizes", ["a"], splits), tmp_path, figures=False)
    assert list(audit["geometry"]["common_sizes"].items()) == [("40x10", 2), ("30x20", 2), ("25x25", 1), ("7x3", 1)]
    assert audit["geometry"]["distinct_sizes"] == 4


def test_images_of_several_sizes_get_the_geometry_figure(tmp_path):
    splits = {f"s{n}": Split(torch.zeros(1, dtype=torch.long), images=torch.zeros(1, 3, h, w, dtype=torch.uint8),
                             name=f"s{n}") for n, (w, h) in enumerate([(40, 10), (30, 20)])}
    audit = audit_dataset(Dataset("sizes", ["a"], splits), tmp_path)
    assert "plots/audit_image_geometry.png" in audit["figures"]
    assert_not_blank(tmp_path / "plots" / "audit_image_geometry.png")


def test_grey_images_dominant_levels_are_drawn_flat_and_colours_in_3d(tmp_path):
    """Grey images' dominant colours all lie on the RGB cube's diagonal: one row of grey levels per class
    instead (a wide, short figure), colours in a 3-D scatter (a near-square one)."""
    from vislab.viz.data import plot_dominant_colours

    levels = np.array([10, 200, 30, 250, 120, 90])
    labels = [0, 1, 0, 1, 2, 2]
    grey = plot_dominant_colours(np.stack([levels] * 3, 1), labels, ["a", "b", "c"], tmp_path / "grey.png")
    colour = plot_dominant_colours(np.stack([levels, levels[::-1], levels // 2], 1), labels, ["a", "b", "c"],
                                   tmp_path / "colour.png")
    for path in (grey, colour):
        assert_not_blank(path)
    width, height = Image.open(grey).size
    assert height < width / 2
    width, height = Image.open(colour).size
    assert height > 0.8 * width


def _fake_run(root, digits_folder, name="run_a", accuracy_boost=2.0, epochs=3, full=True):
    """A run folder with real content: config, history, curves, audit, metrics, figures."""
    run = root / name
    (run / "plots" / "explain").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  source: digits\nmodel:\n  name: small_cnn\ntrain:\n  epochs: 3\n  lr: 0.001\n")
    (run / "model.json").write_text(json.dumps({"name": f"cnn_{name}", "parameters": 12345, "class_names": CLASSES}))
    with (run / "history.csv").open("w") as handle:
        handle.write("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n")
        for e in range(1, epochs + 1):
            handle.write(f"{e},{1 / e:.3f},{0.5 + e / 10:.3f},{1.1 / e:.3f},{0.45 + e / 10:.3f},0.001,{1.5 * e}\n")
    if not full:  # what compare reads: model.json, history.csv, metrics.json
        labels = digits_folder.dataset.splits["test"].labels.numpy()
        probs = np.random.default_rng(1).dirichlet(np.ones(3) * (1 + accuracy_boost), size=len(labels))
        write_metrics(classification_metrics(labels, probs, CLASSES), run)
        return types.SimpleNamespace(run=run)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1.0, 0.5, 0.33], label="train_loss")
    ax.legend()
    fig.savefig(run / "plots" / "curves.png")
    fig.savefig(run / "plots" / "explain" / "gradcam_0.png")
    plt.close(fig)
    audit_dataset(digits_folder.dataset, run, max_images=20)

    # predictions over 4 classes: "three" is absent from the labels, "two" is never predicted
    test = digits_folder.dataset.splits["test"]
    labels = test.labels.numpy()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(labels), 4)) + accuracy_boost * np.eye(4)[labels]
    logits[:, 2] -= 10
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = CLASSES + ["three"]
    predictions = types.SimpleNamespace(labels=labels, probs=probs, sources=[test.source(i) for i in range(len(test))])
    metrics = classification_metrics(labels, probs, names)
    write_metrics(metrics, run)
    written = write_evaluation_figures(
        predictions, names, metrics, lambda idx: torch.stack([test.load(int(i)) for i in idx]), run
    )
    return types.SimpleNamespace(run=run, metrics=metrics, written=written, probs=probs, labels=labels)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, digits_folder):
    return _fake_run(tmp_path_factory.mktemp("runs"), digits_folder)


def test_evaluation_figures_and_misclassified(fake_run):
    names = {p.name for p in fake_run.written}
    assert names >= {
        "confusion_matrix.png", "confusion_matrix_normalized.png", "roc.png", "pr.png", "reliability.png",
        "per_class_accuracy.png", "predictions_sample.png", "predictions_confident_wrong.png",
        "predictions_unsure_right.png", "misclassified.csv",
    }
    for path in fake_run.written:
        if path.suffix == ".png":
            assert_not_blank(path)
    with (fake_run.run / "misclassified.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    wrong = np.flatnonzero(fake_run.probs.argmax(1) != fake_run.labels)
    assert len(rows) == len(wrong) > 0
    assert all(r["true"] != r["predicted"] for r in rows)
    assert [float(r["probability"]) for r in rows] == sorted((float(r["probability"]) for r in rows), reverse=True)
    assert rows[0]["source"].endswith(".png")


def test_report_has_every_section_and_valid_images(fake_run):
    page = build_report(fake_run.run).read_text()
    for heading in ["Summary", "Configuration", "Model", "Dataset audit", "Training", "Metrics",
                    "Evaluation figures", "Misclassified examples", "Explanations", "Bad files"]:
        assert f"<h2>{heading}</h2>" in page, heading
    text = re.sub(r"data:[^\"]+", "", page)  # base64 can spell anything
    assert "nan" not in re.findall(r"[a-z]+", text.lower()) and "<script" not in text.lower()
    # self-contained: every src/href is a data URI or an in-page anchor
    for attr in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:", "#")), attr
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    plots = list((fake_run.run / "plots").rglob("*.png"))
    assert len(images) == len(plots)  # every figure, each once
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    assert "leaked_copy.png" in page  # the duplicate example
    assert "small_cnn" in page and "zero-byte file" in page
    assert "classes absent from the test labels" in page
    # the results come first; the ~60 lines of config last, folded
    assert page.index("<h2>Metrics</h2>") < page.index("<h2>Configuration</h2>")
    config = page[page.index("<h2>Configuration</h2>"):]
    assert config.index("<details>") < config.index("<pre>") < config.index("</details>")


def test_report_survives_missing_and_broken_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # not a run folder: refused, naming what is missing, and nothing written there
    with pytest.raises(RunError, match="not a vislab run folder"):
        build_report(empty)
    assert not (empty / "report.html").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "audit.json").write_text("{not json")
    (broken / "config.yaml").write_text("a: [unclosed\n")
    (broken / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "loss": 1.0}))
    page = build_report(broken).read_text()
    assert "<h2>Metrics</h2>" in page and "could not be built" in page and "not valid YAML" in page
    assert "BadFileError" not in page  # the message names the file and the fix; a Python class name says nothing
    with pytest.raises(FileNotFoundError, match="run folder"):
        build_report(tmp_path / "nope")


def test_compare_runs_leaderboard(tmp_path, digits_folder, fake_run, capsys):
    weak = _fake_run(tmp_path, digits_folder, name="run_b", accuracy_boost=0.0, epochs=2, full=False)
    rows = compare_runs([weak.run, fake_run.run])
    assert [r["run"] for r in rows] == ["run_a", "run_b"]  # best accuracy first
    # a folder named twice, in two spellings, is one row
    assert len(compare_runs([weak.run, fake_run.run, weak.run.parent / "." / weak.run.name])) == 2
    best = rows[0]
    assert best["accuracy"] == pytest.approx(fake_run.metrics["accuracy"])
    assert best["macro_f1"] == pytest.approx(fake_run.metrics["macro"]["f1"])
    assert best["auc"] == pytest.approx(fake_run.metrics["roc_auc"])
    assert (best["epochs"], best["train_seconds"], best["parameters"]) == (3, 9.0, 12345)
    assert (rows[1]["epochs"], rows[1]["train_seconds"]) == (2, 4.5)
    csv_path, png_path = write_leaderboard(rows, tmp_path / "cmp")
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [t["run"] for t in table] == ["run_a", "run_b"] and float(table[0]["accuracy"]) == pytest.approx(best["accuracy"])
    assert_not_blank(png_path)
    print_leaderboard(rows)
    assert "run_a" in capsys.readouterr().out


def test_cli_audit_augment_preview_compare_report(digits_folder, fake_run, tmp_path, capsys, monkeypatch):
    from vislab.cli import main

    data = tmp_path / "data"
    shutil.copytree(digits_folder.root, data)
    (data / "train" / "zero" / "broken.png").write_bytes(b"")  # a real bad file for the loader to skip
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "audit"), "--max-images", "10"]) == 0
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    # the loader also holds out a val split, so the within-train duplicate may now cross train/val
    leaked = [e for e in audit["duplicates"]["examples"] if any(s.endswith("leaked_copy.png") for s in e["sources"])]
    assert len(leaked) == 1 and "test" in leaked[0]["splits"] and len(set(leaked[0]["splits"])) == 2
    assert any(b["path"].endswith("broken.png") for b in audit["bad_files"])
    assert "leakage" in capsys.readouterr().out

    preview = tmp_path / "aug.png"
    assert main(["augment-preview", "--data", str(data), "--rotation", "30", "--count", "3", "--versions", "2",
                 "--out", str(preview)]) == 0
    assert_not_blank(preview)

    assert main(["compare", str(fake_run.run), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "leaderboard.csv").is_file()
    capsys.readouterr()
    assert main(["compare", str(fake_run.run), "--out", str(tmp_path / "cmp" / "leaderboard.csv")]) == 1
    said = capsys.readouterr()
    assert "leaderboard.csv" in said.err and "Traceback" not in said.err
    assert said.out == ""  # the error alone: no table printed before it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["compare", str(fake_run.run)]) == 0  # no --out: a folder of its own, said, never the current one
    assert sorted(p.name for p in elsewhere.iterdir()) == ["runs"]
    assert (elsewhere / "runs" / "compare" / "leaderboard.csv").is_file()
    assert "runs/compare/leaderboard.csv" in capsys.readouterr().out.replace("\n", "")
    assert main(["report", str(fake_run.run)]) == 0
    assert main(["report", str(tmp_path / "missing")]) == 1


def test_reliability_diagram_shows_accuracy_in_under_confident_bins():
    """The accuracy bar's outline and the mean confidence are drawn over the gap, so an
    under-confident bin (accuracy above confidence) shows both."""
    from matplotlib.patches import Rectangle

    from vislab.viz.evaluation import draw_reliability

    calibration = {"ece": 0.2, "bins": [
        {"lower": 0.5, "upper": 0.75, "count": 10, "accuracy": 0.9, "confidence": 0.6},  # under-confident
        {"lower": 0.75, "upper": 1.0, "count": 10, "accuracy": 0.7, "confidence": 0.9}]}  # over-confident
    fig, (top, bottom) = plt.subplots(2, 1)
    draw_reliability(top, bottom, calibration)
    bars = [p for p in top.patches if isinstance(p, Rectangle)]
    gaps = [p for p in bars if p.get_hatch()]
    accuracy_edges = [p for p in bars if not p.get_fill() and not p.get_hatch()]
    assert sorted(round(p.get_height(), 3) for p in accuracy_edges) == [0.7, 0.9]
    assert min(p.get_zorder() for p in accuracy_edges) > max(p.get_zorder() for p in gaps)
    confidence = [c for c in top.collections if c.get_label() == "mean confidence"]
    assert confidence and min(c.get_zorder() for c in confidence) > max(p.get_zorder() for p in gaps)
    plt.close(fig)


@pytest.mark.parametrize("which", ["predictions", "label_issues"])
def test_a_grid_of_two_images_keeps_its_whole_title(tmp_path, which):
    """A one- or two-image grid is narrower than its title: the figure widens, so the title's first and
    last letters are inside the picture (the edge columns of the title band stay white)."""
    from vislab.viz.evaluation import plot_prediction_grid
    from vislab.viz.label_issues import plot_label_issues

    images = np.random.default_rng(0).integers(0, 255, (2, 1, 28, 28), dtype=np.uint8)
    path = tmp_path / "grid.png"
    if which == "predictions":
        plot_prediction_grid(images, ["T-shirt/top", "Ankle boot"], ["Pullover", "Sneaker"], [0.93, 0.88], path,
                             title="Most confidently wrong on the test split")
    else:
        plot_label_issues(list(images), ["T-shirt/top → Pullover\nscore 0.01", "Bag → Sandal\nscore 0.02"], path,
                          title="Likely label errors, the most likely first, by cleanlab self-confidence")
    grey = np.asarray(Image.open(path).convert("L"))
    band = grey[: grey.shape[0] // 8]  # the title's rows
    assert band.min() < 128  # the title is drawn there
    assert band[:, :4].min() > 200 and band[:, -4:].min() > 200  # and not cut at either edge


@pytest.mark.parametrize("issues, warned", [(0, False), (3, True)])
def test_a_label_check_that_flags_nothing_is_no_warning(digits_folder, tmp_path, issues, warned):
    section = {"issues": issues, "images_checked": 40, "csv": "label_issues.csv"}
    audit = audit_dataset(digits_folder.dataset, tmp_path, max_images=20, figures=False, label_issues=section)
    assert any("probably carry a wrong label" in w for w in audit["warnings"]) is warned


def _files(folder, audit):
    return {name: (folder / name).read_bytes() for name in ["audit.json", *audit["figures"]]}


def test_an_audit_of_the_same_data_is_copied_from_the_cache(tmp_path, monkeypatch):
    """Every training run audits its data: the second audit of the same data and settings copies the first
    (audit.json and its figures, byte for byte) instead of scanning again; other pixels, labels or seed
    audit afresh, and an audit with label issues is never kept."""
    import vislab.data.audit as audit_module

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8, generator=generator)

    def dataset(pixels, labels=(0, 1) * 6):
        return Dataset("toy", ["a", "b"], {"train": Split(torch.tensor(labels), images=pixels.clone(), name="train")})

    first = audit_dataset(dataset(images), tmp_path / "first")
    assert len(list((tmp_path / "cache" / "audit").iterdir())) == 1
    scans = []
    real_scan = audit_module._scan
    monkeypatch.setattr(audit_module, "_scan", lambda *a: scans.append(1) or real_scan(*a))

    again = audit_dataset(dataset(images), tmp_path / "again")
    assert scans == [] and again == first
    assert _files(tmp_path / "again", again) == _files(tmp_path / "first", first)

    duplicated = images.clone()
    duplicated[3] = duplicated[2]  # one pixel array changed: a duplicate the first audit did not have
    changed = audit_dataset(dataset(duplicated), tmp_path / "changed")
    assert scans == [1] and changed["duplicates"]["within_split"]["train"]["extra_copies"] == 1
    assert first["duplicates"]["within_split"]["train"]["extra_copies"] == 0
    relabelled = audit_dataset(dataset(images, labels=(0,) * 11 + (1,)), tmp_path / "relabelled")
    assert scans == [1, 1] and [row["train"] for row in relabelled["class_balance"]["table"]] == [11, 1]
    audit_dataset(dataset(images), tmp_path / "seed1", seed=1)
    assert len(scans) == 3
    issues = {"issues": 0, "images_checked": 12, "csv": "label_issues.csv"}
    audit_dataset(dataset(images), tmp_path / "issues", label_issues=issues)
    audit_dataset(dataset(images), tmp_path / "issues2", label_issues=issues)
    assert len(scans) == 5 and len(list((tmp_path / "cache" / "audit").iterdir())) == 4


def test_a_kept_audit_of_files_follows_the_files(tmp_path, monkeypatch):
    """A folder's audit is keyed by each file's path, size and modification time: a file replaced by another
    picture is audited afresh, and a damaged kept entry is audited again rather than trusted."""
    from conftest import write_image

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(tmp_path / "data" / f"{i}.png")
        write_image(paths[-1], rng.integers(0, 256, (8, 8), dtype=np.uint8), size=8)

    def dataset():
        return Dataset("files", ["a", "b"], {"train": Split(torch.tensor([0, 1] * 3), paths=[str(p) for p in paths],
                                                            name="train")})

    import os
    import time

    first = audit_dataset(dataset(), tmp_path / "first")
    assert not (tmp_path / "cache" / "audit").exists()  # files written a moment ago: not yet to be trusted
    for path in paths:
        os.utime(path, (time.time() - 60, time.time() - 60))
    first = audit_dataset(dataset(), tmp_path / "first")
    assert len(list((tmp_path / "cache" / "audit").iterdir())) == 1
    assert audit_dataset(dataset(), tmp_path / "again") == first
    shutil.copyfile(paths[0], paths[1])  # now a duplicate
    os.utime(paths[1], (time.time() - 30, time.time() - 30))
    copied = audit_dataset(dataset(), tmp_path / "copied")
    assert copied["duplicates"]["within_split"]["train"]["extra_copies"] == 1

    (entry,) = [e for e in (tmp_path / "cache" / "audit").iterdir()
                if json.loads((e / "audit.json").read_text()) == copied]
    (entry / "audit.json").write_text("{")  # cut short
    assert audit_dataset(dataset(), tmp_path / "damaged") == copied
    assert json.loads((tmp_path / "damaged" / "audit.json").read_text()) == copied
    assert json.loads((entry / "audit.json").read_text()) == copied  # kept again, whole


def test_the_audit_cache_keeps_the_most_recently_used(tmp_path, monkeypatch):
    import vislab.data.audit as audit_module

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(audit_module, "CACHED_AUDITS", 2)
    images = torch.randint(0, 256, (3, 4, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def audit(i, out):
        dataset = Dataset("toy", ["a", "b"], {"train": Split(torch.tensor([0, 1, 0, 1]), images=images[i], name="train")})
        return audit_dataset(dataset, tmp_path / out, figures=False)

    audit(0, "a")
    audit(1, "b")
    import os
    import time

    old = time.time() - 60  # the first entry read again after the second was written: the second is the oldest
    for entry in (tmp_path / "cache" / "audit").iterdir():
        os.utime(entry, (old, old))
    audit(0, "a2")
    audit(2, "c")
    kept = sorted(json.loads((e / "audit.json").read_text())["duplicates"]["images_hashed"] for e in
                  (tmp_path / "cache" / "audit").iterdir())
    assert len(kept) == 2
    assert (tmp_path / "a2" / "audit.json").read_text() == (tmp_path / "a" / "audit.json").read_text()
    scans = []
    real_scan = audit_module._scan
    monkeypatch.setattr(audit_module, "_scan", lambda *a: scans.append(1) or real_scan(*a))
    audit(0, "a3")
    assert scans == []  # still kept
    audit(1, "b2")
    assert scans == [1]  # dropped


def test_training_curves_are_ticked_at_whole_epochs(tmp_path, monkeypatch):
    """A short run's curves had ticks at 1.25, 1.5, ... 2.75: epochs are whole numbers."""
    import vislab.viz.training as training

    figures = []
    real_save = training._save
    monkeypatch.setattr(training, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path))
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": e / 4, "val_acc": e / 5} for e in (1, 2, 3)]
    assert training.plot_history(rows, tmp_path / "curves.png").is_file()
    (fig,) = figures
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks == [1, 2, 3], ticks


@pytest.mark.parametrize("sizes, expected", [
    ({"64x64": 36}, "geometry: all 36 images are 64x64;"),
    ({"80x60": 9, "120x90": 9, "64x64": 9, "32x32": 9}, "geometry: 4 sizes, each 9 images: 80x60, 120x90, 64x64, 32x32;"),
    ({"40x10": 5, "30x20": 2, "25x25": 2, "7x3": 2, "9x9": 2, "5x5": 1},
     "geometry: 6 sizes, most common 40x10 (5), 30x20 (2), 25x25 (2), 7x3 (2), 9x9 (2) and 1 more;"),
])
def test_printed_geometry_names_the_sizes_in_words(sizes, expected):
    """One size: `all N images are WxH`; sizes tied in count: all of them, none cut at random."""
    from rich.console import Console

    from vislab.data.audit import print_audit

    console = Console(record=True, width=200)
    print_audit({"class_names": ["a"], "class_balance": {"table": [{"class": "a", "train": 3}],
                                                        "imbalance_ratio": {"train": 1.0}},
                 "geometry": {"images_measured": sum(sizes.values()), "distinct_sizes": len(sizes),
                              "common_sizes": sizes, "modes": {"L": 1}, "formats": {"PNG": 1}},
                 "warnings": []}, console=console)
    assert expected in console.export_text(), console.export_text()
