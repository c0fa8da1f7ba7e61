"""Label issues (`vislab audit --label-issues`): planted label errors in real digits are found, with the
true class suggested; too little data and a single class are one-line errors; `train --exclude` and
`--relabel` change the training set and are recorded in config.yaml."""

from __future__ import annotations

import csv
import json
import types

import numpy as np
import pytest
import torch
import yaml

from conftest import digits_arrays, write_image
from vislab import api
from vislab.cli import main
from vislab.core.errors import DataError
from vislab.data.sources import Dataset, Split, load_dataset
from vislab.train.label_issues import find_label_issues

PER_CLASS = 30
PLANTED = 15  # 5 % of 300 images moved into a wrong class's folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """300 real digits as PNG class folders, 15 of them in a wrong class's folder; the audit run once."""
    root = tmp_path_factory.mktemp("planted")
    images, labels = digits_arrays(per_class=PER_CLASS)
    rng = np.random.default_rng(0)
    moved = set(rng.choice(len(labels), PLANTED, replace=False).tolist())
    truth = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        given = (label + 1 + rng.integers(9)) % 10 if i in moved else label
        path = write_image(root / "data" / str(given) / f"{i:04d}.png", image, size=8)
        if i in moved:
            truth[str(path.resolve())] = str(label)
    audit = api.audit(str(root / "data"), out=root / "audit", label_issues=True, val_split=0, test_split=0)
    return root, truth, audit


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_planted_label_errors_are_found_first_with_the_true_class_suggested(planted):
    root, truth, audit = planted
    rows = _rows(root / "audit" / "label_issues.csv")
    assert list(rows[0]) == ["file", "given", "suggested", "score", "split"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)  # most likely first
    top = [r["file"] for r in rows[:PLANTED]]
    found = [r for r in rows if r["file"] in truth]
    # 8x8 digits, 30 a class, are a small set for a CNN per fold: the floors below are what it supports;
    # a random ranking puts under 1 planted image in the top 15. benchmarks/bench_label_issues.py
    # measures the real targets on Fashion-MNIST.
    assert sum(f in truth for f in top) >= 0.5 * PLANTED, (top, sorted(truth))
    assert len(found) >= 0.6 * PLANTED
    assert sum(r["suggested"] == truth[r["file"]] for r in found) >= 0.8 * len(found)
    # the flagged images are a small share of the data, not everything the model hesitates on
    assert len(rows) <= 3 * PLANTED
    section = json.loads((root / "audit" / "audit.json").read_text())["label_issues"]
    assert section["issues"] == len(rows) == audit["label_issues"]["issues"]
    assert section["images_checked"] == 10 * PER_CLASS and section["folds"] == 5
    # small images: the mean of a CNN per fold, trained from the pixels, and the logistic regressions on
    # the backbone's features (label_issues.out_of_fold_model); one label per image: prune_by_class
    assert section["model"].startswith("mean probabilities of chollet_convnet")
    assert section["top"][0]["file"] == rows[0]["file"]
    assert [m.split(" ")[0] for m in section["models"]] == ["chollet_convnet", "efficientnet_lite0"]
    assert len(section["out_of_fold_accuracy_per_model"]) == 2 and section["filter_by"] == "prune_by_class"
    assert section["features"]["backbone"] == "efficientnet_lite0"
    assert (root / "audit" / section["figure"]).is_file()
    page = (root / "audit" / "report.html").read_text()
    assert "<h2>Label issues</h2>" in page and "label_issues.png" in page


def test_larger_images_use_the_backbones_features_and_a_second_audit_reuses_them(tmp_path):
    """The features are kept for the same files (path, size, modification time), never for files written in
    the last seconds (core.files.stat_digest: a file rewritten within the clock's resolution keeps both)."""
    import os
    import time

    from vislab.train.label_issues import _cache_path

    images, labels = digits_arrays(per_class=6)
    written = [write_image(tmp_path / "data" / str(label) / f"{i:03d}.png", image, size=72)  # above CNN_MAX_SIDE
               for i, (image, label) in enumerate(zip(images, labels))]
    split = load_dataset(api.make_config(data=str(tmp_path / "data"), val_split=0, test_split=0).data).splits["train"]
    preprocessing = types.SimpleNamespace(input_size=(3, 72, 72), mean=(0.5,), std=(0.5,), interpolation="bilinear",
                                          crop_pct=1.0)
    assert _cache_path(split, preprocessing) is None  # just written: not trusted
    hour_ago = time.time() - 3600
    for path in written:
        os.utime(path, (hour_ago, hour_ago))
    assert _cache_path(split, preprocessing) is not None
    first = api.audit(str(tmp_path / "data"), out=tmp_path / "a", label_issues=True, folds=3, val_split=0,
                      test_split=0)["label_issues"]
    assert first["model"].startswith("efficientnet_lite0 features") and first["features"]["cached"] == []
    again = api.audit(str(tmp_path / "data"), out=tmp_path / "b", label_issues=True, folds=3, val_split=0,
                      test_split=0)["label_issues"]
    assert again["features"]["cached"] == ["train"]
    assert _rows(tmp_path / "b" / "label_issues.csv") == _rows(tmp_path / "a" / "label_issues.csv")


