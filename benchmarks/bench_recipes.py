"""Benchmark: the seeds' recipes through `vislab train` against the seeds' own tf.keras code.

For each recipe (mlp, chollet_convnet, vgg_like + dropout, model3) the two sides run
alternately in one invocation (keras, vislab, keras, vislab, ... with ``--repeat``;
repeat r uses seed r (plus --first-seed) on both sides, so test accuracies are means over initialisations),
on the same data (Fashion-MNIST, 50k train / 10k validation / 10k test, the same images on both sides:
the tf.keras side is handed the validation indices vislab draws for the seed), the same
optimiser, learning rate, batch size and epochs (see keras_seeds.py for the table
and where the values come from). One JSON line per run, then one ``ratio`` line per
recipe: vislab seconds per epoch / tf.keras seconds per epoch (target <= 0.5) and
the test-accuracy gap (target within 0.5 point).

Seconds per epoch are each side's own epoch timer, validation included (vislab:
history.csv ``seconds``; Keras: a callback around each epoch). The first epoch carries
warm-up on both sides (oneDNN kernel selection, tf.function tracing), so the mean over
epochs 2.. is reported too, and the ratio of the median epochs (``time_ratio_median_epoch``),
which a few epochs slowed by a busy host (2x swings were seen on the shared 2-core VM) do
not move. ``wall_s`` is the whole command, interpreter start to exit.

TensorFlow is not a vislab dependency: ``--install-tf`` creates ``benchmarks/.venv-tf``
(git-ignored) and pip-installs tensorflow-cpu into it. Without tensorflow there (or in this
interpreter) the tf.keras side is skipped with a note on stderr and the vislab side still runs.

Usage:
    python benchmarks/bench_recipes.py --install-tf                  # all recipes, their own epochs
    python benchmarks/bench_recipes.py --recipes mlp chollet_convnet --epochs 3 --repeat 2
    python benchmarks/bench_recipes.py --side vislab                # vislab only (no TensorFlow)
    python benchmarks/bench_recipes.py --recipes mlp --epochs 1 --max-per-class 10   # a quick check
    python benchmarks/bench_recipes.py --side vislab --recipes mlp --epochs 3 --repeat 2 --lever torch_init
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FMNIST_DIR, REPO, emit, fmnist_available, machine, versions, vislab_command  # noqa: E402
from keras_seeds import RECIPES  # noqa: E402  (the one table both sides read)

TF_VENV = REPO / "benchmarks" / ".venv-tf"
KERAS_SCRIPT = REPO / "benchmarks" / "keras_seeds.py"
# vislab's model options that make the same network as keras_seeds.build()
MODEL_OPTIONS = {"mlp": ["hidden=[512,256]"], "chollet_convnet": [], "vgg_like": ["dropout=0.25"],
                 "model3": ["dropout=0.25"]}


def tf_python(install: bool = False) -> Path | None:
    """An interpreter that imports tensorflow: benchmarks/.venv-tf's (created, python -m venv + pip install
    tensorflow-cpu, with ``install``), else this one's when it has tensorflow, else None."""
    python = TF_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True).returncode == 0:
        return python
    if not install:
        return Path(sys.executable) if importlib.util.find_spec("tensorflow") is not None else None
    print(f"bench_recipes: creating {TF_VENV} with tensorflow-cpu (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(TF_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "tensorflow-cpu", "numpy"], check=True)
    return python


def vislab_val_indices(data_dir: str, seed: int) -> "np.ndarray":
    """The training file's image indices that `vislab train --data fashion-mnist --val-split 10000 --seed SEED`
    validates on: the tf.keras side is handed them, so both sides train on the same 50,000 images (a fixed
    "last 10,000" against vislab's seeded stratified draw was one more difference between them). Checked
    against the split vislab itself makes."""
    import numpy as np
    import torch

    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset
    from vislab.data.stratify import stratified_indices

    whole = load_dataset(DataConfig(source="fashion-mnist", data_dir=data_dir, val_split=0), seed=seed).splits["train"]
    # vislab holds the validation images out of the training file with the run's seed + 1
    _, held = stratified_indices(whole.labels.numpy(), 10000, seed + 1)
    val = load_dataset(DataConfig(source="fashion-mnist", data_dir=data_dir, val_split=10000), seed=seed).splits["val"]
    if not torch.equal(val.images, whole.images[torch.as_tensor(held)]):
        raise RuntimeError("vislab's validation split is no longer drawn as bench_recipes.py assumes; update "
                           "vislab_val_indices()")
    return held


def run_keras(python: Path, recipe: str, epochs: int, data_dir: str, seed: int, max_per_class: int | None) -> dict:
    import numpy as np

    cap = ["--max-per-class", str(max_per_class)] if max_per_class else []
    with tempfile.TemporaryDirectory(prefix="vislab-bench-split-") as tmp:
        split = Path(tmp) / "val_indices.npy"
        np.save(split, vislab_val_indices(data_dir, seed))
        proc = subprocess.run([str(python), str(KERAS_SCRIPT), "--recipe", recipe, "--epochs", str(epochs),
                               "--data-dir", data_dir, "--seed", str(seed), "--val-indices", str(split), *cap],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"keras_seeds.py {recipe} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seed": seed}


#: what the vislab side changes for ``--lever``, to measure what each Keras default is worth:
#: code run before ``vislab train`` in the same interpreter (the benchmark's own swap, not an option)
LEVERS = {
    "keras": "",  # vislab as shipped: glorot-uniform weights, zero biases, Keras' RMSprop
    "torch_init": "import vislab.models.classic as c; c.keras_init = lambda module: module",
    "torch_rmsprop": ("import torch, vislab.train.optim as o; o.KerasRMSprop = lambda params, lr, alpha, eps, momentum, "
                      "weight_decay: torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)"),
}


def _lever_command(lever: str) -> list[str]:
    if not LEVERS[lever]:
        return vislab_command()
    # vislab.cli.run, as the `vislab` command: its process settings and its exit without the interpreter's teardown
    return [sys.executable, "-c", f"{LEVERS[lever]}; from vislab.cli import run; run()"]


def run_vislab(recipe: str, epochs: int, data_dir: str, seed: int, extra: list[str], lever: str = "keras") -> dict:
    hp = RECIPES[recipe]
    with tempfile.TemporaryDirectory(prefix="vislab-bench-recipe-") as tmp:
        out = Path(tmp) / "run"
        command = [*_lever_command(lever), "train", "--data", "fashion-mnist", "--data-dir", data_dir,
                   "--model", recipe, "--optimizer", hp["optimizer"], "--lr", str(hp["lr"]),
                   "--batch-size", str(hp["batch_size"]), "--epochs", str(epochs), "--val-split", "10000",
                   "--seed", str(seed), "--out", str(out), "--no-progress", *extra]
        if MODEL_OPTIONS[recipe]:
            command += ["--model-opt", *MODEL_OPTIONS[recipe]]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"vislab train {recipe} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        with open(out / "history.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        seconds = [float(r["seconds"]) for r in rows]
        metrics = json.loads((out / "metrics.json").read_text())
        import yaml

        # what --precision auto measured and chose (or what a flag forced)
        speed = (yaml.safe_load((out / "config.yaml").read_text())["train"].get("speed") or {}).get("summary")
    return {
        "side": "vislab", "lever": lever, "recipe": recipe, "epochs": epochs, "batch_size": hp["batch_size"],
        "optimizer": hp["optimizer"], "lr": hp["lr"], "seed": seed, "command": "vislab " + " ".join(command[command.index("train"):]),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "seconds_per_epoch_after_first": round(sum(seconds[1:]) / (len(seconds) - 1), 3) if len(seconds) > 1
        else None,
        "epoch_seconds": [round(s, 3) for s in seconds], "val_accuracy": float(rows[-1]["val_acc"]),
        "test_accuracy": float(metrics["accuracy"]), "wall_s": round(wall, 2), "speed_choice": speed,
    }


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (equal on both sides)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of each side per recipe")
    parser.add_argument("--first-seed", type=int, default=0, help="repeat r uses seed FIRST_SEED + r on both sides")
    parser.add_argument("--side", choices=["both", "vislab", "keras"], default="both")
    parser.add_argument("--data-dir", default=FMNIST_DIR, help="folder with the Fashion-MNIST idx files")
    parser.add_argument("--max-per-class", type=int, default=None,
                        help="at most N training and N validation images per class on both sides (a quick check)")
    parser.add_argument("--install-tf", action="store_true",
                        help=f"create {TF_VENV.relative_to(REPO)} with tensorflow-cpu when no tensorflow is found")
    parser.add_argument("--lever", choices=list(LEVERS), default="keras",
                        help="vislab side: as shipped (keras), or with torch's default init or torch's RMSprop "
                             "(alpha 0.99, eps 1e-8 outside the square root) instead")
    parser.add_argument("--vislab-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `vislab train` flags, e.g. --precision fp32 (must come last)")
    args = parser.parse_args(argv)
    if not fmnist_available(args.data_dir):
        print(f"bench_recipes: {args.data_dir} not found; install dataset-fashion-mnist or pass --data-dir",
              file=sys.stderr)
        return 2
    info = {"machine": machine(), "versions": versions()}
    sides = ["keras", "vislab"] if args.side == "both" else [args.side]
    python = tf_python(args.install_tf) if "keras" in sides else None
    if "keras" in sides and python is None:
        hint = f"--install-tf creates {TF_VENV.relative_to(REPO)} with tensorflow-cpu"
        if args.side == "keras":
            print(f"error: --side keras: tensorflow is not installed; {hint}", file=sys.stderr)
            return 1
        print(f"bench_recipes: tensorflow not installed, the tf.keras side skipped; {hint}", file=sys.stderr)
        sides = ["vislab"]
    for recipe in args.recipes:
        epochs = args.epochs or RECIPES[recipe]["epochs"]
        results = {side: [] for side in sides}
        for rep in range(args.repeat):
            for side in sides if rep % 2 == 0 else sides[::-1]:  # alternate who goes first
                info["machine"]["load_1min"] = round(os.getloadavg()[0], 2)
                # repeat r uses seed first_seed + r on both sides: the mean accuracy averages over initialisations
                cap = ["--max-per-class", str(args.max_per_class)] if args.max_per_class else []
                seed = args.first_seed + rep
                result = (run_keras(python, recipe, epochs, args.data_dir, seed, args.max_per_class) if side == "keras"
                          else run_vislab(recipe, epochs, args.data_dir, seed, [*cap, *args.vislab_args], args.lever))
                results[side].append(result)
                emit({"benchmark": "seed_recipe", "repeat": rep, **result, **info})
        if len(sides) == 2:
            keras, vis = results["keras"], results["vislab"]
            per_epoch = {s: _mean([r["seconds_per_epoch"] for r in results[s]]) for s in sides}
            steady = {s: _mean([r["seconds_per_epoch_after_first"] for r in results[s]]) for s in sides}
            acc = {s: _mean([r["test_accuracy"] for r in results[s]]) for s in sides}
            # the median epoch: robust to the few epochs a busy host slows by 2x (seen on the 2-core VM)
            median = {s: _median([e for r in results[s] for e in r["epoch_seconds"]]) for s in sides}
            emit({"benchmark": "seed_recipe_ratio", "recipe": recipe, "epochs": epochs, "runs_per_side": args.repeat,
                  "keras_seconds_per_epoch": round(per_epoch["keras"], 3),
                  "vislab_seconds_per_epoch": round(per_epoch["vislab"], 3),
                  "time_ratio": round(per_epoch["vislab"] / per_epoch["keras"], 3),
                  "time_ratio_after_first_epoch": round(steady["vislab"] / steady["keras"], 3)
                  if steady["keras"] and steady["vislab"] else None,
                  "keras_median_epoch_s": round(median["keras"], 3), "vislab_median_epoch_s": round(median["vislab"], 3),
                  "time_ratio_median_epoch": round(median["vislab"] / median["keras"], 3),
                  "wall_ratio": round(_mean([r["wall_s"] for r in vis]) / _mean([r["wall_s"] for r in keras]), 3),
                  "keras_test_accuracy": round(acc["keras"], 4), "vislab_test_accuracy": round(acc["vislab"], 4),
                  "accuracy_gap_points": round(100 * (acc["vislab"] - acc["keras"]), 2),
                  "keras_test_accuracies": [round(r["test_accuracy"], 4) for r in keras],
                  "vislab_test_accuracies": [round(r["test_accuracy"], 4) for r in vis],
                  "tensorflow": keras[0]["versions"]["tensorflow"], **info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
