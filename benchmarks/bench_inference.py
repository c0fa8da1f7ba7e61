"""Inference speed: raw timm EfficientNet-Lite0 vs vislab's predict and feature-extraction paths.

Measures, side by side in one process, at batch 32 and 224 px:

* raw timm ``tf_efficientnet_lite0`` (the shipped ImageNet weights) on a ready float batch:
  fp32 contiguous, fp32 channels_last, bf16 autocast + channels_last;
* vislab's ``Predictor`` (``vislab predict``) on uint8 batches, preprocessing included, with
  ``--precision auto`` (bf16, near-ties re-checked in fp32) and ``--precision bf16`` (no re-check);
* vislab's ``extract_features`` (cached feature extraction), preprocessing included;
* a sweep of the re-check margin: how many bf16 answers each margin sends to fp32 and the
  agreement that buys;

The vislab ratios come from raw bf16 + channels_last and the vislab paths timed
in turns (raw, predict auto, predict bf16, extract, raw, ...; medians), so a shared
host's slow spells hit them all alike. And the top-1 agreement of each with fp32 on real photos (scikit-image's sample
images, randomly cropped and flipped). One JSON line per measurement, with the machine
and library versions. Numbers depend on the machine and its load: run it on an idle one.

Usage:
    python benchmarks/bench_inference.py [--batch 32] [--size 224] [--repeats 5] [--agreement-images 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def versions() -> dict:
    import timm

    import vislab

    return {"vislab": getattr(vislab, "__version__", "?"), "torch": torch.__version__, "timm": timm.__version__}


def photos(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` uint8 (3, size, size) crops of scikit-image's colour photographs."""
    import skimage.data

    names = ["chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
             "retina", "colorwheel", "motorcycle_left"]
    sources = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        try:
            image = loader()
        except Exception:  # some sample images need pooch downloads: skip those offline
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            sources.append(torch.from_numpy(np.ascontiguousarray(image[:, :, :3])).permute(2, 0, 1))
    rng = np.random.default_rng(seed)
    out = torch.empty(count, 3, size, size, dtype=torch.uint8)
    for i in range(count):
        image = sources[i % len(sources)]
        h, w = image.shape[1:]
        crop = int(min(h, w) * rng.uniform(0.5, 1.0))
        top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        piece = image[:, top:top + crop, left:left + crop].float().unsqueeze(0)
        piece = torch.nn.functional.interpolate(piece, size=(size, size), mode="bilinear", antialias=True)[0]
        if rng.random() < 0.5:
            piece = piece.flip(-1)
        out[i] = piece.round().clamp(0, 255).to(torch.uint8)
    return out


