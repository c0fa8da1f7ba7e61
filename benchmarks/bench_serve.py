"""vislab serve under load, on loopback: latency percentiles and images/s at 1, 8 and 32 concurrent
clients, with dynamic batching (max batch 32, max wait 5 ms) and without it (one forward per request).

Starts ``python -m vislab serve MODEL --port P`` on 127.0.0.1 (twice: with and without batching),
waits for /health, then for each client count runs closed-loop clients (each sends its next
request when the last is answered: multipart ``file``, a JPEG photo crop) until ``--requests``
answers or ``--seconds`` have passed, whichever is first; then the server is stopped. Bounded in
count and time, it stops by itself. One JSON line per (batching, clients): p50/p95/p99 latency,
images/s, errors, and the batch sizes the server saw (its /metrics); a last line with the
batching speed-up at the largest client count. A first line times the model's forward alone
(no HTTP) at batch 1 and 32: the gain batching can take from the kernels on this CPU. The clients run in this process (asyncio + httpx)
on the same CPUs as the server, so the host's load and the clients' own cost are in the numbers.

Usage:
    python benchmarks/bench_serve.py [--model imagenet:efficientnet_lite0] [--clients 1 8 32]
                                     [--requests 400] [--seconds 20] [--forward-seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions, vislab_command  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_jpegs(count: int, size: int, seed: int = 0) -> list[bytes]:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(skimage.data, n)())[:, :, :3] for n in ("astronaut", "chelsea", "coffee", "rocket")]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - size + 1), rng.integers(0, photo.shape[1] - size + 1)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(photo[top:top + size, left:left + size])).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def start_server(model: str, port: int, batching: bool, wait_s: float = 180) -> subprocess.Popen:
    import httpx

    command = [*vislab_command(), "serve", model, "--port", str(port), "--max-queue", "4096"]
    if not batching:
        command.append("--no-batching")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server not ready in time")


def batch_stats(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("vislab_batch_images_count", "vislab_batch_images_sum"))}
    return values.get("vislab_batch_images_count", 0.0), values.get("vislab_batch_images_sum", 0.0)


async def load_test(url: str, clients: int, bodies: list[bytes], requests: int, seconds: float) -> dict:
    import httpx

    latencies, errors, codes = [], 0, {}
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker(index: int):
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[(index + sent) % len(bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/predict", files={"file": ("crop.jpg", body, "image/jpeg")})
                    ok = response.status_code == 200
                    if not ok:
                        codes[response.status_code] = codes.get(response.status_code, 0) + 1
                except httpx.HTTPError as exc:
                    ok = False
                    codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        begin = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - begin
    ms = np.asarray(latencies) * 1000
    return {"answered": len(latencies), "errors": errors, "error_kinds": codes, "seconds": round(elapsed, 2),
            "images_per_s": round(len(latencies) / elapsed, 2),
            **({f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} if len(ms) else {})}


def forward_scaling(model: str, size: int, seconds: float = 4.0) -> dict:
    """Images/s of the server's own forward (vislab.infer.Predictor.outputs, in this process, no HTTP)
    at batch 1 and 32, alternating twice: the most dynamic batching can gain from the model itself."""
    import torch

    from vislab import api
    from vislab.infer import Predictor

    predictor = Predictor(api.load_model(model), device="cpu")
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    rates: dict[int, list[float]] = {1: [], 32: []}
    for _ in range(2):
        for batch in rates:
            x = torch.stack([predictor.preprocessing.convert_channels(image)] * batch)
            predictor.outputs(x)
            start, done = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                predictor.outputs(x)
                done += batch
            rates[batch].append(done / (time.perf_counter() - start))
    best = {batch: max(r) for batch, r in rates.items()}
    return {"forward_images_per_s_batch1": round(best[1], 2), "forward_images_per_s_batch32": round(best[32], 2),
            "forward_batch_gain": round(best[32] / best[1], 2), "choice": predictor.choice.label}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imagenet:efficientnet_lite0")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="most requests per (batching, clients)")
    parser.add_argument("--seconds", type=float, default=20, help="most seconds per (batching, clients)")
    parser.add_argument("--size", type=int, default=224, help="side of the JPEG crops sent")
    parser.add_argument("--forward-seconds", type=float, default=4.0,
                        help="seconds per batch size (1, 32) of the forward-alone measurement, each twice")
    args = parser.parse_args(argv)

    info = {"machine": machine(), "versions": versions()}
    emit({"bench": "serve_forward_scaling", "model": args.model, **forward_scaling(args.model, args.size, args.forward_seconds),
          **info})
    bodies = photo_jpegs(16, args.size)
    throughput = {}
    for batching in (True, False):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(args.model, port, batching)
        try:
            # a short warm-up so the first measured requests do not pay one-time costs
            asyncio.run(load_test(url, 4, bodies, 16, 30))
            for clients in args.clients:
                before = batch_stats(url)
                result = asyncio.run(load_test(url, clients, bodies, args.requests, args.seconds))
                after = batch_stats(url)
                forwards, images = after[0] - before[0], after[1] - before[1]
                throughput[(batching, clients)] = result["images_per_s"]
                emit({"bench": "serve", "model": args.model, "batching": batching,
                      "max_batch": 32 if batching else 1, "max_wait_ms": 5.0 if batching else 0, "clients": clients,
                      **result, "forwards": int(forwards),
                      "mean_batch": round(images / forwards, 2) if forwards else None,
                      "load_1min_now": round(os.getloadavg()[0], 2), **info})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    top = max(args.clients)
    if (True, top) in throughput and throughput.get((False, top)):
        emit({"bench": "serve_batching_speedup", "model": args.model, "clients": top,
              "speedup": round(throughput[(True, top)] / throughput[(False, top)], 2), **info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
