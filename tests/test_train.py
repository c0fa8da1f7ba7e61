"""Training end to end: accuracy, run folder, reload, determinism, early stopping, exact resume."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import needs_fmnist
from vislab.api import train
from vislab.infer.predictor import Predictor
from vislab.runs import load

DIGITS_CNN = dict(data="digits", model="chollet_convnet", epochs=12, lr=3e-3, batch_size=32,
                  scheduler="cosine", seed=0)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    # fp32: the run's test evaluation and the reload below must compute alike. Under precision auto each
    # picks what the choice cache holds when it runs, which other tests on the same worker may have changed
    # in between (bf16 probabilities differ from fp32's by about 1e-3)
    out = tmp_path_factory.mktemp("runs") / "digits"
    return train(out=str(out), precision="fp32", **DIGITS_CNN)


def test_digits_cnn_reaches_95_percent(digits_run):
    assert digits_run.metrics["accuracy"] >= 0.95, digits_run.metrics["accuracy"]
    metrics = json.loads((digits_run.run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == digits_run.metrics["accuracy"]
    assert "loss" in metrics


def test_run_folder_is_complete(digits_run):
    run = digits_run.run_dir
    for name in ("config.yaml", "model.safetensors", "model.json", "history.csv", "metrics.json",
                 "bad_files.csv", "plots/curves.png", "checkpoints/last.pt", "checkpoints/best.safetensors"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    spec = json.loads((run / "model.json").read_text())
    assert spec["class_names"] == [str(i) for i in range(10)]
    assert spec["preprocessing"]["input_size"] == [1, 28, 28]
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and set(rows[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 12 and config["model"]["name"] == "chollet_convnet"
    assert config["augment"]["fill_mode"] == "nearest"  # every default written out


def test_reload_gives_identical_predictions(digits_run):
    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset

    saved = np.load(digits_run.run_dir / "predictions.npz")
    test = load_dataset(DataConfig(source="digits"), seed=0).splits["test"]
    again = Predictor(load(digits_run.run_dir), precision="fp32").predict_split(test)
    assert np.array_equal(again.labels, saved["labels"])
    assert np.allclose(again.probs, saved["probs"], atol=1e-6)


def test_same_seed_same_history(tmp_path):
    # a forced precision: --precision auto's measured choice could differ between two first runs
    # on a CPU where fp32 and bf16 are within noise of the 10 % margin
    kwargs = dict(data="digits", model="mlp", model_options={"hidden": [64], "dropout": 0.2}, epochs=2,
                  hflip=True, rotation=10, precision="fp32")
    a = train(out=str(tmp_path / "a"), **kwargs)
    b = train(out=str(tmp_path / "b"), **kwargs)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert load_file(str(a.run_dir / "model.safetensors")).keys() == load_file(str(b.run_dir / "model.safetensors")).keys()
    for key, value in load_file(str(a.run_dir / "model.safetensors")).items():
        assert torch.equal(value, load_file(str(b.run_dir / "model.safetensors"))[key])


def test_history_lr_is_the_rate_each_epoch_trained_at(digits_run, tmp_path):
    """history.csv's lr is the epoch's first step's: cosine starts at --lr; one-cycle starts at
    peak/10 and never shows the extrapolated step past its end (it once logged a negative rate)."""
    assert digits_run.history[0]["lr"] == pytest.approx(DIGITS_CNN["lr"])
    lrs = [row["lr"] for row in digits_run.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0
    one_cycle = train(out=str(tmp_path / "one"), data="digits", model="mlp", epochs=2, lr=1e-2,
                      scheduler="onecycle", precision="fp32")
    assert one_cycle.history[0]["lr"] == pytest.approx(1e-3)
    assert all(row["lr"] > 0 for row in one_cycle.history)


def test_early_stopping_restores_best(tmp_path):
    # lr far too high: validation loss gets worse, so training stops after `patience` epochs
    result = train(data="digits", model="mlp", epochs=30, lr=0.5, optimizer="sgd", momentum=0.99,
                   patience=2, out=str(tmp_path / "es"))
    assert result.stopped_early and len(result.history) < 30
    losses = [row["val_loss"] for row in result.history]
    best_epoch = int(np.nanargmin(losses))
    assert len(result.history) == best_epoch + 1 + 2
    best = load_file(str(result.run_dir / "checkpoints" / "best.safetensors"))
    final = load_file(str(result.run_dir / "model.safetensors"))
    assert all(torch.equal(best[k], final[k]) for k in best)


def test_existing_run_folder_is_not_overwritten(digits_run):
    with pytest.raises(FileExistsError, match="already holds a run.*--resume"):
        train(out=str(digits_run.run_dir), data="digits", epochs=1)


def _vislab(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "vislab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_resume_after_sigkill_is_exact(tmp_path):
    args = ["--data", "digits", "--model", "mlp", "--model-opt", "hidden=[256,128]", "dropout=0.3",
            "--epochs", "3", "--batch-size", "8",
            "--scheduler", "onecycle", "--hflip", "--rotation", "10", "--no-evaluate", "--no-progress",
            "--precision", "fp32"]  # both runs the same precision (auto's resume: tests/test_measure.py)
    full = _vislab("train", *args, "--out", str(tmp_path / "full"))
    killed = _vislab("train", *args, "--out", str(tmp_path / "killed"))
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for epoch 1's checkpoint, then kill during epoch 2
        if history.exists() and len(history.read_text().strip().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "model.json").exists(), "killed too late: the run had finished"
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] in (0, 1)
    resumed = _vislab("train", "--resume", str(tmp_path / "killed"), "--no-progress")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    assert full.wait(timeout=600) == 0
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with open(tmp_path / "killed" / "history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]


@needs_fmnist
def test_fashion_mnist_one_epoch_floor(tmp_path):
    """Seed recipe (Chollet's convnet, rmsprop) for 1 epoch on 20,000 training images: >= 78% on the 10k test."""
    result = train(data="fashion-mnist", model="chollet_convnet", epochs=1, optimizer="rmsprop",
                   batch_size=64, max_per_class=2000, val_split=0, out=str(tmp_path / "fm"))
    assert len(result.history) == 1
    assert result.metrics["num_images"] == 10000
    assert result.metrics["accuracy"] >= 0.78, result.metrics["accuracy"]


def test_frozen_backbone_with_cached_features(tmp_path):
    """--freeze backbone --cache-features trains only the head, on features extracted once;
    the frozen backbone ends identical to an end-to-end frozen run from the same seed."""
    common = dict(data="digits", model="chollet_convnet", epochs=3, freeze="backbone", lr=3e-3, seed=3,
                  allow_random_backbone=True)
    cached = train(out=str(tmp_path / "cached"), cache_features=True, **common)
    plain = train(out=str(tmp_path / "plain"), **common)
    a = load_file(str(cached.run_dir / "model.safetensors"))
    b = load_file(str(plain.run_dir / "model.safetensors"))
    for key in a:
        if key.startswith("features."):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["head.3.weight"], b["head.3.weight"])  # both heads trained, differently batched
    assert all(row["val_acc"] is not None for row in cached.history)
    assert cached.metrics["accuracy"] > 0.5 and plain.metrics["accuracy"] > 0.5


