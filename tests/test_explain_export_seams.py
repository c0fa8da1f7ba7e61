"""Seams between explain/activations/filters' layer checks, and export's failures and parity numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import written_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """fastnet (whose forward_head slices ``head``, so ``head`` itself never runs) and a grey image."""
    return written_run(tmp_path_factory.mktemp("fast"), "fastnet")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_explain_refuses_a_layer_that_never_runs_as_activations_does(fast_run, tmp_path, capsys, method):
    from vislab.cli import main

    run, image = fast_run
    assert main(["explain", str(run), str(image), "--layer", "head", "--method", method,
                 "--out", str(tmp_path / "ex")]) == 1
    explained = capsys.readouterr().err.strip()
    assert main(["activations", str(run), str(image), "--layers", "head", "--out", str(tmp_path / "act")]) == 1
    activated = capsys.readouterr().err.strip()
    assert "Traceback" not in explained and len(explained.splitlines()) == 1
    for line in (explained, activated):
        assert "layer 'head' did not run in the forward pass; pick another, e.g." in line
        assert "features.10" in line  # a layer that does run: the automatic choice


def test_layer_suggestions_leave_out_layers_that_never_run(fast_run):
    from vislab.core.errors import ConfigError
    from vislab.explain.targets import find_target_layer
    from vislab.runs import load

    loaded = load(fast_run[0])
    with pytest.raises(ConfigError) as caught:
        find_target_layer(loaded.model, loaded.preprocessing.input_size, "nosuch")
    listed = str(caught.value).split("Valid layer names: ", 1)[1].split(", ")
    assert "head" not in listed and "head.0" in listed and "features.10" in listed


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from deploy_helpers import digits_run

    return digits_run(tmp_path_factory)


def test_unreadable_parity_images_are_refused_before_anything_is_written(digits, tmp_path, capsys):
    from vislab.cli import main

    out = tmp_path / "e2.onnx"
    assert main(["export", str(digits), "--out", str(out), "--images", str(tmp_path / "nosuch.png")]) == 1
    err = capsys.readouterr().err
    assert "--images" in err and "nosuch.png" in err
    assert not out.exists() and not (tmp_path / "e2.onnx.json").exists()


def test_exporting_an_onnx_file_says_it_is_a_graph_not_a_run(digits, tmp_path, capsys):
    from vislab.cli import main

    graph = tmp_path / "model.onnx"
    assert main(["export", str(digits), "--out", str(graph), "--samples", "4"]) == 0
    capsys.readouterr()
    assert main(["export", str(graph)]) == 1
    err = capsys.readouterr().err
    assert "an ONNX graph" in err and "needs the run folder it was exported from" in err
    assert "not a directory" not in err


def test_preprocessing_parity_measures_what_predict_gives_on_the_original_files(digits, tmp_path):
    from vislab import api
    from vislab.export.onnx import export_onnx

    # 16x16 digit files, resized to the model's 28x28: the graph gets them rounded to uint8
    files = tmp_path / "imgs"
    files.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(files / f"{i}.png")
    result = export_onnx(digits, out=tmp_path / "pp.onnx", include_preprocessing=True, images=[str(files)])
    parity = json.loads(result.parity_path.read_text())
    from_graph = api.predict(str(tmp_path / "pp.onnx"), [str(files)], top_k=10)
    from_run = api.predict(str(digits), [str(files)], top_k=10, precision="fp32")
    gap = max(abs(a["probability"] - b["probability"])
              for g, r in zip(sorted(from_graph, key=lambda x: x["file"]), sorted(from_run, key=lambda x: x["file"]))
              for a, b in zip(sorted(g["top"], key=lambda t: t["class"]), sorted(r["top"], key=lambda t: t["class"])))
    assert gap > 1e-5  # the rounding a user's predictions go through
    assert parity["end_to_end_max_output_diff"] == pytest.approx(gap, rel=0.05, abs=2e-6)
    assert parity["end_to_end_max_abs_diff"] > parity["max_abs_diff"]
    assert "inherent" in parity["end_to_end_note"]


def test_segmentation_explain_entries_say_the_score_is_a_share_of_pixels(tmp_path):
    import torch

    from vislab.core.config import ModelConfig
    from vislab.data.preprocess import Preprocessing
    from vislab.explain.explainers import explain_files
    from vislab.models import create_model
    from vislab.runs import load, write_model
    from vislab.tasks import get_task

    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_chans=1, input_size=(32, 32),
                         decoder_channels=[16, 16, 8, 8, 8]).eval()
    write_model(tmp_path / "run", model, Preprocessing(input_size=(1, 32, 32)), ["bg", "odd", "even"],
                ModelConfig(name="unet", input_size=[32, 32], options={"decoder_channels": [16, 16, 8, 8, 8]}),
                task=get_task("segmentation"))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "0.png")
    (entry,) = explain_files(load(tmp_path / "run"), [str(tmp_path / "0.png")], out_dir=tmp_path / "ex")
    assert entry["measure"] == "pixel_share"
