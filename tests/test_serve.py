"""vislab serve: the served answer equals predict's, every bad input gets its code fast and the server
keeps serving, /health waits for the warm-up, batching groups concurrent requests, loopback by default."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="pip install 'vislab[deploy]'")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from deploy_helpers import digit_files, digits_run, free_port, png_bytes  # noqa: E402
from vislab import api  # noqa: E402
from vislab.serve import ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return digits_run(tmp_path_factory)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return digit_files(tmp_path_factory.mktemp("imgs"), 10)


def wait_ready(client, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200:
            return response
        assert response.status_code == 503 and response.json()["status"] == "loading"
        time.sleep(0.05)
    raise AssertionError("the server never became ready")


def same_answers(got: list[dict], expected: list[dict]) -> bool:
    """Same files and classes in the same order, probabilities equal to float32 rounding (a batch of 10
    and a batch of 1 take different oneDNN kernels; one image alone is bit-equal, see the CLI test)."""
    assert [r["file"] for r in got] == [r["file"] for r in expected]
    for a, b in zip(got, expected):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        np.testing.assert_allclose([t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]],
                                   atol=1e-6)
    return True


def serving(run, **options):
    return TestClient(create_app(str(run), ServeConfig(**options)), raise_server_exceptions=False)


def test_health_is_503_until_loaded_and_warmed_up(run):
    app = create_app(str(run))
    client = TestClient(app)  # no lifespan yet: nothing is loaded
    response = client.get("/health")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    response = client.post("/v1/predict", content=b"x", headers={"content-type": "image/png"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    with TestClient(app) as live:
        assert wait_ready(live).json()["status"] == "ok"
        assert app.state.vislab["ready"] and app.state.vislab["predictor"] is not None
        # the warm-up forward went through the batcher's predictor
        assert app.state.batcher.predictor is app.state.vislab["predictor"]


def test_served_top_k_equals_vislab_predict_exactly(run, files):
    """One image at a time, in fp32: the served top-k is api.predict's, number for number."""
    with serving(run, precision="fp32") as client:
        wait_ready(client)
        for path in files[:4]:
            expected = api.predict(str(run), [str(path)], top_k=3, precision="fp32")
            got = client.post("/v1/predict?top_k=3", files={"file": (str(path), path.read_bytes(), "image/png")})
            assert got.status_code == 200 and got.json() == expected


def test_served_answers_equal_vislab_predict(run, files):
    expected = {r["file"]: r for r in api.predict(str(run), [str(f) for f in files], top_k=3)}
    with serving(run) as client:
        wait_ready(client)
        for path in files[:3]:  # multipart `file`
            got = client.post("/v1/predict?top_k=3", files={"file": (str(path), path.read_bytes(), "image/png")})
            assert got.status_code == 200 and same_answers(got.json(), [expected[str(path)]])
        # several images as `files`, and one raw image/* body
        got = client.post("/v1/predict?top_k=3", files=[("files", (str(p), p.read_bytes(), "image/png")) for p in files])
        assert same_answers(got.json(), [expected[str(p)] for p in files])
        raw = client.post("/v1/predict?top_k=3", content=files[4].read_bytes(),
                          headers={"content-type": "image/png", "x-filename": str(files[4])})
        assert same_answers(raw.json(), [expected[str(files[4])]])
        info = client.get("/v1/info").json()
        assert info["class_names"] == [str(i) for i in range(10)] and info["task"] == "classification"
        assert info["preprocessing"]["input_size"] == [1, 28, 28] and info["batching"]["max_batch"] == 32
        png = client.post("/v1/explain", files={"file": ("a.png", files[0].read_bytes(), "image/png")})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.headers["x-class"] == expected[str(files[0])]["top"][0]["class"]
        assert Image.open(__import__("io").BytesIO(png.content)).size[0] > 100
        page = client.get("/")
        assert page.status_code == 200 and "/v1/predict" in page.text and "http" not in page.text.split("<script>")[1]
        assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/predict", "/v1/explain", "/health"}


