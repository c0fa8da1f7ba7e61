"""Multi-label: CSV reading and its errors, stratified splits, scikit-learn metrics, thresholds in model.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fmnist
from vislab.core.config import DataConfig
from vislab.core.errors import DataError
from vislab.data.multilabel import load_multilabel_dataset
from vislab.tasks.multilabel import (
    HISTOGRAM_BINS, THRESHOLD_GRID, MultiLabel, histogram_ap, multilabel_metrics, tune_thresholds,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _images(root: Path, count: int) -> list[str]:
    names = []
    for i in range(count):
        Image.new("L", (8, 8), (37 * i) % 256).save(root / f"{i}.png")
        names.append(f"{i}.png")
    return names


def _csv(root: Path, header: str, rows: list[str], name: str = "labels.csv") -> Path:
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(source=str(path), val_split=kw.pop("val_split", 0), test_split=kw.pop("test_split", 0),
                      workers=0, **kw)


# --------------------------------------------------------------------------- reading the CSV
@pytest.mark.parametrize("sep,cell", [(" ", "cat dog"), (",", "cat, dog"), (";", "cat;dog"), ("|", "cat|dog")])
def test_separators_are_detected_and_classes_sorted(tmp_path, sep, cell):
    names = _images(tmp_path, 6)
    cells = [cell, "dog", "cat", "", "zebra" + (sep if sep != " " else " ") + "cat", "zebra"]
    path = _csv(tmp_path, "image_name,tags", [f'{n},"{c}"' for n, c in zip(names, cells)])
    ds = load_multilabel_dataset(_cfg(path))
    assert ds.class_names == ["cat", "dog", "zebra"]
    labels = ds.splits["train"].labels
    assert labels.shape == (6, 3) and labels.dtype == torch.float32
    assert labels.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 0, 1]]


def test_one_column_per_class_and_empty_cells_counted_by_the_audit(tmp_path):
    from vislab.tasks import get_task

    names = _images(tmp_path, 5)
    path = _csv(tmp_path, "file,sky,road", [f"{n},{a},{b}" for n, (a, b) in
                                           zip(names, [(1, 0), (0, 1), (1, 1), (0, 0), (0, 0)])])
    ds = load_multilabel_dataset(_cfg(path))
    assert ds.class_names == ["road", "sky"]
    assert ds.splits["train"].labels.sum(0).tolist() == [2.0, 2.0]
    audit = get_task("multilabel").audit(ds, tmp_path / "audit")  # the task counts every label of an image
    assert audit["class_balance"]["images_without_labels"] == {"train": 2}
    assert [row["train"] for row in audit["class_balance"]["table"]] == [2, 2]


def test_typo_that_makes_a_new_class_is_an_error_naming_the_row(tmp_path):
    names = _images(tmp_path, 8)
    cells = ["cat", "dog", "cat dog", "cat", "dog", "dgo", "cat", "dog"]
    path = _csv(tmp_path, "file,labels", [f"{n},{c}" for n, c in zip(names, cells)])
    with pytest.raises(DataError) as info:
        load_multilabel_dataset(_cfg(path))
    message = str(info.value)
    assert "'dgo'" in message and "row 7" in message and "'dog'" in message and "--labels" in message
    # naming the classes turns it into a label outside --labels, still with the row and a suggestion
    with pytest.raises(DataError, match=r"row 7 .*'dgo'.*not one of the --labels.*Did you mean 'dog'"):
        load_multilabel_dataset(_cfg(path, labels=["cat", "dog"]))


def test_a_row_naming_a_missing_file_is_an_error(tmp_path):
    names = _images(tmp_path, 4)
    path = _csv(tmp_path, "file,labels", [f"{n},a b" for n in names] + ["gone.png,a", "x.png,b"])
    with pytest.raises(DataError, match=r"2 of 6 rows name files that are missing.*row 6: 'gone.png'.*--image-root"):
        load_multilabel_dataset(_cfg(path))


@pytest.mark.parametrize("cell", ["a,,b", "['a', 'b']", "a,"])
def test_a_malformed_labels_cell_is_an_error(tmp_path, cell):
    names = _images(tmp_path, 4)
    cells = ["a,b", "a", "b", cell]
    path = _csv(tmp_path, "file,labels", [f'{n},"{c}"' for n, c in zip(names, cells)])
    with pytest.raises(DataError, match=r"row 5 \('3.png'\): the labels cell .* is malformed"):
        load_multilabel_dataset(_cfg(path))


def test_a_non_binary_class_column_and_mixed_separators_are_errors(tmp_path):
    names = _images(tmp_path, 3)
    path = _csv(tmp_path, "file,sky,road", [f"{names[0]},1,0", f"{names[1]},2,1", f"{names[2]},0,1"])
    with pytest.raises(DataError, match=r"row 3, column 'sky' holds '2'"):
        load_multilabel_dataset(_cfg(path))
    path = _csv(tmp_path, "file,labels", [f'{names[0]},"a,b"', f'{names[1]},"a;b"', f"{names[2]},a"], "mixed.csv")
    with pytest.raises(DataError, match="mix separators"):
        load_multilabel_dataset(_cfg(path))


def test_iterative_stratification_puts_a_rare_label_in_every_split(tmp_path):
    names = _images(tmp_path, 60)
    cells = ["common rare" if i % 10 == 0 else ("common" if i % 2 else "other") for i in range(60)]
    path = _csv(tmp_path, "file,labels", [f"{n},{c}" for n, c in zip(names, cells)])
    ds = load_multilabel_dataset(_cfg(path, val_split=0.2, test_split=0.2))
    rare = ds.class_names.index("rare")
    assert {name: int(s.labels[:, rare].sum()) for name, s in ds.splits.items()} == {"train": 4, "val": 1, "test": 1}
    assert sum(len(s) for s in ds.splits.values()) == 60


# --------------------------------------------------------------------------- metrics and thresholds
def _fixed_predictions():
    rng = np.random.default_rng(3)
    y = (rng.random((200, 4)) < [0.5, 0.2, 0.05, 0.3]).astype(np.int64)
    probs = np.clip(y * 0.35 + rng.random((200, 4)) * 0.65, 0, 1)
    return y, probs


def test_metrics_equal_scikit_learns_on_fixed_predictions():
    from sklearn import metrics as skm

    y, probs = _fixed_predictions()
    thresholds = np.array([0.5, 0.4, 0.6, 0.5])
    m = multilabel_metrics(y, probs, ["a", "b", "c", "d"], thresholds)
    pred = (probs >= thresholds).astype(int)
    assert m["map"] == pytest.approx(skm.average_precision_score(y, probs, average="macro"), abs=1e-12)
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["label_ranking_average_precision"] == pytest.approx(skm.label_ranking_average_precision_score(y, probs))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, average=None)
    for k, row in enumerate(m["per_class"]):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[k], r[k], f[k], s[k]))
        assert row["average_precision"] == pytest.approx(skm.average_precision_score(y[:, k], probs[:, k]))


def test_epoch_map_from_histograms_equals_sklearn_on_binned_scores():
    from sklearn.metrics import average_precision_score

    y, probs = _fixed_predictions()
    # scores at bin centres: the histograms lose nothing, so the AP must be scikit-learn's exactly
    binned = (np.floor(probs * HISTOGRAM_BINS).clip(0, HISTOGRAM_BINS - 1) + 0.5) / HISTOGRAM_BINS
    logits = torch.logit(torch.tensor(binned, dtype=torch.float64)).float()
    task = MultiLabel()
    halves = [task.batch_stats(logits[:100], torch.tensor(y[:100])), task.batch_stats(logits[100:], torch.tensor(y[100:]))]
    sums = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    ap = histogram_ap(sums["pos_hist"], sums["neg_hist"])
    for k in range(4):
        assert ap[k] == pytest.approx(average_precision_score(y[:, k], binned[:, k]), abs=1e-9)
    assert task.epoch_metrics(sums, 200)["map"] == pytest.approx(np.mean(ap))


def test_thresholds_maximise_f1_per_label():
    from sklearn.metrics import f1_score

    y, probs = _fixed_predictions()
    thresholds, scores = tune_thresholds(y, probs, "f1")
    for k in range(4):
        best = max(f1_score(y[:, k], probs[:, k] >= t) for t in THRESHOLD_GRID)
        assert f1_score(y[:, k], probs[:, k] >= thresholds[k]) == pytest.approx(best)
    assert not np.allclose(thresholds, 0.5)


def test_losses_bce_focal_asymmetric():
    from torchvision.ops import sigmoid_focal_loss

    from vislab.tasks.losses import multilabel_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert multilabel_loss(logits, y) == pytest.approx(float(bce))
    assert multilabel_loss(logits, y, reduction="sum") == pytest.approx(float(bce) * 2)
    focal = sigmoid_focal_loss(logits, y, alpha=-1, gamma=2.0, reduction="mean")
    assert multilabel_loss(logits, y, "focal") == pytest.approx(float(focal))
    pw = torch.tensor([1.0, 3.0, 5.0])
    weighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)
    assert multilabel_loss(logits, y, pos_weight=pw) == pytest.approx(float(weighted))
    assert 0 < float(multilabel_loss(logits, y, "asymmetric")) < float(bce)


# --------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def mosaic_run(tmp_path_factory):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST files absent")
    from mosaic_data import write_mosaics

    from vislab.cli import main

    root = tmp_path_factory.mktemp("mosaics")
    train_csv, test_csv = write_mosaics(root, 240, 60, seed=0, classes=[1, 5, 8, 9])
    run = root / "run"
    code = main(["train", "--task", "multilabel", "--data", str(train_csv), "--test-csv", str(test_csv),
                 "--model", "chollet_convnet", "--input-size", "28", "--epochs", "3", "--batch-size", "32",
                 "--lr", "3e-3", "--val-split", "0.25", "--workers", "0", "--device", "cpu", "--no-progress",
                 "--out", str(run), "--class-weights", "auto", "--patience", "5", "--monitor", "val_map"])
    assert code == 0
    return run, root


@needs_fmnist
def test_mosaic_run_writes_thresholds_metrics_and_figures(mosaic_run):
    run, _ = mosaic_run
    spec = json.loads((run / "model.json").read_text())
    assert spec["task"] == "multilabel" and spec["class_names"] == ["bag", "boot", "sandal", "trouser"]
    assert len(spec["thresholds"]) == 4 and "tuned on the" in spec["threshold_source"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["map"] > 0.6  # 3 epochs on 270 mosaics; chance is about 0.45
    assert list(metrics["thresholds"].values()) == pytest.approx(spec["thresholds"])
    for name in ("per_class_ap", "label_cooccurrence", "threshold_f1", "predictions_sample",
                 "predictions_most_missed"):
        assert (run / "plots" / f"{name}.png").is_file(), name
    report = (run / "report.html").read_text()
    assert "Multi-label evaluation" in report and "mAP" in report
    history = (run / "history.csv").read_text().splitlines()[0]
    assert "val_map" in history and "val_f1" in history


@needs_fmnist
def test_thresholds_round_trip_and_change_predict(mosaic_run, capsys):
    from vislab import api
    from vislab.runs import load

    run, root = mosaic_run
    spec = json.loads((run / "model.json").read_text())
    assert load(run).task.thresholds.tolist() == pytest.approx(spec["thresholds"])
    images = sorted((root / "test").glob("*.png"))[:12]
    stored = api.predict(run, images, device="cpu", precision="fp32")
    assert all("labels" in r and len(r["top"]) == 4 for r in stored)
    for r in stored:  # each label reported carries the stored threshold and clears it
        for entry in r["labels"]:
            assert entry["threshold"] == pytest.approx(spec["thresholds"][entry["index"]])
            assert entry["probability"] >= entry["threshold"]
    # thresholds edited in model.json are what predict uses: everything above 0.001, nothing above 0.999
    for value, expect_all in ((0.001, True), (0.999, False)):
        edited = {**spec, "thresholds": [value] * 4}
        (run / "model.json").write_text(json.dumps(edited))
        try:
            results = api.predict(run, images, device="cpu", precision="fp32")
        finally:
            (run / "model.json").write_text(json.dumps(spec))
        counts = [len(r["labels"]) for r in results]
        assert counts == ([4] * len(images) if expect_all else [sum(e["probability"] >= 0.999 for e in r["top"])
                                                                for r in results])
    # --threshold overrides the stored ones, on the command line too
    from vislab.cli import main

    assert main(["predict", str(run), *map(str, images[:3]), "--format", "json", "--threshold", "0.001",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [len(r["labels"]) for r in out] == [4, 4, 4]


@needs_fmnist
def test_evaluate_threshold_override_and_refusal_for_classification(mosaic_run, tmp_path):
    from vislab import api
    from vislab.core.errors import ConfigError
    from vislab.tasks import get_task

    run, _ = mosaic_run
    tuned = (run / "metrics.json").read_bytes()
    metrics = api.evaluate(run, split="val", device="cpu", threshold=0.5)
    assert set(metrics["thresholds"].values()) == {0.5}
    assert (run / "metrics_val_threshold0.5.json").is_file()  # its own file: never the tuned numbers'
    metrics = api.evaluate(run, device="cpu", threshold=0.5)
    assert metrics["split"] == "test" and (run / "metrics_test_threshold0.5.json").is_file()
    assert (run / "metrics.json").read_bytes() == tuned
    with pytest.raises(ConfigError, match="takes no --threshold"):
        get_task("classification").set_options(threshold=0.5)


def test_data_only_scored_may_carry_one_label_or_a_label_in_one_row(tmp_path):
    """`vislab evaluate --data`: a few new images, labelled with some of the model's classes."""
    names = _images(tmp_path, 3)
    path = _csv(tmp_path, "file,labels", [f"{names[0]},cat", f"{names[1]},cat", f"{names[2]},cat dog"])
    with pytest.raises(DataError, match="appears in one row only"):
        load_multilabel_dataset(_cfg(path))
    scored = load_multilabel_dataset(_cfg(path), scoring=True)
    assert scored.class_names == ["cat", "dog"] and scored.splits["train"].labels.tolist() == [[1, 0], [1, 0], [1, 1]]
    alone = _csv(tmp_path, "file,labels", [f"{names[0]},cat"], name="one.csv")
    assert load_multilabel_dataset(_cfg(alone), scoring=True).class_names == ["cat"]


