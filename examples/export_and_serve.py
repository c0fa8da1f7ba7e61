"""Deploy: export a trained run to ONNX, check its parity with PyTorch, serve it over HTTP, ask it once.

    python examples/export_and_serve.py           # Fashion-MNIST, vislab's fast recipe (3 epochs)
    python examples/export_and_serve.py --smoke   # scikit-learn's digits, 1 epoch, offline, seconds

Steps: train; ``vislab export RUN --dynamic-batch`` (torch.onnx, onnx.checker, the parity report: onnxruntime
against PyTorch fp32 on 64 test images); the app ``vislab serve MODEL.onnx --port P`` runs
(``vislab.serve.create_app`` under uvicorn, here in a thread of this process) on 127.0.0.1, polled on /health
until the model is loaded and warmed up; one ``POST /v1/predict`` with a PNG; the answer compared with
``vislab.api.predict`` on the same file; the server stopped.

Expected, full mode: the project's export test measured max |logit difference| 4.3e-6 and 100 % top-1
agreement for a digits chollet_convnet (docs/benchmarks.md, "Export and serving"); vislab refuses an export above 1e-4.

Measured, smoke mode (digits, 60 per class at 20 px, chollet_convnet, 1 epoch; AMD EPYC (lscpu), 2 cores,
torch 2.14.1, 2026-12-02): parity max |diff| 1.7e-6, top-1 agreement 100 % (dynamo exporter); the served top-3
equal to api.predict's; about 19 s wall under nice on the otherwise idle machine. Floors checked: parity max
|diff| <= 1e-4 with 100 % top-1 agreement; the served top-k equals api.predict's on the ONNX file (classes,
probabilities within 1e-6) and its top-1 equals the PyTorch run's.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np

from _common import CheckFailed, Checks, get_args_parser, run, speed, start, write_images

HEALTH_TIMEOUT = 120  # seconds for the server to load and warm up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise CheckFailed("the server stopped before /health answered (its log is above)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while the model loads
        time.sleep(0.3)
    raise CheckFailed(f"{url}/health did not answer 200 within {HEALTH_TIMEOUT} s")


def top_line(answer: dict) -> str:
    return ", ".join(f"{t['class']} {t['probability']:.4f}" for t in answer["top"])


def main(argv=None) -> None:
    parser = get_args_parser(__doc__, "export_and_serve")
    args = parser.parse_args(argv)
    import uvicorn
    import vislab.api as api
    from sklearn.datasets import load_digits
    from vislab.serve import create_app

    out = start(args, "export to ONNX, check parity, serve, ask once",
                "scikit-learn's digits (60 per class, 20 px) and a 1-epoch chollet_convnet stand in for the "
                "Fashion-MNIST fast recipe")
    options = dict(data="digits", model="chollet_convnet", epochs=1, batch_size=32, lr=3e-3, input_size=[20, 20],
                   max_per_class=60) if args.smoke else dict(data="fashion-mnist", recipe="fast")
    result = api.train(**options, seed=args.seed, out=str(out / "run"), figures=not args.smoke, **speed(args))
    print(f"test accuracy {result.metrics['accuracy']:.4f}")

    exported = api.export(result.run_dir, dynamic_batch=True)
    parity = exported.parity
    print(f"wrote {exported.path} ({exported.exporter} exporter, opset {exported.opset}); parity on "
          f"{parity['images']} images: max |diff| {parity['max_abs_diff']:.3g}, top-1 agreement "
          f"{parity['top1_agreement']:.2%}")
    checks = Checks()
    checks.at_most("ONNX parity max |diff|", parity["max_abs_diff"], 1e-4)
    checks.at_least("ONNX top-1 agreement", parity["top1_agreement"], 1.0)

    digit = np.round(load_digits().images[-1] * (255 / 16)).astype(np.uint8)  # a real digit, 8 x 8
    image = write_images(out, [np.kron(digit, np.ones((4, 4), np.uint8))], ["digit"])[0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"$ vislab serve {exported.path} --port {port}   # the same app, in a thread here")
    server = uvicorn.Server(uvicorn.Config(create_app(str(exported.path)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_healthy(url, thread)
        request = urllib.request.Request(f"{url}/v1/predict?top_k=3", data=image.read_bytes(),
                                         headers={"content-type": "image/png"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.loads(response.read())[0]
    finally:
        server.should_exit = True  # what Ctrl-C does to `vislab serve`
        thread.join(timeout=15)
    print(f"served:  {top_line(served)}")
    local = api.predict(exported.path, [image], top_k=3)[0]
    torch_top1 = api.predict(result.run_dir, [image], top_k=1, **speed(args, training=False))[0]["top"][0]["class"]
    print(f"predict: {top_line(local)} (the PyTorch run's top-1: {torch_top1})")
    same = [s["class"] for s in served["top"]] == [t["class"] for t in local["top"]] and all(
        abs(s["probability"] - t["probability"]) <= 1e-6 for s, t in zip(served["top"], local["top"]))
    checks.that("served answer == api.predict on the ONNX file", same, "same top-3 classes and probabilities")
    checks.that("served top-1 == the PyTorch run's", served["top"][0]["class"] == torch_top1,
                f"{served['top'][0]['class']} == {torch_top1}")
    checks.verify()


if __name__ == "__main__":
    run(main)
