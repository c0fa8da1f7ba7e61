"""A class of the model with no test image: undefined numbers are None and it is left out of the macro
averages (scikit-learn's rule: the classes in the truth or the predictions), with a note and a console line."""

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import digits_arrays, write_image
from vislab.tasks.classification_metrics import classification_metrics


def _onehot_probs(pred, k):
    probs = np.full((len(pred), k), 0.1 / (k - 1))
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


def test_class_without_images_or_predictions_is_null_and_left_out_of_the_macro_averages():
    # the model knows astro, cat, coffee; the data holds 5 cats and 5 coffees, all predicted right
    y = np.array([1] * 5 + [2] * 5)
    m = classification_metrics(y, _onehot_probs(y, 3), ["astro", "cat", "coffee"])
    astro = m["per_class"][0]
    assert astro["support"] == 0 and astro["predicted"] == 0
    assert astro["precision"] is None and astro["recall"] is None and astro["f1"] is None
    assert astro["roc_auc"] is None and astro["average_precision"] is None
    assert m["macro_f1"] == 1.0 and m["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert m["weighted"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert m["balanced_accuracy"] == 1.0 and m["accuracy"] == 1.0
    assert m["roc_auc_macro"] == 1.0 and "astro" not in m["curves"]["roc"]
    assert any(note.startswith("no test image of astro: left out of the macro averages") for note in m["notes"])


def test_class_absent_from_the_truth_but_predicted_keeps_precision_zero_and_counts():
    # no astro image, but one cat is predicted astro: a real false positive
    y = np.array([1] * 5 + [2] * 5)
    pred = y.copy()
    pred[0] = 0
    m = classification_metrics(y, _onehot_probs(pred, 3), ["astro", "cat", "coffee"])
    astro = m["per_class"][0]
    assert astro["support"] == 0 and astro["predicted"] == 1
    assert astro["precision"] == 0.0 and astro["f1"] == 0.0 and astro["recall"] is None
    labels = [0, 1, 2]  # scikit-learn's own classes: those in the truth or the predictions
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, labels=labels, average="macro"))
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    assert m["macro"] == pytest.approx({"precision": p, "recall": r, "f1": f})
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(0.9)  # recall over cat and coffee only
    assert not any(note.startswith("no test image of") for note in m["notes"])
    assert any("absent from the test labels but predicted" in note and "'astro'" in note for note in m["notes"])
    assert all(v is None or math.isfinite(v) for row in m["per_class"] for v in row.values() if not isinstance(v, str))


def test_binary_positive_class_without_images_or_predictions_is_null():
    m = classification_metrics([0, 0, 0], [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]], ["cat", "dog"])
    assert m["binary"] == {"precision": None, "recall": None, "f1": None}
    assert m["macro_f1"] == 1.0 and m["per_class"][1]["f1"] is None


def test_evaluate_on_data_of_some_classes_notes_the_absent_one(tmp_path, capsys):
    from vislab.cli import main

    images, labels = digits_arrays(per_class=30)
    for i, (image, label) in enumerate(zip(images, labels)):
        if label in (0, 1, 6):
            write_image(tmp_path / "digits" / str(label) / f"{i}.png", image)
            if label in (1, 6):
                write_image(tmp_path / "other" / str(label) / f"{i}.png", image)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "digits"), "--model", "mlp", "--epochs", "1", "--no-figures",
                 "--out", str(run), "--seed", "0"]) == 0
    own = json.loads((run / "metrics.json").read_text())
    assert not any("no test image" in note for note in own["notes"])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(tmp_path / "other"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "evaluated 60 test images: test accuracy: " in out
    assert "(1 of the model's 3 classes has no image here: 0)" in out
    m = json.loads((run / "metrics_other_test.json").read_text())
    zero = m["per_class"][0]
    assert zero["class"] == "0" and zero["support"] == 0 and zero["recall"] is None
    scored = [row for row in m["per_class"] if row["support"] or row["predicted"]]
    assert m["macro_f1"] == pytest.approx(np.mean([row["f1"] for row in scored]))
    assert m["macro"]["precision"] == pytest.approx(np.mean([row["precision"] for row in scored]))
    if zero["predicted"] == 0:
        assert zero["precision"] is None and zero["f1"] is None
        assert any(note.startswith("no test image of 0: left out of the macro averages") for note in m["notes"])
    else:
        assert zero["precision"] == 0.0
