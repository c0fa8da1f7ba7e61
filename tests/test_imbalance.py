"""Class imbalance: the balanced sampler's draws, class weights, focal loss, balanced accuracy, the audit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vislab.data.loaders import FileBatches, TensorBatches, epoch_order
from vislab.data.preprocess import Preprocessing
from vislab.data.sources import Split
from vislab.tasks import get_task


def balanced_weights(labels):
    """What the Trainer draws by under --sampler balanced: the task's weights (one class or label sets)."""
    return get_task("classification" if labels.ndim == 1 else "multilabel").balanced_weights(labels)

LONG_TAIL = [2000, 1000, 400, 200, 100, 50, 30, 20, 15, 10]


def _long_tail_labels() -> torch.Tensor:
    return torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(LONG_TAIL)])


def test_single_label_balanced_draws_are_uniform_within_tolerance():
    labels = _long_tail_labels()
    weights = balanced_weights(labels)
    drawn = torch.cat([labels[epoch_order(len(labels), True, 0, epoch, weights)] for epoch in range(5)])
    freq = torch.bincount(drawn, minlength=10).double() / len(drawn)
    # 19,125 draws: a class's share has a standard deviation of about 0.002
    assert (freq - 0.1).abs().max() < 0.01, freq
    plain = torch.bincount(labels[epoch_order(len(labels), True, 0, 0)], minlength=10).double() / len(labels)
    assert plain[-1] < 0.003  # without the sampler the tail class is 10 / 3825 of the draws


def test_multi_label_rarest_label_frequency_rises():
    rng = np.random.default_rng(0)
    rates = np.array([0.6, 0.3, 0.1, 0.02])
    y = torch.from_numpy((rng.random((3000, 4)) < rates).astype(np.float32))
    weights = balanced_weights(y)
    drawn = y[epoch_order(len(y), True, 0, 3, weights)]
    before, after = y.mean(0), drawn.mean(0)
    assert after[3] > 4 * before[3]  # the rarest label: 2 % of the images, many times that of the draws
    # the rarest label's share rises the most, the most common one's falls
    assert int(torch.argmax(after / before)) == 3 and after[0] < before[0]


def test_segmentation_refuses_the_balanced_sampler():
    from vislab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--sampler balanced.*--class-weights auto"):
        get_task("segmentation").balanced_weights(torch.zeros(4, 8, 8, dtype=torch.int64))


def test_draws_depend_on_seed_and_epoch_only_and_reach_every_loader():
    labels = _long_tail_labels()
    weights = balanced_weights(labels)
    first = epoch_order(len(labels), True, 7, 2, weights)
    assert torch.equal(first, epoch_order(len(labels), True, 7, 2, weights))  # a resumed run draws the same
    assert not torch.equal(first, epoch_order(len(labels), True, 7, 3, weights))
    assert torch.equal(epoch_order(5, False, 7, 2, torch.ones(5) / 5), torch.arange(5))  # evaluation: in order
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    split = Split(labels, images=images)
    pre = Preprocessing((1, 2, 2))
    batches = TensorBatches(split, pre, 500, shuffle=True, weights=weights)
    batches.set_epoch(7, 2)
    got = torch.cat([y for _, y in batches])
    assert torch.equal(got, labels[first][:len(got)])


