"""--recipe auto and the data's shape: the input size a named model takes (one rule for every task), a
split option that the data's own split folders override, the training images the recipe line counts,
and a multi-label --data that is a folder.

Real images (scikit-learn's digits) written as files; the recipe reads them as ``vislab train`` does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml
from PIL import Image

from vislab.core.config import DataConfig, resolve_config
from vislab.core.errors import DataError
from vislab.data.sources import drop_unused_split_options
from vislab.data.multilabel import load_multilabel_dataset
from vislab.models.build import build_model
from vislab.models.registry import model_defaults
from vislab.tasks import task_for_config
from vislab.train import recipe
from vislab.train.recipe import DataShape, choose

from conftest import digits_arrays, write_image


def _pairs_csv(folder, count=40, test=10):
    """``folder/labels.csv`` and ``folder/test.csv``: 16x32 images of two digits side by side (0-2),
    labelled ``a;b`` by the digits they show."""
    images, labels = digits_arrays()
    names = {0: "a", 1: "b", 2: "c"}
    pools = {digit: np.flatnonzero(labels == digit) for digit in names}
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count + test):
        left, right = (int(d) for d in rng.integers(0, 3, 2))
        pixels = np.zeros((16, 32), np.uint8)
        pixels[4:12, 4:12] = images[pools[left][i]]
        pixels[4:12, 20:28] = images[pools[right][i]]
        Image.fromarray(pixels).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{';'.join(sorted({names[left], names[right]}))}")
    (folder / "labels.csv").write_text("\n".join(["file,labels", *rows[:count]]) + "\n")
    (folder / "test.csv").write_text("\n".join(["file,labels", *rows[count:]]) + "\n")
    return folder / "labels.csv", folder / "test.csv"


def _split_folders(root, counts=(("train", 20), ("valid", 5), ("test", 5))):
    """``root/{train,valid,test}/{zero,one,two}`` of real 8x8 digits written at 16 px."""
    images, labels = digits_arrays()
    start = 0
    for split, count in counts:
        for digit, name in enumerate(("zero", "one", "two")):
            for j, index in enumerate(np.flatnonzero(labels == digit)[start:start + count]):
                write_image(root / split / name / f"{j}.png", images[index])
        start += count
    return root


def _apply_as_train(cfg, dataset, task):
    """What ``vislab train`` does with ``--recipe auto`` once the data is read (loop.task_and_data)."""
    drop_unused_split_options(cfg, dataset)
    return recipe.apply(cfg, dataset, task)


def _applied(**options):
    cfg = resolve_config(overrides=options, default_recipe="auto")
    task = task_for_config(cfg)
    dataset = task.load_dataset(cfg.data, seed=cfg.seed)
    return cfg, dataset, task


# --------------------------------------------------------------------------- the input size
@pytest.mark.parametrize("model", ["chollet_convnet", "cats_dogs_convnet"])
def test_multilabel_recipe_gives_a_named_model_a_size_it_takes(tmp_path, model):
    labels_csv, test_csv = _pairs_csv(tmp_path)
    cfg, dataset, task = _applied(**{"task": "multilabel", "data.source": str(labels_csv),
                                     "data.test_csv": str(test_csv), "model.name": model, "train.epochs": 1})
    applied = recipe.apply(cfg, dataset, task)
    default = list(model_defaults(model)["input_size"])
    # 16x32 is below the 28 px a model build keeps an image's own size from: the model's default, as
    # classification scales 8x8 digits up to it
    assert cfg.model.input_size == default
    assert f"{model} at {default[0]}x{default[1]}" in applied.line and "16x32 is below 28 px" in applied.line
    built, pre = build_model(cfg.model, dataset.num_classes, dataset.channels, dataset.native_size)
    assert pre.size == tuple(default)
    built.eval()
    assert built(pre(dataset.splits["train"].load(0)[None])).shape == (1, dataset.num_classes)

    # a size the user gives is theirs
    cfg, dataset, task = _applied(**{"task": "multilabel", "data.source": str(labels_csv), "model.name": model,
                                     "model.input_size": [16, 32], "train.epochs": 1})
    applied = recipe.apply(cfg, dataset, task)
    assert cfg.model.input_size == [16, 32] and "model.input_size" not in applied.set


def test_the_size_rule_is_the_same_for_every_task():
    user = {"model.name"}
    for task in ("classification", "multilabel"):
        # the images' own size where the model's pooling leaves pixels at it, else the model's default
        own = choose(DataShape(task, images=900, classes=3, size=(32, 32), channels=1), user, "chollet_convnet")[1]
        small = choose(DataShape(task, images=900, classes=3, size=(32, 32), channels=1), user,
                       "cats_dogs_convnet")[1]
        assert own.get("model.input_size", [32, 32]) == [32, 32], task
        assert small["model.input_size"] == [150, 150], task
    # the multi-label default net keeps the mosaics' own size (bench_auto_recipe.py's mosaics row)
    mosaics = choose(DataShape("multilabel", images=2700, classes=10, size=(56, 56), channels=1), set())
    assert mosaics[1]["model.input_size"] == [56, 56] and mosaics[0] == "multi-label: fastnet at the images' own size"


def test_multilabel_run_of_a_named_small_net_trains(tmp_path):
    from vislab import api

    labels_csv, test_csv = _pairs_csv(tmp_path)
    result = api.train(task="multilabel", data=str(labels_csv), test_csv=str(test_csv), model="chollet_convnet",
                       epochs=1, out=str(tmp_path / "run"), evaluate=False, figures=False)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["input_size"] == [28, 28] and len(result.history) == 1


# --------------------------------------------------------------------------- the data's own splits
def test_a_split_option_the_folders_override_warns_and_config_yaml_says_what_was_used(tmp_path):
    root = _split_folders(tmp_path / "split")
    cfg, dataset, task = _applied(**{"data.source": str(root), "model.name": "mlp", "train.epochs": 1,
                                     "data.val_split": 0.2, "data.test_split": 0.3})
    with pytest.warns(UserWarning) as caught:
        _apply_as_train(cfg, dataset, task)
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    assert messages == [f"--test-split 0.3 is not used: {root} has its own test/ folder",
                        f"--val-split 0.2 is not used: {root} has its own valid/ folder"]
    assert [len(dataset.splits[s]) for s in ("train", "val", "test")] == [60, 15, 15]
    # config.yaml: the values this run used (the defaults: held out only where the data has no such split)
    assert (cfg.data.val_split, cfg.data.test_split) == (0.1, 0.2)
    choices = cfg.recipe_choices
    assert not {"data.val_split", "data.test_split"} & set(choices["user"])
    assert set(choices["not_used"]) == {"data.val_split", "data.test_split"}
    # a run's config.yaml says so too; given back with --config, it trains the same splits, with no warning
    from vislab import api

    with pytest.warns(UserWarning, match=r"--val-split 0.2 is not used: .* has its own valid/ folder"):
        result = api.train(data=str(root), model="mlp", epochs=1, val_split=0.2, out=str(tmp_path / "run"),
                           evaluate=False, figures=False)
    saved = result.run_dir / "config.yaml"
    written = yaml.safe_load(saved.read_text())
    assert written["data"]["val_split"] == 0.1 and "data.val_split" not in written["recipe_choices"]["user"]
    assert list(written["recipe_choices"]["not_used"]) == ["data.val_split"]
    again = resolve_config(saved, default_recipe="auto")
    task = task_for_config(again)
    dataset = task.load_dataset(again.data, seed=again.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _apply_as_train(again, dataset, task)
    assert [len(dataset.splits[s]) for s in ("train", "val", "test")] == [60, 15, 15]


def test_val_split_0_with_a_valid_folder_says_the_folder_is_used(tmp_path):
    root = _split_folders(tmp_path / "split")
    cfg, dataset, task = _applied(**{"data.source": str(root), "model.name": "mlp", "train.epochs": 1,
                                     "data.val_split": 0, "train.early_stopping.patience": 1})
    with pytest.warns(UserWarning, match=r"^--val-split 0 is not used: .* has its own valid/ folder \(a split of the "
                                         r"data's own is always used, 0 included; to train without validation"):
        _apply_as_train(cfg, dataset, task)
    assert "val" in dataset.splits and cfg.data.val_split == 0.1

    # the default (held out only where the data has no such split) is not warned about
    cfg, dataset, task = _applied(**{"data.source": str(root), "model.name": "mlp", "train.epochs": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _apply_as_train(cfg, dataset, task)
    assert "not_used" not in cfg.recipe_choices


def test_a_split_option_a_folder_overrides_warns_with_every_recipe_and_task(tmp_path):
    """The warning is the data's, not recipe auto's: --recipe none, and a segmentation set's val/ folder."""
    from conftest import write_segmentation_set
    from vislab import api

    root = _split_folders(tmp_path / "split")
    with pytest.warns(UserWarning, match=r"^--val-split 0.3 is not used: .* has its own valid/ folder$"):
        result = api.train(data=str(root), model="mlp", recipe="none", epochs=1, val_split=0.3,
                           out=str(tmp_path / "none"), evaluate=False, figures=False)
    written = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert written["data"]["val_split"] == 0.1 and list(written["recipe_choices"]["not_used"]) == ["data.val_split"]

    seg = tmp_path / "seg"
    for split in ("train", "val"):
        write_segmentation_set(seg / split, count=6 if split == "train" else 2, size=16)
    with pytest.warns(UserWarning, match=r"^--val-split 0.5 is not used: .* has its own val/ folder$"):
        result = api.train(data=str(seg), task="segmentation", model="unet", epochs=1, val_split=0.5,
                           out=str(tmp_path / "segrun"), evaluate=False, figures=False)
    assert [row["epoch"] for row in result.history] == [1]
    # without a val/ folder the held-out validation images are not the data's own: --val-split holds them out
    from vislab.core.config import SegmentationConfig
    from vislab.data.masks import load_segmentation_dataset

    write_segmentation_set(tmp_path / "seg2" / "train", count=6, size=16)
    held = load_segmentation_dataset(DataConfig(source=str(tmp_path / "seg2"), val_split=2), SegmentationConfig())
    assert held.own_splits == {} and len(held.splits["val"]) == 2


