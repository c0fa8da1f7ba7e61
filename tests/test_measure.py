"""Speed choices by measurement (vislab.core.measure): the decision with injected timings, the cache,
forced choices, resume keeping its precision, fp16 on a CPU. Nothing here depends on which precision
really wins on the CPU the tests run on."""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from conftest import digits_arrays, write_image
from vislab.core import measure
from vislab.core.measure import Candidate, ChoiceCache, choose

FP32_CL, FP32_C = Candidate("fp32", True), Candidate("fp32", False)
BF16_CL, BF16_C = Candidate("bf16", True), Candidate("bf16", False)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty choice cache; the load other programs put on the machine reads as unknown, so the
    cache's reuse does not depend on what else runs beside the tests (the load check has its own test)."""
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(measure.OtherLoad, "_read", staticmethod(lambda: None))
    monkeypatch.setattr(measure, "PAYS_OFF", 0)  # these runs are a few steps long: the probe is what they test
    return tmp_path / "cache"


def inject(monkeypatch, by_label: dict[str, float | list[float]], calls: list | None = None,
           budgets: list | None = None):
    """time_step replaced: each candidate's step runs once per turn (it must work), and its time is
    taken from ``by_label`` (a list: one time per turn, in the order of the probe's rounds).
    ``calls`` collects the labels timed, ``budgets`` (label, warm-up calls, most timed steps) per turn."""
    turns: dict[str, int] = {}

    def fake(step, device=None, give_up_after=None, label=None, **kw):
        step()
        if calls is not None:
            calls.append(label)
        if budgets is not None:
            budgets.append((label, kw.get("warmup", measure.WARMUP_STEPS), kw.get("max_steps", measure.MAX_STEPS)))
        times = by_label[label]
        if isinstance(times, list):
            turns[label] = turns.get(label, -1) + 1
            return times[min(turns[label], len(times) - 1)]
        return times

    monkeypatch.setattr(measure, "time_step", fake)


# --------------------------------------------------------------------------- the decision
def test_reduced_precision_must_win_by_the_margin():
    assert choose({FP32_CL: 0.010, BF16_CL: 0.016}).precision == "fp32"  # bf16 slower (the Intel case)
    assert choose({FP32_CL: 0.010, BF16_CL: 0.0095}).precision == "fp32"  # 1.05x: inside the 10 % margin
    assert choose({FP32_CL: 0.010, BF16_CL: 0.0089}).label == "bf16/channels_last"  # 1.12x
    assert choose({FP32_CL: 0.010, BF16_CL: 0.0089}, margin=0.2).precision == "fp32"
    # the memory format is simply the fastest, within fp32 as within bf16
    picked = choose({FP32_CL: 0.012, FP32_C: 0.010, BF16_CL: 0.003, BF16_C: 0.004})
    assert picked.label == "bf16/channels_last" and picked.speedups() == {"bf16": pytest.approx(10 / 3)}
    assert choose({FP32_CL: 0.012, FP32_C: 0.010, BF16_CL: 0.0095}).label == "fp32/contiguous"
    assert "bf16 measured 0.62x on Intel Xeon" in choose({FP32_CL: 0.010, BF16_CL: 0.016}).describe("Intel Xeon")


def test_candidates_per_device_and_model():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert measure.candidates(cpu, has_conv=True) == [FP32_CL, FP32_C, BF16_CL, BF16_C]
    assert measure.candidates(cpu, has_conv=False) == [FP32_C, BF16_C]  # no convolution: one memory format
    assert {c.precision for c in measure.candidates(cuda, has_conv=False)} == {"fp32", "bf16", "fp16"}
    assert measure.has_convolutions(torch.nn.Conv2d(1, 2, 3)) and not measure.has_convolutions(torch.nn.Linear(2, 2))


