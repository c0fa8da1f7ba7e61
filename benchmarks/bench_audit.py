"""What the audit's duplicate checks cost: the pixel hash (exact) and imagehash's dHash (near).

The audit runs at the start of every `vislab train`, so its cost is paid on every run:
the exact check hashes every image's decoded pixels, the near-duplicate check computes a
64-bit dHash per image (and compares across splits) and runs by default only up to
``NEAR_DUPLICATE_MAX_IMAGES`` images. One JSON line per measurement.

    python benchmarks/bench_audit.py                 # digits (1,797 images), offline
    python benchmarks/bench_audit.py --data fashion-mnist --max-per-class 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    args = parser.parse_args(argv)

    import imagehash
    import numpy as np
    from PIL import Image

    from vislab.core.config import resolve_config
    from vislab.data.audit import audit_dataset, pixel_digest
    from vislab.data.sources import load_dataset

    cfg = resolve_config(overrides={"data.source": args.data, "data.max_per_class": args.max_per_class})
    dataset = load_dataset(cfg.data, seed=0)
    images = np.concatenate([np.asarray(split.images) for split in dataset.splits.values()])
    n = len(images)
    base = {"machine": machine(), "versions": {**versions(), "imagehash": imagehash.__version__},
            "data": args.data, "images": n, "image_shape": list(images.shape[1:])}

    def best(fn):
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    pil = [Image.fromarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)) for image in images]
    seconds = best(lambda: [pixel_digest(image) for image in images])
    emit({**base, "what": "exact: pixel_digest per image", "us_per_image": round(seconds / n * 1e6, 1)})
    seconds = best(lambda: [imagehash.dhash(image) for image in pil])
    emit({**base, "what": "near: imagehash.dhash per image", "us_per_image": round(seconds / n * 1e6, 1)})
    seconds = best(lambda: [imagehash.phash(image) for image in pil[:500]])
    emit({**base, "what": "imagehash.phash per image (not used: slower)",
          "us_per_image": round(seconds / min(n, 500) * 1e6, 1)})
    for near in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = best(lambda: audit_dataset(dataset, Path(tmp), near_duplicates=near))
        emit({**base, "what": f"audit_dataset, near_duplicates={near}", "seconds": round(seconds, 3)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
