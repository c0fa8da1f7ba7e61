"""Where a CPU training step goes: vislab's loop against a bare PyTorch loop, and dropout's cost.

Several measurements, one JSON line each (alternating, ``--repeat`` times, medians reported):

* ``loop_overhead`` -- one epoch of the seed MLP (512-256, rmsprop, batch 128, 50k
  Fashion-MNIST images) through ``vislab.train.loop.Trainer.train_epoch`` against the
  same model, optimiser, precision and preprocessing in a bare ``for`` loop;
* ``precision`` -- milliseconds per training step (batch 128, random 28 px images, AdamW)
  in fp32 and under bf16 autocast, for the mlp and two seed convnets: the measurement
  behind ``--precision auto`` (bf16 wherever the CPU runs it natively, MLPs included);
* ``dropout`` -- forward + backward of dropout (p = 0.25) on one vgg_like activation
  (128 x 32 x 14 x 14, bf16, channels_last): ``torch.nn.functional.dropout`` against
  ``vislab.models.classic.Dropout``;
* ``rmsprop`` -- one optimiser step over the MLP's 535k parameters and chollet_convnet's 93k:
  ``torch.optim.RMSprop`` against ``vislab.train.optim.FusedRMSprop`` and ``KerasRMSprop``,
  each with its per-step lists collected afresh every step and kept between steps;
* ``pool_order`` -- a chollet_convnet training step (batch 64, bf16, channels_last) in
  the registry's layer order against ``vislab.train.speed.pool_before_relu``'s;
* ``step_anatomy`` -- where that step's time goes (fresh process, as vislab trains): ms
  per step at 1 thread and at all cores (wall and process CPU time), the serial part
  that implies (Amdahl), the fixed cost of a step (batch 1), and the step with the
  max-pool backward replaced by an unfilled gradient (timing only);
* ``allocator`` -- the same step in two fresh processes, glibc's default malloc
  settings against ``vislab.train.speed.reuse_freed_memory``: ms per step and minor page
  faults per step.

Usage:
    python benchmarks/bench_step_costs.py [--repeat 3]
    python benchmarks/bench_step_costs.py --only step_anatomy
    python benchmarks/bench_step_costs.py --only rmsprop --repeat 5
    python benchmarks/bench_step_costs.py --smoke --repeat 1     # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, emit, fmnist_available, machine, versions  # noqa: E402

SMOKE = False  # --smoke: every timed loop shrunk to a few calls, a few images per class (checks the script)


def calls(count: int) -> int:
    """``count`` timed calls, or 2 under --smoke."""
    return 2 if SMOKE else count


def loop_overhead(repeat: int, data_dir: str) -> dict:
    import tempfile

    from rich.console import Console

    from vislab.api import make_config
    from vislab.data.sources import load_dataset
    from vislab.core.device import autocast_context
    from vislab.train.loop import Trainer
    from vislab.tasks.classification import classification_loss

    cfg = make_config(data="fashion-mnist", data_dir=data_dir, model="mlp", model_options={"hidden": [512, 256]},
                      optimizer="rmsprop", batch_size=128, val_split=10000, max_per_class=20 if SMOKE else None)
    dataset = load_dataset(cfg.data, seed=0)
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()), dataset, Console(quiet=True))
    images, labels = dataset.splits["train"].images, dataset.splits["train"].labels

    def bare():  # what a user would write: advanced indexing, the same model, optimiser and precision
        model, optimizer, pre = trainer.model, trainer.optimizer, trainer.preprocessing
        model.train()
        for index in torch.randperm(len(labels)).split(cfg.train.batch_size):
            with autocast_context(trainer.device, trainer.amp_dtype):
                logits = model(pre(images[index]))
            loss = classification_loss(logits, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    loop_s, bare_s = [], []
    for epoch in range(repeat + 1):  # the first pair warms up
        start = time.perf_counter()
        trainer.train_epoch(epoch, None)
        middle = time.perf_counter()
        bare()
        if epoch:
            loop_s.append(middle - start)
            bare_s.append(time.perf_counter() - middle)
    return {"measure": "loop_overhead", "model": "mlp 512-256", "precision": str(trainer.amp_dtype or "fp32"),
            "vislab_epoch_s": [round(s, 3) for s in loop_s], "bare_epoch_s": [round(s, 3) for s in bare_s],
            "ratio_of_medians": round(statistics.median(loop_s) / statistics.median(bare_s), 3)}


def precision_costs(repeat: int) -> list[dict]:
    from vislab.models import create_model
    from vislab.tasks.classification import classification_loss

    rows = []
    for name, options, channels_last in (("mlp", {"hidden": [512, 256]}, False), ("chollet_convnet", {}, True),
                                         ("vgg_like", {"dropout": 0.25}, True)):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=1, **options)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)
        x = torch.randn(128, 1, 28, 28).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (128,))

        def step(bf16: bool):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = classification_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps = calls(40 if name == "mlp" else 10)
        ms = {False: [], True: []}
        for _ in range(repeat):
            for bf16 in (False, True):
                for _ in range(calls(3)):
                    step(bf16)
                start = time.perf_counter()
                for _ in range(steps):
                    step(bf16)
                ms[bf16].append((time.perf_counter() - start) / steps * 1000)
        fp32, bf16 = statistics.median(ms[False]), statistics.median(ms[True])
        rows.append({"measure": "precision", "model": name, "batch": 128, "fp32_ms_per_step": round(fp32, 2),
                     "bf16_ms_per_step": round(bf16, 2), "bf16_speedup": round(fp32 / bf16, 2)})
    return rows


def _timed_ms(fn, count: int) -> float:
    for _ in range(calls(3)):
        fn()
    count = calls(count)
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1000


def dropout_cost(repeat: int) -> dict:
    from vislab.models.classic import Dropout

    x = torch.randn(128, 32, 14, 14).to(memory_format=torch.channels_last).bfloat16().requires_grad_()
    layer = Dropout(0.25).train()
    torch_ms, vislab_ms = [], []
    for _ in range(repeat):
        torch_ms.append(_timed_ms(lambda: torch.nn.functional.dropout(x, 0.25, True).sum().backward(), 30))
        vislab_ms.append(_timed_ms(lambda: layer(x).sum().backward(), 30))
    return {"measure": "dropout", "shape": list(x.shape), "dtype": "bf16",
            "torch_ms": round(statistics.median(torch_ms), 3), "vislab_ms": round(statistics.median(vislab_ms), 3),
            "speedup": round(statistics.median(torch_ms) / statistics.median(vislab_ms), 2)}


def rmsprop_cost(repeat: int) -> list[dict]:
    """One optimiser step: torch's RMSprop, vislab's fused kernels with the per-step lists collected
    afresh each step (as they were), and with the lists kept and the state in one buffer (as now),
    for the MLP's 535k parameters and chollet_convnet's 93k (channels-last convolutions)."""
    from vislab.train.optim import FusedRMSprop, KerasRMSprop

    shapes = {"mlp": ((512, 784), (512,), (256, 512), (256,), (10, 256), (10,)),
              "chollet_convnet": ((32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (64, 64, 3, 3), (64,), (64, 576),
                                  (64,), (10, 64), (10,))}
    rows = []
    for model, model_shapes in shapes.items():
        def optimizer(cls):
            params = [torch.nn.Parameter((torch.randn(shape) * 0.05).contiguous(
                memory_format=torch.channels_last if len(shape) == 4 else torch.contiguous_format))
                for shape in model_shapes]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            return cls(params, lr=1e-3, alpha=0.9, eps=1e-7)

        def collected(opt):  # the lists gathered and checked again every step
            def step():
                opt._packed.clear()
                opt.step()
            return step

        fused, keras = optimizer(FusedRMSprop), optimizer(KerasRMSprop)
        candidates = {"torch": optimizer(torch.optim.RMSprop).step, "fused_collected": collected(fused),
                      "fused": fused.step, "keras_collected": collected(keras), "keras": keras.step}
        ms = {name: [] for name in candidates}
        for _ in range(repeat):
            for name, step in candidates.items():
                ms[name].append(_timed_ms(step, 300))
        medians = {f"{name}_ms": round(statistics.median(values), 4) for name, values in ms.items()}
        rows.append({"measure": "rmsprop", "model": model,
                     "parameters": sum(math.prod(shape) for shape in model_shapes), **medians,
                     "speedup_fused": round(medians["torch_ms"] / medians["fused_ms"], 2),
                     "speedup_kept_lists": round(medians["keras_collected_ms"] / medians["keras_ms"], 2)})
    return rows


def _chollet_step(batch: int = 64):
    """A chollet_convnet training step (batch 64, bf16, channels_last) and its model."""
    from vislab.models.classic import materialize
    from vislab.models import create_model
    from vislab.tasks.classification import classification_loss
    from vislab.train.optim import FusedRMSprop

    torch.manual_seed(0)
    model = materialize(create_model("chollet_convnet", num_classes=10, in_chans=1), (1, 28, 28))
    model = model.to(memory_format=torch.channels_last)
    optimizer = FusedRMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = classification_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def pool_order_cost(repeat: int) -> dict:
    from vislab.train.speed import pool_before_relu

    registry_model, registry_step = _chollet_step()
    swapped_model, swapped_step = _chollet_step()
    pool_before_relu(swapped_model)
    registry_ms, swapped_ms = [], []
    for _ in range(repeat):
        registry_ms.append(_timed_ms(registry_step, 40))
        swapped_ms.append(_timed_ms(swapped_step, 40))
    return {"measure": "pool_order", "model": "chollet_convnet", "batch": 64,
            "relu_then_pool_ms": round(statistics.median(registry_ms), 2),
            "pool_then_relu_ms": round(statistics.median(swapped_ms), 2),
            "speedup": round(statistics.median(registry_ms) / statistics.median(swapped_ms), 2)}


def _allocator_worker(reuse: bool) -> None:
    """In a fresh process: ms and minor page faults per chollet_convnet step; prints one JSON object."""
    import json
    import resource

    from vislab.train.speed import reuse_freed_memory

    took = reuse_freed_memory() if reuse else False
    _, step = _chollet_step()
    for _ in range(calls(5)):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = _timed_ms(step, 60)  # warm-up steps inside
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (calls(3) + calls(60))
    print(json.dumps({"ms": ms, "faults": faults, "took": took}))


class _PoolWithoutBackward(torch.autograd.Function):
    """MaxPool2d(2) whose backward returns an unfilled gradient: timing only, the numbers are garbage."""

    @staticmethod
    def forward(ctx, x):
        out, _ = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        ctx.shape, ctx.dtype, ctx.layout = x.shape, x.dtype, x.stride()
        return out

    @staticmethod
    def backward(ctx, grad):
        return torch.empty_strided(ctx.shape, ctx.layout, dtype=ctx.dtype)


class _NoBackwardPool(torch.nn.Module):
    def forward(self, x):
        return _PoolWithoutBackward.apply(x)


def _anatomy_worker() -> None:
    """In a fresh process, as vislab trains (malloc setting, MaxPool before ReLU): where a
    chollet_convnet step's time goes. Prints one JSON object."""
    import json

    from vislab.train.speed import pool_before_relu, reuse_freed_memory

    reuse_freed_memory()
    cores = torch.get_num_threads()

    def per_step(step, count=60):  # medians of wall and process CPU time, ms
        for _ in range(calls(5)):
            step()
        wall, cpu = [], []
        for _ in range(calls(count)):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3

    model, step = _chollet_step()
    pool_before_relu(model)
    out = {}
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        out[f"wall_ms_{threads}t"], out[f"cpu_ms_{threads}t"] = per_step(step)
    torch.set_num_threads(1)
    tiny, tiny_step = _chollet_step(batch=1)
    pool_before_relu(tiny)
    out["batch1_ms_1t"], _ = per_step(tiny_step)
    for index, module in enumerate(model.features):
        if isinstance(module, torch.nn.MaxPool2d):
            model.features[index] = _NoBackwardPool()
    out["no_pool_backward_ms_1t"], _ = per_step(step)
    out["cores"] = cores
    print(json.dumps(out))