def test_measure_times_each_candidate_and_prunes_a_lost_precision(monkeypatch):
    calls = []
    inject(monkeypatch, {"fp32/channels_last": 0.01, "fp32/contiguous": 0.02, "bf16/channels_last": 0.5}, calls)
    ran = []
    choice = measure.measure(lambda c: (lambda: ran.append(c.label)), [FP32_CL, FP32_C, BF16_CL, BF16_C],
                             torch.device("cpu"))
    # bf16 was 50x slower in one layout: its other layout is not timed; the next round times it once
    # more beside fp32's best layout, and slow again, bf16 is dropped
    assert calls == ["fp32/channels_last", "fp32/contiguous", "bf16/channels_last",
                     "fp32/channels_last", "bf16/channels_last"]
    assert choice.label == "fp32/channels_last" and choice.source == "measured"
    assert set(choice.seconds) == set(calls)

    def broken(candidate):
        if candidate.precision == "bf16":
            raise RuntimeError("no bf16 kernel for this op")
        return lambda: None

    inject(monkeypatch, {"fp32/contiguous": 0.01})
    choice = measure.measure(broken, [FP32_C, BF16_C], torch.device("cpu"))
    assert choice.precision == "fp32" and choice.seconds["bf16/contiguous"] == float("inf")
    assert choice.speedups() == {} and "bf16 failed to run" in choice.describe()


def test_time_step_gives_up_on_a_slow_candidate():
    calls = []
    seconds = measure.time_step(lambda: calls.append(1), give_up_after=-1.0)  # every step is "too slow"
    assert len(calls) == 2 and seconds >= 0  # the second warm-up step said so; the first builds kernels
    calls.clear()
    measure.time_step(lambda: calls.append(1), warmup=2, min_steps=3, min_seconds=0)
    assert len(calls) == 5


def test_time_step_does_not_judge_by_the_first_call():
    """The first call loads kernels (on a GPU many times a small model's step): a candidate
    slow only there is timed like any other, and its time is that of its steps."""
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)

    seconds = measure.time_step(step, warmup=2, min_steps=3, min_seconds=0, give_up_after=0.05)
    assert len(calls) == 5 and seconds < 0.05


def test_threads_fewer_must_win_by_the_margin(monkeypatch):
    before = torch.get_num_threads()

    def timer_of(per_count: dict[int, list[float]]):
        turns = {count: iter(times) for count, times in per_count.items()}
        return lambda step, device, **kw: next(turns[torch.get_num_threads()])

    best, timed = measure.measure_threads(lambda: None, [2, 1], torch.device("cpu"),
                                          timer=timer_of({2: [0.010] * 3, 1: [0.0095] * 3}))
    assert best == 2 and timed == {2: 0.010, 1: 0.0095} and torch.get_num_threads() == before
    assert measure.measure_threads(lambda: None, [2, 1], torch.device("cpu"),
                                   timer=timer_of({2: [0.010] * 3, 1: [0.008] * 3}))[0] == 1
    assert measure.thread_candidates(False) == [measure.physical_cores()]


def test_threads_a_burst_of_other_work_in_one_turn_does_not_decide(monkeypatch):
    # another program held a core while 2 threads were timed the first time (50 ms): the later turns
    # of the alternating rounds see the real 10 ms, and 2 threads stay
    turns = {2: iter([0.050, 0.010, 0.011]), 1: iter([0.016, 0.015, 0.016])}
    best, timed = measure.measure_threads(lambda: None, [2, 1], torch.device("cpu"),
                                          timer=lambda step, device, **kw: next(turns[torch.get_num_threads()]))
    assert best == 2 and timed == {2: 0.010, 1: 0.015}


# --------------------------------------------------------------------------- the cache
def test_cache_round_trip_and_a_damaged_file(tmp_path):
    cache = ChoiceCache(tmp_path / "choices.json")
    key = measure.cache_key(torch.device("cpu"), "FeatureHeadNet:abc", (128, 1, 28, 28), 128, "classification",
                            "train")
    fields = json.loads(key)
    assert fields["device"] == measure.device_name(torch.device("cpu")) and fields["torch"] == torch.__version__
    assert (fields["input"], fields["batch"], fields["task"], fields["kind"]) == ([128, 1, 28, 28], 128,
                                                                                 "classification", "train")
    measured = choose({FP32_CL: 0.02, BF16_CL: 0.01}, device="CPU X")
    runs = []
    first = measure.cached_measure(key, lambda: runs.append(1) or measured, cache)
    again = measure.cached_measure(key, lambda: runs.append(1) or measured, cache)
    assert runs == [1] and first.source == "measured" and again.source == "cache"
    assert (again.precision, again.channels_last, again.seconds) == ("bf16", True, measured.seconds)
    assert "(cached)" in again.describe()
    assert "load_1min" in json.loads((tmp_path / "choices.json").read_text())[key]  # what it was measured under
    (tmp_path / "choices.json").write_text("{ not json")
    assert cache.get(key) is None  # a damaged cache is measured again, not an error
    cache.put(key, measured)
    assert cache.get(key).precision == "bf16"


