"""Every script in benchmarks/ runs, in a tiny mode, so that none of them rots.

Each script is run as a user runs it (``python benchmarks/NAME.py ARGS``, executed as
``__main__`` in this process to spare a fresh interpreter's imports; the children a script
starts import this checkout's ``src`` through ``PYTHONPATH``) with the small options in
``TINY``. A run must exit 0 and print at least one JSON line carrying ``machine``. A new
script fails ``test_every_script_has_a_tiny_run`` until it has an entry here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import sys
from pathlib import Path

import pytest

from conftest import HAVE_FMNIST

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
HELPERS = {"_common.py", "mosaic_data.py"}  # imported by the scripts, not run on their own


def _tensorflow_python() -> str | None:
    """An interpreter that imports tensorflow (bench_recipes' venv, or this one), else None."""
    venv = BENCH / ".venv-tf" / "bin" / "python"
    if venv.exists():
        return str(venv)
    return sys.executable if importlib.util.find_spec("tensorflow") is not None else None


SLOW = [pytest.mark.slow]  # over ~10 s even tiny on a quiet 2-core CPU (ImageNet-size models, several pipelines)
# script -> (arguments of its tiny run, marks). {tmp}: the test's temporary folder; {run}: a trained
# 1-epoch digits mlp run folder (a model for the deploy scripts that is quick to export and serve).
TINY: dict[str, tuple[list[str], list]] = {
    "bench_audit.py": (["--max-per-class", "20", "--repeat", "1"], []),
    "bench_auto_recipe.py": (["--tiny", "--rows", "digits", "mosaics", "--workdir", "{tmp}/auto"], []),
    "bench_auto_choice.py": (["--classes", "native", "--per-class", "20", "--epochs", "1"], SLOW),
    "bench_dataloading.py": (["--images", "40", "--source-size", "48", "--size", "32", "--batch-size", "8",
                              "--workers", "0", "--epochs", "1"], []),
    "bench_evaluate.py": (["--train-per-class", "20", "--test-per-class", "10"], SLOW),
    "bench_explain.py": (["--repeats", "1", "--lime-samples", "20"], SLOW),
    "bench_export.py": (["--model", "{run}", "--batch", "2", "--size", "32", "--rounds", "1"], []),
    "bench_fixed_cost.py": (["--data", "digits", "--model", "mlp", "--epochs", "1"], []),
    "bench_gpu_training.py": (["--device", "cpu", "--models", "resnet18", "vit_tiny_patch16_224", "--batch-size", "4",
                               "--image-size", "32", "--steps", "2", "--warmup", "1", "--repeat", "1"], []),
    "bench_head_init.py": (["--train-per-class", "2", "--test-per-class", "1", "--epochs", "1", "--seeds", "0"], SLOW),
    "bench_imbalance.py": (["--epochs", "1", "--head", "20", "--tail", "2", "--test-per-class", "5",
                            "--model", "mlp", "--variants", "none", "focal"], SLOW),
    "bench_inference.py": (["--batch", "2", "--size", "64", "--repeats", "1", "--agreement-images", "4"], SLOW),
    "bench_label_issues.py": (["--per-class", "12", "--noise", "0.1"], []),
    "bench_lpft.py": (["--train-per-class", "4", "--test", "2", "--size", "32", "--epochs", "1", "--bs", "8"], SLOW),
    "bench_multilabel.py": (["--train", "60", "--test", "20", "--epochs", "1", "--lite0-epochs", "1",
                             "--lite0-size", "32"], SLOW),
    "bench_precision_choice.py": (["--models", "mlp", "--only", "probe", "fp16_cpu", "threads"], []),
    "bench_recipe_search.py": (["--group", "width", "--variants", "1", "--parallel", "1",
                                "--vislab-args", "--max-per-class", "10", "--epochs", "1"], []),
    "bench_recipes.py": (["--recipes", "mlp", "--epochs", "1", "--max-per-class", "10"], []),
    "bench_seg_levers.py": (["--data", "{tmp}/seg", "--n", "16", "--bs", "8", "--epochs", "1",
                             "--dec", "16,16,8,8,8"], []),
    "bench_segmentation.py": (["--data", "{tmp}/seg", "--out", "{tmp}/runs", "--train", "24", "--test", "8",
                               "--epochs", "1", "--batch-size", "8", "--decoder", "16,16,8,8,8"], SLOW),
    "bench_segmentation_inference.py": (["--images", "1", "--repeat", "1"], []),
    "bench_serve.py": (["--model", "{run}", "--clients", "1", "--requests", "2", "--seconds", "5", "--size", "32",
                        "--forward-seconds", "0.2"], []),
    "bench_smoke_floors.py": (["--examples", "linear_regression.py", "--seeds", "0", "--classes", "native"], []),
    "bench_step_costs.py": (["--smoke", "--repeat", "1"], []),
    "bench_time_to_accuracy.py": (["--", "--model", "mlp", "--epochs", "1", "--max-per-class", "20"], []),
    "bench_transfer.py": (["--seeds", "0", "--train-per-class", "2", "--test-per-class", "2", "--epochs-scratch", "1",
                           "--scratch-models", "chollet_convnet", "--only-bars"], SLOW),
    "check_same_results.py": (["--runs", "chollet-digits"], []),
    "keras_seeds.py": (["--recipe", "mlp", "--epochs", "1", "--max-per-class", "10"],
                       [pytest.mark.skipif(_tensorflow_python() is None,
                                           reason="tensorflow not installed (bench_recipes' tf.keras side)")]),
}
NEEDS_FMNIST = {"bench_auto_choice.py", "bench_evaluate.py", "bench_head_init.py", "bench_imbalance.py", "bench_label_issues.py",
                "bench_lpft.py", "bench_multilabel.py", "bench_precision_choice.py", "bench_recipe_search.py",
                "bench_recipes.py", "bench_seg_levers.py", "bench_segmentation.py", "bench_time_to_accuracy.py",
                "bench_transfer.py", "check_same_results.py", "keras_seeds.py", "bench_step_costs.py"}


def scripts() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if p.name not in HELPERS)


