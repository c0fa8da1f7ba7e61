"""Benchmark: what ``--precision auto`` measures and chooses on this CPU, and what the other choices cost.

One JSON line per measurement (each carries ``machine``: lscpu's model name, cores, the
load average when it ran):

* ``probe`` -- for the fast recipe's fastnet and each seed network at its recipe's batch
  size: the Trainer's own probe (:mod:`vislab.core.measure`, the cache bypassed), its
  seconds per step for fp32/bf16 x channels_last/contiguous, the choice and the probe's
  own cost in seconds;
* ``fp16_cpu`` -- one training step of the seed convnet in fp32 and under fp16 autocast
  on the CPU: why ``--precision fp16`` on a CPU warns;
* ``threads`` -- the same step at the physical core count and at one fewer;
* ``compile`` -- ``torch.compile`` of a training step (fastnet unless ``--models``, in
  ``--compile-precision``): the first (compiling) step's seconds, the steady step against
  eager (measured before and after), and the epochs it takes to pay back.

Usage:
    python benchmarks/bench_precision_choice.py [--only probe fp16_cpu threads compile] [--models mlp fastnet]
    python benchmarks/bench_precision_choice.py --only compile --models chollet_convnet --compile-precision bf16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, emit, machine, versions  # noqa: E402

JOBS = {  # model, options, batch size, optimizer: the recipes' (keras_seeds.py, core.config.RECIPES)
    "fastnet": ({"widths": [32, 64, 128], "blocks": [0, 0], "pool_early": True}, 128, "adamw"),
    "mlp": ({"hidden": [512, 256]}, 128, "rmsprop"),
    "chollet_convnet": ({}, 64, "rmsprop"),
    "vgg_like": ({"dropout": 0.25}, 128, "adam"),
    "model3": ({"dropout": 0.25}, 128, "adam"),
}


def _dataset(data_dir: str):
    from vislab.api import make_config
    from vislab.data.sources import load_dataset

    cfg = make_config(data="fashion-mnist", data_dir=data_dir, max_per_class=100, val_split=0.0, test_split=0.0)
    return load_dataset(cfg.data, seed=0)


def _cfg(name: str, data_dir: str, **kw):
    from vislab.api import make_config

    options, batch, optimizer = JOBS[name]
    return make_config(data="fashion-mnist", data_dir=data_dir, model=name, model_options=options,
                       batch_size=batch, optimizer=optimizer, **kw)


def probe(dataset, data_dir: str, info: dict, models=tuple(JOBS)) -> None:
    from rich.console import Console

    from vislab.train.loop import Trainer

    for name in models:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["VISLAB_CACHE"] = cache  # measure afresh, whatever was cached
            info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
            start = time.perf_counter()
            trainer = Trainer(_cfg(name, data_dir, precision="auto"), Path(cache) / "run", dataset,
                              Console(quiet=True))
            seconds = time.perf_counter() - start
        choice = trainer.choice
        emit({"benchmark": "probe", "model": name, "batch_size": JOBS[name][1], "optimizer": JOBS[name][2],
              "choice": choice.label, "summary": choice.describe(),
              "ms_per_step": {k: round(v * 1000, 2) for k, v in choice.seconds.items()},
              "speedups": {k: round(v, 3) for k, v in choice.speedups().items()},
              "trainer_init_with_probe_s": round(seconds, 2), **info})


def _step(name: str, data_dir: str, dataset, precision: str, compile_model: bool = False):
    from rich.console import Console

    from vislab.core.device import autocast_context
    from vislab.train.loop import Trainer

    forced = "fp32" if precision == "fp32" else "bf16" if precision == "bf16" else "fp32"
    trainer = Trainer(_cfg(name, data_dir, precision=forced, channels_last=True), Path(tempfile.mkdtemp()),
                      dataset, Console(quiet=True))
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    images, labels = next(iter(trainer.train_batches))
    x, y = trainer.model_input(images), labels
    model = torch.compile(trainer.model) if compile_model else trainer.model
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")

    def step():
        with autocast_context(trainer.device, dtype):
            out = model(x)
        loss = trainer.task.loss(out, y)
        trainer.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(trainer.optimizer)
        scaler.update()
    return step, len(trainer.train_batches)


def _ms(step, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def fp16_cpu(dataset, data_dir: str, info: dict) -> None:
    info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
    out = {}
    for precision in ("fp32", "fp16"):
        step, _ = _step("chollet_convnet", data_dir, dataset, precision)
        step()
        out[precision] = round(_ms(step, 3), 2)
    emit({"benchmark": "fp16_cpu", "model": "chollet_convnet", "batch_size": 64, "ms_per_step": out,
          "fp16_slowdown": round(out["fp16"] / out["fp32"], 2), **info})


def threads(dataset, data_dir: str, info: dict, models=("fastnet", "mlp")) -> None:
    from vislab.core.measure import physical_cores

    cores = physical_cores()
    before = torch.get_num_threads()
    for name in models:
        info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
        step, _ = _step(name, data_dir, dataset, "fp32")
        out = {}
        for count in sorted({cores, max(1, cores - 1)}, reverse=True):
            torch.set_num_threads(count)
            step()
            out[str(count)] = round(_ms(step, 7), 2)
        torch.set_num_threads(before)
        emit({"benchmark": "threads", "model": name, "ms_per_step_by_threads": out, **info})


def compile_cost(dataset, data_dir: str, info: dict, models=("fastnet",), precision: str = "fp32") -> None:
    # a cold compile, as a user's first run has it: inductor's own cache starts empty
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="vislab-inductor-")
    for name in models:
        info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
        eager, _ = _step(name, data_dir, dataset, precision)
        steps_per_epoch = 54_000 // JOBS[name][1]  # a recipe's epoch: Fashion-MNIST's 60,000 less 10 % validation
        eager()
        eager_ms = _ms(eager, 7)
        compiled, _ = _step(name, data_dir, dataset, precision, compile_model=True)
        start = time.perf_counter()
        try:
            compiled()
        except Exception as exc:  # noqa: BLE001  (no C++ compiler, an unsupported op: say so)
            emit({"benchmark": "compile", "model": name, "error": f"{type(exc).__name__}: {exc}"[:500], **info})
            continue
        first = time.perf_counter() - start
        compiled_ms = _ms(compiled, 7)
        eager_again = _ms(eager, 7)  # eager once more, after: the host's load moves while it compiles
        saved_per_epoch = (min(eager_ms, eager_again) - compiled_ms) / 1000 * steps_per_epoch
        emit({"benchmark": "compile", "model": name, "precision": precision, "batch_size": JOBS[name][1],
              "eager_ms_per_step": [round(eager_ms, 2), round(eager_again, 2)],
              "compiled_ms_per_step": round(compiled_ms, 2), "first_compiled_step_s": round(first, 2),
              "steps_per_epoch": steps_per_epoch, "saved_s_per_epoch": round(saved_per_epoch, 2),
              "epochs_to_pay_back": round(first / saved_per_epoch, 1) if saved_per_epoch > 0 else None, **info})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=FMNIST_DIR)
    parser.add_argument("--only", nargs="+", choices=["probe", "fp16_cpu", "threads", "compile"],
                        default=["probe", "fp16_cpu", "threads", "compile"])
    parser.add_argument("--models", nargs="+", choices=list(JOBS), default=None,
                        help="models of the probe, threads and compile measurements (default: every recipe's for "
                             "the probe, fastnet and mlp for threads, fastnet for compile)")
    parser.add_argument("--compile-precision", choices=["fp32", "bf16"], default="fp32",
                        help="the precision of the compile measurement's steps (eager and compiled alike)")
    args = parser.parse_args(argv)
    info = {"machine": machine(), "versions": versions(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    dataset = _dataset(args.data_dir)
    for name, fn in (("probe", probe), ("fp16_cpu", fp16_cpu), ("threads", threads), ("compile", compile_cost)):
        if name in args.only:
            if name == "compile":
                fn(dataset, args.data_dir, info, models=args.models or ("fastnet",), precision=args.compile_precision)
            elif args.models and name in ("probe", "threads"):
                fn(dataset, args.data_dir, info, models=args.models)
            else:
                fn(dataset, args.data_dir, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
