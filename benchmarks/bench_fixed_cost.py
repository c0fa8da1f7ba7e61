"""Benchmark: a short run's fixed cost (start-up and the end-of-run artefacts), and where it goes.

A run pays, besides its epochs, the interpreter and import start-up, the data load, the dataset
audit, the speed probe (once per model and batch size: cached), model.json, the curves, the test
evaluation, the task's figures, the explanation panels and report.html. The figures and the
scikit-learn calls run in a helper interpreter beside the model's process (vislab.core.background).

Each repeat runs the command twice:

- as a user runs it (``python -m vislab train ...``, nothing added): ``wall_s``, the epochs' own
  seconds from its history.csv (``epochs_s``) and ``fixed_s`` = wall - epochs, the target's number;
- instrumented, for the breakdown: each phase timed inside one ``vislab train`` by wrapping the
  functions the pipeline calls, in wall seconds (``phases_s``: for the figures, what the model's
  process still waits for) and CPU seconds of the model's process (``phases_cpu_s``), and the imports in
  ``imports_by_package_s`` (``-X importtime`` self times per top-level package). This run imports the
  wrapped modules before the helper starts, so its total is longer than ``wall_s``.

Every line carries ``machine`` (CPU model, ISA, the load average) and ``helpers``
(``VISLAB_HELPERS``; ``--no-helpers`` runs both in one process, for the comparison).

Usage:
    python benchmarks/bench_fixed_cost.py                       # mlp, 1 epoch, Fashion-MNIST
    python benchmarks/bench_fixed_cost.py --model chollet_convnet --epochs 1 --repeat 2
    python benchmarks/bench_fixed_cost.py --data digits --epochs 2      # scikit-learn's 1,797 digits
    python benchmarks/bench_fixed_cost.py --recipe fast --epochs 1      # the fast recipe, 10k test images
    python benchmarks/bench_fixed_cost.py --data digits --epochs 2 --no-helpers   # all in one process
    python benchmarks/bench_fixed_cost.py --data digits --epochs 2 --compare-bytecode --repeat 3
    python benchmarks/bench_fixed_cost.py --epochs 3 --compare-kept --repeat 4
    python benchmarks/bench_fixed_cost.py --data photos/ --epochs 1 --compare-kept --repeat 3   # a folder
    python benchmarks/bench_fixed_cost.py --epochs 3 --compare-collector --repeat 6
    python benchmarks/bench_fixed_cost.py --epochs 3 --compare-ref HEAD~3 --repeat 6
    python benchmarks/bench_fixed_cost.py --epochs 3 --compare-ref HEAD~1 --fresh-audit --repeat 6

``--compare-kept`` alternates the plain command with what a run keeps in the cache folder for the next one
computed afresh (the dataset audit and a folder's file check: their folders under ``$VISLAB_CACHE`` emptied)
and kept from the run before (the same data and seed).

``--compare-collector`` alternates the plain command at Python's own thresholds for its cyclic garbage
collector and at vislab's (``vislab.core.collector``: a collection every 50,000 new objects, not 700).

``--compare-ref COMMIT`` alternates the plain command from a git checkout of COMMIT (the code before a
change) and from this working tree: what a change bought, as a whole. With ``--fresh-audit`` every run
computes the dataset audit afresh (as a new data set or seed does), for a change to the audit.

``--compare-bytecode`` alternates the plain command without vislab's own compiled modules (the source
tree's ``__pycache__`` folders removed, ``PYTHONDONTWRITEBYTECODE=1``: what an editable install costs where
that variable is set, as in containers and CI) and with them (``python -m compileall src/vislab``, what
``make setup`` does); it leaves them compiled.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, REPO, emit, machine, versions, vislab_command  # noqa: E402


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


def import_seconds(importtime_log: str, top: int = 12) -> dict:
    """``python -X importtime``'s self times summed per top-level package, the largest ``top``
    (seconds; the run's own imports, whichever phase made them)."""
    totals: dict[str, float] = {}
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            own = int(parts[0])
        except ValueError:  # the header line
            continue
        package = parts[2].strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + own / 1e6
    largest = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return {name: round(value, 3) for name, value in largest} | {"all": round(sum(totals.values()), 3)}


def train_argv(args, run_dir: Path) -> list[str]:
    where = ["--data-dir", args.data_dir] if args.data_dir else []
    recipe = ["--recipe", args.recipe] if args.recipe else []
    model = ["--model", args.model] if args.model else []
    return ["train", "--data", args.data, *where, *recipe, *model,
            "--epochs", str(args.epochs), "--out", str(run_dir), "--no-progress", *args.vislab_args]


def epoch_seconds(run_dir: Path) -> float:
    import csv

    with open(run_dir / "history.csv", newline="") as handle:
        return round(sum(float(r["seconds"]) for r in csv.DictReader(handle)), 3)


def plain_run(args, run_dir: Path, env: dict) -> dict:
    """The command as a user runs it: its wall time, its epochs' own seconds, the difference, and the CPU
    seconds of the command and its helpers (``cpu_s``: user + system, less swayed by a busy host than wall)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*vislab_command(), *train_argv(args, run_dir)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"vislab train failed ({proc.returncode}): {proc.stderr[-2000:]}")
    epochs = epoch_seconds(run_dir)
    return {"wall_s": round(wall, 3), "epochs_s": epochs, "fixed_s": round(wall - epochs, 3), "cpu_s": round(cpu, 3)}


def timed_train(args, run_dir: Path) -> dict:
    """One `vislab train` in this process, each phase timed (wall and CPU seconds).

    The modules wrapped below are imported first (timed as ``imports_before``); what the run
    imports later counts in the phase that imports it."""
    start, start_cpu = time.perf_counter(), time.process_time()
    import vislab.data.audit as audit
    import vislab.data.sources as sources
    import vislab.evaluate.runner as runner
    import vislab.pipelines as pipelines
    import vislab.report.html as html
    import vislab.train.loop as loop
    from vislab.cli import main

    imports_wall, imports_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}  # this process's CPU seconds (all threads): less inflated by a busy host

    def wrap(module, name, label):
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*a, **k):
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return original(*a, **k)
            finally:
                phases[label] = round(phases.get(label, 0.0) + time.perf_counter() - start, 3)
                cpu[label] = round(cpu.get(label, 0.0) + time.process_time() - start_cpu, 3)
        setattr(module, name, timed)

    wrap(sources, "load_dataset", "data_load")  # the task looks it up there at call time
    wrap(audit, "audit_dataset", "audit")
    wrap(loop, "Trainer", "trainer_init_and_speed_probe")
    wrap(loop, "write_model", "model_json")
    wrap(loop, "_plot_curves", "curves")
    wrap(runner, "measure_run", "test_evaluation")
    wrap(pipelines, "write_figures", "figures")
    wrap(pipelines, "write_explanations", "explanation_panels")  # inside test_evaluation: beside the metrics
    wrap(html, "build_report", "report")
    argv = train_argv(args, run_dir)
    start, start_cpu = time.perf_counter(), time.process_time()
    code = main(argv)
    wall, wall_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if code != 0:
        raise SystemExit(f"vislab train failed ({code})")
    phases["epochs"] = epoch_seconds(run_dir)
    known = sum(v for k, v in phases.items())
    return {"wall_in_process_s": round(wall, 3), "cpu_in_process_s": round(wall_cpu, 3),
            "imports_before_s": round(imports_wall, 3), "imports_before_cpu_s": round(imports_cpu, 3),
            "phases_s": phases, "phases_cpu_s": cpu, "other_s": round(wall - known, 3),
            "in_process_fixed_s": round(wall - phases["epochs"], 3), "command": " ".join(["vislab", *argv])}


def set_bytecode(compiled: bool) -> None:
    """vislab's own modules compiled (``compileall``) or not (every ``__pycache__`` under src/vislab removed)."""
    source = REPO / "src" / "vislab"
    if compiled:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(source)], check=True, stdout=subprocess.DEVNULL)
    else:
        for cache in source.rglob("__pycache__"):
            shutil.rmtree(cache)


