"""What `vislab train` says and keeps: the recipe line under --time-budget, --resume of a converged
L-BFGS head, and `vislab models` within the terminal's width."""

from __future__ import annotations

import pytest
import torch
import yaml

from vislab.cli import main

LBFGS_HEAD = ["--data", "digits", "--model", "chollet_convnet", "--freeze", "backbone", "--cache-features",
              "--optimizer", "lbfgs", "--allow-random-backbone", "--seed", "0", "--no-figures", "--no-progress"]


def _files(run) -> dict:
    return {path.relative_to(run): path.read_bytes() for path in sorted(run.rglob("*")) if path.is_file()}


# --------------------------------------------------------------------------- --time-budget's recipe line
def test_recipe_line_names_the_schedule_the_budget_trains_with(tmp_path, capsys):
    """digits' rule picks Adam without a schedule; the budget fits one-cycle to its epochs, and the line
    printed before training says so (not `none`, and no epoch count the budget then replaces)."""
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--time-budget", "5s", "--precision", "fp32", "--out", str(run),
                 "--no-figures", "--no-progress"]) == 0
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith("recipe auto:"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    scheduler = cfg["train"]["scheduler"]
    assert scheduler == "onecycle"
    assert f"adam {scheduler} lr 0.001, epochs from the 5s budget" in line, line
    assert " none " not in line and "10 epochs" not in line, line
    record = cfg["recipe_choices"]["time_budget"]  # the budget's own record stays as it was
    assert record["scheduler"] == "onecycle (fitted to the budget)" and record["epochs"] == cfg["train"]["epochs"]


def test_recipe_line_keeps_the_users_schedule_under_a_budget(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--optimizer", "adam", "--scheduler", "cosine",
                 "--time-budget", "4s", "--precision", "fp32", "--out", str(run), "--no-figures",
                 "--no-progress"]) == 0
    line = next(text for text in capsys.readouterr().out.splitlines() if text.startswith("recipe auto:"))
    assert "adam cosine lr" in line and "epochs from the 4s budget" in line, line
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["scheduler"] == "cosine"


# --------------------------------------------------------------------------- --resume of an L-BFGS head
def test_resuming_a_converged_lbfgs_head_is_one_line_and_leaves_the_run(tmp_path, capsys):
    """A strong L2 penalty makes L-BFGS converge in the first epoch; the run stops there. --resume (with or
    without more --epochs) has nothing to learn: one error line, and every file of the run as it was."""
    run = tmp_path / "run"
    assert main(["train", *LBFGS_HEAD, "--epochs", "5", "--weight-decay", "0.1", "--out", str(run)]) == 0
    assert "converged in epoch 1" in capsys.readouterr().out
    assert len((run / "history.csv").read_text().splitlines()) == 2  # the header and epoch 1
    before = _files(run)
    for more in ([], ["--epochs", "9"], ["--epochs", "1"]):
        assert main(["train", "--resume", str(run), *more]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"--resume {run}: its L-BFGS logistic-regression head converged in epoch 1" in err, err
        assert f"vislab evaluate {run}" in err
        assert _files(run) == before
    # a checkpoint written before the flag was kept: the optimiser's iteration count says the same
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert state.pop("converged") is True
    torch.save(state, run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run), "--epochs", "9"]) == 1
    assert "converged in epoch 1" in capsys.readouterr().err


def test_an_lbfgs_head_that_has_not_converged_resumes_at_the_next_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *LBFGS_HEAD, "--epochs", "1", "--out", str(run)]) == 0
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    if state.get("converged"):
        pytest.skip("L-BFGS converged within one epoch on this machine's numbers")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert "resuming" in capsys.readouterr().out
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]


# --------------------------------------------------------------------------- vislab models
@pytest.mark.parametrize("flags", [[], ["--parameters"], ["--task", "segmentation"]])
def test_models_fits_80_columns_and_keeps_every_field(flags, capsys, monkeypatch):
    from vislab import api

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    assert main(["models", *flags]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    task = flags[1] if flags[:1] == ["--task"] else None
    rows = api.models(task=task, parameters="--parameters" in flags)
    words = " ".join(out.split())
    for row in rows:
        assert row["name"] in out and row["weights"] in out
        assert " ".join(row["description"].split()) in words, row["name"]  # wrapped, never cut
        if row.get("parameters"):
            assert f"{row['parameters']:,}" in out
    for tasks in {", ".join(row["tasks"]) for row in rows}:
        assert f"tasks: {tasks}" in out
    assert "3x224x224" in out or task == "segmentation"


def test_models_text_uses_a_wider_terminal():
    from vislab import api
    from vislab.cli import _models_text

    rows = api.models()
    wide = _models_text(rows, "vislab models", False, width=160).splitlines()
    narrow = _models_text(rows, "vislab models", False, width=80).splitlines()
    assert max(map(len, wide)) > 80 and max(map(len, narrow)) <= 80 and len(wide) < len(narrow)


def test_a_budget_that_leaves_too_few_steps_for_one_cycle_keeps_the_rate():
    """--time-budget re-planning a slow fine-tuning run on about one batch of images down to 2 epochs (2 steps):
    one-cycle needs 3, so the rate is held; refitting the schedule raised AttributeError ('NoneType' ... 'step')."""
    import types

    from vislab import api
    from vislab.train.budget import refit_schedule

    cfg = api.make_config(data="digits", model="mlp", scheduler="onecycle", lr=1e-3, time_budget="1m")
    cfg.train.epochs = 2  # what the budget planned after the first epoch
    weight = torch.nn.Parameter(torch.zeros(2))
    trainer = types.SimpleNamespace(cfg=cfg, optimizer=torch.optim.AdamW([weight], lr=1e-3), steps_per_epoch=1,
                                    scheduler=object(), step_per_batch=True)
    refit_schedule(trainer, done_steps=1)
    assert trainer.scheduler is None and not trainer.step_per_batch
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3
    cfg.train.epochs = 4  # enough steps: one-cycle again, moved past the step taken
    refit_schedule(trainer, done_steps=1)
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.OneCycleLR) and trainer.scheduler.last_epoch == 1
