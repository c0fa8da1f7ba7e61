"""Cats vs dogs on 2,000 images: from scratch, with augmentation, VGG16 features, VGG16 fine-tuned.

Chollet's Deep Learning with Python, chapter 5, as four vislab runs on the same small set, then what
the networks look at: the activations of the first layers, the patterns a layer's filters respond
to, and a Grad-CAM heatmap.

    python examples/cats_vs_dogs.py --data PATH/TO/dogs-vs-cats/train   # Kaggle's train folder
    python examples/cats_vs_dogs.py --smoke                             # offline, seconds

Full mode takes Kaggle's dogs-vs-cats ``train/`` folder (cat.0.jpg ... dog.12499.jpg; a Kaggle login is
needed to download it) and links the book's subset: 1,000 images per class to train, 500 to validate,
500 to test. The four runs, at 150 px:

1. scratch: ``cats_dogs_convnet`` (4 conv-pool blocks, Dense 512, one sigmoid), RMSprop 1e-4, 30 epochs;
2. augmentation: the same with dropout 0.5 and the book's Keras augmentation (rotation 40, shifts 0.2,
   shear 0.2, zoom 0.2, horizontal flips), 100 epochs;
3. VGG16 frozen features, cached (computed once) with a logistic-regression head (L-BFGS);
4. VGG16 with its last block fine-tuned (and a new head), Adam 1e-4, backbone 1e-5, with augmentation,
   30 epochs (the book trains the head first, then fine-tunes block 5 with RMSprop 1e-5 for 100 epochs).

Expected, full mode (not measured by us): the book (1st edition) reports about 71 %, 82 % and 90 %
validation accuracy for the first three (96 % for features with augmentation end to end) and 97 %
test accuracy fine-tuned. Its head on VGG16 features is Dense 256 + dropout; ours is a linear one.

Measured, smoke mode (Fashion-MNIST sneakers vs ankle boots, 60 train / 20 val / 30 test images per class at
48 px; 6 epochs from scratch, 10 with augmentation, the Lite0 stand-in fine-tuned 2 epochs; AMD EPYC (lscpu),
2 cores, torch 2.14.1, 2026-12-03), seed 0: test accuracy scratch 0.950, augmentation 0.917, Lite0 features
0.950, Lite0 fine-tuned 0.900. Floors checked: test accuracy >= 0.60 (chance 0.50) for each run, >= 0.80 for
the VGG16 stand-in's features. The lowest values over seeds 0-4 under each CPU class
(``benchmarks/bench_smoke_floors.py``: native, AVX512_CORE, AVX2): scratch 0.933, augmentation 0.783,
features 0.933, fine-tuned 0.667.

Writes OUT/<run>/ run folders, OUT/activations/, OUT/filters/ and OUT/gradcam/ PNGs, OUT/leaderboard.csv.
"""

from __future__ import annotations

from pathlib import Path

from _common import (LITE0_NOTE, Checks, fashion_folders, full_data, get_args_parser, leaderboard,
                     link_files, run,
                     speed, start)

BOOK_SPLITS = (("train", 0, 1000), ("val", 1000, 1500), ("test", 1500, 2000))  # image numbers per class
AUGMENT = {"rotation": 40, "width_shift": 0.2, "height_shift": 0.2, "shear": 0.2, "zoom": 0.2, "hflip": True}
FLOORS = {"scratch": 0.60, "augmentation": 0.60, "vgg16_features": 0.80, "vgg16_finetuned": 0.60}  # chance: 0.50
FILTER_LAYER = {"vgg16.tv_in1k": "features.10", "efficientnet_lite0": "blocks.2"}  # block3_conv1 in Keras' names


def book_subset(kaggle_train: Path, out: Path) -> Path:
    """Link cat.N.jpg / dog.N.jpg into out/{train,val,test}/{cats,dogs}/, the book's 2,000 + 1,000 + 1,000."""
    link_files(((Path(kaggle_train) / f"{animal}.{n}.jpg", out / split / f"{animal}s" / f"{animal}.{n}.jpg")
                for animal in ("cat", "dog") for split, first, last in BOOK_SPLITS for n in range(first, last)),
               "--data must be Kaggle's dogs-vs-cats train/ folder (cat.0.jpg ... dog.12499.jpg)")
    return out


def main(argv=None) -> None:
    args = get_args_parser(__doc__, "cats_vs_dogs", data="Kaggle's dogs-vs-cats train/ folder").parse_args(argv)
    import vislab.api as api

    out = start(args, "cats vs dogs: scratch, augmentation, VGG16 features, VGG16 fine-tuned",
                "Fashion-MNIST sneakers vs ankle boots (60/20/30 images per class, 48 px) stand in for cats "
                "vs dogs; " + LITE0_NOTE.format(what="VGG16") + " at 48 px; RMSprop 1e-3, 6 epochs from scratch "
                "(10 with augmentation), 2 fine-tuning")
    if args.smoke:
        data = fashion_folders(out / "data", {"train": 60, "val": 20, "test": 30}, classes=[7, 9], seed=args.seed)
    else:
        data = book_subset(full_data(args, "PATH/TO/dogs-vs-cats/train"), out / "data")
    smoke = args.smoke
    size, backbone = ([48, 48], "efficientnet_lite0") if smoke else ([150, 150], "vgg16.tv_in1k")
    lr = 1e-3 if smoke else 1e-4
    runs = {
        "scratch": dict(model="cats_dogs_convnet", model_options={"binary": True}, optimizer="rmsprop", lr=lr,
                        batch_size=20, epochs=6 if smoke else 30, input_size=size),
        "augmentation": dict(model="cats_dogs_convnet", model_options={"binary": True, "dropout": 0.5},
                             optimizer="rmsprop", lr=lr, batch_size=20,
                             epochs=10 if smoke else 100, input_size=size, **AUGMENT),
        "vgg16_features": dict(model=backbone, pretrained=True, freeze="backbone", cache_features=True,
                               optimizer="lbfgs", epochs=2, input_size=size),
        "vgg16_finetuned": dict(model=backbone, pretrained=True, finetune_last=1, bn="frozen", optimizer="adam",
                                lr=lr, lr_backbone=lr / 10, batch_size=20, epochs=2 if smoke else 30,
                                input_size=size, **AUGMENT),
    }
    checks, results = Checks(), {}
    for name, options in runs.items():
        print(f"\n== {name}: {options['model']}")
        results[name] = api.train(data=str(data), seed=args.seed, out=str(out / name), figures=not args.smoke,
                                  **options, **speed(args))
        checks.at_least(f"{name} test accuracy", results[name].metrics["accuracy"], FLOORS[name])
    leaderboard([r.run_dir for r in results.values()], out, title="the four accuracies (test split)")

    image = sorted((Path(data) / "test").rglob("*.*"))[0]
    for grid, png in api.activations(results["scratch"].run_dir, image, out=out / "activations")[:2]:
        print(f"activations of {grid.name} ({grid.channels} channels): {png}")
    layer = FILTER_LAYER[backbone]
    grid = api.filters(results["vgg16_features"].run_dir, layer, n=8 if args.smoke else 64,
                       steps=10 if args.smoke else 40, out=out / "filters")
    print(f"filters of {layer}: {grid}")
    cam = api.explain(results["vgg16_finetuned"].run_dir, [image], method="gradcam", out=out / "gradcam")[0]
    print(f"Grad-CAM for {image.name} ({cam.get('class')}): {cam.get('png')}")
    checks.that("Grad-CAM heatmap written", "png" in cam and Path(cam["png"]).is_file(), str(cam.get("png")))
    checks.verify()


if __name__ == "__main__":
    run(main)