def alternate(args, info: dict, env: dict, benchmark: str, field: str, prepare) -> None:
    """``--repeat`` rounds of the plain command, each run first with ``prepare(False)`` then ``prepare(True)``
    done before it; one line per run, ``field`` saying which side it was."""
    for rep in range(args.repeat):
        for side in (False, True):
            prepare(side)
            info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
            with tempfile.TemporaryDirectory(prefix="vislab-bench-fixed-") as tmp:
                plain = plain_run(args, Path(tmp) / "plain", env)
            emit({"benchmark": benchmark, "repeat": rep, field: side, "data": args.data, "model": args.model,
                  "recipe": args.recipe, "epochs": args.epochs, **plain,
                  "command": " ".join(["vislab", *train_argv(args, Path("RUN"))]), **info})


def compare_bytecode(args, info: dict) -> int:
    """The plain command alternately without and with vislab's modules compiled, ``--repeat`` rounds."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        alternate(args, info, env, "fixed_cost_bytecode", "compiled", set_bytecode)
    finally:
        set_bytecode(True)
    return 0


def warm_up(args, env: dict) -> None:
    """One plain run, thrown away: what a run keeps in the cache folder (speed choices, decoded files, the
    audit, compiled modules) is there before the timed rounds."""
    with tempfile.TemporaryDirectory(prefix="vislab-bench-fixed-") as tmp:
        plain_run(args, Path(tmp) / "plain", env)


def compare_kept(args, info: dict) -> int:
    """The plain command alternately with the dataset audit and the folder's file check computed afresh (their
    cache folders emptied first) and kept from the run before, ``--repeat`` rounds. Both sides use one cache
    folder of their own, so the speed choices and decoded files are warm in both."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with tempfile.TemporaryDirectory(prefix="vislab-bench-cache-") as cache:
        env["VISLAB_CACHE"] = cache
        warm_up(args, env)

        def forget(kept: bool) -> None:
            if not kept:
                for folder in ("audit", "checked"):
                    shutil.rmtree(Path(cache) / folder, ignore_errors=True)

        alternate(args, info, env, "fixed_cost_kept", "kept", forget)
    return 0