def test_streaming_and_ddp_shards_draw_the_same_images(tmp_path):
    from PIL import Image

    from vislab.train.distributed import DistContext, shard

    labels = torch.tensor([0] * 30 + [1] * 3)
    paths = []
    for i in range(len(labels)):
        Image.new("L", (4, 4), i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    weights = balanced_weights(labels)
    pre = Preprocessing((1, 4, 4))
    files = FileBatches(Split(labels, paths=paths), pre, 11, shuffle=True, workers=0, weights=weights)
    files.set_epoch(1, 4)
    pixels = torch.cat([x[:, 0, 0, 0] for x, _ in files]).long()
    order = epoch_order(len(labels), True, 1, 4, weights)
    assert torch.equal(pixels, order)  # file i is grey level i: the streamed images are the drawn ones
    assert (labels[order] == 1).float().mean() > 0.3  # 3 of 33 images, about half the draws
    # two DDP ranks: each takes its interleaved share of the same global draw
    memory = TensorBatches(Split(labels, images=torch.arange(33, dtype=torch.uint8).view(-1, 1, 1, 1)), pre, 11,
                           shuffle=True, weights=weights)
    shares = []
    for rank in (0, 1):
        sharded = shard(DistContext(rank=rank, world_size=2, backend="gloo"), memory)
        sharded.set_epoch(1, 4)
        shares.append([x.flatten().long() for x, _ in sharded])
    for step, batch in enumerate(order.split(11)):
        assert torch.equal(torch.sort(torch.cat([shares[0][step], shares[1][step]])).values, torch.sort(batch).values)


def test_class_weights_and_focal_loss_in_the_classification_task(tmp_path):
    from vislab.data.sources import Dataset
    from vislab.tasks.classification import Classification
    from vislab.tasks.losses import inverse_frequency_weights, softmax_focal_loss

    weights = inverse_frequency_weights([90, 10])
    assert weights.tolist() == pytest.approx([0.2, 1.8]) and float(weights.mean()) == pytest.approx(1.0)
    logits = torch.tensor([[2.0, -1.0, 0.3], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    ce = F.cross_entropy(logits, y, reduction="none")
    pt = torch.exp(-ce)
    assert softmax_focal_loss(logits, y, 2.0) == pytest.approx(float(((1 - pt) ** 2 * ce).mean()))
    assert softmax_focal_loss(logits, y, 0.0) == pytest.approx(float(ce.mean()))  # gamma 0: cross-entropy
    ds = Dataset("t", ["a", "b", "c"], {"train": Split(torch.tensor([0] * 8 + [1] * 4 + [2] * 2),
                                                       images=torch.zeros(14, 1, 2, 2, dtype=torch.uint8))})
    task = Classification(class_weights="auto")
    task.prepare(ds)
    expected = F.cross_entropy(logits, y, weight=inverse_frequency_weights([8, 4, 2]))
    assert task.loss(logits, y) == pytest.approx(float(expected))
    assert task.loss(logits, y, reduction="sum") == pytest.approx(float(ce.sum()))  # evaluation: plain CE
    path = tmp_path / "w.json"
    path.write_text('{"a": 1, "b": 2, "c": 5}')
    task = Classification(class_weights=str(path), loss="focal")
    task.prepare(ds)
    assert task.class_weights.tolist() == [1, 2, 5]
    w = torch.tensor([1.0, 2.0, 5.0])[y]
    assert task.loss(logits, y) == pytest.approx(float(((1 - pt) ** 2 * ce * w).sum() / w.sum()))
    path.write_text('{"a": 1, "b": 2}')
    with pytest.raises(ValueError, match=r"classes missing \['c'\]"):
        Classification(class_weights=str(path)).prepare(ds)
    assert Classification().loss(logits, y) == F.cross_entropy(logits, y)  # the default: untouched


def test_balanced_accuracy_is_top_level_and_equals_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    from vislab.tasks.classification_metrics import classification_metrics

    rng = np.random.default_rng(1)
    y = np.array([0] * 80 + [1] * 15 + [2] * 5)
    probs = rng.dirichlet([1, 1, 1], size=100)
    probs[np.arange(100), y] += 0.4 * (rng.random(100) < 0.7)
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))


def test_audit_suggests_the_imbalance_options_above_ratio_10(tmp_path):
    from vislab.data.audit import audit_dataset
    from vislab.data.sources import Dataset

    def audit(counts):
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
        images = torch.randint(0, 255, (len(labels), 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        ds = Dataset("t", ["a", "b"], {"train": Split(labels, images=images)})
        return audit_dataset(ds, tmp_path / str(counts[0]), max_images=50)

    skewed = audit([60, 4])
    assert "--class-weights auto" in skewed["class_balance"]["suggestion"]
    assert any("--sampler balanced" in w for w in skewed["warnings"])
    assert audit([30, 20])["class_balance"]["suggestion"] is None


def test_imbalanced_training_run_with_the_options_and_its_summary(tmp_path, capsys):
    from vislab.cli import main

    # digits with the tail of the classes cut to a few images
    from sklearn.datasets import load_digits
    from PIL import Image

    digits = load_digits()
    lines = ["file,label"]
    for c in range(4):
        members = np.flatnonzero(digits.target == c)[: [120, 60, 20, 8][c]]
        for i in members:
            name = f"{i}.png"
            Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).save(tmp_path / name)
            lines.append(f"{name},{c}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    code = main(["train", "--data", str(tmp_path / "d.csv"), "--model", "mlp", "--input-size", "8", "--epochs", "6",
                 "--lr", "3e-3", "--class-weights", "auto", "--sampler", "balanced", "--loss", "focal", "--workers", "0",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run"), "--val-split", "0"])
    assert code == 0
    out = capsys.readouterr().out
    import re

    weights = re.search(r"class weights \(auto\): 0: ([\d.]+), 1: ([\d.]+), 2: ([\d.]+), 3: ([\d.]+)", out)
    assert weights, out
    values = [float(v) for v in weights.groups()]
    assert values == sorted(values) and np.mean(values) == pytest.approx(1.0, abs=0.01)  # rarer: heavier
    assert "the training set is imbalanced" in out and "test balanced accuracy" in out and "macro-F1" in out
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["balanced_accuracy"] <= 1
    assert main(["train", "--data", str(tmp_path / "d.csv"), "--loss", "asymmetric", "--out", str(tmp_path / "r2"),
                 "--epochs", "1", "--workers", "0"]) == 1
    assert "multi-label loss" in capsys.readouterr().err
