"""The same option means the same thing everywhere: an error names the flag of the command that raised it,
an option a command does not take is a usage error (exit 2, one line), one that does not go with another
option's value is refused by vislab.api for the CLI and a Python caller alike (exit 1, one line), and a
command's help lists only what it takes."""

from __future__ import annotations

import re

import pytest

from conftest import digits_arrays, write_image
from vislab import api
from vislab.cli import build_parser, main
from vislab.core.errors import ConfigError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vislab import api

    out = tmp_path_factory.mktemp("consistency") / "run"
    api.train(data="digits", model="chollet_convnet", epochs=1, out=str(out), evaluate=False, seed=0,
              figures=False)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    images, _ = digits_arrays(per_class=1)
    return write_image(tmp_path_factory.mktemp("img") / "digit.png", images[0])


def usage_error(argv, capsys) -> str:
    """The one line a usage error prints; fails unless the status is 2."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _commands() -> dict:
    import argparse

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_a_layer_error_names_the_flag_of_the_command(run, image, tmp_path, capsys):
    assert main(["activations", str(run), str(image), "--layers", "head.0", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "with --layers NAME" in err and "--layer NAME" not in err, err
    assert main(["explain", str(run), str(image), "--layer", "head.1", "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "with --layer NAME" in err, err


@pytest.mark.parametrize("extra, says", [
    (["--segmentation", "slic"], "segmentation (--segmentation) is a LIME option (method lime); it does not apply to "
                                 "the default"),
    (["--method", "occlusion", "--num-samples", "50"], "num_samples (--num-samples) is a LIME option (method lime); "
                                                       "it does not apply to occlusion"),
    (["--method", "lime", "--layer", "features.3"], "layer (--layer) picks the Grad-CAM layer"),
])
def test_explain_refuses_another_methods_options(run, image, tmp_path, extra, says, capsys):
    # one check, in vislab.api: the CLI and a Python caller are refused alike, before the model loads
    assert main(["explain", str(run), str(image), "--out", str(tmp_path / "e"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vislab explain: error: ") and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e").exists()  # refused before anything ran
    options = {"method": None, "layer": None, "num_samples": None, "segmentation": None}
    for flag, value in zip(extra[::2], extra[1::2]):
        options[flag[2:].replace("-", "_")] = int(value) if value.isdigit() else value
    with pytest.raises(ConfigError, match=re.escape(says)):
        api.explain(str(run), [str(image)], out=str(tmp_path / "e"), **options)
    assert not (tmp_path / "e").exists()


def test_explain_lime_options_keep_their_defaults_in_the_help_and_apply_to_lime(run, image, tmp_path, capsys):
    text = " ".join(_commands()["explain"].format_help().split())
    assert "(default: 1000)" in text and "(default: quickshift, or slic where quickshift finds fewer than 10" in text
    assert main(["explain", str(run), str(image), "--method", "lime", "--num-samples", "20", "--segmentation",
                 "slic", "--out", str(tmp_path / "lime")]) == 0
    assert (tmp_path / "lime" / "digit_lime.png").is_file()


@pytest.mark.parametrize("flag", ["--resume", "--no-evaluate", "--no-figures", "--epochs", "--patience",
                                  "--time-budget", "--scheduler", "--no-restore-best", "--freeze-epochs",
                                  "--unfreeze-at"])
def test_lr_find_offers_only_what_it_uses(flag, capsys):
    help_text = _commands()["lr-find"].format_help()
    assert flag not in help_text.split(), flag
    value = {"--resume": ["runs/x"], "--epochs": ["3"], "--patience": ["2"], "--time-budget": ["5m"],
             "--scheduler": ["cosine"], "--freeze-epochs": ["2"], "--unfreeze-at": ["3:1"]}.get(flag, [])
    err = usage_error(["lr-find", "--data", "/nonexistent-data-folder", flag, *value], capsys)
    assert err.startswith(f"vislab lr-find: error: {flag} is a train option; "), err


def test_lr_find_steps_range_is_its_real_minimum_checked_while_parsing(capsys):
    from vislab.train.lr_find import MIN_STEPS

    help_text = " ".join(_commands()["lr-find"].format_help().split())
    assert f"[range: >= {MIN_STEPS} (a whole number)]" in help_text
    err = usage_error(["lr-find", "--data", "/nonexistent-data-folder", "--steps", str(MIN_STEPS - 1)], capsys)
    assert f"must be >= {MIN_STEPS}" in err and "--steps" in err
    # filters' --steps (gradient-ascent steps) keeps its own range
    assert "[range: >= 1 (a whole number)]" in " ".join(_commands()["filters"].format_help().split())


def test_usage_mistakes_exit_2(run, tmp_path, capsys):
    err = usage_error(["train", "--data", "digits", "--task", "clasification"], capsys)
    assert "did you mean 'classification'?" in err
    err = usage_error(["audit", "--data", "digits", "--task", "segmentaton"], capsys)
    assert "did you mean 'segmentation'?" in err
    err = usage_error(["filters", str(run)], capsys)
    assert "--layer NAME" in err and "features.0" in err  # the layers it could name
    err = usage_error(["export", str(run), "--out", str(tmp_path / "x")], capsys)
    assert "must end in .onnx" in err and not (tmp_path / "x").exists()
    err = usage_error(["models", "--pretrained-only"], capsys)
    assert "--pretrained-only" in err and "--timm" in err


def test_models_without_a_timm_match_is_an_error_line(capsys):
    pytest.importorskip("timm")
    assert main(["models", "--timm", "no_such_model_zz*"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vislab models: error: no timm model name matches 'no_such_model_zz*'"), err


def test_segment_takes_a_checkpoint_of_a_run_folder(tmp_path, capsys):
    from conftest import write_segmentation_set
    from vislab import api

    data = write_segmentation_set(tmp_path / "seg")
    run = tmp_path / "run"
    api.train(data=str(data), task="segmentation", model="unet", epochs=1, out=str(run), evaluate=False, seed=0,
              figures=False, model_options={"decoder_channels": [8, 8, 8, 8, 8]})
    image = next((data / "images").iterdir())
    checkpoint = run / "checkpoints" / "best.safetensors"
    assert main(["segment", str(run), str(image), "--weights", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--no-panels", "--precision", "fp32"]) == 0, capsys.readouterr().err
    assert main(["segment", str(run), str(image), "--out", str(tmp_path / "plain"), "--no-panels",
                 "--precision", "fp32"]) == 0
    mask = f"{image.stem}_mask.png"
    # one epoch: the best checkpoint is the final model, so the masks are the same
    assert (tmp_path / "out" / mask).read_bytes() == (tmp_path / "plain" / mask).read_bytes()


def test_the_api_refuses_what_the_command_line_refuses():
    from vislab import api
    from vislab.core.errors import ConfigError

    for options in ({"epochs": 3}, {"scheduler": "cosine"}, {"patience": 2}, {"threshold": 0.5},
                    {"freeze_epochs": 2}):
        with pytest.raises(ConfigError, match=f"^{next(iter(options))} is a train option; "):
            api.lr_find(data="digits", model="mlp", steps=10, **options)
    with pytest.raises(ConfigError, match="--pretrained-only filters the names --timm PATTERN lists"):
        api.models(pretrained_only=True)
