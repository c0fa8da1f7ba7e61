"""The GPU benchmark runs on the CPU too: a check that it still fits vislab's Trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_training_bench_runs_both_sides_on_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("bench_gpu_training", None)
    import bench_gpu_training

    assert bench_gpu_training.main(["--device", "cpu", "--models", "resnet18", "vit_tiny_patch16_224",
                                    "--batch-size", "4", "--image-size", "32", "--steps", "2", "--warmup", "1",
                                    "--repeat", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    runs = [r for r in lines if r["side"] in ("raw", "vislab")]
    assert sorted((r["model"], r["side"]) for r in runs) == [
        ("resnet18", "raw"), ("resnet18", "vislab"), ("vit_tiny_patch16_224", "raw"),
        ("vit_tiny_patch16_224", "vislab")]
    assert all(r["images_per_s"] > 0 and r["machine"]["device"] == "cpu" for r in runs)
    ratios = [r for r in lines if r["side"] == "ratio"]
    assert [r["model"] for r in ratios] == ["resnet18", "vit_tiny_patch16_224"]
    # the printed speeds carry 4 significant digits, the ratio 3 decimals
    assert all(abs(r["ratio"] - r["vislab_images_per_s"] / r["raw_images_per_s"]) < 0.005 * max(1, r["ratio"])
               for r in ratios)