def test_exclude_and_relabel_change_the_training_set_and_are_recorded(planted, tmp_path):
    root, truth, _ = planted
    issues = root / "audit" / "label_issues.csv"
    rows = _rows(issues)
    data = str(root / "data")
    whole = load_dataset(api.make_config(data=data, val_split=0, test_split=0).data)
    excluded = load_dataset(api.make_config(data=data, val_split=0, test_split=0, exclude=str(issues)).data)
    assert len(excluded.splits["train"]) == len(whole.splits["train"]) - len(rows)
    assert not {r["file"] for r in rows} & {str(p) for p in excluded.splits["train"].paths}
    relabelled = load_dataset(api.make_config(data=data, val_split=0, test_split=0, relabel=str(issues)).data)
    train = relabelled.splits["train"]
    new = {p: train.labels[i].item() for i, p in enumerate(train.paths)}
    assert all(relabelled.class_names[new[r["file"]]] == r["suggested"] for r in rows)
    assert sum(relabelled.class_names[new[f]] == t for f, t in truth.items()) >= 0.5 * PLANTED

    run = tmp_path / "run"
    assert main(["train", "--data", data, "--model", "mlp", "--epochs", "1", "--exclude", str(issues),
                 "--precision", "fp32", "--no-figures", "--no-evaluate", "--out", str(run), "--no-progress"]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["exclude"] == str(issues) and config["data"]["relabel"] is None
    counts = json.loads((run / "audit.json").read_text())["class_balance"]["totals"]
    assert sum(counts.values()) == 10 * PER_CLASS - len(rows)


def test_exclude_names_a_file_of_other_data(planted, tmp_path, capsys):
    stray = tmp_path / "other.csv"
    stray.write_text("file,given,suggested,score,split\n/elsewhere/a.png,1,2,0.1,train\n")
    code = main(["train", "--data", str(planted[0] / "data"), "--exclude", str(stray), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "--exclude" in err and "none of its 1 file(s)" in err


def _in_memory(labels):
    labels = torch.as_tensor(labels)
    return Dataset("toy", ["a", "b", "c"], {"train": Split(labels, images=torch.zeros(len(labels), 1, 8, 8,
                                                                                        dtype=torch.uint8))})


def test_too_few_images_per_class_says_how_many_the_folds_need(tmp_path):
    with pytest.raises(DataError, match=r"class 'c' has 3 image\(s\); 5-fold out-of-fold scoring needs at least 5 "
                                        r"images per class.*--folds 3"):
        find_label_issues(_in_memory([0] * 10 + [1] * 10 + [2] * 3), tmp_path)
    with pytest.raises(DataError, match="at least 2 are needed"):
        find_label_issues(_in_memory([0] * 10 + [1] * 10 + [2]), tmp_path, folds=3)


def test_a_single_class_is_refused(tmp_path, capsys):
    with pytest.raises(DataError, match=r"only one class \('a'\) has images"):
        find_label_issues(_in_memory([0] * 20), tmp_path)
    images, _ = digits_arrays(per_class=2)
    for i, image in enumerate(images[:6]):
        write_image(tmp_path / "one" / "seven" / f"{i}.png", image, size=8)
    code = main(["audit", "--data", str(tmp_path / "one"), "--label-issues", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("vislab audit: error:"), err


def test_multilabel_data_uses_cleanlab_multilabel_support(tmp_path):
    """Digits with two labels each (the digit's parity and 'round' for 0/6/8/9); 10 parity labels flipped."""
    images, labels = digits_arrays(per_class=12)
    rng = np.random.default_rng(1)
    flipped = set(rng.choice(len(labels), 10, replace=False).tolist())
    lines = ["file,labels"]
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(tmp_path / "img" / f"{i:04d}.png", image, size=8)
        parity = "even" if (label % 2 == 0) != (i in flipped) else "odd"
        lines.append(f"img/{i:04d}.png,{parity}{' round' if label in (0, 6, 8, 9) else ''}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    audit = api.audit(str(tmp_path / "labels.csv"), out=tmp_path / "audit", task="multilabel", label_issues=True,
                      val_split=0, test_split=0)
    section = audit["label_issues"]
    assert section["multi_label"] and "multilabel_classification" in section["method"]
    assert section["filter_by"] == "prune_by_noise_rate" and len(section["models"]) == 1
    rows = _rows(tmp_path / "audit" / "label_issues.csv")
    names = {str((tmp_path / "img" / f"{i:04d}.png").resolve()) for i in flipped}
    # parity is a union of 5 digits, hard for a linear model on 120 images: a random ranking puts about
    # 1 flipped image in the top 10
    assert sum(r["file"] in names for r in rows[:10]) >= 3, rows[:10]
    parity = [r for r in rows if r["file"] in names]
    # the suggestion swaps the parity label back
    assert sum(("even" in r["given"]) != ("even" in r["suggested"]) for r in parity) >= len(parity) / 2 > 1