def step_anatomy(repeat: int) -> dict:
    """Fresh-process runs of :func:`_anatomy_worker`; medians over ``repeat``."""
    import json
    import subprocess

    smoke = ["--smoke"] if SMOKE else []
    runs = [json.loads(subprocess.run([sys.executable, __file__, "--anatomy-worker", *smoke], capture_output=True,
                                      text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(repeat)]
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    cores = int(med.pop("cores"))
    one, many = med["wall_ms_1t"], med[f"wall_ms_{cores}t"]
    # Amdahl: one = serial + parallel, many = serial + parallel / cores
    serial = max(0.0, (many * cores - one) / (cores - 1)) if cores > 1 else None
    return {"measure": "step_anatomy", "model": "chollet_convnet", "batch": 64, "cores": cores,
            **{k: round(v, 2) for k, v in med.items()},
            "serial_ms_estimate": round(serial, 2) if serial is not None else None,
            "pool_backward_ms_1t": round(one - med["no_pool_backward_ms_1t"], 2)}


def allocator_cost(repeat: int) -> dict:
    import json
    import subprocess

    runs = {False: [], True: []}
    for _ in range(repeat):
        for reuse in (False, True):
            smoke = ["--smoke"] if SMOKE else []
            out = subprocess.run([sys.executable, __file__, "--allocator-worker", "on" if reuse else "off", *smoke],
                                 capture_output=True, text=True, check=True).stdout
            runs[reuse].append(json.loads(out.strip().splitlines()[-1]))
    med = {k: {key: statistics.median(r[key] for r in v) for key in ("ms", "faults")} for k, v in runs.items()}
    return {"measure": "allocator", "model": "chollet_convnet", "batch": 64, "settings_took": runs[True][0]["took"],
            "default_ms": round(med[False]["ms"], 2), "reuse_ms": round(med[True]["ms"], 2),
            "default_minor_faults_per_step": round(med[False]["faults"]),
            "reuse_minor_faults_per_step": round(med[True]["faults"]),
            "speedup": round(med[False]["ms"] / med[True]["ms"], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default=FMNIST_DIR)
    parser.add_argument("--allocator-worker", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--anatomy-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["step_anatomy", "rmsprop"], help="run just this measurement")
    parser.add_argument("--smoke", action="store_true",
                        help="a few calls per measurement and 20 images per class: checks the script, times mean nothing")
    args = parser.parse_args(argv)
    global SMOKE
    SMOKE = args.smoke
    if args.allocator_worker:
        _allocator_worker(args.allocator_worker == "on")
        return 0
    if args.anatomy_worker:
        _anatomy_worker()
        return 0
    info = {"benchmark": "step_costs", "machine": machine(), "versions": versions()}
    if args.only == "rmsprop":
        for row in rmsprop_cost(args.repeat):
            emit({**info, **row})
        return 0
    emit({**info, **step_anatomy(args.repeat)})
    if args.only:
        return 0
    emit({**info, **allocator_cost(args.repeat)})
    for row in rmsprop_cost(args.repeat):
        emit({**info, **row})
    emit({**info, **pool_order_cost(args.repeat)})
    emit({**info, **dropout_cost(args.repeat)})
    for row in precision_costs(args.repeat):
        emit({**info, **row})
    if fmnist_available(args.data_dir):
        emit({**info, **loop_overhead(args.repeat, args.data_dir)})
    else:
        print(f"bench_step_costs: {args.data_dir} not found; loop_overhead skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
