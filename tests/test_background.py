"""Helper interpreters (vislab.core.background): the figures and scikit-learn's arithmetic of a run, off the
model's process, with the same files, values and errors as in-process."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vislab.core import background
from vislab.core.background import compute, draw, helpers, submit, wait


def test_without_a_block_each_call_runs_at_once_in_this_process(tmp_path):
    assert compute("operator:add", 2, 3) == 5
    future = submit("operator:truediv", 1, 0)
    assert isinstance(future.exception(), ZeroDivisionError)
    with pytest.raises(FileNotFoundError):  # a figure's error is raised where it is drawn
        draw("shutil:copyfile", tmp_path / "missing.png", tmp_path / "copy.png")


def test_a_helper_returns_values_and_raises_the_callers_error_with_its_traceback():
    with helpers(preload=()):
        assert compute("operator:add", 2, 3) == 5
        assert compute(np.linalg.norm, np.ones(4)) == 2.0
        with pytest.raises(ZeroDivisionError) as info:
            compute("operator:truediv", 1, 0)
        assert "Traceback" in str(info.value.__cause__)
        assert compute("os:getpid") != os.getpid()


def test_leaving_the_block_raises_a_figures_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with helpers(preload=()):
            assert draw("shutil:copyfile", tmp_path / "missing.png", tmp_path / "copy.png") == tmp_path / "copy.png"


def test_torch_tensors_cross_as_numpy_and_a_helper_never_imports_torch(tmp_path):
    with helpers():
        value = compute("numpy:asarray", {"a": [torch.arange(3)]}["a"][0])
        assert isinstance(value, np.ndarray) and value.tolist() == [0, 1, 2]
        draw("vislab.viz.data:plot_samples_per_class", [[torch.zeros(1, 8, 8, dtype=torch.uint8)]], ["a"],
             tmp_path / "samples.png")
        metrics = compute("vislab.tasks.classification_metrics:classification_metrics", np.array([0, 1, 1]),
                          np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["a", "b"])
        assert "torch" not in compute(background.imported_packages)
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert metrics["accuracy"] == pytest.approx(2 / 3)


def test_calls_queued_when_the_parent_waits_run_beside_the_helpers():
    with helpers(preload=(), count=1):
        futures = [submit("os:getpid") for _ in range(8)]
        wait()
        pids = {f.result() for f in futures}
    assert len(pids) >= 1 and all(f.done() for f in futures)


def test_a_helper_that_dies_leaves_its_calls_to_the_parent():
    with helpers(preload=(), count=1):
        pool = background._pool
        os.kill(pool.helpers[0].process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pool.helpers[0].alive and time.monotonic() < deadline:
            time.sleep(0.02)
        assert compute("os:getpid") == os.getpid()


def test_nested_blocks_share_the_outer_helpers():
    with helpers(preload=()):
        outer = background._pool
        with helpers(preload=()):
            assert background._pool is outer
        assert background._pool is outer
    assert background._pool is None


def test_helpers_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("VISLAB_HELPERS", "0")
    with helpers(preload=()):
        assert background._pool is None
        assert compute("os:getpid") == os.getpid()


def test_torch_work_beside_the_helpers_leaves_them_a_core_each():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with background.beside():  # no helpers: nothing changes
            assert torch.get_num_threads() == 4
        with helpers(preload=(), count=2):
            with background.beside():
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 4
            torch.set_num_threads(1)
            with background.beside():
                assert torch.get_num_threads() == 1  # never fewer than one
    finally:
        torch.set_num_threads(before)


def test_helpers_ask_for_huge_pages_and_keep_the_users_glibc_tunables(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0")
    with helpers(preload=()):
        assert compute("os:getenv", "GLIBC_TUNABLES") == "glibc.malloc.check=0:glibc.malloc.hugetlb=1"
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.check=0"  # the model's process is left as it was


def test_helper_count_leaves_two_cores_one_helper():
    assert background.helper_count(1) == 1 and background.helper_count(2) == 1
    assert background.helper_count(8) == background.MAX_HELPERS


def _run_files(run: Path) -> dict:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


def test_a_run_with_helpers_writes_what_an_in_process_run_writes(tmp_path):
    """The same files and the same metrics, with the figures and scikit-learn calls in a helper or not."""
    runs = {}
    for helpers_on in ("1", "0"):
        out = tmp_path / f"helpers{helpers_on}"
        env = {**os.environ, "VISLAB_HELPERS": helpers_on}
        proc = subprocess.run([sys.executable, "-m", "vislab", "train", "--data", "digits", "--model", "mlp",
                               "--epochs", "1", "--precision", "fp32", "--out", str(out), "--no-progress"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        runs[helpers_on] = out
    on, off = runs["1"], runs["0"]
    assert {f for f in _run_files(on) if "tensorboard" not in f} == {f for f in _run_files(off) if "tensorboard" not in f}
    metrics_on, metrics_off = (json.loads((r / "metrics.json").read_text()) for r in (on, off))
    assert metrics_on["accuracy"] == metrics_off["accuracy"] and metrics_on["loss"] == pytest.approx(metrics_off["loss"])
    for name in ("misclassified.csv", "audit.json"):
        assert hashlib.sha256((on / name).read_bytes()).hexdigest() == hashlib.sha256((off / name).read_bytes()).hexdigest()
    assert (on / "plots" / "confusion_matrix.png").stat().st_size > 1000
    assert b"data:image/png;base64" in (on / "report.html").read_bytes()
    # every figure is encoded at zlib's fastest level (vislab.viz.PNG_COMPRESS_LEVEL), wherever it was drawn
    levels = {path.name: _zlib_level(path) for run in (on, off) for path in (run / "plots").rglob("*.png")}
    assert len(levels) > 10 and set(levels.values()) == {"fastest"}, levels


def _zlib_level(png: Path) -> str:
    """The compression level a PNG's first IDAT chunk says it was written at (the zlib header's FLEVEL)."""
    data, offset = png.read_bytes(), 8
    while offset < len(data):
        length, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        if kind == b"IDAT":
            return ("fastest", "fast", "default", "maximum")[data[offset + 9] >> 6]
        offset += 12 + length
    raise AssertionError(f"{png}: no image data")


def test_mark_and_ran_since_tell_whether_a_helper_shared_the_cores():
    assert not background.ran_since(background.mark())  # no helpers: never
    with helpers(preload=()):
        since = background.mark()
        assert not background.ran_since(since)
        compute("os:getpid")
        assert background.ran_since(since)


def test_a_pause_holds_the_figures_but_not_the_waited_for_calls(tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("x")
    with helpers(preload=()):
        paused = background.pause()
        draw("shutil:copyfile", source, tmp_path / "b.txt")
        assert compute("operator:add", 1, 2) == 3  # goes first, pause or not
        time.sleep(0.3)
        assert not (tmp_path / "b.txt").exists()  # held
        paused.end()
        wait()
        assert (tmp_path / "b.txt").read_text() == "x"


def test_when_drawn_runs_after_the_queued_figures_and_not_after_a_failed_one(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)
    seen = []

    def check(path):
        seen.append(path.read_bytes())  # the figure queued before is on disk by now

    background.when_drawn(seen.append, "at once")  # no helpers: the figures are drawn already
    assert seen == ["at once"]
    with helpers(preload=()):
        with background.quiet(wait=False):  # held: nothing is drawn before the call is registered
            draw("shutil:copyfile", source, tmp_path / "copy.bin")
            background.when_drawn(check, tmp_path / "copy.bin")
            assert seen == ["at once"]
    assert seen == ["at once", b"x" * 1000]

    with pytest.raises(FileNotFoundError):
        with helpers(preload=()):
            draw("shutil:copyfile", tmp_path / "missing.bin", tmp_path / "never.bin")
            background.when_drawn(seen.append, "after a failed figure")
    assert seen == ["at once", b"x" * 1000]


def test_discard_drops_the_queued_figures_and_waits_for_the_one_being_drawn(tmp_path):
    """For output thrown away (a run folder removed after its set-up failed): what is queued is never drawn,
    what a helper is drawing is finished before discard returns, and when_drawn's calls are forgotten."""
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)
    seen = []
    with helpers(preload=()):
        compute("time:sleep", 0)  # the helper is up
        running = submit("time:sleep", 0.5)  # what the helper is busy with when discard is called
        time.sleep(0.1)
        with background.quiet(wait=False):  # held: queued, not handed out
            queued = [draw("shutil:copyfile", source, tmp_path / f"copy{i}.bin") for i in range(3)]
            background.when_drawn(seen.append, "drawn")
            started = time.perf_counter()
            background.discard()
            assert time.perf_counter() - started > 0.2 and running.done()  # it waited for the running call
    assert not any(path.exists() for path in queued) and seen == []


