"""The one line `vislab train` prints for --recipe auto says what the run trains and whose each part is: the size
a network trains at when it is not the images' own, the sizes the images have (not a mean none has), no schedule
in words, why the frozen-feature head was not chosen, no benchmark for a network it did not measure, and the code
defaults the user's own optimizer left."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from vislab.core.config import resolve_config
from vislab.train.recipe import DataShape, choose

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe_line(**options) -> str:
    from vislab.train.loop import task_and_data

    cfg = resolve_config(None, options, default_recipe="auto")
    task_and_data(cfg, Console(quiet=True))
    return cfg.recipe_choices["line"]


def test_files_of_several_sizes_say_the_sizes_and_the_size_the_network_trains_at(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(48, 48), (120, 90)]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(8):
            h, w = sizes[index % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name / f"{index}.png")
    line = recipe_line(**{"data.source": str(tmp_path), "model.name": "mlp", "train.epochs": 2})
    assert line.startswith("recipe auto: mlp at 28x28, "), line
    assert re.search(r", (sizes 48x48 to 120x90|mostly 48x48|mostly 120x90) colour", line), line  # not a median
    assert "\n" not in line


def test_no_schedule_is_said_in_words_and_fastnet_on_digits_says_why_it_gets_the_code_defaults():
    line = recipe_line(**{"data.source": "digits", "model.name": "fastnet"})
    assert "adam, constant lr 0.001, 10 epochs" in line and " none " not in line, line
    assert "code defaults, measured with it on digits" in line, line
    rule, _, _ = choose(DataShape("classification", images=1294, classes=10, size=(8, 8), channels=1),
                        user={"model.name"}, model="mlp")
    assert "one-cycle AdamW" in rule and "the code defaults measured on these tiny images are fastnet's" in rule


def test_an_mlp_head_says_why_not_the_transfer_recipe_and_cites_no_benchmark_that_did_not_measure_it():
    line = recipe_line(**{"data.source": "digits", "data.max_per_class": 20, "model.head": "mlp"})
    assert "--head given, so not the frozen-feature head" in line, line
    assert "bench_" not in line and "not measured on your --head" in line, line


def test_the_users_optimizer_leaves_the_code_defaults_lr_and_the_line_says_whose_it_is():
    line = recipe_line(**{"data.source": "digits", "model.name": "chollet_convnet", "train.optimizer": "sgd",
                          "train.epochs": 1})
    assert "with your settings" not in line and "the code defaults' lr 0.001, no schedule" in line, line
    assert line.endswith("yours: --epochs, --optimizer, --model"), line


def test_the_users_lbfgs_head_is_not_said_to_train_the_fast_recipes_epochs():
    # the L-BFGS head fits to convergence in its one epoch: the recipe sets no epochs for it
    line = recipe_line(**{"data.source": "digits", "data.max_per_class": 20, "model.name": "efficientnet_lite0",
                          "model.pretrained": True, "model.freeze": "backbone", "model.cache_features": True,
                          "train.optimizer": "lbfgs", "model.input_size": [32, 32]})
    assert "epochs" not in line.split(" -- ")[1].split(", for ")[0], line
    assert "instead of the transfer recipe, for 200 training images" in line
    shape = DataShape("classification", images=200, classes=10, size=(8, 8), channels=1)
    user = {"train.optimizer", "model.pretrained", "model.freeze", "model.cache_features"}
    assert "train.epochs" in choose(shape, user, model="efficientnet_lite0")[1]
    assert "train.epochs" not in choose(shape, user, model="efficientnet_lite0", lbfgs=True)[1]