# --------------------------------------------------------------------------- the Trainer
def _trainer(cfg, tmp_path, name="run", **kw):
    from rich.console import Console

    from vislab.data.sources import load_dataset
    from vislab.train.loop import Trainer

    torch.manual_seed(0)
    return Trainer(cfg, tmp_path / name, load_dataset(cfg.data, seed=0), Console(quiet=True), **kw)


def _cfg(**kw):
    from vislab.api import make_config

    return make_config(**{"data": "digits", "model": "chollet_convnet", "batch_size": 16, "seed": 0,
                           "max_per_class": 12, **kw})


def test_trainer_uses_the_measured_choice_and_leaves_weights_and_rng_alone(tmp_path, cache_dir, monkeypatch):
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.03, "bf16/channels_last": 0.01,
                         "bf16/contiguous": 0.012})
    auto = _trainer(_cfg(precision="auto"), tmp_path)
    assert auto.choice.label == "bf16/channels_last" and auto.amp_dtype == torch.bfloat16
    assert auto.memory_format == torch.channels_last and auto.choice.speedups() == {"bf16": 2.0}
    rng_after_auto = torch.get_rng_state()
    # the probe trained copies: the weights and the RNG stream are those of a run that measured nothing
    forced = _trainer(_cfg(precision="bf16"), tmp_path, "forced")
    assert forced.choice.source == "forced" and forced.amp_dtype == torch.bfloat16
    assert torch.equal(rng_after_auto, torch.get_rng_state())
    for a, b in zip(auto.model.state_dict().values(), forced.model.state_dict().values()):
        assert torch.equal(a, b)

    # the second run with the same model and batch reads the cache: nothing is timed
    monkeypatch.setattr(measure, "time_step", lambda *a, **k: pytest.fail("timed again despite the cache"))
    again = _trainer(_cfg(precision="auto"), tmp_path, "again")
    assert again.choice.source == "cache" and again.choice.label == "bf16/channels_last"
    # another batch size is another key
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.01, "bf16/channels_last": 0.2})
    other = _trainer(_cfg(precision="auto", batch_size=8), tmp_path, "other")
    assert other.choice.label == "fp32/contiguous" and other.amp_dtype is None
    assert other.memory_format == torch.contiguous_format


def test_a_run_too_short_for_a_probe_to_pay_trains_in_fp32_unmeasured(tmp_path, cache_dir, monkeypatch):
    """A probe times each candidate for several steps: a run with fewer than PAYS_OFF times that many (a large
    model on a few images) trains in fp32 without it, says why, and keeps nothing in the cache; a choice a
    longer run measured for the same model and batch is still used."""
    monkeypatch.setattr(measure, "PAYS_OFF", 10)
    monkeypatch.setattr(measure, "time_step", lambda *a, **k: pytest.fail("a short run must not measure"))
    short = _trainer(_cfg(precision="auto", epochs=1), tmp_path)  # 120 images at batch 16: 8 steps
    assert short.choice.source == "short" and short.amp_dtype is None and short.choice.seconds == {}
    assert "not measured: a run this short" in short.choice.describe()
    assert not (cache_dir / "choices.json").exists()
    assert not measure.disagrees(short.choice, 10.0)  # nothing measured: the first epoch never re-measures
    # enough epochs for the probe to pay: measured (and kept)
    epochs = measure.PAYS_OFF * 4 * (measure.WARMUP_STEPS + measure.MIN_STEPS) // 8  # 4 candidates, 8 steps each
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.03, "bf16/channels_last": 0.01,
                         "bf16/contiguous": 0.012})
    long = _trainer(_cfg(precision="auto", epochs=epochs), tmp_path, "long")
    assert long.choice.source == "measured" and long.choice.label == "bf16/channels_last"
    # the short run again: the longer run's choice is in the cache, and free to use
    monkeypatch.setattr(measure, "time_step", lambda *a, **k: pytest.fail("a short run must not measure"))
    again = _trainer(_cfg(precision="auto", epochs=1), tmp_path, "again")
    assert again.choice.source == "cache" and again.choice.label == "bf16/channels_last"


