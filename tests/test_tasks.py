"""Tasks plug in: a new task, defined here and nowhere in vislab, trains through the normal fit.

The task regresses a digit's value (0..9) from scikit-learn's digits: one output,
MSE loss, MSE and MAE as metrics, MAE minimised. Nothing in train/, evaluate/ or
report/ knows about it; its metrics must still reach history.csv, metrics.json and
the report, and early stopping on ``val_mae`` must minimise.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from vislab.core.config import resolve_config
from vislab.tasks import Metric, Task, register_task


# ---------------------------------------------------------------- the whole task: under 40 lines
@register_task
class DigitValue(Task):
    """Regression of the digit's value; the split's labels (class indices "0".."9") are the values."""

    name = "digit-value"
    headline = "mae"
    metrics = (Metric("mse", "min"), Metric("mae", "min"))

    def num_outputs(self, class_names):
        return 1

    def targets(self, labels):
        return labels.float()

    def loss(self, outputs, targets, reduction="mean"):
        return torch.nn.functional.mse_loss(outputs[:, 0].float(), targets.float(), reduction=reduction)

    def batch_stats(self, outputs, targets):
        error = outputs[:, 0].float() - targets.float()
        return {"squared": (error ** 2).sum().double(), "absolute": error.abs().sum().double()}

    def epoch_metrics(self, sums, count):
        return {"mse": float(sums["squared"]) / max(count, 1), "mae": float(sums["absolute"]) / max(count, 1)}

    def describe(self, output, class_names, top_k=5):
        return {"value": float(output[0])}

    # what the run folder and the report show: the task's own, through the same hooks the shipped tasks use
    def save_metrics(self, metrics, run_dir, filename="metrics.json"):
        path = super().save_metrics(metrics, run_dir, filename)
        (path.parent / f"{path.stem}_errors.txt").write_text(f"mae {metrics['mae']:.6f}\n")
        return path

    def report_metrics(self, metrics):
        return [("mean absolute error (digits)", metrics["mae"]), *super().report_metrics(metrics)]

    def report_sections(self):
        return [("digit-errors", "Digit errors", lambda report: (report.run_dir / "metrics_errors.txt").read_text())]
# ----------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    from vislab.pipelines import train

    out = tmp_path_factory.mktemp("tasks") / "digit-value"
    cfg = resolve_config(overrides={
        "task": "digit-value", "data.source": "digits", "model.name": "mlp", "model.input_size": [8, 8],
        "model.options": {"hidden": [64]}, "train.epochs": 12, "train.lr": 3e-3, "train.batch_size": 64,
        "train.early_stopping.monitor": "val_mae", "train.early_stopping.patience": 2, "out": str(out),
        "train.sampler": "balanced",  # the default draw weights (per class index) serve a new task as they are
    })
    return train(cfg, progress=False)


def test_new_task_metrics_reach_history_metrics_and_report(regression_run):
    run = regression_run.run_dir
    with open(run / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "train_mse", "train_mae", "val_loss", "val_mse", "val_mae",
                             "lr", "seconds"]
    maes = [float(r["val_mae"]) for r in rows]
    assert maes[-1] < maes[0] and maes[-1] < 2.0  # it learned something: predicting the mean gives ~2.5
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "digit-value" and 0 < metrics["mae"] < 2.0 and metrics["mse"] > 0
    assert json.loads((run / "model.json").read_text())["task"] == "digit-value"
    page = (run / "report.html").read_text()
    assert "val_mae" in page and "mae" in page and "Misclassified" not in page
    assert "<h3>Per class</h3>" not in page and "calibration error" not in page  # classification's rows stay its own


def test_new_task_writes_its_metrics_file_and_report_through_its_hooks(regression_run):
    run = regression_run.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "metrics_errors.txt").read_text() == f"mae {metrics['mae']:.6f}\n"  # Task.save_metrics
    page = (run / "report.html").read_text()
    assert "mean absolute error (digits)" in page  # Task.report_metrics
    assert 'id="digit-errors"' in page and f"mae {metrics['mae']:.6f}" in page  # Task.report_sections
    assert "balanced" in (run / "config.yaml").read_text()  # trained with --sampler balanced


def test_early_stopping_minimises_the_tasks_metric(regression_run):
    rows = regression_run.history
    maes = [r["val_mae"] for r in rows]
    # MAE falls from epoch 1 to 2 to 3: a maximising stopper would take that for no improvement and
    # stop at epoch 3 with the minimum at its last epoch; a minimising one stops `patience` after it
    assert maes[1] < maes[0]
    if regression_run.stopped_early:
        best = maes.index(min(maes))
        assert len(maes) - 1 - best == 2  # stopped exactly `patience` epochs after the minimum
    else:
        assert len(maes) == 12


def test_the_tasks_direction_comes_from_its_metrics():
    task = DigitValue()
    assert task.mode("val_mae") == "min" and task.mode("train_loss") == "min"
    from vislab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="val_acc.*not a metric of the digit-value task.*mse, mae"):
        task.mode("val_acc")


def test_predict_uses_the_tasks_answer(regression_run, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    from vislab import api

    digit = load_digits().images[0]  # a 0
    Image.fromarray((digit * 255 / 16).astype("uint8")).save(tmp_path / "zero.png")
    (answer,) = api.predict(regression_run.run_dir, [tmp_path / "zero.png"], device="cpu")
    assert set(answer) == {"file", "value"} and -1.5 < answer["value"] < 3.0


def _labelled(names, labels):
    from vislab.data.sources import Dataset, Split

    return Dataset("new", list(names), {"test": Split(labels=torch.as_tensor(labels), images=torch.zeros(
        (len(labels), 1, 4, 4), dtype=torch.uint8), name="test")})


def test_each_task_renumbers_data_with_some_of_the_models_classes_by_name():
    """`vislab evaluate --data` on data with some of the model's classes: the labels follow the names."""
    from vislab.core.errors import DataError
    from vislab.tasks import get_task

    model = ["cat", "dog", "fox", "owl"]
    single = get_task("classification").align_classes(_labelled(["fox", "cat"], [0, 1, 1]), model, "new")
    assert single.class_names == model and single.splits["test"].labels.tolist() == [2, 0, 0]
    sets = get_task("multilabel").align_classes(_labelled(["owl", "dog"], [[1, 0], [1, 1]]), model, "new")
    assert sets.splits["test"].labels.tolist() == [[0, 0, 0, 1], [0, 1, 0, 1]]
    with pytest.raises(DataError, match=r"new: 1 of its classes are not the model's \(\['bat'\]\)"):
        get_task("classification").align_classes(_labelled(["bat", "cat"], [0, 1]), model, "new")
    # a class whose name holds a slash is a folder with "-" or "_" in its place (Fashion-MNIST's "T-shirt/top")
    fashion = ["T-shirt/top", "Trouser", "Pullover"]
    folders = get_task("classification").align_classes(_labelled(["Pullover", "T-shirt-top"], [0, 1]), fashion, "new")
    assert folders.splits["test"].labels.tolist() == [2, 0]
    assert get_task("classification").align_classes(_labelled(["T-shirt_top"], [0]), fashion, "new").class_names == fashion
    with pytest.raises(DataError, match=r"\['Tshirt'\].*a folder for 'T-shirt/top' is named 'T-shirt-top'"):
        get_task("classification").align_classes(_labelled(["Tshirt"], [0]), fashion, "new")
    # a mask's values are class indices: the model's first classes only, never renumbered
    masks = _labelled(["0", "1"], np.zeros((1, 4, 4), np.int64))
    assert get_task("segmentation").align_classes(masks, ["0", "1", "2"], "new").class_names == ["0", "1", "2"]
    with pytest.raises(DataError, match="in another order"):
        get_task("segmentation").align_classes(_labelled(["1", "0"], np.zeros((1, 4, 4), np.int64)), ["0", "1"],
                                               "new")