def test_each_bad_input_gets_its_code_fast_and_the_next_request_succeeds(run, files):
    good = files[0].read_bytes()
    big = png_bytes(np.zeros((3000, 3000), np.uint8))  # 9 M pixels, a few kB: over max_pixels below
    with serving(run, max_body_mb=0.25, max_pixels=4_000_000, max_images=3, max_queue=4) as client:
        wait_ready(client)
        png = {"content-type": "image/png"}

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for _ in range(64):
                yield b"\0" * 8192

        cases = [
            ("empty_body", 400, dict(content=b"", headers=png)),
            ("not_an_image", 400, dict(content=b"hello, not an image", headers=png)),
            ("truncated_image", 400, dict(content=good[: len(good) // 2], headers=png)),
            ("too_large", 413, dict(content=b"\0" * 400_000, headers=png)),
            ("too_large", 413, dict(content=chunks(), headers=png)),
            ("too_many_pixels", 413, dict(content=big, headers=png)),
            ("unsupported_media_type", 415, dict(content=good, headers={"content-type": "text/plain"})),
            ("too_many_images", 413, dict(files=[("files", (f"{i}.png", good, "image/png")) for i in range(4)])),
            ("missing_file", 400, dict(files={"other": ("a.png", good, "image/png")})),
            ("queue_full", 503, dict(files=[("files", (f"{i}.png", good, "image/png")) for i in range(3)] * 1,
                                     params={"top_k": 1})),
        ]
        for code, status, request in cases:
            if code == "queue_full":
                client.app.state.batcher.pending = 2  # two images already waiting: 2 + 3 > max_queue 4
            start = time.perf_counter()
            response = client.post("/v1/predict", **request)
            elapsed = time.perf_counter() - start
            client.app.state.batcher.pending = 0
            assert response.status_code == status, (code, response.text)
            assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
            assert elapsed < 1.0, (code, elapsed)
            if code == "queue_full":
                assert response.headers["retry-after"] == "1"
            after = client.post("/v1/predict", content=good, headers=png)  # the server keeps serving
            assert after.status_code == 200 and after.json()[0]["top"], code
        # a bad file among good ones: reported, the rest answered
        mixed = client.post("/v1/predict", files=[("files", ("ok.png", good, "image/png")),
                                                  ("files", ("bad.png", b"garbage", "image/png"))])
        assert mixed.status_code == 200
        assert "top" in mixed.json()[0] and mixed.json()[1]["code"] == "not_an_image"
        assert client.post("/v1/predict?top_k=0", content=good, headers=png).json()["error"]["code"] == \
            "invalid_parameter"
        assert client.post("/v1/segment", content=good, headers=png).json()["error"]["code"] == "not_segmentation"
        assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
        metrics = client.get("/metrics").text
        assert 'vislab_errors_total{code="too_large"} 2.0' in metrics
        assert 'vislab_requests_total{endpoint="/v1/predict",status="200"}' in metrics
        assert "vislab_request_seconds_bucket" in metrics and "vislab_batch_images_count" in metrics


def test_request_timeout_is_504(run, files):
    with serving(run, timeout=1e-4) as client:
        wait_ready(client)
        response = client.post("/v1/predict", content=files[0].read_bytes(), headers={"content-type": "image/png"})
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert client.get("/health").status_code == 200


def test_concurrent_requests_share_forwards(run, files):
    data = [p.read_bytes() for p in files]
    with serving(run, batch_size=32, max_wait_ms=50) as client:
        wait_ready(client)
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda d: client.post("/v1/predict", content=d,
                                                          headers={"content-type": "image/png"}), data * 2))
        assert all(r.status_code == 200 for r in results)
        metrics = client.get("/metrics").text
    count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("vislab_batch_images_count")))
    total = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("vislab_batch_images_sum")))
    assert total == 20  # every image went through a forward once (the warm-up is not a batch)
    assert count < 20  # fewer forwards than requests: they were batched