def test_multilabel_csv_without_a_file_column_says_so(tmp_path):
    path = _csv(tmp_path, "picture,labels", ["a.png,cat dog"])
    with pytest.raises(DataError, match=r"no column of image file names found .*\['picture', 'labels'\].*--file-col"):
        load_multilabel_dataset(_cfg(path))


def test_predict_figure_titles_each_image_with_its_label_set(tmp_path, monkeypatch):
    """`vislab predict --figure` on a multi-label run: the labels at or above their thresholds, then top-1."""
    import vislab.viz.predictions as viz
    from conftest import digits_arrays, write_image
    from vislab.api import _draw_predictions

    images, _ = digits_arrays(per_class=1)
    files = [write_image(tmp_path / f"{i}.png", image) for i, image in enumerate(images[:2])]
    results = [{"file": str(files[0]), "labels": [{"class": "cat", "probability": 0.9, "threshold": 0.5},
                                                 {"class": "dog", "probability": 0.6, "threshold": 0.4}],
                "top": [{"class": "cat", "probability": 0.9}]},
               {"file": str(files[1]), "labels": [], "top": [{"class": "dog", "probability": 0.2}]}]
    drawn = {}
    real = viz.plot_topk
    monkeypatch.setattr(viz, "plot_topk", lambda images, predictions, path, titles=None: drawn.update(
        titles=titles) or real(images, predictions, path, titles=titles))
    assert _draw_predictions(results, tmp_path / "figure.png").is_file()
    assert drawn["titles"] == ["labels: cat, dog", "labels: no label"]