def compare_collector(args, info: dict) -> int:
    """The plain command alternately at Python's own collector thresholds and with vislab's
    (:func:`vislab.core.collector.relax`), ``--repeat`` rounds. The first side puts a ``sitecustomize`` module
    on ``PYTHONPATH`` that makes ``gc.set_threshold`` do nothing, in the command and in its helpers alike."""
    src = str(REPO / "src")
    env = {**os.environ, "PYTHONPATH": src}
    with tempfile.TemporaryDirectory(prefix="vislab-bench-gc-") as site:
        Path(site, "sitecustomize.py").write_text("import gc\ngc.set_threshold = lambda *args: None\n")

        def thresholds(relaxed: bool) -> None:
            env["PYTHONPATH"] = src if relaxed else os.pathsep.join([site, src])
            # what the command's processes run at on this side, checked (and written in each line)
            check = "import gc; from vislab.core import collector; collector.relax(); print(*gc.get_threshold())"
            seen = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
            info["gc_thresholds"] = [int(value) for value in seen.stdout.split()]

        alternate(args, info, env, "fixed_cost_collector", "relaxed", thresholds)
    return 0


def compare_ref(args, info: dict) -> int:
    """The plain command alternately from a git checkout of ``--compare-ref`` (a commit, tag or branch: the code
    before a change) and from this working tree, ``--repeat`` rounds, after one run of each to warm what
    both keep in the cache folder. Both trees compiled, as ``make setup`` does; the checkout is removed after."""
    src = REPO / "src"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.compare_ref], capture_output=True, text=True)
    if commit.returncode != 0:
        print(f"--compare-ref {args.compare_ref}: not a commit of {REPO} ({commit.stderr.strip()})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vislab-bench-ref-") as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), commit.stdout.strip()],
                       check=True)
        try:
            for source in (src, tree / "src"):
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(source)], check=True,
                               stdout=subprocess.DEVNULL)
            env = dict(os.environ)
            if args.fresh_audit:  # a cache folder of the benchmark's own, its audit emptied before every run
                env["VISLAB_CACHE"] = str(Path(tmp) / "cache")
                info["audit"] = "fresh"

            def checkout(current: bool) -> None:
                env["PYTHONPATH"] = str(src if current else tree / "src")
                info["code"] = "working tree" if current else f"{args.compare_ref} ({commit.stdout.strip()[:10]})"
                if args.fresh_audit:
                    for folder in ("audit", "checked"):
                        shutil.rmtree(Path(env["VISLAB_CACHE"]) / folder, ignore_errors=True)

            for current in (False, True):
                checkout(current)
                warm_up(args, env)
            alternate(args, info, env, "fixed_cost_ref", "current", checkout)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    return 0