def test_forced_fp32_measures_nothing(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(measure, "time_step", lambda *a, **k: pytest.fail("--precision fp32 must not measure"))
    trainer = _trainer(_cfg(precision="fp32", channels_last=False), tmp_path)
    assert trainer.amp_dtype is None and trainer.memory_format == torch.contiguous_format
    assert trainer.choice.source == "forced" and not (cache_dir / "choices.json").exists()
    assert "forced by --precision" in trainer.choice.describe()


def test_resume_keeps_the_checkpoints_precision(tmp_path, cache_dir, monkeypatch):
    from vislab.api import train
    from vislab.train.loop import resumed_choice

    run = tmp_path / "run"
    inject(monkeypatch, {"fp32/contiguous": 0.02, "bf16/contiguous": 0.01})  # the mlp: no convolution
    train(data="digits", model="mlp", input_size=[8, 8], max_per_class=15, epochs=1, batch_size=64, out=str(run),
          evaluate=False)
    recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["speed"]
    assert recorded["precision"] == "bf16" and recorded["channels_last"] is False
    spec = json.loads((run / "model.json").read_text())
    assert spec["speed"]["summary"].startswith("precision bf16, contiguous (bf16 measured 2.00x on ")
    # the cache now says fp32 is faster; the resumed run still continues in the checkpoint's bf16
    (cache_dir / "choices.json").unlink()
    inject(monkeypatch, {"fp32/contiguous": 0.001, "bf16/contiguous": 0.5})
    with warnings.catch_warnings(record=True) as caught:  # the schedule refitted for 2 epochs: no torch warning
        warnings.simplefilter("always")
        result = train(resume=str(run), epochs=2, evaluate=False)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert len(result.history) == 2
    resumed = yaml.safe_load((run / "config.yaml").read_text())["train"]["speed"]
    assert (resumed["precision"], resumed["channels_last"], resumed["source"]) == ("bf16", False, "resumed")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["speed"]["precision"] == "bf16"
    # a checkpoint from before measured choices: the flag-based choice it was trained with
    from vislab.core.config import config_from_dict
    from vislab.core.device import resolve_precision

    old_cfg = config_from_dict({**yaml.safe_load((run / "config.yaml").read_text()), "train": {"speed": None}})
    old = resumed_choice(old_cfg, {})
    assert old.source == "flags" and old.dtype == resolve_precision("auto", torch.device("cpu"))


def test_fp16_on_a_cpu_warns_why(monkeypatch):
    from vislab.core.device import warn_if_slow_precision

    with pytest.warns(UserWarning, match="fp16 on the CPU: fp16 on a CPU has no native kernels"):
        warn_if_slow_precision("fp16", torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_slow_precision("bf16", torch.device("cpu"))
        warn_if_slow_precision("fp16", torch.device("cuda"))
    assert all(c.precision != "fp16" for c in measure.candidates(torch.device("cpu"), has_conv=True))


def test_predictor_measures_on_its_first_batch(tmp_path, cache_dir, monkeypatch):
    from vislab.infer.predictor import Predictor
    from vislab.models.build import build_model
    from vislab.runs import Loaded

    model, pre = build_model(_cfg().model, 10, 1, (28, 28))
    loaded = Loaded(model.eval(), pre, [str(i) for i in range(10)], {"name": "chollet_convnet"}, None)
    images = torch.randint(0, 255, (16, 1, 28, 28), dtype=torch.uint8)
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.01, "bf16/channels_last": 0.002,
                         "bf16/contiguous": 0.003})
    predictor = Predictor(loaded, device="cpu", precision="auto")
    assert predictor.choice is None  # measured on the first batch, at its shape
    out = predictor.outputs(images)
    assert predictor.choice.kind == "infer" and predictor.dtype == torch.bfloat16 and predictor.recheck_ties
    exact = Predictor(loaded, device="cpu", precision="fp32")
    assert exact.choice.source == "forced" and not exact.recheck_ties
    assert (out.argmax(1) == exact.outputs(images).argmax(1)).all()  # near ties re-checked in fp32


