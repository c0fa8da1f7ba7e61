"""--recipe auto (vislab.train.recipe) and --time-budget (vislab.train.budget).

The choice for each data shape, that the user's flags win piece by piece, that naming only the
model still gets the rest chosen, the refusal of a model that cannot do the task, the budget's
arithmetic, and one short real budgeted run on digits.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import yaml

from vislab.core.config import ConfigError, parse_duration, resolve_config
from vislab.data.sources import Dataset, Split
from vislab.tasks import get_task, task_for_config
from vislab.train import recipe
from vislab.train.budget import plan_epochs
from vislab.train.recipe import DataShape, choose

FMNIST = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------------- the choice per data shape
@pytest.mark.parametrize("shape, rule, expected", [
    # 40 per class, 28 px grey: frozen Lite0 features + the L-BFGS head (bench_transfer.py)
    (DataShape("classification", images=400, classes=10, size=(28, 28), channels=1),
     "small data: frozen pretrained features",
     {"model.name": "efficientnet_lite0", "model.pretrained": True, "model.freeze": "backbone",
      "model.cache_features": True, "train.optimizer": "lbfgs"}),
    # digits: 8 px, about 140 per class: the code defaults that gave 99.2 % in 8 s
    (DataShape("classification", images=1293, classes=10, size=(8, 8), channels=1, builtin="digits"),
     "tiny grey images: the code defaults' fastnet", {"model.name": "fastnet", "train.epochs": 10}),
    # 6,000 28 px grey images: the fast recipe's net, one-cycle AdamW, epochs for the data, flips
    (DataShape("classification", images=4800, classes=10, size=(28, 28), channels=1),
     "enough small images: fastnet (the fast recipe)",
     {"model.name": "fastnet", "train.optimizer": "adamw", "train.scheduler": "onecycle", "train.lr": 1e-2,
      "train.epochs": 15, "augment.hflip": True}),
    (DataShape("classification", images=60000, classes=10, size=(28, 28), channels=1),
     "enough small images: fastnet (the fast recipe)", {"train.epochs": 3}),
    # colour photos with plenty per class: the shipped backbone's features
    (DataShape("classification", images=2000, classes=2, size=(150, 150), channels=3),
     "pretrained features", {"model.name": "efficientnet_lite0", "train.optimizer": "lbfgs"}),
    # a long tail: class weights (bench_imbalance.py)
    (DataShape("classification", images=10000, classes=10, size=(28, 28), channels=1, imbalance=200.0),
     "enough small images: fastnet (the fast recipe)", {"train.class_weights": "auto"}),
    # segmentation: the U-Net on the shipped encoder, ce+dice, class weights, one-cycle Adam 3e-3
    (DataShape("segmentation", images=1350, classes=11, size=(72, 72), channels=1, imbalance=40.0),
     "segmentation: U-Net on the shipped encoder",
     {"model.name": "unet", "model.pretrained": True, "train.loss": "ce+dice", "train.class_weights": "auto",
      "train.optimizer": "adam", "train.scheduler": "onecycle", "train.lr": 3e-3, "train.epochs": 23,
      "model.options": {"decoder_channels": [128, 64, 32, 16, 8]}}),
    # multi-label mosaics: a small CNN at the images' own size, not 28 px
    (DataShape("multilabel", images=2700, classes=10, size=(56, 56), channels=1),
     "multi-label: fastnet at the images' own size",
     {"model.name": "fastnet", "model.input_size": [56, 56], "train.scheduler": "onecycle", "train.epochs": 40,
      "augment.hflip": True}),
])
def test_the_recipe_for_each_data_shape(shape, rule, expected):
    chosen_rule, values, reasons = choose(shape, user=set())
    assert chosen_rule == rule
    for key, value in expected.items():
        assert values[key] == value, key
    # every choice names the benchmark behind it
    assert all("bench_" in reasons[key] or "benchmarks/" in reasons[key] for key in values)


def _digits(**overrides):
    cfg = resolve_config(overrides={"data.source": "digits", **overrides}, default_recipe="auto")
    task = task_for_config(cfg)
    return cfg, task.load_dataset(cfg.data), task


def test_describe_data_reads_the_loaded_splits():
    cfg, dataset, task = _digits()
    shape = recipe.describe_data(dataset, task)
    assert (shape.task, shape.classes, shape.size, shape.channels, shape.builtin) == \
        ("classification", 10, (8, 8), 1, "digits")
    assert shape.images == len(dataset.splits["train"]) and 1 <= shape.imbalance < 1.5


def test_describe_data_reads_a_folder_and_masks(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset

    rng = np.random.default_rng(0)
    for name, count in (("a", 6), ("b", 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    dataset = load_dataset(DataConfig(source=str(tmp_path), val_split=0, test_split=0))
    shape = recipe.describe_data(dataset, get_task("classification"))
    assert (shape.images, shape.classes, shape.size, shape.channels, shape.imbalance) == (9, 2, (40, 30), 1, 2.0)
    # segmentation: the imbalance counts pixels
    masks = torch.zeros(4, 8, 8, dtype=torch.int64)
    masks[:, :2, :2] = 1
    from vislab.data.masks import SegmentationDataset

    seg = SegmentationDataset("s", ["bg", "fg"], {"train": Split(labels=masks, images=torch.zeros(4, 1, 8, 8, dtype=torch.uint8))})
    assert recipe.describe_data(seg, get_task("segmentation")).imbalance == 15.0


# --------------------------------------------------------------------------- the user's flags win
def test_the_recipe_line_names_a_few_of_many_settings_those_that_differ_first():
    """A run's config.yaml given back (about 60 keys) with one changed: the line names that one first,
    at most 8 in all, and counts the rest."""
    from dataclasses import asdict

    from vislab.core.config import dotted_value, user_keys

    first, dataset, task = _digits(**{"model.name": "mlp"})
    recipe.apply(first, dataset, task)
    written = {key: dotted_value(first, key) for key in user_keys(asdict(first))
               if key.startswith(("train.", "augment.", "model.")) and dotted_value(first, key) is not None}
    cfg, dataset, task = _digits(**{**written, "train.lr": 0.0123})
    applied = recipe.apply(cfg, dataset, task)
    named, more = applied.line.split("; yours: ", 1)[1].split(" and ")
    assert named.split(", ")[0] == "--lr" and len(named.split(", ")) == recipe.YOURS_SHOWN  # as given: a flag
    assert more == f"{len(applied.kept) - recipe.YOURS_SHOWN} more (recipe_choices.user in config.yaml)"
    assert len(applied.kept) > 20 and cfg.train.lr == 0.0123


def test_a_users_flag_wins_and_nothing_else_changes():
    cfg, dataset, task = _digits(**{"model.name": "fastnet", "train.lr": 0.05, "augment.hflip": False})
    applied = recipe.apply(cfg, dataset, task)
    assert cfg.train.lr == 0.05 and cfg.augment.hflip is False  # theirs
    assert cfg.model.name == "fastnet" and cfg.train.epochs == 10  # the rest: the recipe's
    assert "train.lr" not in applied.set and set(applied.kept) >= {"train.lr"}
    assert cfg.recipe_choices["user"] == ["augment.hflip", "data.source", "model.name", "train.lr"]
    assert cfg.recipe_choices["reasons"] and cfg.recipe_choices["line"] == applied.line
    assert applied.line.startswith("recipe auto: fastnet") and "--lr" in applied.line.split("yours:")[1]


def test_naming_only_the_model_still_gets_the_rest_for_it():
    cfg, dataset, task = _digits(**{"model.name": "chollet_convnet"})
    applied = recipe.apply(cfg, dataset, task)
    assert cfg.model.name == "chollet_convnet"
    assert (cfg.train.optimizer, cfg.train.scheduler, cfg.train.lr) == ("adamw", "onecycle", 3e-3)
    assert cfg.train.epochs > 3 and "model.name" in applied.kept
    assert cfg.augment.hflip is False  # digits: a mirrored digit is another digit


def test_a_flag_owns_its_piece_and_only_that():
    shape = DataShape("classification", images=4800, classes=10, size=(28, 28), channels=1)
    _, values, _ = choose(shape, user={"train.lr"})
    # --lr makes the optimizer piece the user's: no one-cycle peak of their rate, no AdamW, no decay
    assert not {"train.optimizer", "train.scheduler", "train.lr", "train.weight_decay"} & set(values)
    assert values["model.name"] == "fastnet" and values["train.epochs"] == 15 and values["augment.hflip"]
    _, values, _ = choose(shape, user={"augment.rotation"})
    assert "augment.hflip" not in values and "train.tta_flip" not in values and values["train.optimizer"] == "adamw"


def test_small_data_with_an_end_to_end_flag_trains_end_to_end():
    shape = DataShape("classification", images=400, classes=10, size=(28, 28), channels=1)
    _, values, _ = choose(shape, user={"train.class_weights"})
    assert values["model.name"] == "fastnet" and "model.cache_features" not in values


def test_recipe_none_keeps_the_code_defaults_and_resolve_config_keeps_no_recipe():
    assert resolve_config(overrides={"data.source": "digits"}).recipe is None
    cfg = resolve_config(overrides={"data.source": "digits", "recipe": "none"}, default_recipe="auto")
    assert cfg.recipe == "none" and cfg.train.optimizer == "adam" and cfg.recipe_choices is None


# --------------------------------------------------------------------------- refusal
@pytest.mark.parametrize("task, model, names", [("segmentation", "chollet_convnet", "unet"),
                                                ("classification", "unet", "fastnet")])
def test_a_model_that_cannot_do_the_task_is_refused_naming_ones_that_can(tmp_path, capsys, task, model, names):
    from vislab.cli import main

    (tmp_path / "data").mkdir()
    code = main(["train", "--task", task, "--data", str(tmp_path / "data"), "--model", model,
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error:" in line)
    assert code == 1 and names in line and f"--task {task}" in line and "Traceback" not in err


# --------------------------------------------------------------------------- time budget
def test_durations_parse_and_bad_ones_say_how():
    assert (parse_duration("90s"), parse_duration("5m"), parse_duration("1h"), parse_duration("1.5h")) == \
        (90.0, 300.0, 3600.0, 5400.0)
    for bad in ("5x", "-1m", "0", "m", "nan"):
        with pytest.raises(ConfigError, match="90s, 5m or 1h"):
            parse_duration(bad)
    assert resolve_config(overrides={"train.time_budget": "2m"}).train.time_budget == 120.0
    with pytest.raises(ConfigError, match="not both"):
        resolve_config(overrides={"train.time_budget": "2m", "train.epochs": 3})


def test_the_budgets_epoch_arithmetic():
    assert plan_epochs(budget=300, elapsed=20, epoch_seconds=25, reserve=10) == 10  # 270 s left: 10 whole epochs
    assert plan_epochs(budget=300, elapsed=60, epoch_seconds=25, reserve=10, done=1) == 10  # 1 + 9
    assert plan_epochs(budget=60, elapsed=50, epoch_seconds=25, reserve=10) == 1  # at least one epoch
    assert plan_epochs(budget=60, elapsed=50, epoch_seconds=25, reserve=10, done=2) == 2  # none more


def test_a_budget_replans_when_later_epochs_run_slower_than_the_second(monkeypatch):
    """A fast second epoch (0.15 s) plans far more epochs than fit when the rest take 0.45 s: the plan is
    cut again as soon as they no longer fit, so the one-cycle schedule ends at the epoch the run ends
    with (before, the guard stopped the run at about a third of its plan, the rate near its peak)."""
    from types import SimpleNamespace

    from vislab.core.config import Config
    from vislab.train import budget as budget_module
    from vislab.train.optim import make_scheduler

    cfg = Config()
    cfg.train.scheduler, cfg.train.epochs, cfg.train.lr = "onecycle", 15, 0.003
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    trainer = SimpleNamespace(cfg=cfg, optimizer=optimizer, steps_per_epoch=4, budget_callbacks=[],
                              dataset=SimpleNamespace(splits={"train": range(100), "test": range(10)}))
    trainer.scheduler, trainer.step_per_batch = make_scheduler(optimizer, cfg, trainer.steps_per_epoch)
    clock = [0.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    plan = budget_module.TimeBudget(30.0, started=0.0)
    plan.setup = 2.0
    clock[0], done = 2.0, 0
    while done < cfg.train.epochs and not (done and plan.out_of_time()):
        seconds = {0: 0.9, 1: 0.15}.get(done, 0.45)
        for _ in range(trainer.steps_per_epoch):
            optimizer.step()
            trainer.scheduler.step()
        clock[0] += seconds
        done += 1
        plan.after_epoch(trainer, done, seconds)
    assert done == cfg.train.epochs, (done, cfg.train.epochs)  # the run ended where its plan did
    assert plan.elapsed() + plan.reserve <= 30.0 * (1 + budget_module.OVERRUN)
    assert optimizer.param_groups[0]["lr"] < cfg.train.lr / 10  # the schedule annealed by the last step


def test_a_short_budgeted_run_ends_within_ten_percent(tmp_path, capsys):
    """30 s on digits: the recipe's one line, the epochs re-planned from the first epoch's real time
    (--precision fp32: no probe, so the first plan is provisional), the one-cycle schedule rebuilt to
    end at the last epoch, and the run back within 10 % of the budget."""
    from vislab.cli import main

    budget = 30.0
    start = time.perf_counter()
    code = main(["train", "--data", "digits", "--time-budget", f"{budget:g}s", "--precision", "fp32",
                 "--out", str(tmp_path / "run"), "--no-figures", "--no-progress"])
    wall = time.perf_counter() - start
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("recipe auto:") == 1 and "time budget 30s" in out
    assert wall <= budget * 1.1, f"the run took {wall:.1f}s for a {budget:g}s budget"
    assert wall >= budget * 0.5, f"the run used only {wall:.1f}s of a {budget:g}s budget"
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    record = cfg["recipe_choices"]
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[1:]
    assert record["time_budget"]["seconds"] == budget and record["time_budget"]["epochs"] == len(history)
    assert cfg["train"]["epochs"] == len(history) and record["time_budget"]["epoch_1_seconds"] > 0
    assert cfg["recipe"] == "auto" and record["rule"] and record["reasons"]["model.name"]
    assert cfg["train"]["scheduler"] == "onecycle"  # none given: one-cycle, fitted to the budget
    budget = record["time_budget"]
    replans = sorted((int(key.rsplit("_", 1)[1]), value) for key, value in budget.items()
                     if key.startswith("replanned_epochs_after_"))
    last_plan = replans[-1][1] if replans else budget["planned_epochs"]
    # (a loaded machine may leave time for fewer, or end the run before its plan when an epoch runs long)
    if len(history) >= 3 and len(history) == last_plan:
        # the one-cycle schedule was rebuilt for the final count: the last epoch starts well below the peak
        assert float(history[-1].split(",")[-2]) < cfg["train"]["lr"] / 2


# --------------------------------------------------------------------------- LP-FT after the head
def _fashion_folder(root, per_class: int, classes: int = 3):
    import gzip
    from pathlib import Path

    from PIL import Image

    source = Path(FMNIST)
    if not source.is_dir():
        pytest.skip(f"{FMNIST} is missing (Debian's dataset-fashion-mnist)")
    with gzip.open(source / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(source / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(images[i]).save(root / f"c{c}" / f"{i}.png")
    return root


def test_lpft_epochs_fit_the_time_left():
    from vislab.train.lpft import lpft_epochs

    assert lpft_epochs(left=300, epoch_seconds=50) == 5  # at most bench_lpft.py's 5
    assert lpft_epochs(left=120, epoch_seconds=50) == 2
    assert lpft_epochs(left=40, epoch_seconds=50) == 0  # not even one: the head stays
    assert lpft_epochs(left=40, epoch_seconds=30, done=1) == 2


@pytest.mark.fmnist
def test_transfer_under_a_budget_keeps_the_better_of_the_head_and_lpft(tmp_path, capsys):
    from vislab.cli import main

    data = _fashion_folder(tmp_path / "data", per_class=8)
    # 32 px: the backbone runs fast enough for fine-tuning epochs to fit the budget on a 2-core CPU
    code = main(["train", "--data", str(data), "--recipe", "transfer", "--time-budget", "90s", "--input-size", "32",
                 "--val-split", "6", "--test-split", "3", "--out", str(tmp_path / "run"), "--no-figures",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    lpft = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["recipe_choices"]["lpft"]
    assert lpft["head_val"] is not None and lpft["kept"] in ("head", "lpft") and "LP-FT: " in out
    if lpft.get("epochs"):
        # the fine-tuned model replaces the head only when it scores higher on validation
        assert (lpft["kept"] == "lpft") == (max(lpft["val"]) > lpft["head_val"])
        assert len(lpft["val"]) == lpft["epochs"]
    else:
        assert lpft["kept"] == "head" and "budget" in lpft["reason"]


def test_the_data_line_counts_images_per_class_only_where_an_image_has_one_class():
    one = DataShape("classification", images=400, classes=10, size=(28, 28), channels=1)
    assert one.describe() == "400 training images, 10 classes (40 per class), 28x28 grey"
    several = DataShape("multilabel", images=2700, classes=10, size=(56, 56), channels=1)
    assert several.describe() == "2700 training images, 10 labels, 56x56 grey"
    masks = DataShape("segmentation", images=60, classes=6, size=(56, 56), channels=3, imbalance=40.0)
    assert masks.describe() == "60 training images, 6 classes, 56x56 colour, classes 40:1"


def test_the_recipe_line_names_the_cached_features_head_its_optimizer_fits():
    from vislab.core.config import Config

    cfg = Config()
    cfg.model.name, cfg.model.cache_features = "efficientnet_lite0", True
    cfg.train.optimizer = "lbfgs"
    assert recipe._model_words(cfg) == "efficientnet_lite0 frozen features + logistic-regression head"
    cfg.train.optimizer = "adamw"  # trained by AdamW: a linear head, not a fitted logistic regression
    assert recipe._model_words(cfg) == "efficientnet_lite0 frozen features + linear head (adamw)"


def test_a_named_recipe_on_far_fewer_images_than_it_was_measured_on_is_noted(tmp_path, capsys):
    # --recipe fast on 200 digits: 3 epochs of 2 steps at a 1e-2 one-cycle peak ended near chance (19 %)
    from vislab.cli import main
    from vislab.train.loop import recipe_scale_note

    assert main(["train", "--data", "digits", "--recipe", "fast", "--max-per-class", "20", "--epochs", "1",
                 "--no-figures", "--no-evaluate", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("note: --recipe fast was measured on Fashion-MNIST's 60,000 training images, this run has 200; its 1 "
            "epochs are 2 steps each here") in out, out
    assert recipe_scale_note(resolve_config(None, {"recipe": "fast"}), 54_000) is None
    assert recipe_scale_note(resolve_config(None, {"recipe": "transfer"}), 200) is None
    assert recipe_scale_note(resolve_config(None, {}), 200) is None
