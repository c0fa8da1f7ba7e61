"""Metrics equal scikit-learn's and hand-computed values on small fixed prediction sets."""

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from vislab.tasks.base import load_metrics, write_metrics
from vislab.tasks.classification_metrics import calibration_bins, classification_metrics

# 6 samples, 3 classes: hand-checkable.
Y3 = np.array([0, 0, 1, 1, 2, 2])
P3 = np.array(
    [
        [0.7, 0.2, 0.1],  # right (0)
        [0.2, 0.5, 0.3],  # wrong: predicted 1
        [0.1, 0.8, 0.1],  # right (1)
        [0.3, 0.4, 0.3],  # right (1)
        [0.1, 0.3, 0.6],  # right (2)
        [0.5, 0.1, 0.4],  # wrong: predicted 0
    ]
)
NAMES3 = ["cat", "dog", "bird"]


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def _assert_no_nan(metrics):
    for v in _walk(metrics):
        if isinstance(v, float):
            assert math.isfinite(v), metrics
    json.dumps(metrics, allow_nan=False)  # raises on NaN/inf


def test_hand_computed_multiclass():
    m = classification_metrics(Y3, P3, NAMES3, top_k=2)
    assert m["task"] == "multiclass"
    assert m["accuracy"] == pytest.approx(4 / 6)
    # top-2: sample 1 (true 0) has 0.2 < 0.5, 0.3 -> miss; sample 5 (true 2): 0.4 is 2nd -> hit
    assert m["top_k"] == 2 and m["top_k_accuracy"] == pytest.approx(5 / 6)
    # loss = mean(-log p_true)
    p_true = P3[np.arange(6), Y3]
    assert m["loss"] == pytest.approx(float(np.mean(-np.log(p_true))))
    cat, dog, bird = m["per_class"]
    # cat: predicted at samples 0 and 5 -> precision 1/2, recall 1/2
    assert (cat["precision"], cat["recall"], cat["support"], cat["predicted"]) == (0.5, 0.5, 2, 2)
    # dog: predicted at 1, 2, 3 -> precision 2/3, recall 1
    assert dog["precision"] == pytest.approx(2 / 3) and dog["recall"] == 1.0
    assert dog["f1"] == pytest.approx(0.8)
    # bird: predicted at 4 only -> precision 1, recall 1/2, f1 2/3
    assert bird["precision"] == 1.0 and bird["recall"] == 0.5 and bird["f1"] == pytest.approx(2 / 3)
    assert m["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # cat vs rest scores: positives 0.7, 0.2; negatives 0.1 0.3 0.1 0.5 -> pairs won: 4 + 2 = 6 of 8
    assert cat["roc_auc"] == pytest.approx(6 / 8)
    assert m["curves"]["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_equals_sklearn_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    logits = rng.normal(size=(300, 5)) + 2.0 * np.eye(5)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs, list("abcde"), top_k=3)
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["top_k_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, probs, k=3))
    assert m["loss"] == pytest.approx(skm.log_loss(y, probs))
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=avg)
        assert (m[avg]["precision"], m[avg]["recall"], m[avg]["f1"]) == pytest.approx((p, r, f))
    f1s = skm.f1_score(y, pred, average=None)
    assert [row["f1"] for row in m["per_class"]] == pytest.approx(f1s)
    assert m["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    onehot = np.eye(5)[y]
    assert m["roc_auc_micro"] == pytest.approx(skm.roc_auc_score(onehot, probs, average="micro"))
    assert m["average_precision_macro"] == pytest.approx(skm.average_precision_score(onehot, probs, average="macro"))
    assert m["average_precision_micro"] == pytest.approx(skm.average_precision_score(onehot, probs, average="micro"))
    assert m["curves"]["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    # the caller's loss wins
    assert classification_metrics(y, probs, list("abcde"), loss=0.123)["loss"] == 0.123


def test_each_curve_is_computed_once_and_its_auc_is_sklearns_number_exactly():
    # tied scores (rounded probabilities) and an absent class: where ROC bookkeeping can differ
    rng = np.random.default_rng(1)
    y = rng.choice([0, 1, 2, 4], 400)
    probs = rng.dirichlet(np.ones(5), 400).round(2)
    m = classification_metrics(y, probs, list("abcde"))
    for c, row in enumerate(m["per_class"]):
        if c == 3:
            assert row["roc_auc"] is None and row["average_precision"] is None
            continue
        assert row["roc_auc"] == skm.roc_auc_score(y == c, probs[:, c])
        assert row["average_precision"] == skm.average_precision_score(y == c, probs[:, c])
        assert m["curves"]["roc"][row["class"]]["auc"] == row["roc_auc"]
    onehot = np.eye(5)[y]
    assert m["roc_auc_micro"] == skm.roc_auc_score(onehot, probs, average="micro")
    assert m["average_precision_micro"] == skm.average_precision_score(onehot, probs, average="micro")
    assert m["curves"]["roc_micro"]["auc"] == m["roc_auc_micro"] and m["curves"]["pr_micro"]["ap"] == m["average_precision_micro"]


def test_binary_is_evaluated_as_binary():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.65, 0.3, 0.9, 0.7])
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, probs, ["cat", "dog"])
    pred = (p1 > 0.5).astype(int)
    assert m["task"] == "binary" and m["positive_class"] == "dog"
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p1))
    assert m["binary"]["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["binary"]["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["top_k_accuracy"] is None
    assert list(m["curves"]["roc"]) == ["dog"]
    # hand: positives .8 .65 .3 .9; negatives .1 .4 .35 .7; pairs won per positive:
    # .8>{.1,.4,.35,.7}=4, .65>{.1,.4,.35}=3, .3>{.1}=1, .9=4 -> 12/16
    assert m["roc_auc"] == pytest.approx(12 / 16)
    _assert_no_nan(m)


def test_zero_prediction_class_and_absent_class_give_no_nan():
    # class "c" is never predicted; class "d" never appears in the labels (but is predicted once)
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.9, 0.05, 0.03, 0.02],
            [0.6, 0.3, 0.05, 0.05],
            [0.1, 0.8, 0.05, 0.05],
            [0.2, 0.2, 0.1, 0.5],
            [0.5, 0.3, 0.1, 0.1],
            [0.3, 0.5, 0.1, 0.1],
        ]
    )
    m = classification_metrics(y, probs, list("abcd"))
    _assert_no_nan(m)
    c, d = m["per_class"][2], m["per_class"][3]
    assert c["predicted"] == 0 and c["precision"] == 0.0 and c["recall"] == 0.0
    assert d["support"] == 0 and d["recall"] is None and d["roc_auc"] is None
    assert any("absent" in note and "'d'" in note for note in m["notes"])
    assert any("never predicted" in note and "'c'" in note for note in m["notes"])
    # macro AUC averages the three defined classes only
    defined = [row["roc_auc"] for row in m["per_class"][:3]]
    assert m["roc_auc_macro"] == pytest.approx(np.mean(defined))
    assert "d" not in m["curves"]["roc"]