def _listening(port: int) -> list[str]:
    """Local addresses in LISTEN state on ``port`` from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_cli_server_binds_loopback_only_and_answers_like_predict(run, files):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vislab", "serve", str(run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        statuses = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                statuses.append(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code)
                if statuses[-1] == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        assert statuses and statuses[-1] == 200 and set(statuses) <= {200, 503}
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, and nothing on another address or on IPv6
        response = httpx.post(f"http://127.0.0.1:{port}/v1/predict",
                              files={"file": (str(files[7]), files[7].read_bytes(), "image/png")}, timeout=30)
        cli = subprocess.run([sys.executable, "-m", "vislab", "predict", str(run), str(files[7]), "--format", "json"],
                             capture_output=True, text=True, timeout=120)
        assert response.json() == json.loads(cli.stdout)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_public_host_warns(tmp_path):
    # a missing run: the warning is printed first, then the error; nothing is ever bound
    cli = subprocess.run([sys.executable, "-m", "vislab", "serve", str(tmp_path / "missing"), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "warning: listening on 0.0.0.0" in cli.stderr
    assert "no such run folder" in cli.stderr and "Traceback" not in cli.stderr


def test_a_model_that_cannot_load_stops_the_server_with_the_reason(run, tmp_path):
    # the run's folder passes the cheap checks; its weights are cut short, as by a copy that did not finish
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    start = time.monotonic()
    cli = subprocess.run([sys.executable, "-m", "vislab", "serve", str(broken), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr[-2000:]
    assert f"vislab serve: error: {weights}: cannot be read as a safetensors weights file" in cli.stderr
    assert "Traceback" not in cli.stderr and time.monotonic() - start < 60
    # an app made in Python keeps answering, with the reason on /health
    with TestClient(create_app(str(broken))) as client:
        deadline = time.monotonic() + 30
        while (health := client.get("/health")).json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.status_code == 503 and "safetensors" in health.json()["error"]


def test_serving_an_exported_onnx_file(run, files, tmp_path):
    pytest.importorskip("onnxruntime")
    from vislab.export.onnx import export_onnx

    model = export_onnx(run, out=tmp_path / "m.onnx", exporter="torchscript", dynamic_batch=True, samples=8).path
    expected = api.predict(str(model), [str(files[2])], top_k=2)
    with TestClient(create_app(str(model))) as client:
        wait_ready(client)
        got = client.post("/v1/predict?top_k=2", files={"file": (str(files[2]), files[2].read_bytes(), "image/png")})
        assert got.json() == expected  # onnxruntime, one image alone: the same numbers
        assert client.get("/v1/info").json()["runtime"] == "onnxruntime"
        cam = client.post("/v1/explain", content=files[2].read_bytes(), headers={"content-type": "image/png"})
        assert cam.status_code == 501 and cam.json()["error"]["code"] == "not_supported"


def test_segment_endpoint_through_the_task_interface():
    """A per-pixel task defined here (the segmentation task lands separately): /v1/segment draws the
    mask from the task's outputs, and the class shares are the mask's."""
    import base64
    import io

    import torch

    from vislab.data.preprocess import Preprocessing
    from vislab.runs import Loaded
    from vislab.tasks.base import TASKS, Task, register_task

    class Brightness(Task):
        name = "test-brightness-pixels"
        per_pixel = True

        def postprocess(self, outputs):
            return outputs.float().softmax(1)

        def describe(self, output, class_names, top_k=5):
            return {"classes_present": sorted({class_names[int(i)] for i in output.argmax(0).unique()})}

    if "test-brightness-pixels" not in TASKS.names():
        register_task(Brightness)
    model = torch.nn.Conv2d(1, 3, 1)
    with torch.no_grad():  # channel 0 scores dark pixels, channel 2 bright ones (input in -1..1)
        model.weight.copy_(torch.tensor([-4.0, 0.0, 4.0]).view(3, 1, 1, 1))
        model.bias.zero_()
    palette = [{"name": n, "r": r, "g": g, "b": b}  # as model.json stores a palette
               for n, (r, g, b) in zip(["dark", "mid", "bright"], [(0, 0, 0), (128, 128, 128), (255, 0, 0)])]
    loaded = Loaded(model.eval(), Preprocessing((1, 16, 16), mean=(0.5,), std=(0.5,)), ["dark", "mid", "bright"],
                    {"name": "pixels", "task": Brightness.name, "palette": palette}, None, task=Brightness())
    image = np.zeros((16, 16), np.uint8)
    image[:, 12:] = 255  # a quarter of the image is bright
    with TestClient(create_app(loaded)) as client:
        wait_ready(client)
        assert client.get("/v1/info").json()["per_pixel"] is True
        body = client.post("/v1/segment", files={"file": ("half.png", png_bytes(image), "image/png")}).json()
        # /v1/predict answers one class per image, as `vislab predict` does: a per-pixel model is refused
        refused = client.post("/v1/predict", files={"file": ("half.png", png_bytes(image), "image/png")})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "segmentation_model"
    assert "/v1/segment" in refused.json()["error"]["message"]
    assert body["shares"] == {"dark": 0.75, "mid": 0.0, "bright": 0.25}
    assert body["classes_present"] == ["bright", "dark"] and body["size"] == [16, 16]
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    assert mask.mode == "P" and np.array_equal(np.asarray(mask)[:, 12:], np.full((16, 4), 2))
    assert mask.getpalette()[6:9] == [255, 0, 0] and body["palette"]["bright"] == [255, 0, 0]


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    """A U-Net trained one epoch with `vislab train --task segmentation --model unet` on
    make_segmentation_data output (Fashion-MNIST composites)."""
    conftest = pytest.importorskip("conftest")
    if not conftest.HAVE_FMNIST:
        pytest.skip("Fashion-MNIST files absent")
    from vislab.cli import main

    root = tmp_path_factory.mktemp("seg")
    data = api.make_segmentation_data(root / "data", train=24, test=8, size=32, seed=1)
    run = root / "run"
    assert main(["train", "--task", "segmentation", "--data", str(data), "--model", "unet", "--model-opt",
                 "decoder_channels=[16,16,8,8,8]", "--epochs", "1", "--batch-size", "8", "--out", str(run),
                 "--no-progress", "--no-figures"]) == 0
    return run, data


def test_served_segmentation_mask_equals_vislab_segment(unet_run, tmp_path):
    """/v1/segment on a U-Net run (multipart and raw uploads) answers the mask `vislab segment` writes for
    the same image, pixel for pixel, at the image's own size, in the run's palette."""
    import base64
    import io

    from vislab.cli import main

    run, data = unet_run
    images = tmp_path / "images"
    images.mkdir()
    same = images / "same.png"
    Image.open(data / "test" / "images" / "00000.png").save(same)  # the model's input size
    bigger = images / "bigger.png"
    Image.open(data / "test" / "images" / "00001.png").resize((50, 45)).save(bigger)  # not the input size
    assert main(["segment", str(run), str(images), "--out", str(tmp_path / "seg"), "--no-panels",
                 "--precision", "fp32"]) == 0
    palette = json.loads((run / "model.json").read_text())["palette"]
    with serving(run, precision="fp32") as client:
        wait_ready(client)
        for path in (same, bigger):
            expected = Image.open(tmp_path / "seg" / f"{path.stem}_mask.png")
            multipart = client.post("/v1/segment", files={"file": (path.name, path.read_bytes(), "image/png")})
            raw = client.post("/v1/segment", content=path.read_bytes(), headers={"content-type": "image/png"})
            for response in (multipart, raw):
                assert response.status_code == 200, response.text
                body = response.json()
                mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
                assert mask.size == expected.size == Image.open(path).size
                assert body["size"] == [expected.size[1], expected.size[0]]
                assert np.array_equal(np.asarray(mask), np.asarray(expected))
                assert mask.getpalette()[:33] == expected.getpalette()[:33]
                assert body["palette"] == {row["name"]: [row["r"], row["g"], row["b"]] for row in palette}
                ids, counts = np.unique(np.asarray(expected), return_counts=True)
                shares = {palette[i]["name"]: c / np.asarray(expected).size for i, c in zip(ids, counts)}
                assert {k: v for k, v in body["shares"].items() if v} == pytest.approx(shares)


def test_unknown_query_parameters_are_refused_naming_the_closest(run, files):
    """A typo of ?top_k, or `vislab predict`'s --threshold, is a 422 naming the parameter, not ignored."""
    body = files[0].read_bytes()
    png = {"content-type": "image/png"}
    with serving(run) as client:
        wait_ready(client)
        for query, says in (("topk=1", "unknown query parameter 'topk' (did you mean 'top_k'?)"),
                            ("threshold=0.5", "unknown query parameter 'threshold'; it takes: top_k")):
            response = client.post(f"/v1/predict?{query}", content=body, headers=png)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_parameter" and says in error["message"], error
        cam = client.post("/v1/explain?traget=3", content=body, headers=png)
        assert cam.status_code == 422 and "did you mean 'target'?" in cam.json()["error"]["message"]
        assert client.post("/v1/predict?top_k=1", content=body, headers=png).status_code == 200