def test_vislab_processes_collect_garbage_less_often_and_a_library_user_keeps_their_settings(monkeypatch):
    import gc

    from vislab import cli
    from vislab.core.collector import FIRST_THRESHOLD

    before = gc.get_threshold()
    try:
        with helpers(preload=()):
            assert compute(gc.get_threshold)[0] == FIRST_THRESHOLD  # a helper interpreter
        assert gc.get_threshold() == before  # importing vislab and using its helpers changes nothing here
        seen = []
        monkeypatch.setattr(cli, "main", lambda: seen.append(gc.get_threshold()) or 0)
        monkeypatch.setattr(os, "_exit", lambda code: seen.append(code))
        cli.run()  # the `vislab` command's own process
        assert seen == [(FIRST_THRESHOLD, 20, 20), 0]
        gc.set_threshold(0)  # collection switched off by whoever runs the process: left off
        cli.run()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)


def test_the_figures_are_queued_as_soon_as_the_metrics_are_in_while_the_explanations_still_run(tmp_path):
    """A helper computing the metrics goes on to the figures at once: it does not wait for the explanation
    panels the run's process is computing meanwhile. Without helpers the figures come after the panels."""
    import threading

    from vislab import api
    from vislab.evaluate.runner import measure_run

    run = api.train(data="digits", model="mlp", input_size=[8, 8], epochs=1, out=str(tmp_path / "run"),
                    device="cpu", evaluate=False).run_dir
    queued, order = threading.Event(), []

    def panels(evaluation):
        order.append("panels")
        assert queued.wait(60), "the figures waited for the explanation panels"

    def figures(evaluation):
        assert evaluation.metrics["accuracy"] > 0.1 and threading.current_thread() is not threading.main_thread()
        order.append("figures")
        queued.set()

    with helpers(preload=()):
        measure_run(run, meanwhile=panels, then=figures)
    assert sorted(order) == ["figures", "panels"]
    order.clear()

    def figures_after(evaluation):
        assert evaluation.metrics["accuracy"] > 0.1 and threading.current_thread() is threading.main_thread()
        order.append("figures")

    measure_run(run, meanwhile=lambda evaluation: order.append("panels"), then=figures_after)
    assert order == ["panels", "figures"]