def test_a_prediction_of_a_few_images_runs_in_fp32_unmeasured(tmp_path, cache_dir, monkeypatch):
    """`vislab predict` of a few files: timing four configurations on them would cost many times the job.
    The files' count decides (predict_files tells the predictor); a job of enough images measures, and
    says what it measured."""
    from vislab import api
    from vislab.infer.predictor import Predictor

    monkeypatch.setattr(measure, "PAYS_OFF", 10)
    run = tmp_path / "run"
    api.train(data="digits", model="chollet_convnet", max_per_class=6, epochs=1, out=str(run), evaluate=False,
              precision="fp32")
    images, _ = digits_arrays(per_class=1)
    files = [write_image(tmp_path / "few" / f"{i}.png", image) for i, image in enumerate(images[:3])]
    monkeypatch.setattr(measure, "time_step", lambda *a, **k: pytest.fail("3 images must not be measured for"))
    few = api.predict(str(run), [str(tmp_path / "few")])
    assert len(few) == 3 and all(row["top"] for row in few) and not few.notes  # fp32: nothing to say
    assert not (cache_dir / "choices.json").exists()
    predictor = Predictor(api.load_model(str(run)), device="cpu", precision="auto")
    predictor.expect(3)
    predictor.outputs(torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8))
    assert predictor.choice.source == "short" and predictor.dtype is None and not predictor.recheck_ties
    # enough images for the probe to pay: measured, and the notes say what won
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.01, "bf16/channels_last": 0.002,
                         "bf16/contiguous": 0.003})
    many = [write_image(tmp_path / "many" / f"{i}.png", images[i % len(images)]) for i in range(2 * 10 * 4 * 5)]
    answers = api.predict(str(run), [str(tmp_path / "many")], batch_size=2)
    assert len(answers) == len(many)
    assert any("precision auto: precision bf16" in note and " measured " in note for note in answers.notes)


def test_the_predictors_measured_model_still_has_gradients(cache_dir, monkeypatch):
    # the Predictor measures inside inference mode; the explanation panels then need autograd on the
    # same model (a Predictor that re-made the weights as inference tensors broke Grad-CAM)
    from vislab.infer.predictor import Predictor
    from vislab.models.build import build_model
    from vislab.runs import Loaded

    model, pre = build_model(_cfg().model, 10, 1, (28, 28))
    loaded = Loaded(model.eval(), pre, [str(i) for i in range(10)], {"name": "chollet_convnet"}, None)
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.01, "bf16/channels_last": 0.5})
    predictor = Predictor(loaded, device="cpu", precision="auto")
    predictor.outputs(torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8))
    assert predictor.memory_format == torch.contiguous_format
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    model(x).sum().backward()  # raised "Inference tensors cannot be saved for backward" before the fix
    assert x.grad is not None and all(not p.is_inference() for p in model.parameters())


def test_predictor_probes_a_slice_of_a_large_first_batch(cache_dir, monkeypatch):
    """The probe times PROBE_IMAGES images, not the whole first batch (a 256-image probe took minutes)."""
    from vislab.infer.predictor import Predictor
    from vislab.models.build import build_model
    from vislab.runs import Loaded

    model, pre = build_model(_cfg().model, 10, 1, (28, 28))
    loaded = Loaded(model.eval(), pre, [str(i) for i in range(10)], {"name": "chollet_convnet"}, None)
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.01, "bf16/channels_last": 0.05,
                         "bf16/contiguous": 0.05})
    predictor = Predictor(loaded, device="cpu", precision="auto")
    sizes = []
    forward = predictor._forward
    monkeypatch.setattr(predictor, "_forward", lambda x, dtype, size=None: sizes.append(len(x)) or forward(x, dtype, size))
    images = torch.randint(0, 255, (3 * measure.PROBE_IMAGES, 1, 28, 28), dtype=torch.uint8)
    out = predictor.outputs(images)
    assert out.shape == (len(images), 10)
    assert sizes[:-1] and all(n == measure.PROBE_IMAGES for n in sizes[:-1])  # the probe's steps
    assert sizes[-1] == len(images)  # then the whole batch


