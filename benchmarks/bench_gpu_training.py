"""Benchmark: training images/s of vislab's loop against a raw timm bf16 loop (the GPU path).

For each timm model (default ResNet-50 and ViT-B/16 at 224 px, random init: throughput
does not depend on the weights) the two sides run alternately, ``--repeat`` times:

* ``raw`` -- what a PyTorch user writes for speed: ``timm.create_model``, channels_last,
  bf16 autocast, fused AdamW, a ready normalised float batch already on the device,
  ``cross_entropy``, ``backward``, ``step``;
* ``vislab`` -- ``vislab.train.loop.Trainer.train_epoch`` with the same model, optimiser,
  batch size and precision over an in-memory uint8 dataset of the same images (resident
  on the GPU when it fits, as ``vislab train`` does), so vislab's side also pays for its
  per-batch work: shuffled gathering, uint8 -> float, normalisation, running metrics.

Both sides first run ``--warmup`` untimed steps (cuDNN autotuning, allocator growth,
``--compile``'s compilation); the timed ``--steps`` end with a device synchronisation.
One JSON line per run, then one ``ratio`` line per model: vislab images/s / raw images/s
(the target on a GPU: >= 0.95).

The measurement is meant for a CUDA machine; ``--device cpu`` runs the same code (small
settings: it checks the script, its numbers say nothing about a GPU).

Usage:
    python benchmarks/bench_gpu_training.py                                  # cuda, resnet50 + vit_base_patch16_224
    python benchmarks/bench_gpu_training.py --models resnet50 --batch-size 256 --compile
    python benchmarks/bench_gpu_training.py --device cpu --models resnet18 --batch-size 8 \\
        --image-size 64 --steps 3 --warmup 1 --repeat 1                       # a quick CPU check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402

NUM_CLASSES = 1000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def run_raw(name: str, args, device: torch.device, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Images/s of the bare loop: the batches are ready float tensors on the device."""
    import timm

    from vislab.models.timm_models import timm_create  # timm.create_model, with img_size for ViTs

    torch.manual_seed(0)
    model = timm_create(timm, name, (args.image_size, args.image_size), pretrained=False, num_classes=NUM_CLASSES)
    model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model) if args.compile else model
    mean = torch.tensor(model.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)), device=device).view(1, -1, 1, 1)
    std = torch.tensor(model.pretrained_cfg.get("std", (0.229, 0.224, 0.225)), device=device).view(1, -1, 1, 1)
    batches = [((images[i:i + args.batch_size].to(device).float() / 255 - mean) / std)
               .contiguous(memory_format=torch.channels_last)
               for i in range(0, args.batch_size * 2, args.batch_size)]  # two distinct batches, reused
    targets = [labels[i:i + args.batch_size].to(device) for i in range(0, args.batch_size * 2, args.batch_size)]
    dtype = _amp_dtype(device)

    def step(k: int) -> None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            logits = forward(batches[k % 2])
        loss = F.cross_entropy(logits.float(), targets[k % 2])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for k in range(args.warmup):
        step(k)
    _sync(device)
    start = time.perf_counter()
    for k in range(args.steps):
        step(k)
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def run_vislab(name: str, args, device: torch.device, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Images/s of ``Trainer.train_epoch`` over ``--steps`` batches (after a ``--warmup``-batch epoch)."""
    from rich.console import Console

    from vislab.api import make_config
    from vislab.data.loaders import make_batches
    from vislab.data.sources import Dataset, Split
    from vislab.train.loop import Trainer, _resident

    cfg = make_config(model=name, optimizer="adamw", lr=1e-4, batch_size=args.batch_size, device=str(device),
                      precision="auto", compile=args.compile, input_size=[args.image_size] * 2, seed=0)
    names = [f"class{i}" for i in range(NUM_CLASSES)]

    dataset = Dataset("synthetic", names, {"train": Split(labels=labels[:args.steps * args.batch_size],
                                                          images=images[:args.steps * args.batch_size])})
    torch.manual_seed(0)
    out = tempfile.TemporaryDirectory(prefix="vislab-bench-gpu-")  # removed when the function returns
    trainer = Trainer(cfg, Path(out.name), dataset, Console(quiet=True))
    if args.warmup:  # the same model and optimiser, a shorter epoch over the first images
        timed = trainer.train_batches
        warm = Split(labels=labels[:args.warmup * args.batch_size], images=images[:args.warmup * args.batch_size])
        trainer.train_batches = make_batches(_resident(warm, trainer.device), trainer.preprocessing,
                                             args.batch_size, shuffle=True, drop_last=True)
        trainer.train_epoch(0, None)
        trainer.train_batches = timed
    _sync(device)
    start = time.perf_counter()
    trainer.train_epoch(1, None)  # ends with float() of the running sums: a synchronisation
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a check of the script)")
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_base_patch16_224"], help="timm names")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.warmup < 0 or args.repeat < 1:
        parser.error("--steps, --batch-size and --repeat must be >= 1, --warmup >= 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to PyTorch (use --device cpu for a check run)")
    import timm

    for name in args.models:
        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            parser.error(f"--models: {name!r} is not a timm model" + (f" (did you mean {', '.join(close)}?)" if close
                                                                       else ""))
    info = {**machine(), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    vers = versions()

    vers["timm"] = timm.__version__
    generator = torch.Generator().manual_seed(0)
    count = max(args.steps, args.warmup, 2) * args.batch_size
    images = torch.randint(0, 256, (count, 3, args.image_size, args.image_size), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    for name in args.models:
        speeds: dict[str, list[float]] = {"raw": [], "vislab": []}
        for rep in range(args.repeat):
            for side, runner in (("raw", run_raw), ("vislab", run_vislab)):
                ips = runner(name, args, device, images, labels)
                speeds[side].append(ips)
                emit({"bench": "gpu_training", "side": side, "model": name, "repeat": rep,
                      "images_per_s": round(ips, 1), "batch_size": args.batch_size, "image_size": args.image_size,
                      "steps": args.steps, "compile": args.compile, "machine": info, "versions": vers})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        raw, vis = statistics.median(speeds["raw"]), statistics.median(speeds["vislab"])
        # 4 significant digits: on a slow CPU a side runs a few images/s, and one decimal would make
        # the printed ratio disagree with the printed speeds
        emit({"bench": "gpu_training", "side": "ratio", "model": name, "raw_images_per_s": float(f"{raw:.4g}"),
              "vislab_images_per_s": float(f"{vis:.4g}"), "ratio": round(vis / raw, 3), "target": 0.95,
              "batch_size": args.batch_size, "compile": args.compile, "machine": info, "versions": vers})
    return 0


if __name__ == "__main__":
    sys.exit(main())