# --------------------------------------------------------------------------- what the line counts
def test_the_recipe_line_counts_the_images_it_trains_on(tmp_path):
    images, labels = digits_arrays()
    for digit in range(4):
        for j, index in enumerate(np.flatnonzero(labels == digit)[:30]):
            write_image(tmp_path / "data" / f"c{digit}" / f"{j}.png", images[index], size=8)
    cfg, dataset, task = _applied(**{"data.source": str(tmp_path / "data")})
    assert len(dataset.splits["train"]) == 86  # 120 less 20 % test and 10 % validation
    applied = recipe.apply(cfg, dataset, task)
    assert applied.set["data.val_split"] == 0  # the frozen-features head trains on the validation images too
    trained = task.load_dataset(cfg.data, seed=cfg.seed).splits["train"]
    assert len(trained) == 96
    assert "for 96 training images, 4 classes (24 per class)" in applied.line
    assert cfg.recipe_choices["data"]["images"] == 96


# --------------------------------------------------------------------------- a folder for multi-label
def test_multilabel_data_that_is_a_folder_says_so(tmp_path):
    _pairs_csv(tmp_path)
    with pytest.raises(DataError, match=r"is a folder; --task multilabel reads a CSV file: an image file column "
                                        r"and a labels column .*docs/tasks/multilabel.md\. It holds labels.csv, "
                                        r"test.csv: give --data .*labels.csv"):
        load_multilabel_dataset(DataConfig(source=str(tmp_path)))
    root = _split_folders(tmp_path / "classes", counts=(("train", 2),))
    with pytest.raises(DataError, match=r"is a folder; .* A folder of class folders is single-label data: drop "
                                        r"--task multilabel"):
        load_multilabel_dataset(DataConfig(source=str(root / "train")))