def timed(fn, repeats: int, images: int) -> float:
    """Images per second: median over ``repeats`` calls after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return images / statistics.median(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--agreement-images", type=int, default=256)
    args = parser.parse_args(argv)

    from vislab.data.preprocess import Preprocessing
    from vislab.models.imagenet import load_imagenet_model
    from vislab.train.features import extract_features

    model, pre, names = load_imagenet_model("efficientnet_lite0")
    pre = Preprocessing((3, args.size, args.size), pre.mean, pre.std, pre.interpolation, 1.0)
    common = {"bench": "inference", "model": "tf_efficientnet_lite0", "batch": args.batch, "size": args.size,
              "machine": machine(), "versions": versions()}
    batch_u8 = photos(args.batch, args.size, seed=1)
    agree_u8 = photos(args.agreement_images, args.size, seed=2)

    def emit(config: str, images_per_s: float, top1: torch.Tensor | None, reference: torch.Tensor | None, **extra):
        line = {**common, "config": config, "images_per_s": round(images_per_s, 2)}
        if top1 is not None and reference is not None:
            line["top1_agreement_vs_fp32"] = round(float((top1 == reference).float().mean()), 4)
        line.update(extra)
        print(json.dumps(line), flush=True)
        return line

    def raw_runner(channels_last: bool, bf16: bool):
        net = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

        @torch.inference_mode()
        def run(u8: torch.Tensor) -> torch.Tensor:
            x = pre(u8)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            outputs = []
            for chunk in x.split(args.batch):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    outputs.append(net(chunk).float())
            return torch.cat(outputs)

        return run

    # raw timm: time the forward on a ready float batch; agreement on the photo set
    reference = None
    results = []
    probs_by_config = {}
    for config, channels_last, bf16 in (("raw fp32 contiguous", False, False),
                                        ("raw fp32 channels_last", True, False),
                                        ("raw bf16 autocast + channels_last", True, True)):
        run = raw_runner(channels_last, bf16)
        x = pre(batch_u8)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        net = model

        @torch.inference_mode()
        def forward(x=x, bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net(x)

        speed = timed(forward, args.repeats, args.batch)
        logits = run(agree_u8)
        probs_by_config[config] = logits.float().softmax(1)
        top1 = logits.argmax(1)
        reference = top1 if reference is None else reference
        results.append(emit(config, speed, top1, reference))

    # how the re-check margin trades fp32 re-computations for agreement (Predictor.TIE_MARGIN = 0.02)
    bf16_probs = probs_by_config["raw bf16 autocast + channels_last"]
    top2 = bf16_probs.topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]
    sweep = {}
    for margin in (0.005, 0.01, 0.02, 0.03):
        final = torch.where(gap < margin, reference, bf16_probs.argmax(1))
        sweep[str(margin)] = {"rechecked": int((gap < margin).sum()),
                              "agreement": round(float((final == reference).float().mean()), 4)}
    print(json.dumps({**common, "config": "re-check margin sweep (bf16 answers under the margin -> fp32)",
                      "images": len(agree_u8), "margins": sweep}), flush=True)

    # vislab predict: uint8 in, preprocessing + autocast chosen by the Predictor ("auto")
    from vislab.infer.predictor import Predictor
    from vislab.runs import Loaded

    import copy

    # each path its own copy of the model: a Predictor sets the memory format it measured fastest
    predictor = Predictor(Loaded(copy.deepcopy(model), pre, names, {"name": "imagenet:efficientnet_lite0"}, None),
                          device="cpu", precision="auto")
    predict_top1 = torch.cat([predictor.probabilities(c) for c in agree_u8.split(args.batch)]).argmax(1)
    rechecked = predictor.rechecked  # near-tied bf16 answers recomputed in fp32, of the agreement images
    predictor_bf16 = Predictor(Loaded(copy.deepcopy(model), pre, names, {"name": "imagenet:efficientnet_lite0"},
                                      None),
                               device="cpu", precision="bf16")
    predict_bf16_top1 = torch.cat([predictor_bf16.probabilities(c) for c in agree_u8.split(args.batch)]).argmax(1)

    # vislab cached feature extraction (precision auto: bf16 only when it agrees with fp32)
    # the bf16-vs-fp32 check runs once per extraction (first batch); time the chosen precision
    extract_model = copy.deepcopy(model)
    head = extract_model.get_classifier()
    features = extract_features(extract_model, pre, agree_u8, batch_size=args.batch)
    chosen, chosen_cl = features.precision, features.channels_last
    with torch.inference_mode():
        extract_top1 = head(features.features).argmax(1)

    # the ratios: raw bf16 + channels_last and the two vislab paths timed in turns, round by
    # round, so a host that slows down for a while slows all three alike
    x_cl = pre(batch_u8).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def raw_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x_cl)

    def raw_config(channels_last: bool, bf16: bool):
        net = copy.deepcopy(model).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        x = pre(batch_u8).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

        @torch.inference_mode()
        def forward():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net(x)
        return forward

    runs = {"raw": raw_bf16, "raw_fp32_cl": raw_config(True, False), "raw_fp32": raw_config(False, False),
            "predict": lambda: predictor.probabilities(batch_u8),
            "predict_bf16": lambda: predictor_bf16.probabilities(batch_u8),
            "extract": lambda: extract_features(extract_model, pre, batch_u8, batch_size=args.batch,
                                                precision=chosen, channels_last=chosen_cl)}
    seconds = {name: [] for name in runs}
    for name, fn in runs.items():  # warm-up
        model.to(memory_format=torch.channels_last)
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    speed = {name: args.batch / statistics.median(values) for name, values in seconds.items()}
    fastest = max(("raw", "raw_fp32_cl", "raw_fp32"), key=speed.get)
    emit("raw bf16 autocast + channels_last, timed in turns with vislab", speed["raw"], None, None)
    emit("raw fp32 channels_last, timed in turns with vislab", speed["raw_fp32_cl"], None, None)
    emit("raw fp32 contiguous, timed in turns with vislab", speed["raw_fp32"], None, None)
    print(json.dumps({**common, "config": "vislab against the fastest raw configuration, in turns",
                      "fastest_raw": fastest, "fastest_raw_images_per_s": round(speed[fastest], 1),
                      "predict_auto_choice": predictor.choice.describe() if predictor.choice else None,
                      "ratio_predict_auto": round(speed["predict"] / speed[fastest], 3),
                      "ratio_extract_auto": round(speed["extract"] / speed[fastest], 3),
                      "extract_choice": f"{chosen}, {'channels_last' if chosen_cl else 'contiguous'}"}), flush=True)
    emit("vislab predict (auto precision)", speed["predict"], predict_top1, reference,
         precision=str(predictor.dtype or "fp32"), ratio_to_raw_bf16_in_turns=round(speed["predict"] / speed["raw"], 3),
         rechecked_in_fp32=f"{rechecked}/{len(agree_u8)}")
    emit("vislab predict --precision bf16", speed["predict_bf16"], predict_bf16_top1, reference,
         precision="torch.bfloat16", ratio_to_raw_bf16_in_turns=round(speed["predict_bf16"] / speed["raw"], 3))
    emit("vislab extract_features (auto precision)", speed["extract"], extract_top1, reference, precision=chosen,
         ratio_to_raw_bf16_in_turns=round(speed["extract"] / speed["raw"], 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
