"""A run's life outside the happy path: interrupted, stopped early, compared while damaged or unfinished.

- an interrupted run says how to continue it; evaluate, summary and compare on it say it is unfinished
  and give the resume command; resuming with ``--epochs`` equal to what it trained finishes it as it is;
- interrupted before its first checkpoint, a new run leaves no folder; killed then (SIGKILL, power loss), its
  folder is an unfinished run that every command names, with the command that starts it again;
- interrupted in the evaluation after training, the run says its model is saved and gives the command
  that evaluates it; history.csv's epochs are read one way for the unfinished run's line and compare;
- early stopping on a val_ metric with no validation split is refused (the user's own --val-split 0)
  or warned about, monitoring the training metric (a recipe's split); --monitor loss needs no validation;
- after early stopping restored the best weights, the summary gives that epoch and its numbers;
- compare reports a malformed metrics.json, model.json, config.yaml or history.csv in one line naming
  the file and the fix, and ranks the other runs.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from vislab.cli import main


def _vislab(*args):
    # Ctrl-C's default action in the child, as at a terminal: a shell without job control starts a background
    # job (`make test &`) with SIGINT ignored, which the child would inherit and never be interrupted
    return subprocess.Popen([sys.executable, "-m", "vislab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _joined(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines, paths included


def _epochs(run) -> list[int]:
    with open(run / "history.csv") as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


# --------------------------------------------------------------------------- interruption
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A real digits run stopped with Ctrl-C (SIGINT) after its first epoch: (run folder, exit code, stderr)."""
    run = tmp_path_factory.mktemp("interrupted") / "run"
    proc = _vislab("train", "--data", "digits", "--model", "mlp", "--epochs", "500", "--no-progress",
                   "--precision", "fp32", "--out", str(run))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # epoch 1 checkpointed: interrupt a later epoch
        if (run / "history.csv").exists() and len((run / "history.csv").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return run, proc.returncode, err


def test_an_interrupted_run_says_how_to_continue(interrupted):
    run, code, err = interrupted
    assert code == 130 and "Traceback" not in err, err
    assert not (run / "model.json").exists(), "interrupted too late: the run had finished"
    from vislab.train.checkpoint import load_training_state

    # the checkpoint's count: history.csv is written first, so it may hold one epoch more
    done = int(load_training_state(run / "checkpoints" / "last.pt")["epoch"]) + 1
    assert done in (_epochs(run)[-1], _epochs(run)[-1] - 1)
    assert f"`vislab train --resume {run}`" in err and f"keeps {done} of 500 epochs" in err, err
    assert err.strip().splitlines()[-1] == "vislab train: interrupted"


@pytest.mark.parametrize("command", ["evaluate", "summary", "export"])
def test_commands_on_an_unfinished_run_say_so_and_give_the_resume_command(interrupted, command, capsys):
    run, _, _ = interrupted
    assert main([command, str(run)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "unfinished run" in err and f"vislab train --resume {run}" in err and "model.json is missing" not in err


def test_compare_lists_an_unfinished_run_with_the_resume_command(interrupted, tmp_path, capsys):
    run, _, _ = interrupted
    good = _evaluated_run(tmp_path / "good", 0.9)
    assert main(["compare", str(good), str(run), "--out", str(tmp_path / "cmp")]) == 0
    out = _joined(capsys.readouterr().out)
    assert "unfinished run" in out and f"vislab train --resume {run}" in out, out
    assert "not evaluated" not in out and "vislab evaluate RUN" not in out
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp")]) == 1  # alone: nothing to rank, said why
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"vislab train --resume {run}" in err, err
    assert "vislab evaluate" not in err


def test_resume_with_the_epochs_trained_finishes_the_interrupted_run(interrupted, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(interrupted[0], run)
    done = _epochs(run)[-1]
    result = subprocess.run([sys.executable, "-m", "vislab", "train", "--resume", str(run), "--epochs", str(done),
                             "--no-evaluate", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (run / "model.json").is_file() and _epochs(run) == list(range(1, done + 1))
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == done
    # a finished run with nothing left to train is still refused, pointing at evaluate
    again = subprocess.run([sys.executable, "-m", "vislab", "train", "--resume", str(run), "--epochs", str(done)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "vislab evaluate" in again.stderr


def test_interrupted_before_the_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from vislab.train.loop import Trainer

    def interrupt(self, epoch, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupt)
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--no-progress",
                 "--out", str(run)]) == 130
    assert not run.exists()
    assert "--resume" not in capsys.readouterr().err


def test_ctrl_c_in_the_evaluation_after_training_says_the_model_is_saved_and_how_to_evaluate(tmp_path):
    run = tmp_path / "run"
    proc = _vislab("train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--no-progress",
                   "--precision", "fp32", "--out", str(run))
    deadline = time.time() + 300
    # a helper draws plots/curves.png once model.json is written, while the test split is evaluated; the
    # report waits for it: the signal lands in the evaluation
    while time.time() < deadline and proc.poll() is None:
        if (run / "model.json").exists() and (run / "plots" / "curves.png").exists():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    command = f"vislab evaluate {run}"
    assert err.strip().splitlines()[-2:] == [
        f"vislab train: the model is saved in {run}; its evaluation on the test split was interrupted: finish it "
        f"and the report with `{command}`", "vislab train: interrupted"], err
    assert not (run / "report.html").exists()
    assert main(shlex.split(command)[1:]) == 0
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()


@pytest.fixture(scope="module")
def killed_early(tmp_path_factory):
    """A real digits run killed (SIGKILL) before its first epoch ended: its folder, config.yaml and no checkpoint."""
    run = tmp_path_factory.mktemp("killed") / "run"
    proc = _vislab("train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "8",
                   "--no-progress", "--precision", "fp32", "--out", str(run))
    config = run / "config.yaml"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # config.yaml holds the speed choice: epoch 1 begins
        if config.exists() and "summary:" in config.read_text():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert config.is_file() and not (run / "checkpoints" / "last.pt").exists(), "killed too late: epoch 1 ended"
    assert not (run / "model.json").exists()
    return run


def _start_again(run) -> str:
    return f"`vislab train --config {run / 'config.yaml'} --out {run}`"


@pytest.mark.parametrize("command", ["evaluate", "summary", "export"])
def test_commands_on_a_run_killed_in_its_first_epoch_say_so_and_give_the_command_to_start_it(killed_early, command,
                                                                                             tmp_path, capsys):
    run = killed_early
    assert main([command, str(run)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "unfinished run (training stopped before its first epoch ended" in err, err
    assert _start_again(run) in err and "or wait if it is still training" in err, err
    assert "model.json is missing" not in err and "--resume" not in err
    # its config.yaml elsewhere is not a run that started there
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(run / "config.yaml", other / "config.yaml")
    assert main([command, str(other)]) == 1
    assert "unfinished" not in capsys.readouterr().err


def test_resume_of_a_run_killed_in_its_first_epoch_gives_the_command_to_start_it(killed_early, capsys):
    assert main(["train", "--resume", str(killed_early)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "before its first epoch ended" in err and _start_again(killed_early) in err, err
    assert "nothing to resume" not in err
    assert not (killed_early / "checkpoints").exists() and not (killed_early / "model.json").exists()


def test_compare_lists_a_run_killed_in_its_first_epoch_with_the_command_to_start_it(killed_early, tmp_path, capsys):
    run = killed_early
    good = _evaluated_run(tmp_path / "good", 0.9)
    assert main(["compare", str(good), str(run), "--out", str(tmp_path / "cmp")]) == 0
    out = _joined(capsys.readouterr().out)
    assert "not ranked:" in out and _start_again(run) in out, out
    assert "not evaluated" not in out and "vislab evaluate" not in out
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and _start_again(run) in err and "vislab evaluate" not in err, err


def test_the_command_given_for_a_run_killed_in_its_first_epoch_trains_it(killed_early, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(killed_early, run)
    assert main(["summary", str(run)]) == 1
    command = re.search(r"`(vislab train [^`]*)`", capsys.readouterr().err).group(1)
    result = subprocess.run([sys.executable, "-m", *shlex.split(command), "--no-evaluate", "--no-figures",
                             "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (run / "model.json").is_file() and _epochs(run) == [1]
    assert main(["summary", str(run)]) == 0


def test_the_epochs_of_a_history_are_read_one_way_for_compare_and_the_unfinished_run(interrupted, tmp_path, capsys):
    from vislab.evaluate.compare import compare_runs
    from vislab.runs import history_totals, unfinished_run

    run = tmp_path / "run"
    shutil.copytree(interrupted[0], run)
    first = (run / "history.csv").read_text().splitlines()[1]
    with open(run / "history.csv", "a") as handle:  # resumed from an earlier checkpoint: an epoch repeated
        handle.write(first + "\n")
    totals = history_totals(run / "history.csv")
    assert totals.rows == len(_epochs(run)) and totals.epochs == max(_epochs(run)) < totals.rows
    with open(run / "history.csv") as handle:
        assert totals.seconds == round(sum(float(row["seconds"]) for row in csv.DictReader(handle)), 3)
    row = compare_runs([run])[0]
    assert (row["epochs"], row["train_seconds"]) == (totals.epochs, totals.seconds)
    assert f"training stopped after epoch {totals.epochs} of 500" in unfinished_run(run)
    (run / "history.csv").write_bytes(b"\x00\xff" * 20)  # damaged: compare notes it, the line leaves the count out
    row = compare_runs([run])[0]
    assert row["epochs"] is None and row["unread"]["history.csv"].startswith(f"{run / 'history.csv'}: ")
    assert "restore the history.csv the run wrote" in row["unread"]["history.csv"]
    assert "(training stopped, no model.json yet)" in unfinished_run(run)


# --------------------------------------------------------------------------- early stopping without validation
@pytest.mark.parametrize("flags, names", [(["--patience", "1"], "--patience 1"),
                                          (["--monitor", "val_accuracy"], "--monitor val_acc")])
def test_early_stopping_on_validation_with_val_split_0_is_refused(flags, names, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--val-split", "0", *flags,
                 "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("vislab train: error: ") and names in err and "--val-split 0.1" in err, err
    assert not run.exists()


def test_monitor_loss_without_validation_trains(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--val-split", "0",
                 "--monitor", "loss", "--patience", "1", "--no-evaluate", "--no-progress", "--out", str(run)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["early_stopping"]["monitor"] == "train_loss"


def test_a_recipe_without_validation_warns_and_monitors_the_training_loss(tmp_path, capsys):
    """--recipe fast holds out no validation data: the user's --patience is kept, on the training loss."""
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--recipe", "fast", "--epochs", "1", "--patience", "1",
                 "--no-evaluate", "--no-progress", "--out", str(run)]) == 0
    out = _joined(capsys.readouterr().out)
    assert "warning: --patience 1: this run has no validation split" in out and "--val-split 0.1" in out, out
    assert out.index("warning: --patience") < out.index("epoch 1/1")  # said before training starts
    early = yaml.safe_load((run / "config.yaml").read_text())["train"]["early_stopping"]
    assert early == {**early, "monitor": "train_loss", "patience": 1}


# --------------------------------------------------------------------------- the summary after early stopping
def test_the_summary_gives_the_restored_epoch_and_its_numbers(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "vislab", "train", "--data", "digits", "--model", "mlp",
                             "--epochs", "30", "--lr", "0.05", "--patience", "1", "--precision", "fp32",
                             "--no-progress", "--no-figures", "--out", str(run)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("summary", 1)[1]
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert "(stopped early)" in summary, "did not stop early: the test needs a restored best epoch"
    best = min(rows, key=lambda row: float(row["val_loss"]))
    assert best is not rows[-1]  # a stop always follows an epoch without improvement
    assert (f"best epoch {best['epoch']} (restored: the model holds its weights)  "
            f"val_acc: {float(best['val_acc']):.4f}  val_loss: {float(best['val_loss']):.4f}") in summary, summary
    assert "last val_acc" not in summary


# --------------------------------------------------------------------------- compare on malformed files
def _evaluated_run(folder, accuracy):
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"name": "mlp", "parameters": 1000}))
    (folder / "history.csv").write_text("epoch,seconds\n1,2.0\n")
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"source": "digits"}, "out": str(folder)}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "split": "test", "data": "digits"}))
    return folder


MALFORMED_METRICS = {"a list": "[1, 2, 3]", "a word for a number": '{"accuracy": "high"}', "empty": "{}",
                     "null": "null", "a string": '"0.9"', "a word for the loss": '{"accuracy": 0.8, "loss": "low"}',
                     "a list for the data": '{"accuracy": 0.8, "data": ["digits"]}'}


@pytest.mark.parametrize("content", MALFORMED_METRICS.values(), ids=MALFORMED_METRICS.keys())
def test_compare_names_a_malformed_metrics_file_and_ranks_the_others(content, tmp_path, capsys):
    good = _evaluated_run(tmp_path / "good", 0.9)
    bad = _evaluated_run(tmp_path / "bad", 0.5)
    (bad / "metrics.json").write_text(content)
    out_dir = tmp_path / "cmp"
    assert main(["compare", str(good), str(bad), "--out", str(out_dir)]) == 0
    out, err = capsys.readouterr()
    text = _joined(out + err)
    assert "Traceback" not in text
    assert f"{bad / 'metrics.json'}:" in text and f"`vislab evaluate {bad}` writes it again" in text, text
    assert "not evaluated" not in text
    assert [row["run"] for row in csv.DictReader((out_dir / "leaderboard.csv").open())] == ["good"]
    assert main(["compare", str(bad), "--out", str(out_dir)]) == 1  # alone: one line, the file and the fix
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{bad / 'metrics.json'}" in err and "vislab evaluate" in err, err
    assert "no metrics.json" not in err


def test_compare_prints_a_long_path_on_one_line(tmp_path, capsys):
    """Piped output is 80 columns wide to rich: a message naming a file must not break inside its path."""
    good = _evaluated_run(tmp_path / "good", 0.9)
    bad = _evaluated_run(tmp_path / ("a-run-folder-with-a-long-name-" * 3), 0.5)
    (bad / "metrics.json").write_text("[1, 2, 3]")
    assert main(["compare", str(good), str(bad), "--out", str(tmp_path / "cmp")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{bad / 'metrics.json'}: not a metrics file") for line in lines), lines
    assert f"wrote {tmp_path / 'cmp' / 'leaderboard.csv'} and " in "\n".join(lines)


@pytest.mark.parametrize("name, content", [("model.json", "[1, 2]"), ("model.json", '{"parameters": "many"}'),
                                           ("config.yaml", "data: digits\nout: x\n"),
                                           ("history.csv", "epoch,seconds\ninf,1.0\n")])
def test_compare_reads_the_other_malformed_files_of_a_run_without_a_traceback(name, content, tmp_path, capsys):
    good = _evaluated_run(tmp_path / "good", 0.9)
    odd = _evaluated_run(tmp_path / "odd", 0.8)
    (odd / name).write_text(content)
    if name == "config.yaml":  # a metrics file without its data: the row's data comes from config.yaml
        (odd / "metrics.json").write_text(json.dumps({"accuracy": 0.8}))
    assert main(["compare", str(good), str(odd), "--out", str(tmp_path / "cmp")]) == 0
    text = _joined("".join(capsys.readouterr()))
    assert "Traceback" not in text
    ranked = [row["run"] for row in csv.DictReader((tmp_path / "cmp" / "leaderboard.csv").open())]
    assert sorted(ranked) == ["good", "odd"]  # its metrics are sound: it is still ranked
    if name == "model.json":
        assert f"{odd / 'model.json'}:" in text and "the leaderboard goes on without it" in text, text


def test_resume_refuses_a_run_whose_history_lost_trained_epochs(tmp_path, capsys):
    # resuming appends to history.csv: without the checkpoint's epochs there, the curves and summary lose them
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--max-per-class", "10",
                 "--no-figures", "--no-evaluate", "--no-progress", "--out", str(run)]) == 0
    kept = (run / "history.csv").read_text()
    (run / "history.csv").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert f"has 2 epoch(s) trained, but {run / 'history.csv'} is missing" in err and len(err.splitlines()) == 1
    (run / "history.csv").write_text(kept.splitlines()[0] + "\n" + kept.splitlines()[1] + "\n")  # epoch 1 alone
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 1
    assert "records 1 of them" in capsys.readouterr().err
    (run / "history.csv").write_text(kept)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert len((run / "history.csv").read_text().splitlines()) == 4  # the header and 3 epochs
