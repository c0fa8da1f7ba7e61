"""The LR finder: a real sweep on scikit-learn's digits gives a plot and suggestions; the suggestion
rules on curves whose answer is known; the CLI runs it and refuses what cannot work."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from vislab.train.lr_find import smooth, steepest_lr, valley_lr


def test_lr_find_on_digits_plots_and_suggests(tmp_path):
    import vislab.api as api

    config = tmp_path / "tune.yaml"
    result = api.lr_find(data="digits", model="mlp", batch_size=64, steps=80, start_lr=1e-6, end_lr=3.0,
                         out=tmp_path / "lr", write_config=str(config), val_split=0)
    assert result.plot.is_file() and result.plot.stat().st_size > 5000
    saved = json.loads(result.json_path.read_text())
    assert saved["suggestions"] == result.suggestions
    lrs = result.lrs
    assert lrs[0] == pytest.approx(1e-6) and all(b > a for a, b in zip(lrs, lrs[1:]))
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios))  # exponential sweep
    valley, steepest = result.suggestions["valley"], result.suggestions["steepest"]
    assert valley is not None and steepest is not None
    assert 1e-6 < valley < 3.0 and 1e-6 < steepest < 3.0
    # the suggestions sit where the smoothed loss has already come down from its start: the finder
    # found the descent, not the flat start or the divergence
    for lr in (valley, steepest):
        index = lrs.index(lr)
        assert result.smoothed[index] < result.smoothed[0]
    assert min(result.smoothed) < 0.8 * result.smoothed[0]  # an MLP on digits does learn in 80 steps
    written = yaml.safe_load(config.read_text())
    assert written["train"]["lr"] == pytest.approx(float(f"{valley:.3g}"))
    assert written["model"]["name"] == "mlp" and written["data"]["source"] == "digits"
    # what the sweep set beyond the defaults, and what the LR belongs to; not every default as the user's own
    assert "recipe_choices" not in written and "out" not in written
    assert {"optimizer", "batch_size", "lr"} <= set(written["train"]) and len(written["train"]) < 8
    assert written["data"]["val_split"] == 0


def test_training_from_a_written_config_names_only_what_it_sets(tmp_path):
    from vislab.cli import main

    config = tmp_path / "tune.yaml"
    assert main(["lr-find", "--data", "digits", "--model", "mlp", "--steps", "30", "--out", str(tmp_path / "lr"),
                 "--write-config", str(config)]) == 0
    done = subprocess.run([sys.executable, "-m", "vislab", "train", "--config", str(config), "--epochs", "1",
                           "--out", str(tmp_path / "run"), "--no-figures", "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("recipe auto"))
    yours = line.split("yours: ", 1)[1].split(", ")
    assert "train.lr" in yours and len(yours) < 10 and "()" not in line, line  # of about 60 keys


def test_suggestion_rules_on_known_curves():
    lrs = [10 ** (-6 + 6 * i / 199) for i in range(200)]
    # flat, a descent between 1e-4 and 1e-2 (log-linear), flat, then divergence
    def loss(lr):
        e = math.log10(lr)
        return 2.0 if e < -4 else (2.0 - 0.75 * (e + 4) if e < -2 else (0.5 if e < -0.5 else 0.5 + 5 * (e + 0.5)))
    curve = [loss(lr) for lr in lrs]
    assert 1e-4 < valley_lr(lrs, curve) < 1e-2
    assert 1e-4 <= steepest_lr(lrs, curve) < 1e-2
    assert valley_lr(lrs, [1.0] * 200) is None and steepest_lr(lrs, [1.0] * 200) is None
    smoothed = smooth([1.0] * 5 + [2.0], beta=0.9)
    assert smoothed[:5] == pytest.approx([1.0] * 5) and 1.0 < smoothed[-1] < 2.0


def test_lr_find_cli_and_its_refusals(tmp_path):
    out = tmp_path / "lr"
    done = subprocess.run([sys.executable, "-m", "vislab", "lr-find", "--data", "digits", "--model", "mlp",
                           "--steps", "30", "--batch-size", "64", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "suggestions: valley" in done.stdout and (out / "lr_find.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "vislab", "lr-find", "--data", "digits", "--model", "mlp",
                          "--start-lr", "1", "--end-lr", "0.1", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--start-lr" in bad.stderr and "Traceback" not in bad.stderr


def test_lr_find_sweeps_what_train_would_train_for_every_task(tmp_path, digits_folder):
    """The task's own data and targets (image/mask pairs, several labels per image), and with no recipe named
    the model `vislab train` would pick for the data."""
    from conftest import write_segmentation_set
    from vislab import api

    segmentation = write_segmentation_set(tmp_path / "seg", count=12)
    result = api.lr_find(data=str(segmentation), task="segmentation", steps=12, out=str(tmp_path / "lr-seg"))
    assert len(result.lrs) >= 3 and all(math.isfinite(loss) for loss in result.losses[:3])
    curve = json.loads((tmp_path / "lr-seg" / "lr_find.json").read_text())
    assert curve["steps"] == len(result.lrs)

    rows = ["file,tags"] + [f"{path.relative_to(digits_folder).as_posix()},{path.parts[-2]} {'even' if int(path.parts[-2]) % 2 == 0 else 'odd'}"
                            for path in sorted(digits_folder.glob("[0-9]/img*"))]
    (digits_folder / "tags.csv").write_text("\n".join(rows) + "\n")
    result = api.lr_find(data=str(digits_folder / "tags.csv"), task="multilabel", steps=12,
                         out=str(tmp_path / "lr-ml"))
    assert len(result.lrs) >= 3

    # a class-per-folder set this small is trained as a head on cached features: nothing to sweep, and the
    # message says how to sweep end-to-end training instead
    with pytest.raises(Exception, match="--recipe none"):
        api.lr_find(data=str(digits_folder), steps=12, out=str(tmp_path / "lr-small"))
    result = api.lr_find(data=str(digits_folder), recipe="none", model="mlp", steps=12, out=str(tmp_path / "lr-mlp"))
    assert len(result.lrs) >= 3


def test_a_long_sweep_says_how_long_it_will_take_once():
    import io

    from rich.console import Console

    from vislab.train.lr_find import _sweep_progress

    out = io.StringIO()
    with _sweep_progress(Console(file=out, width=200), steps=200) as shown:
        for step in range(1, 6):
            shown(step, 1e-4 * step, 2.3, seconds=2.0 * step)  # 2 s a step
    assert out.getvalue().strip() == "lr-find: about 394 s more for 200 steps (2.00 s a step)"
    quick = io.StringIO()
    with _sweep_progress(Console(file=quick, width=200), steps=200) as shown:
        for step in range(1, 6):
            shown(step, 1e-4, 2.3, seconds=0.01 * step)
    assert quick.getvalue() == ""