def test_one_image_endpoints_say_why_the_limit_is_one():
    """/v1/segment answers for one image: two in a request are refused with that reason, not --max-images'."""
    import torch

    from vislab.data.preprocess import Preprocessing
    from vislab.runs import Loaded
    from vislab.tasks.base import TASKS, Task, register_task

    class Pixels(Task):
        name = "test-one-image-pixels"
        per_pixel = True

        def postprocess(self, outputs):
            return outputs.float().softmax(1)

        def describe(self, output, class_names, top_k=5):
            return {}

    if Pixels.name not in TASKS.names():
        register_task(Pixels)
    loaded = Loaded(torch.nn.Conv2d(1, 2, 1).eval(), Preprocessing((1, 8, 8), mean=(0.5,), std=(0.5,)), ["a", "b"],
                    {"name": "pixels", "task": Pixels.name}, None, task=Pixels())
    image = png_bytes(np.zeros((8, 8), np.uint8))
    with TestClient(create_app(loaded, ServeConfig(max_images=16))) as client:
        wait_ready(client)
        for count in (2, 3):
            response = client.post("/v1/segment", files=[("files", (f"{i}.png", image, "image/png"))
                                                         for i in range(count)])
            assert response.status_code == 413, response.text
            message = response.json()["error"]["message"]
            assert "/v1/segment answers for one image" in message and "--max-images" not in message, message
            assert client.post("/v1/segment?x=1", files={"file": ("a.png", image, "image/png")}).status_code == 422
        assert client.post("/v1/segment", files={"file": ("a.png", image, "image/png")}).status_code == 200