def test_single_sigmoid_binary_model_end_to_end(tmp_path):
    """Seed 002's cats-vs-dogs head (Dense(1, sigmoid)) on two real digit classes, from folders:
    trains with BCE, evaluates as a binary task, predicts both classes."""
    from conftest import digits_arrays, write_image

    images, labels = digits_arrays()
    root = tmp_path / "two"
    for i, (image, label) in enumerate(zip(images, labels)):
        if label in (0, 1) and i < 800:
            write_image(root / ("zero" if label == 0 else "one") / f"{i}.png", image, size=32)
    result = train(data=str(root), model="cats_dogs_convnet", model_options={"binary": True}, input_size=[48, 48],
                   epochs=4, lr=1e-3, out=str(tmp_path / "bin"))
    metrics = result.metrics
    assert metrics["task"] == "binary" and metrics["num_classes"] == 2
    assert metrics["accuracy"] >= 0.95 and metrics["roc_auc"] >= 0.95
    loaded = load(result.run_dir)
    assert loaded.model.get_classifier().out_features == 1
    from vislab.api import predict

    zero = next((root / "zero").iterdir())
    top = predict(result.run_dir, [zero], top_k=2)[0]["top"]
    assert top[0]["class"] == "zero" and abs(sum(t["probability"] for t in top) - 1) < 1e-5