def test_feature_extraction_probes_a_slice_of_its_first_batch(cache_dir, monkeypatch):
    """Feature extraction's probe times measure.PROBE_IMAGES images; the extraction itself runs whole batches."""
    import timm

    from vislab.data.preprocess import Preprocessing
    from vislab.train.features import extract_features

    model = timm.create_model("resnet18", num_classes=3)
    inject(monkeypatch, {"fp32/channels_last": 0.01, "fp32/contiguous": 0.02, "bf16/channels_last": 0.05,
                         "bf16/contiguous": 0.05})
    sizes = []
    model.conv1.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    images = torch.randint(0, 255, (3 * measure.PROBE_IMAGES, 3, 32, 32), dtype=torch.uint8)
    cached = extract_features(model, Preprocessing((3, 32, 32), (0.5,), (0.5,)), images,
                              batch_size=len(images), precision="auto")
    assert tuple(cached.features.shape) == (len(images), 512) and cached.precision == "fp32"
    assert sizes[:-1] and all(n == measure.PROBE_IMAGES for n in sizes[:-1])  # the probe's steps
    assert sizes[-1] == len(images)  # then the whole batch


def test_a_short_feature_extraction_runs_in_fp32_unmeasured(cache_dir, monkeypatch):
    """Frozen-backbone features of a few hundred images: timing four configurations of the backbone took
    longer than extracting them (EfficientNet-Lite0, 400 images: 16.2 s against 8.4 s in fp32). The
    training and validation images count as one job; a job long enough measures, once for both."""
    import timm

    from vislab.data.preprocess import Preprocessing
    from vislab.data.sources import Split
    from vislab.train.features import CachedTraining

    model = timm.create_model("resnet18", num_classes=3)
    pre = Preprocessing((3, 32, 32), (0.5,), (0.5,))
    train = Split(torch.randint(0, 3, (40,)), images=torch.randint(0, 255, (40, 3, 32, 32), dtype=torch.uint8))
    val = Split(torch.randint(0, 3, (20,)), images=torch.randint(0, 255, (20, 3, 32, 32), dtype=torch.uint8))
    monkeypatch.setattr(measure, "PAYS_OFF", 10)  # the real threshold (the fixture turns it off)
    monkeypatch.setattr(measure, "time_step", lambda *a, **k: pytest.fail("60 images must not be measured for"))
    cached = CachedTraining(model, pre, train, val, extract_batch_size=20)
    cached.prepare()
    assert cached.train_features.precision == cached.val_features.precision == "fp32"
    assert not (cache_dir / "choices.json").exists()  # nothing measured, nothing kept
    # the same sizes, but a job that pays (the probe's least work, PAYS_OFF times over): timed once, for both
    monkeypatch.setattr(measure, "PAYS_OFF", 60 / (4 * (measure.WARMUP_STEPS + measure.MIN_STEPS) * measure.PROBE_IMAGES))
    steps = []
    inject(monkeypatch, {"fp32/channels_last": 0.010, "fp32/contiguous": 0.011, "bf16/channels_last": 0.012,
                         "bf16/contiguous": 0.013}, budgets=steps)
    cached = CachedTraining(model, pre, train, val, extract_batch_size=20)
    cached.prepare()
    assert cached.train_features.precision == cached.val_features.precision == "fp32"
    first_round = [label for label, warmup, most in steps if (warmup, most) == (measure.WARMUP_STEPS, measure.MAX_STEPS)]
    assert sorted(first_round) == sorted(["fp32/channels_last", "fp32/contiguous", "bf16/channels_last",
                                          "bf16/contiguous"])  # one probe: the validation images reuse it
    assert (cache_dir / "choices.json").exists()


# --------------------------------------------------------------------------- any CPU
def test_a_burst_of_other_work_in_one_turn_does_not_pick_the_slower_precision(monkeypatch):
    # fp32's first turn ran while another program held the cores (50 ms); its later turns show 10 ms.
    # bf16 is 12 ms throughout: the alternating rounds keep fp32 (a single turn would pick bf16, 4x "faster")
    inject(monkeypatch, {"fp32/contiguous": [0.050, 0.010, 0.011], "bf16/contiguous": [0.012, 0.012, 0.013]})
    choice = measure.measure(lambda c: (lambda: None), [FP32_C, BF16_C], torch.device("cpu"))
    assert choice.label == "fp32/contiguous"
    assert choice.seconds == {"fp32/contiguous": 0.010, "bf16/contiguous": 0.012}


