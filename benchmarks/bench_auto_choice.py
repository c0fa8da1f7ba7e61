"""Benchmark: does ``--precision auto`` pick the faster precision under each CPU class?

Two epochs of ``--recipe fast`` on Fashion-MNIST (2,000 images per class: 20,000, the
validation split taken from them, no test evaluation), trained three ways — ``auto``, ``fp32``
and ``bf16`` — under each CPU class this machine can emulate:

* ``native``: the CPU as it is;
* ``avx512_core``: ``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` (AVX-512 without BF16, like the Intel Xeon
  where bf16 lost to fp32);
* ``avx2``: ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (an AVX2-only CPU: bf16 emulated).

All runs share one choice cache (``VISLAB_CACHE``, emptied at the start), as a user who
changes nothing has: the ``auto`` run of each class after the first must not reuse a choice
measured under another one. Within a class the three runs alternate their order over
``--repeat`` rounds. One JSON line per run (epoch 2's seconds, the choice auto printed),
then one ``verdict`` line per class: auto's epoch 2 against the faster of fp32 and bf16
(the bar: at most 1.10x), and whether auto picked the faster one where they differ by 10 %
or more. Each line carries the CPU model, the kernels' ISA and the load average.

Usage:
    python benchmarks/bench_auto_choice.py                      # the three classes, 20,000 images
    python benchmarks/bench_auto_choice.py --classes native avx2 --per-class 200   # quicker
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CPU_CLASSES, FMNIST_DIR, class_env, emit, fmnist_available, machine, versions  # noqa: E402

CLASSES = CPU_CLASSES
PRECISIONS = ("auto", "fp32", "bf16")


def one_run(precision: str, limits: dict, per_class: int, epochs: int, cache: Path, out: Path,
            data_dir: str) -> dict:
    env = {**class_env(limits), "VISLAB_CACHE": str(cache)}
    command = [sys.executable, "-m", "vislab", "train", "--data", "fashion-mnist", "--data-dir", data_dir,
               "--recipe", "fast", "--max-per-class", str(per_class), "--test-split", "0", "--epochs",
               str(epochs), "--precision", precision, "--no-evaluate", "--no-figures", "--no-progress",
               "--out", str(out)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with open(out / "history.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    import yaml

    speed = yaml.safe_load((out / "config.yaml").read_text())["train"]["speed"]
    said = [line for line in proc.stdout.splitlines() if line.startswith("speed: ")]
    return {"epoch_seconds": seconds, "last_epoch_s": seconds[-1], "chosen": f"{speed['precision']}/"
            f"{'channels_last' if speed['channels_last'] else 'contiguous'}", "source": speed["source"],
            "threads": speed.get("threads"), "summary": speed.get("summary"), "rechecked": said}


def isa_of(limits: dict) -> dict:
    code = "import json; from vislab.core.measure import kernel_isa; print(json.dumps(kernel_isa()))"
    return json.loads(subprocess.run([sys.executable, "-c", code], env=class_env(limits), capture_output=True, text=True,
                                     check=True).stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", nargs="+", choices=list(CLASSES), default=list(CLASSES))
    parser.add_argument("--per-class", type=int, default=2000, help="Fashion-MNIST images per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds per class")
    parser.add_argument("--data-dir", default=FMNIST_DIR)
    args = parser.parse_args(argv)
    if not fmnist_available(args.data_dir):
        print(f"error: Fashion-MNIST not found in {args.data_dir} (apt-get install dataset-fashion-mnist)",
              file=sys.stderr)
        return 1
    info = versions()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"  # one cache for every class, as a user who changes nothing has
        for name in args.classes:
            limits = CLASSES[name]
            isa = isa_of(limits)
            where = {**machine(), "isa": isa}  # the runs' kernels, not this parent process's
            times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
            chosen = []
            for round_index in range(args.repeat):
                order = PRECISIONS[round_index % 3:] + PRECISIONS[:round_index % 3]
                for precision in order:
                    out = Path(tmp) / f"{name}-{precision}-{round_index}"
                    result = one_run(precision, limits, args.per_class, args.epochs, cache, out, args.data_dir)
                    times[precision].append(result["last_epoch_s"])
                    if precision == "auto":
                        chosen.append(result["chosen"])
                    emit({"bench": "auto_choice", "kind": "run", "class": name, "limits": limits, "isa": isa,
                          "precision": precision, "round": round_index, "images": args.per_class * 10,
                          **result, "machine": {**where, **{"load_1min": machine()["load_1min"]}},
                          "versions": info})
            best = {p: min(v) for p, v in times.items()}
            faster = "fp32" if best["fp32"] <= best["bf16"] else "bf16"
            differ = max(best["fp32"], best["bf16"]) / min(best["fp32"], best["bf16"]) >= 1.10
            picked = {c.split("/")[0] for c in chosen}
            emit({"bench": "auto_choice", "kind": "verdict", "class": name, "isa": isa,
                  "epoch_s": {p: round(v, 3) for p, v in best.items()},
                  "auto_vs_best": round(best["auto"] / min(best["fp32"], best["bf16"]), 3),
                  "bar_1_10": best["auto"] <= 1.10 * min(best["fp32"], best["bf16"]),
                  "faster": faster, "differ_10pct": differ, "auto_chose": sorted(picked),
                  "picked_faster": (picked == {faster}) if differ else None,
                  "machine": {**where, **{"load_1min": machine()["load_1min"]}}, "versions": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