def test_timm_model_trains_from_scratch(tmp_path):
    # small batches: enough steps for BatchNorm's running statistics to settle
    result = train(data="digits", model="resnet18", input_size=[32, 32], epochs=3, lr=1e-3, batch_size=16,
                   max_per_class=60, out=str(tmp_path / "timm"))
    assert len(result.history) == 3 and result.metrics["accuracy"] > 0.5, result.metrics["accuracy"]
    loaded = load(result.run_dir)
    assert type(loaded.model).__name__ == "ResNet" and loaded.preprocessing.input_size == (1, 32, 32)


def test_lbfgs_head_is_scikit_learns_logistic_regression():
    """--optimizer lbfgs on cached features minimises scikit-learn's objective (C=1 at weight_decay 0):
    the same class probabilities, on real digit features."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from vislab.train.features import LBFGS_ITERATIONS_PER_EPOCH, FeatureSet, _lbfgs_epoch

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:600] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[:600])
    head = torch.nn.Linear(64, 10)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS_PER_EPOCH,
                                  history_size=20, line_search_fn="strong_wolfe")
    for _ in range(5):
        logs, _ = _lbfgs_epoch(head, optimizer, FeatureSet(x, y), "cpu", 0.0, 1.0 / len(y))
    reference = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(x.numpy(), y.numpy())
    with torch.no_grad():
        ours = torch.softmax(head(x), 1).numpy()
    assert abs(ours - reference.predict_proba(x.numpy())).max() < 2e-3
    assert logs["train_acc"] == (reference.predict(x.numpy()) == y.numpy()).mean()


def test_lbfgs_head_through_train(tmp_path):
    """The user's path: --freeze backbone --cache-features --optimizer lbfgs fits the head in one epoch;
    lbfgs without cached features, or with a schedule, is refused before any work."""
    from vislab.core.config import ConfigError

    result = train(data="digits", model="chollet_convnet", freeze="backbone", cache_features=True,
                   optimizer="lbfgs", seed=0, out=str(tmp_path / "lbfgs"), allow_random_backbone=True)
    assert len(result.history) == 1  # lbfgs: one epoch unless --epochs says otherwise
    assert result.history[0]["train_acc"] >= 0.9  # a converged linear probe on random conv features
    assert result.metrics["accuracy"] >= 0.85
    with pytest.raises(ConfigError, match="--cache-features"):
        train(data="digits", model="chollet_convnet", optimizer="lbfgs", out=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="schedule"):
        train(data="digits", model="chollet_convnet", optimizer="lbfgs", freeze="backbone", cache_features=True,
              scheduler="cosine", out=str(tmp_path / "y"), allow_random_backbone=True)


def test_fp16_training_scales_the_loss_and_resumes_the_scale(tmp_path):
    # fp16 (GPUs without bf16 get it under --precision auto) needs loss scaling; bf16 does not
    from rich.console import Console

    from vislab.api import make_config
    from vislab.data.sources import load_dataset
    from vislab.train.loop import Trainer

    def trainer(precision, name):
        cfg = make_config(data="digits", model="mlp", input_size=[8, 8], precision=precision, optimizer="sgd",
                          lr=100.0, momentum=0.0, batch_size=4096, seed=0)  # one step: the whole split
        torch.manual_seed(0)
        return Trainer(cfg, tmp_path / name, load_dataset(cfg.data, seed=0), Console(quiet=True))

    half, full = trainer("fp16", "half"), trainer("fp32", "full")
    assert half.scaler.is_enabled() and not full.scaler.is_enabled()
    with torch.no_grad():  # a nearly-silent output layer: the hidden layers' fp16 gradients underflow unscaled
        for model in (half.model, full.model):
            [*model.modules()][-1].weight.mul_(1e-5)
    start = [p.detach().clone() for p in full.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(half.model.parameters(), start))
    logs = half.train_epoch(0, None), full.train_epoch(0, None)
    assert half.scaler.get_scale() == 65536.0  # every step taken, none overflowed
    assert len(half.train_batches) == 1 and abs(logs[0]["train_loss"] - logs[1]["train_loss"]) < 0.01
    for a, b, p0 in zip(half.model.parameters(), full.model.parameters(), start):
        moved_half, moved_full = (a - p0).detach(), (b - p0).detach()  # unscaled: SGD moves of the same size
        assert moved_full.abs().max() > 0
        assert torch.isfinite(a).all() and (moved_half - moved_full).abs().max() < 0.1 * moved_full.abs().max()
    state = half.state(0)
    assert state["scaler"]["scale"] == 65536.0 and full.state(0)["scaler"] == {}
    state["scaler"]["scale"] = 1024.0
    again = trainer("fp16", "again")
    again.restore(state)
    assert again.scaler.get_scale() == 1024.0
    from vislab.core.config import ConfigError

    with pytest.raises(ConfigError, match="--precision auto, bf16 or fp32 with --cache-features"):
        make_config(data="digits", model="chollet_convnet", freeze="backbone", cache_features=True,
                    precision="fp16", allow_random_backbone=True)


def test_gpu_precision_and_rng_choices_without_a_gpu(monkeypatch):
    # the decisions the CUDA path makes, with the CUDA queries answered as a T4 / an A100 would
    from vislab.train import checkpoint
    from vislab.core.device import resolve_precision

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # says yes on a T4 too (emulated)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert resolve_precision("auto", cuda) == torch.float16  # T4 / V100: fp16 (+ loss scaling)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert resolve_precision("auto", cuda) == torch.bfloat16  # A100 on
    assert resolve_precision("fp32", cuda) is None

    restored = []
    state = checkpoint.rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]  # saved with 2 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed with 1 visible
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.append((int(s[0]), i)))
    checkpoint.set_rng_state(state)
    assert restored == [(0, 0)]


def test_an_epoch_trains_on_its_short_last_batch_unless_told_not_to(tmp_path):
    # Keras (and torch's DataLoader) train on every image each epoch, the short last batch included
    from rich.console import Console

    from vislab.api import make_config
    from vislab.data.sources import load_dataset
    from vislab.train.loop import Trainer

    def epoch_counts(**options):
        cfg = make_config(data="digits", model="mlp", input_size=[8, 8], precision="fp32", seed=0, **options)
        trainer = Trainer(cfg, tmp_path / str(len(options)), load_dataset(cfg.data, seed=0), Console(quiet=True))
        trainer.train_batches.set_epoch(0, 0)
        return [len(labels) for _, labels in trainer.train_batches], trainer

    cfg = make_config(data="digits", model="mlp", input_size=[8, 8])
    images = len(load_dataset(cfg.data, seed=0).splits["train"])
    batch = next(b for b in range(100, images) if images % b >= 2)
    sizes, trainer = epoch_counts(batch_size=batch)
    assert sum(sizes) == images and sizes[-1] == images % batch and trainer.steps_per_epoch == len(sizes)
    sizes, trainer = epoch_counts(batch_size=batch, drop_last=True)
    assert sizes == [batch] * (images // batch) and trainer.steps_per_epoch == len(sizes)
    # the cached-features path (a frozen backbone: only the head trains) batches by the same rule
    from vislab.train.features import CachedTraining

    for drop_last, steps in ((False, -(-images // batch)), (True, images // batch)):
        cached = CachedTraining(trainer.model, trainer.preprocessing, trainer.train_batches.split, batch_size=batch,
                                precision="fp32", drop_last=drop_last)
        counted = []
        hook = cached.head.register_forward_pre_hook(lambda module, args: counted.append(len(args[0])))
        cached.train_epoch(torch.optim.SGD(cached.head.parameters(), lr=0.0), seed=0, epoch=0)
        hook.remove()
        assert cached.steps_per_epoch() == steps == len(counted) and sum(counted) == min(images, steps * batch)


def test_a_run_written_before_the_short_batch_option_resumes_leaving_it_out(tmp_path):
    from vislab.train.loop import resume_config

    result = train(out=str(tmp_path / "run"), data="digits", model="mlp", epochs=1, batch_size=100, seed=0)
    path = result.run_dir / "config.yaml"
    assert resume_config(result.run_dir).train.drop_last is False
    config = yaml.safe_load(path.read_text())
    del config["train"]["drop_last"]  # as the earlier vislab wrote it: every epoch left its short batch out
    path.write_text(yaml.safe_dump(config))
    assert resume_config(result.run_dir).train.drop_last is True
    # its cached-features path always trained on the short batch, and so resumes
    config["model"].update(cache_features=True, freeze="backbone", allow_random_backbone=True)
    path.write_text(yaml.safe_dump(config))
    assert resume_config(result.run_dir).train.drop_last is False