def test_single_class_labels_and_binary_absent_class():
    m = classification_metrics([1, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], ["cat", "dog"])
    _assert_no_nan(m)
    assert m["roc_auc"] is None and m["accuracy"] == pytest.approx(1 / 3)


def test_calibration_matches_sklearn_and_hand_ece():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.5 + 0.4 * (2 * y - 1) * rng.random(200) + 0.1 * rng.normal(size=200), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    cal = calibration_bins(y, probs, n_bins=10)
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(int)
    frac, mean_conf = __import__("sklearn.calibration", fromlist=["x"]).calibration_curve(
        correct, conf, n_bins=10, strategy="uniform"
    )
    filled = [b for b in cal["bins"] if b["count"]]
    assert [b["accuracy"] for b in filled] == pytest.approx(frac)
    assert [b["confidence"] for b in filled] == pytest.approx(mean_conf)
    assert sum(b["count"] for b in cal["bins"]) == 200
    # hand: two samples, both in the 0.9-1.0 bin; one right (0.95), one wrong (0.91)
    hand = calibration_bins([0, 0], [[0.95, 0.05], [0.09, 0.91]], n_bins=10)
    assert hand["ece"] == pytest.approx(abs(0.5 - 0.93))


def test_save_keeps_metrics_json_small(tmp_path):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 5000)
    probs = rng.dirichlet(np.ones(10), size=5000)
    m = classification_metrics(y, probs, [f"c{i}" for i in range(10)])
    assert all(len(curve["fpr"]) <= 200 for curve in m["curves"]["roc"].values())
    write_metrics(m, tmp_path)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert "curves" not in summary and summary["accuracy"] == m["accuracy"] and "loss" in summary
    assert (tmp_path / "metrics.json").stat().st_size < 20_000
    assert load_metrics(tmp_path)["curves"]["roc"].keys() == m["curves"]["roc"].keys()


def test_bad_input_messages():
    with pytest.raises(ValueError, match="single-sigmoid"):
        classification_metrics([0, 1], np.array([0.2, 0.8]), ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        classification_metrics([0, 1], [[0.2, 0.8], [0.5, 0.5]], ["a"])
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], np.zeros((0, 2)), ["a", "b"])