def test_every_script_has_a_tiny_run():
    missing = [name for name in scripts() if name not in TINY]
    assert not missing, f"add a tiny invocation to TINY in {__file__} for: {', '.join(missing)}"
    assert not set(TINY) - set(scripts()), "TINY names a script that is gone"


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            out.append(json.loads(line))
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 1-epoch mlp on scikit-learn's digits: a model folder that exports and serves in seconds."""
    from vislab.cli import main

    out = tmp_path_factory.mktemp("bench-model") / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", str(out), "--no-evaluate",
                 "--no-figures", "--no-progress"]) == 0
    return out


def run_script(name: str, args: list[str], capsys, monkeypatch, tmp_path) -> tuple[int, list[dict], str]:
    """``python benchmarks/NAME ARGS`` as __main__ in this process; (exit code, JSON lines, stderr)."""
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for key in ("VISLAB_CACHE", "OMP_NUM_THREADS"):  # a script may set them for itself
        monkeypatch.setenv(key, os.environ[key]) if key in os.environ else monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "argv", [str(BENCH / name), *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    monkeypatch.setattr(sys, "path", list(sys.path))
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(BENCH / name), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return code, json_lines(captured.out), captured.err


def _check_gpu_training(lines: list[dict]) -> None:
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


def _check_time_to_accuracy(lines: list[dict]) -> None:
    modes = {r["mode"]: r for r in lines if r.get("benchmark") == "time_to_accuracy"}
    assert set(modes) == {"curve", "cold"}
    assert [e["epoch"] for e in modes["curve"]["epochs"]] == [1]  # the test split stood in for validation
    assert 0 < modes["cold"]["test_accuracy"] <= 1


def _check_fixed_cost(lines: list[dict]) -> None:
    (line,) = [r for r in lines if r.get("benchmark") == "fixed_cost"]
    phases = line["phases_s"]
    for phase in ("data_load", "audit", "trainer_init_and_speed_probe", "model_json", "curves", "test_evaluation",
                  "figures", "explanation_panels", "report", "epochs"):
        assert phase in phases, f"{phase} was not timed: the wrapped function moved"
    # the headline: the command as a user runs it, and its epochs' own seconds from history.csv
    assert line["wall_s"] > line["epochs_s"] > 0
    assert line["fixed_s"] == pytest.approx(line["wall_s"] - line["epochs_s"], abs=0.002)
    assert line["helpers"] == "1" and "isa" in line["machine"] and "load_1min" in line["machine"]


def _check_recipes(lines: list[dict], err: str) -> None:
    sides = {r["side"] for r in lines if r.get("benchmark") == "seed_recipe"}
    if _tensorflow_python() is None:
        assert sides == {"vislab"} and "tf.keras side skipped" in err
    else:
        assert sides == {"vislab", "tf.keras"}
        assert any(r.get("benchmark") == "seed_recipe_ratio" for r in lines)


def _check_auto_recipe(lines: list[dict]) -> None:
    """Each row trained with no flags but the data (plus --epochs 1) in a fresh process; its line carries the
    headline, the wall time and the recipe line."""
    assert [line["row"] for line in lines] == ["digits", "mosaics"]
    digits, mosaics = lines
    assert 0 <= digits["accuracy"] <= 1 and 0 <= mosaics["map"] <= 1
    assert digits["recipe"].startswith("recipe auto: fastnet") and "multi-label" in mosaics["recipe"]
    assert all(line["wall_s"] > 0 and "isa" in line["machine"] for line in lines)


CHECKS = {"bench_gpu_training.py": _check_gpu_training, "bench_time_to_accuracy.py": _check_time_to_accuracy,
          "bench_fixed_cost.py": _check_fixed_cost, "bench_auto_recipe.py": _check_auto_recipe}


@pytest.mark.parametrize("name", [pytest.param(n, marks=TINY[n][1]) if n in TINY else n for n in scripts()])
def test_script_tiny_run(name, capsys, monkeypatch, tmp_path, request):
    if name not in TINY:
        pytest.fail(f"{name} has no tiny invocation in TINY")
    if name in NEEDS_FMNIST and not HAVE_FMNIST:
        pytest.skip("Fashion-MNIST files absent: apt-get install dataset-fashion-mnist")
    args = list(TINY[name][0])
    if "{run}" in args:
        run = str(request.getfixturevalue("tiny_run"))
        args = [a.replace("{run}", run) for a in args]
    if name == "keras_seeds.py" and _tensorflow_python() != sys.executable:
        pytest.skip("tensorflow lives in benchmarks/.venv-tf: exercised through bench_recipes.py")
    code, lines, err = run_script(name, args, capsys, monkeypatch, tmp_path)
    assert code == 0, f"{name} {' '.join(args)} exited {code}:\n{err[-3000:]}"
    assert any("machine" in line for line in lines), f"{name} printed no JSON line with machine:\n{err[-2000:]}"
    if name == "bench_recipes.py":
        _check_recipes(lines, err)
    elif name in CHECKS:
        CHECKS[name](lines)


def test_bench_evaluate_times_the_metrics_alone_without_any_data(capsys, monkeypatch, tmp_path):
    # the script's full run is slow (it trains first); its metrics mode needs no data set and is quick
    code, lines, err = run_script("bench_evaluate.py", ["--metrics-only", "--repeat", "1"], capsys, monkeypatch,
                                  tmp_path)
    assert code == 0, err[-3000:]
    assert [(line["classes"], line["images"]) for line in lines] == [(10, 10_000), (100, 10_000)]
    assert all(line["seconds"] > 0 and "isa" in line["machine"] for line in lines)


@pytest.mark.slow  # three short trainings (half a minute): the script's plain mode runs in test_script_tiny_run
def test_bench_fixed_cost_alternates_a_fresh_and_a_kept_audit(capsys, monkeypatch, tmp_path):
    code, lines, err = run_script("bench_fixed_cost.py", ["--data", "digits", "--epochs", "1", "--repeat", "1",
                                                          "--compare-kept"], capsys, monkeypatch, tmp_path)
    assert code == 0, err[-3000:]
    assert [line["kept"] for line in lines] == [False, True]
    assert all(line["wall_s"] > line["epochs_s"] > 0 and "isa" in line["machine"] for line in lines)


@pytest.mark.slow  # two short trainings
def test_bench_fixed_cost_alternates_pythons_and_vislabs_collector_thresholds(capsys, monkeypatch, tmp_path):
    code, lines, err = run_script("bench_fixed_cost.py", ["--data", "digits", "--epochs", "1", "--repeat", "1",
                                                          "--compare-collector"], capsys, monkeypatch, tmp_path)
    assert code == 0, err[-3000:]
    assert [line["relaxed"] for line in lines] == [False, True]
    assert [line["gc_thresholds"][0] for line in lines] == [700, 50_000]  # each side ran as it says
    assert all(line["wall_s"] > line["epochs_s"] > 0 and line["cpu_s"] > 0 for line in lines)


@pytest.mark.slow  # four short trainings
def test_bench_fixed_cost_alternates_a_commits_code_and_the_working_tree(capsys, monkeypatch, tmp_path):
    import subprocess

    if not (Path(__file__).parents[1] / ".git").exists():
        pytest.skip("not a git checkout")

    code, lines, err = run_script("bench_fixed_cost.py", ["--data", "digits", "--epochs", "1", "--repeat", "1",
                                                          "--compare-ref", "HEAD"], capsys, monkeypatch, tmp_path)
    assert code == 0, err[-3000:]
    assert [line["current"] for line in lines] == [False, True]
    assert lines[0]["code"].startswith("HEAD (") and lines[1]["code"] == "working tree"
    worktrees = subprocess.run(["git", "-C", str(Path(__file__).parents[1]), "worktree", "list"], capture_output=True,
                               text=True).stdout
    assert "vislab-bench-ref-" not in worktrees  # its checkout removed
    code, lines, err = run_script("bench_fixed_cost.py", ["--data", "digits", "--compare-ref", "no-such-commit"],
                                  capsys, monkeypatch, tmp_path)
    assert code != 0 and "--compare-ref no-such-commit: not a commit" in err


@pytest.mark.slow  # two short trainings and four commands (half a minute)
def test_bench_explain_measures_a_large_photo_against_predict(capsys, monkeypatch, tmp_path):
    """Its --large-photo mode: two tiny runs trained, then predict and explain of one photo, each a command."""
    code, lines, err = run_script("bench_explain.py", ["--large-photo", "64", "--repeats", "1"], capsys, monkeypatch,
                                  tmp_path)
    assert code == 0, err[-3000:]
    rows = [line for line in lines if line.get("benchmark") == "explain_large_photo"]
    assert sorted((row["model"], row["what"]) for row in rows) == [
        ("chollet_convnet", "vislab explain"), ("chollet_convnet", "vislab predict"),
        ("mlp", "vislab explain"), ("mlp", "vislab predict")]
    assert all(row["code"] == 0 and row["seconds"] > 0 and row["peak_mb"] > 50 and "machine" in row for row in rows)
