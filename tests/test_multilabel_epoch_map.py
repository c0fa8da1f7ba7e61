"""Multi-label: the per-epoch val_map is the evaluation's mAP (scikit-learn's AP), not a histogram's."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.tasks.multilabel import MultiLabel, multilabel_metrics


def _sklearn_map(y: np.ndarray, probs: np.ndarray) -> float:
    """The evaluation's definition: scikit-learn's AP per label with a positive, averaged."""
    from sklearn.metrics import average_precision_score

    y = y.astype(np.int64)
    probs = probs.astype(np.float64)
    return float(np.mean([average_precision_score(y[:, k], probs[:, k]) for k in range(y.shape[1]) if y[:, k].any()]))


def _validation_map(task: MultiLabel, logits: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """As Trainer.evaluate_batches: batch statistics under inference mode, summed, then the epoch metrics."""
    from vislab.tasks.base import accumulate

    sums: dict = {}
    with torch.inference_mode():
        for start in range(0, len(y), batch):
            accumulate(sums, task.batch_stats(logits[start:start + batch], y[start:start + batch]))
        return task.epoch_metrics({k: v.double() for k, v in sums.items()}, len(y))["map"]


def test_saturated_probabilities_give_the_evaluations_map():
    # label 0: positives at 0.9986 and 0.9990, negatives at 0.9866 and 0.9960 (a 200-bin histogram ties
    # 0.9960 with 0.9986 and 0.9990); label 1 at the other end; label 2 has no positive (left out)
    probs = np.array([[0.9986, 0.0010, 0.2], [0.9866, 0.0100, 0.3], [0.9990, 0.0004, 0.1], [0.9960, 0.0007, 0.4],
                      [0.2000, 0.0030, 0.5], [0.9700, 0.0002, 0.6]], dtype=np.float32)
    y = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    logits = torch.logit(torch.tensor(probs, dtype=torch.float64)).float()
    scored = torch.sigmoid(logits).numpy()  # what the model's logits mean: the evaluation's probabilities
    expected = _sklearn_map(y, scored)
    assert expected == pytest.approx(multilabel_metrics(y, scored, ["a", "b", "c"], 0.5)["map"], abs=1e-12)
    task = MultiLabel()
    for batch in (6, 4, 1):
        assert _validation_map(task, logits, torch.tensor(y), batch) == pytest.approx(expected, abs=1e-9)


def test_validation_map_matches_sklearn_on_many_near_ties_and_the_next_pass_starts_afresh():
    rng = np.random.default_rng(3)
    y = (rng.random((600, 5)) < 0.3).astype(np.float32)
    # everything within 0.008 above 0.5 or 0.99: a 200-bin histogram sees a few tied scores per label
    centre = np.where(rng.random((600, 1)) < 0.5, 0.5, 0.99)
    logits = torch.logit(torch.tensor(centre + rng.random((600, 5)) * 0.004 * (1 + y), dtype=torch.float64)).float()
    scored = torch.sigmoid(logits).numpy()
    task = MultiLabel()
    first = _validation_map(task, logits, torch.tensor(y), 64)
    assert first == pytest.approx(_sklearn_map(y, scored), abs=1e-9)
    # a second validation pass (the next epoch) on other predictions scores only its own rows
    assert _validation_map(task, logits[:300], torch.tensor(y[:300]), 50) == pytest.approx(
        _sklearn_map(y[:300], scored[:300]), abs=1e-9)


def test_validation_map_cost_for_10000_images_and_20_labels():
    rng = np.random.default_rng(0)
    y = torch.tensor((rng.random((10_000, 20)) < 0.2).astype(np.float32))
    logits = torch.tensor(rng.normal(size=(10_000, 20)).astype(np.float32))
    import sklearn.metrics  # noqa: F401  (imported once per process: a training run has done it before)

    task = MultiLabel()
    start = time.perf_counter()  # the validation pass's statistics and its epoch metrics
    value = _validation_map(task, logits, y, 256)
    seconds = time.perf_counter() - start
    assert value == pytest.approx(_sklearn_map(y.numpy(), torch.sigmoid(logits).numpy()), abs=1e-9)
    assert seconds < 3.0, f"10,000 x 20 validation mAP took {seconds:.2f} s"  # about 0.1 s; shared CI cores


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from vislab.tasks.base import accumulate
    from vislab.train.distributed import DistContext, all_reduce_sum

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        data = np.load(out + ".npz")
        logits, y = torch.tensor(data["logits"]), torch.tensor(data["y"])
        task, sums = MultiLabel(), {}
        with torch.inference_mode():
            # ranks take uneven shares, as the ragged last batch of a sharded evaluation leaves them
            for index in np.array_split(np.arange(len(y))[rank::world], 3 - rank):
                accumulate(sums, task.batch_stats(logits[index], y[index]))
            keys = sorted(sums)
            reduced = all_reduce_sum(DistContext(rank, world, rank, "gloo"), *(sums[k] for k in keys))
            value = task.epoch_metrics(dict(zip(keys, reduced)), len(y))["map"]
        Path(f"{out}.{rank}").write_text(repr(value))
    finally:
        dist.destroy_process_group()


def test_validation_map_under_ddp_gathers_every_ranks_rows(tmp_path):
    import torch.multiprocessing as mp

    rng = np.random.default_rng(1)
    y = (rng.random((101, 4)) < 0.3).astype(np.float32)
    logits = torch.logit(torch.tensor(0.99 + rng.random((101, 4)) * 0.009, dtype=torch.float64)).float()
    out = str(tmp_path / "ddp")
    np.savez(out + ".npz", logits=logits.numpy(), y=y)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    expected = _sklearn_map(y, torch.sigmoid(logits).numpy())
    for rank in range(2):
        assert float(Path(f"{out}.{rank}").read_text()) == pytest.approx(expected, abs=1e-9)


def test_a_runs_last_val_map_is_evaluate_val_map(tmp_path):
    from vislab.cli import main

    rng = np.random.default_rng(0)
    names = ["cat", "dog", "owl"]
    rows = []
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        labels = [n for n in names if rng.random() < 0.4] or [names[i % 3]]
        rows.append(f"{i}.png,{'|'.join(labels)}")
    (tmp_path / "labels.csv").write_text("\n".join(["file,labels", *rows]) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--task", "multilabel", "--data", str(tmp_path / "labels.csv"), "--model", "mlp",
                 "--input-size", "8", "--epochs", "1", "--batch-size", "16", "--val-split", "0.5",
                 "--test-split", "0", "--workers", "0", "--device", "cpu", "--no-progress", "--no-evaluate",
                 "--no-figures", "--seed", "0", "--out", str(run)]) == 0
    with open(run / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    assert main(["evaluate", str(run), "--split", "val", "--device", "cpu", "--no-figures"]) == 0
    metrics = json.loads((run / "metrics_val.json").read_text())
    # the same images and weights: the same loss (to float32's rounding)
    assert float(history[-1]["val_loss"]) == pytest.approx(metrics["loss"], rel=1e-5)
    assert float(history[-1]["val_map"]) == pytest.approx(metrics["map"], abs=1e-9)
