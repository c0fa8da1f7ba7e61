"""Benchmark: where a short run's fixed cost goes (start-up and the end-of-run artefacts).

A 3-epoch seed run pays, besides its epochs, the interpreter and import start-up, the
data load, the dataset audit, the speed probe (once per model and batch size: cached),
model.json, the curves, the test evaluation, the task's figures, the explanation panels
and report.html. This times each phase inside one ``vislab train`` (by wrapping the
functions the pipeline calls; nothing else changes) and the bare start-up in a fresh
interpreter, and prints one JSON line per job with ``machine`` (lscpu's model name, the
load average).

Usage:
    python benchmarks/bench_fixed_cost.py                       # mlp, 1 epoch, Fashion-MNIST
    python benchmarks/bench_fixed_cost.py --model chollet_convnet --epochs 1 --repeat 2
    python benchmarks/bench_fixed_cost.py --data digits --epochs 2      # scikit-learn's 1,797 digits
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, REPO, emit, machine, versions  # noqa: E402


def startup_seconds() -> dict:
    """A fresh interpreter: ``import vislab.cli`` and ``vislab --help``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = {}
    for name, code in (("import_cli", "import vislab.cli"), ("import_training_path",
                       "import vislab.cli, vislab.pipelines, vislab.train.loop, vislab.data.audit")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        out[name] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    out["python_alone"] = round(time.perf_counter() - start, 3)
    return out


def timed_train(args, run_dir: Path) -> dict:
    """One `vislab train` in this process, each phase timed."""
    import vislab.data.audit as audit
    import vislab.data.sources as sources
    import vislab.evaluate.runner as runner
    import vislab.pipelines as pipelines
    import vislab.report.html as html
    import vislab.train.loop as loop
    from vislab.cli import main

    phases: dict[str, float] = {}

    def wrap(module, name, label):
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                phases[label] = round(phases.get(label, 0.0) + time.perf_counter() - start, 3)
        setattr(module, name, timed)

    wrap(sources, "load_dataset", "data_load")  # the task looks it up there at call time
    wrap(audit, "audit_dataset", "audit")
    wrap(loop, "Trainer", "trainer_init_and_speed_probe")
    wrap(loop, "write_model", "model_json")
    wrap(loop, "_plot_curves", "curves")
    wrap(runner, "measure_run", "test_evaluation")
    wrap(pipelines, "write_figures", "figures_and_explain_panels")
    wrap(html, "build_report", "report")
    where = ["--data-dir", args.data_dir] if args.data_dir else []
    argv = ["train", "--data", args.data, *where, "--model", args.model,
            "--epochs", str(args.epochs), "--out", str(run_dir), "--no-progress", *args.vislab_args]
    start = time.perf_counter()
    code = main(argv)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"vislab train failed ({code})")
    import csv

    with open(run_dir / "history.csv", newline="") as handle:
        epochs = [float(r["seconds"]) for r in csv.DictReader(handle)]
    phases["epochs"] = round(sum(epochs), 3)
    known = sum(v for k, v in phases.items())
    return {"wall_in_process_s": round(wall, 3), "phases_s": phases, "other_s": round(wall - known, 3),
            "fixed_cost_s": round(wall - phases["epochs"], 3), "command": " ".join(["vislab", *argv])}


def main_bench(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="fashion-mnist", help="vislab train's --data (e.g. digits)")
    parser.add_argument("--data-dir", default=None, help=f"the data's folder (fashion-mnist: {FMNIST_DIR})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--vislab-args", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    if args.data_dir is None and args.data == "fashion-mnist":
        args.data_dir = FMNIST_DIR
    if args.child:
        import json

        print(json.dumps(timed_train(args, Path(args.out))), flush=True)
        return 0
    info = {"machine": machine(), "versions": versions()}
    for rep in range(args.repeat):
        info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
        with tempfile.TemporaryDirectory(prefix="vislab-bench-fixed-") as tmp:
            env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", "--out", str(Path(tmp) / "run"),
                                   "--model", args.model, "--epochs", str(args.epochs), "--data", args.data,
                                   *(["--data-dir", args.data_dir] if args.data_dir else []),
                                   "--vislab-args", *args.vislab_args], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                return 1
            import json

            record = json.loads(proc.stdout.strip().splitlines()[-1])
        emit({"benchmark": "fixed_cost", "repeat": rep, "data": args.data, "model": args.model, "epochs": args.epochs,
              "wall_s": round(wall, 3), **record, "startup_s": startup_seconds(), **info})
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