def main_bench(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="vislab train's --model (default: mlp, or the recipe's)")
    parser.add_argument("--recipe", default=None, help="vislab train's --recipe, e.g. fast")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="fashion-mnist", help="vislab train's --data (e.g. digits)")
    parser.add_argument("--data-dir", default=None, help=f"the data's folder (fashion-mnist: {FMNIST_DIR})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-helpers", action="store_true",
                        help="VISLAB_HELPERS=0: the figures and scikit-learn calls in the model's process")
    parser.add_argument("--compare-bytecode", action="store_true",
                        help="alternate the plain command without and with vislab's modules compiled (see above)")
    parser.add_argument("--compare-kept", action="store_true",
                        help="alternate the plain command with the audit and the folder's file check computed "
                             "afresh and kept from the run before (see above)")
    parser.add_argument("--compare-collector", action="store_true",
                        help="alternate the plain command at Python's garbage collector thresholds and at "
                             "vislab's (see above)")
    parser.add_argument("--compare-ref", metavar="COMMIT", default=None,
                        help="alternate the plain command from a git checkout of COMMIT and from this working "
                             "tree (see above)")
    parser.add_argument("--fresh-audit", action="store_true",
                        help="with --compare-ref: every run computes the audit and the file check afresh (a cache "
                             "folder of the benchmark's own, those two emptied before each run)")
    parser.add_argument("--vislab-args", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    if args.fresh_audit and not args.compare_ref:
        parser.error("--fresh-audit goes with --compare-ref (--compare-kept compares a fresh audit with a kept one)")
    if args.model is None and args.recipe is None:
        args.model = "mlp"
    if args.data_dir is None and args.data == "fashion-mnist":
        args.data_dir = FMNIST_DIR
    if args.child:
        import json

        print(json.dumps(timed_train(args, Path(args.out))), flush=True)
        return 0
    info = {"machine": machine(), "versions": versions()}
    if args.no_helpers:
        os.environ["VISLAB_HELPERS"] = "0"
    if args.compare_bytecode:
        return compare_bytecode(args, info)
    if args.compare_kept:
        return compare_kept(args, info)
    if args.compare_collector:
        return compare_collector(args, info)
    if args.compare_ref:
        return compare_ref(args, info)
    for rep in range(args.repeat):
        info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
        with tempfile.TemporaryDirectory(prefix="vislab-bench-fixed-") as tmp:
            env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
            plain = plain_run(args, Path(tmp) / "plain", env)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-X", "importtime", __file__, "--child", "--out", str(Path(tmp) / "run"),
                                   *(["--model", args.model] if args.model else []),
                                   *(["--recipe", args.recipe] if args.recipe else []),
                                   "--epochs", str(args.epochs), "--data", args.data,
                                   *(["--data-dir", args.data_dir] if args.data_dir else []),
                                   "--vislab-args", *args.vislab_args], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                return 1
            import json

            record = json.loads(proc.stdout.strip().splitlines()[-1])
            record["imports_by_package_s"] = import_seconds(proc.stderr)
        emit({"benchmark": "fixed_cost", "repeat": rep, "data": args.data, "model": args.model, "recipe": args.recipe,
              "epochs": args.epochs, "threads": os.environ.get("OMP_NUM_THREADS"),
              "helpers": os.environ.get("VISLAB_HELPERS", "1"), **plain,
              "instrumented_wall_s": round(wall, 3), **record, "startup_s": startup_seconds(), **info})
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
