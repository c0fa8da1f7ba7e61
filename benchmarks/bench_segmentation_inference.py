"""`vislab segment` speed on 720x960 images (CamVid's size) with lraspp_mobilenet_v3_large vs a raw
torchvision loop on the same CPU, each side at its fastest precision here.

    python benchmarks/bench_segmentation_inference.py --images 8

The weights are random (none can be downloaded here) and saved as safetensors, which exercises the
loading path; speed does not depend on the values. Sides:
  raw:            read PNG -> weights.transforms() -> model -> bilinear upsample -> argmax
  vislab_infer:   vislab.segment.predict_mask over the same files (the inference path of `vislab segment`)
  vislab_segment: vislab.segment.segment_images(panels=False): also writes mask, colour and overlay PNGs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402


def main(argv=None) -> int:
    import skimage.data
    import torchvision
    from PIL import Image
    from safetensors.torch import save_file

    from vislab.data.images import read_image
    from vislab.segment import load_segmenter, predict_mask, segment_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    info = {"machine": machine(), "versions": versions(), "threads": torch.get_num_threads()}
    work_dir = tempfile.TemporaryDirectory(prefix="vislab-seg-bench-")  # removed when main returns
    work = Path(work_dir.name)
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    weights = work / "lraspp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    paths = []
    for i in range(args.images):
        path = work / f"img{i}.png"
        Image.fromarray(photos[i % len(photos)]).resize((960, 720), Image.BILINEAR).save(path)
        paths.append(path)
    transform = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT.transforms()
    model = model.to(memory_format=torch.channels_last)

    def raw(dtype):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            for path in paths:
                image = torchvision.io.decode_image(str(path))
                x = transform(image)[None].contiguous(memory_format=torch.channels_last)
                out = model(x)["out"].float()
                F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False).argmax(1)

    from vislab.core.device import cpu_has_bf16

    # bf16 only where the CPU runs it natively: emulated bf16 was 20x slower than fp32 on a CPU without it
    precisions = ("fp32", "bf16") if cpu_has_bf16() else ("fp32",)
    segmenters = {p: load_segmenter("lraspp_mobilenet_v3_large", str(weights), device="cpu", precision=p)
                  for p in precisions}
    sides = {}
    for p in precisions:
        sides[("raw", p)] = lambda p=p: raw(p)
        sides[("vislab_infer", p)] = lambda p=p: [predict_mask(segmenters[p], read_image(x)) for x in paths]
        sides[("vislab_segment", p)] = lambda p=p: segment_images("", paths, work / "out", panels=False,
                                                                  segmenter=segmenters[p])
    for fn in sides.values():
        fn()  # warm-up
    best = {key: float("inf") for key in sides}
    for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits every side alike
        for key, fn in sides.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    results = {key: round(len(paths) / seconds, 3) for key, seconds in best.items()}
    for (side, p), value in results.items():
        emit({"bench": "segment_inference", "side": side, "precision": p, "images_per_s": value,
              "size": "720x960", "images": len(paths), "repeat": args.repeat, **info})
    best_raw = max(v for (side, _), v in results.items() if side == "raw")
    emit({"bench": "segment_inference", "side": "ratio", "precisions": list(precisions),
          "vislab_infer_vs_raw": round(max(v for (s, _), v in results.items() if s == "vislab_infer") / best_raw, 3),
          "vislab_segment_vs_raw": round(max(v for (s, _), v in results.items() if s == "vislab_segment") / best_raw, 3),
          **info, "machine_end": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