def test_one_slow_step_from_a_burst_of_other_work_does_not_drop_a_precision(monkeypatch):
    # measured on a 2-core Intel Xeon: a burst of another program's work hit bf16's first turn
    # (47 ms against fp32's 9 ms); its real step is 5 ms. The next round times it once more
    # (one step: its kernels are built), finds it fast, and times its skipped layout too
    steps = []
    inject(monkeypatch, {"fp32/channels_last": 0.0093, "fp32/contiguous": 0.0158, "bf16/channels_last": [0.047, 0.0051],
                         "bf16/contiguous": 0.0105}, budgets=steps)
    choice = measure.measure(lambda c: (lambda: None), [FP32_CL, FP32_C, BF16_CL, BF16_C], torch.device("cpu"))
    assert choice.label == "bf16/channels_last" and choice.seconds["bf16/channels_last"] == 0.0051
    assert ("bf16/channels_last", 0, 1) in steps  # the confirming turn: one step, no warm-up
    assert "bf16/contiguous" in choice.seconds  # the layout skipped while bf16 was suspect


def test_the_cache_key_names_the_kernels_isa_not_only_the_cpu_flags(monkeypatch):
    key = lambda: measure.cache_key(torch.device("cpu"), "m", (8, 1, 28, 28), 8, "classification", "train")  # noqa: E731
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    native = key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")
    limited = key()
    assert json.loads(limited)["kernels"]["onednn"] == "AVX512_CORE" and limited != native
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert key() not in (native, limited)
    assert json.loads(native)["kernels"]["aten"] == torch.backends.cpu.get_cpu_capability()


def test_a_choice_measured_natively_is_not_reused_under_an_isa_limit(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.03, "bf16/channels_last": 0.01,
                         "bf16/contiguous": 0.012})
    assert _trainer(_cfg(precision="auto"), tmp_path).choice.precision == "bf16"
    # the same CPU, its kernels limited to AVX2: bf16 is emulated there, and must be measured again
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    inject(monkeypatch, {"fp32/channels_last": 0.02, "fp32/contiguous": 0.03, "bf16/channels_last": 0.1})
    limited = _trainer(_cfg(precision="auto"), tmp_path, "limited")
    assert limited.choice.source == "measured" and limited.choice.precision == "fp32"


def test_a_choice_measured_on_a_busy_machine_says_so_and_is_measured_again(tmp_path, monkeypatch):
    cache = ChoiceCache(tmp_path / "choices.json")
    busy = measure.Choice("bf16", True, seconds={"fp32/channels_last": 0.07, "bf16/channels_last": 0.01},
                          source="measured", others=0.6)
    assert "measured while other programs used 60% of the CPU" in busy.describe()
    runs = []
    assert measure.cached_measure("k", lambda: runs.append(1) or busy, cache).precision == "bf16"
    quiet = measure.Choice("fp32", True, seconds={"fp32/channels_last": 0.01, "bf16/channels_last": 0.02},
                           source="measured", others=0.02)
    # stored with its load, but not reused: the next run measures again, and keeps the quiet answer
    assert measure.cached_measure("k", lambda: runs.append(2) or quiet, cache).precision == "fp32"
    assert measure.cached_measure("k", lambda: runs.append(3) or busy, cache).source == "cache"
    assert runs == [1, 2]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_other_programs_load_is_seen_while_a_probe_runs():
    import subprocess
    import sys
    import time

    with measure.OtherLoad() as quiet:
        time.sleep(0.5)
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
               for _ in range(min(os.cpu_count() or 1, 16))]
    try:
        time.sleep(0.5)  # the interpreters start
        with measure.OtherLoad() as loaded:
            time.sleep(1.0)
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    assert loaded.share is not None and loaded.share > measure.BUSY_SHARE
    # the share is capped at 1: on a host that other work (another test worker) already fills, the window
    # before the burners reads 1 as well
    assert quiet.share is None or quiet.share <= loaded.share


