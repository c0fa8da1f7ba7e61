"""DDP under torchrun on CPU (gloo): same accuracy as one process, one run folder, exact sharding."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vislab.data.loaders import TensorBatches
from vislab.data.preprocess import Preprocessing
from vislab.data.sources import Split
from vislab.train.distributed import SINGLE, DistContext, all_reduce_sum, setup, shard

# 8x8 digits through an MLP at their own size: a real task that trains in about a second
TRAIN_ARGS = ["train", "--data", "digits", "--model", "mlp", "--input-size", "8", "--epochs", "8",
              "--batch-size", "64", "--no-progress", "--no-evaluate", "--seed", "0"]


def _env() -> dict:
    # one thread per process: two ranks x two threads on a shared 2-core machine thrash
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _last_val_acc(run_dir: Path) -> float:
    with open(run_dir / "history.csv", newline="") as handle:
        return float(list(csv.DictReader(handle))[-1]["val_acc"])


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun is not installed next to this Python")
    return [exe, "--standalone", "--nproc_per_node", "2"]


def test_torchrun_two_processes_match_one_and_write_one_run_folder(tmp_path):
    from vislab.cli import main

    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank does: the comparison is about DDP, not threading
    try:
        assert main([*TRAIN_ARGS, "--out", str(single)]) == 0
    finally:
        torch.set_num_threads(threads)
    ddp_cwd = tmp_path / "ddp"
    ddp_cwd.mkdir()
    proc = subprocess.run([*_torchrun(), "-m", "vislab", *TRAIN_ARGS], cwd=ddp_cwd, env=_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 processes (gloo)" in proc.stdout
    # only rank 0 writes: one default-named run folder (its timestamp broadcast), nothing else
    assert [p.name for p in ddp_cwd.iterdir()] == ["runs"]
    runs = list((ddp_cwd / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    for name in ("config.yaml", "history.csv", "model.json", "model.safetensors", "checkpoints", "tensorboard"):
        assert (run / name).exists(), name
    with open(run / "history.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 8  # one row per epoch, not one per rank
    # the same global batches, split in two: accuracy within noise of one process (144 val images)
    assert abs(_last_val_acc(run) - _last_val_acc(single)) <= 0.03
    assert _last_val_acc(run) > 0.9


def _split(n: int) -> Split:
    return Split(labels=torch.arange(n) % 10, images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2))


def test_shards_partition_every_global_batch():
    split, pre = _split(103), Preprocessing((1, 2, 2))
    whole = TensorBatches(split, pre, 16, shuffle=True, drop_last=True)
    whole.set_epoch(3, 2)
    pieces = []
    for rank in range(2):
        batches = shard(DistContext(rank=rank, world_size=2, backend="gloo"), TensorBatches(split, pre, 16, True, True))
        batches.set_epoch(3, 2)
        assert len(batches) == len(whole) == 103 // 16
        pieces.append([labels for _, labels in batches])
    for (_, labels), a, b in zip(whole, *pieces):
        assert len(a) == len(b) == 8  # equal steps and sizes on every rank
        assert sorted(torch.cat([a, b]).tolist()) == sorted(labels.tolist())


def test_eval_shards_cover_the_split_once():
    split, pre = _split(37), Preprocessing((1, 2, 2))
    seen = []
    for rank in range(3):
        batches = shard(DistContext(rank=rank, world_size=3, backend="gloo"), TensorBatches(split, pre, 16))
        seen += [int(image[0, 0, 0]) for images, _ in batches for image in images]
    assert sorted(seen) == list(range(37))


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup("cpu")
    assert ctx is SINGLE and not ctx.enabled
    batches = TensorBatches(_split(10), Preprocessing((1, 2, 2)), 4)
    assert shard(ctx, batches) is batches
    total, count = all_reduce_sum(ctx, torch.tensor(2.5), torch.tensor(3))
    assert float(total) == 2.5 and float(count) == 3.0
