"""``explain``, ``activations`` and ``filters`` take ``--device`` (``device=``) as ``predict`` does: the same
flag and help, the same resolver (``auto``: a CUDA GPU when PyTorch sees one, else the CPU), the same
one-line usage error for a device that is not here, and on the CPU the same results as without the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from conftest import written_run
from vislab.cli import build_parser, main

COMMANDS = ("explain", "activations", "filters")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    """A run folder of a small convolutional net (``seed_cnn2``) and a grey digit-sized PNG."""
    return written_run(tmp_path_factory.mktemp("conv"), "seed_cnn2")


def _argv(command: str, run: Path, image: Path, out: Path) -> list[str]:
    """A quick call of ``command`` on the small run, writing into ``out``."""
    if command == "explain":
        return ["explain", str(run), str(image), "--out", str(out)]
    if command == "activations":
        return ["activations", str(run), str(image), "--layers", "features.1", "features.4", "--out", str(out)]
    return ["filters", str(run), "--layer", "features.3", "--n", "4", "--steps", "3", "--out", str(out)]


def _main(argv: list[str]) -> int:
    """``vislab ARGV``'s exit status, whether the parser exits or ``main`` returns."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _device_action(command: str) -> argparse.Action | None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next((a for a in sub._actions if "--device" in a.option_strings), None)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_device_as_predict_does(command, capsys):
    action, predicts = _device_action(command), _device_action("predict")
    assert action is not None, f"vislab {command} has no --device"
    assert (action.help, action.choices, action.default) == (predicts.help, predicts.choices, "auto")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--device {auto,cpu,cuda,mps}" in text
    assert " ".join(predicts.help.split()) + " (default: auto)" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_device_cpu_and_auto_give_what_no_flag_gives(command, conv_run, tmp_path, capsys):
    run, image = conv_run
    outputs = {}
    flags = {"none": [], "cpu": ["--device", "cpu"], "auto": ["--device", "auto"]}
    for name, flag in flags.items():
        out = tmp_path / name
        assert _main(_argv(command, run, image, out) + flag) == 0, capsys.readouterr().err
        captured = capsys.readouterr()
        assert captured.err == ""
        pngs = sorted(out.rglob("*.png"))
        assert pngs, f"vislab {command} wrote no PNG"
        outputs[name] = (captured.out.replace(str(out), "OUT"),
                         {p.relative_to(out): p.read_bytes() for p in pngs})
    if torch.cuda.is_available():  # no flag is auto, the GPU here: the same lines as --device auto
        assert outputs["auto"][0] == outputs["none"][0]
    else:  # no flag and auto are the CPU: the same lines and the same PNGs, byte for byte
        assert all(outputs[name] == outputs["none"] for name in flags), f"vislab {command}: --device changed the output"


@no_cuda
@pytest.mark.parametrize("command", COMMANDS)
def test_device_cuda_without_cuda_is_predicts_one_line_usage_error(command, conv_run, tmp_path, capsys):
    run, image = conv_run
    assert _main(["predict", str(run), str(image), "--device", "cuda"]) == 2
    predicts = capsys.readouterr().err
    assert predicts.startswith("vislab predict: error: --device cuda: no CUDA device"), predicts
    out = tmp_path / "out"
    assert _main(_argv(command, run, image, out) + ["--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.err == predicts.replace("vislab predict:", f"vislab {command}:", 1), captured.err
    assert len(captured.err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out
    assert captured.out == "" and not out.exists()


def test_the_api_functions_take_device(conv_run, tmp_path):
    from vislab import api
    from vislab.core.device import resolve_device

    run, image = conv_run
    plain = api.explain(run, [image], out=tmp_path / "plain")
    on_cpu = api.explain(run, [image], out=tmp_path / "cpu", device="cpu")
    keys = ("class", "index", "probability", "method", "layer")
    assert [{k: r[k] for k in keys} for r in on_cpu] == [{k: r[k] for k in keys} for r in plain]
    assert Path(on_cpu[0]["png"]).read_bytes() == Path(plain[0]["png"]).read_bytes()

    grids = api.activations(run, image, layers=["features.1"], out=tmp_path / "act", device="cpu")
    assert [(g.name, g.channels, g.map_size) for g, _ in grids] == [("features.1", 32, (14, 14))]
    png = api.filters(run, "features.3", n=2, steps=2, out=tmp_path / "filters", device="cpu")
    assert png.is_file()

    # auto picks what predict picks, and the model is moved there
    loaded = api.load_model(run)
    api.activations(loaded, image, layers=["features.1"], out=tmp_path / "auto", device="auto")
    assert next(loaded.model.parameters()).device.type == resolve_device("auto").type


@no_cuda
@pytest.mark.parametrize("command", COMMANDS)
def test_the_api_refuses_cuda_without_cuda_before_loading(command, conv_run, tmp_path):
    from vislab import api
    from vislab.core.errors import DeviceError

    _, image = conv_run
    missing = tmp_path / "no-such-run"  # the device is refused first, not the run folder
    call = {"explain": lambda: api.explain(missing, [image], device="cuda"),
            "activations": lambda: api.activations(missing, image, device="cuda"),
            "filters": lambda: api.filters(missing, "features.3", device="cuda")}[command]
    with pytest.raises(DeviceError, match=r"^--device cuda: no CUDA device is visible to PyTorch"):
        call()


@needs_cuda
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion", "integrated-gradients", "lime"])
def test_explain_runs_on_cuda_and_agrees_with_the_cpu(method, conv_run, tmp_path):
    from vislab import api

    run, image = conv_run
    options = {"num_samples": 50} if method == "lime" else {}
    loaded = api.load_model(run)
    on_gpu = api.explain(loaded, [image], method=method, out=tmp_path / "gpu", device="cuda", **options)
    assert next(loaded.model.parameters()).device.type == "cuda"
    on_cpu = api.explain(run, [image], method=method, out=tmp_path / "cpu", device="cpu", **options)
    assert on_gpu[0]["class"] == on_cpu[0]["class"], (on_gpu, on_cpu)
    assert on_gpu[0]["probability"] == pytest.approx(on_cpu[0]["probability"], abs=1e-3)


@needs_cuda
def test_activations_and_filters_run_on_cuda(conv_run, tmp_path):
    from vislab import api

    run, image = conv_run
    loaded = api.load_model(run)
    grids = api.activations(loaded, image, layers=["features.1"], out=tmp_path / "act", device="cuda")
    assert next(loaded.model.parameters()).device.type == "cuda" and grids[0][1].is_file()
    assert api.filters(loaded, "features.3", n=2, steps=2, out=tmp_path / "filters", device="cuda").is_file()