def test_training_measures_again_when_its_first_epoch_disagrees_with_the_probe(tmp_path, cache_dir, monkeypatch):
    from rich.console import Console

    from vislab.data.sources import load_dataset

    # the cache holds a probe that saw 1 microsecond steps (another machine's, a stale entry): the real
    # steps are far slower, so after the first epoch the trainer measures again and switches
    inject(monkeypatch, {"fp32/contiguous": 0.030, "bf16/contiguous": 1e-6})
    cfg = _cfg(precision="auto", model="mlp", input_size=[8, 8], batch_size=16)
    trainer = _trainer(cfg, tmp_path)
    assert trainer.choice.precision == "bf16"
    trainer.train_epoch(0, None)
    assert len(trainer.step_seconds) >= 4
    inject(monkeypatch, {"fp32/contiguous": 0.001, "bf16/contiguous": 0.004})
    note = trainer.check_speed_choice(load_dataset(cfg.data, seed=0))
    assert note is not None and "measured again: now precision fp32" in note
    assert trainer.choice.precision == "fp32" and trainer.amp_dtype is None
    assert trainer.check_speed_choice(None) is None  # once per run
    Console(quiet=True)


def test_an_epoch_beside_a_drawing_helper_leaves_the_check_to_the_next_epoch(tmp_path, cache_dir, monkeypatch):
    """The run's helper interpreter drew figures beside the first epoch: its steps shared the cores, so
    they are not held against the probe; the next epoch's are."""
    from vislab.data.sources import load_dataset

    inject(monkeypatch, {"fp32/contiguous": 0.030, "bf16/contiguous": 1e-6})
    cfg = _cfg(precision="auto", model="mlp", input_size=[8, 8], batch_size=16)
    trainer = _trainer(cfg, tmp_path)
    trainer.train_epoch(0, None)
    inject(monkeypatch, {"fp32/contiguous": 0.001, "bf16/contiguous": 0.004})
    dataset = load_dataset(cfg.data, seed=0)
    assert trainer.check_speed_choice(dataset, helpers_ran=True) is None
    assert trainer.step_seconds == [] and trainer.choice.precision == "bf16"
    trainer.train_epoch(1, None)
    note = trainer.check_speed_choice(dataset)
    assert note is not None and trainer.choice.precision == "fp32"


def test_a_probe_that_matches_the_real_steps_is_kept(tmp_path, cache_dir, monkeypatch):
    choice = measure.Choice("bf16", True, seconds={"bf16/channels_last": 0.010}, source="cache")
    assert not measure.disagrees(choice, 0.012) and measure.disagrees(choice, 0.020)
    assert not measure.disagrees(measure.Choice("bf16", True, source="forced"), 10.0)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction-set limits")
def test_under_an_avx2_limit_the_probe_keeps_fp32(tmp_path):
    """A real probe, no injected timings: with the kernels limited to AVX2 (any x86-64 CPU of the last
    decade), bf16 has no native kernels and runs several times slower, so auto must keep fp32."""
    import subprocess
    import sys

    code = ("import json, torch\n"
            "from vislab.core import measure\n"
            "torch.manual_seed(0)\n"
            "model = torch.nn.Sequential(torch.nn.Conv2d(16, 64, 3, padding=1), torch.nn.ReLU(),\n"
            "                            torch.nn.Conv2d(64, 64, 3, padding=1)).eval()\n"
            "x = torch.randn(32, 16, 28, 28)\n"
            "def make_step(c):\n"
            "    model.to(memory_format=c.memory_format)\n"
            "    xx = x.contiguous(memory_format=c.memory_format)\n"
            "    def step():\n"
            "        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=c.dtype is not None):\n"
            "            model(xx)\n"
            "    return step\n"
            "choice = measure.measure(make_step, measure.candidates(torch.device('cpu'), True), torch.device('cpu'))\n"
            "print(json.dumps({'label': choice.label, 'isa': measure.kernel_isa(), 'speedups': choice.speedups()}))\n")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["isa"] == {"aten": "AVX2", "onednn": "AVX2"}
    assert result["label"].startswith("fp32/"), result
