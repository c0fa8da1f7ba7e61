"""onnxruntime (CPU) vs vislab's PyTorch predict: images/s, same model, same uint8 batches, one run.

Exports the model once (dynamic batch, default graph: float NCHW input), then times, in turns
(PyTorch fp32, PyTorch --precision auto, onnxruntime, PyTorch fp32, ...; medians), the whole
predict path on uint8 batches of scikit-image photo crops: preprocessing (the same
``Preprocessing``) + forward + softmax. Both use all the process's threads. Also reports the
top-1 agreement of onnxruntime with PyTorch fp32 on those batches. One JSON line per measurement
with the CPU model, the load average and the versions; a loaded host slows both sides.

Usage:
    python benchmarks/bench_export.py [--model imagenet:efficientnet_lite0] [--batch 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402


def photo_batch(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` uint8 (3, size, size) random crops of scikit-image's colour photos."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(skimage.data, n)())[:, :, :3] for n in ("astronaut", "chelsea", "coffee", "rocket")]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(torch.from_numpy(np.ascontiguousarray(photo[top:top + size, left:left + size])).permute(2, 0, 1))
    return torch.stack(crops)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imagenet:efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="side of the uint8 crops fed to predict")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    from vislab.export.onnx import export_onnx
    from vislab.export.ort import OnnxPredictor
    from vislab.infer import Predictor
    from vislab.runs import load

    info = {"machine": machine(), "versions": {**versions(), "onnxruntime": __import__("onnxruntime").__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = export_onnx(args.model, out=Path(tmp) / "model.onnx", dynamic_batch=True)
        emit({"bench": "export", "model": args.model, "exporter": result.exporter,
              "seconds": round(time.perf_counter() - start, 2), "parity": result.parity, **info})
        batch = photo_batch(args.batch, args.size)
        sides = {"pytorch_fp32": Predictor(load(args.model), device="cpu", precision="fp32"),
                 "pytorch_auto": Predictor(load(args.model), device="cpu", precision="auto"),
                 "onnxruntime": OnnxPredictor(result.path)}
        outputs = {name: p.outputs(batch) for name, p in sides.items()}  # warm-up, and the answers
        times = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, predictor in sides.items():
                start = time.perf_counter()
                predictor.outputs(batch)
                times[name].append(time.perf_counter() - start)
        reference = outputs["pytorch_fp32"].argmax(1)
        for name, seconds in times.items():
            median = statistics.median(seconds)
            emit({"bench": "predict_images_per_s", "side": name, "model": args.model, "batch": args.batch,
                  "images_per_s": round(args.batch / median, 1), "median_s": round(median, 4),
                  "top1_agreement_with_fp32": float((outputs[name].argmax(1) == reference).float().mean()),
                  "rounds": args.rounds, "threads": torch.get_num_threads(), **info,
                  "load_1min_end": round(__import__("os").getloadavg()[0], 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
