"""Dog breeds: a CNN from scratch against transfer learning against a ViT, on a few breeds of a labels.csv.

    python examples/dog_breeds_cnn_vs_transfer_vs_vit.py --data PATH/TO/dog-breed-identification
    python examples/dog_breeds_cnn_vs_transfer_vs_vit.py --data ... --breeds beagle pug chihuahua
    python examples/dog_breeds_cnn_vs_transfer_vs_vit.py --smoke     # offline, seconds

Full mode reads Kaggle's dog-breed-identification folder: ``labels.csv`` (``id,breed``) and ``train/<id>.jpg``;
``--breeds`` keeps a few of the 120 (vislab's ``--labels``). Three runs on the same splits, compared on
one table, with the dominant-colour audit (each breed's mean dominant colour, from the runs' audit.json:
a background colour that tells the breeds apart is a shortcut the models can take):

1. cnn: ``cats_dogs_convnet`` from scratch at 150 px, Adam 1e-3, 30 epochs;
2. transfer: the shipped ImageNet EfficientNet-Lite0, frozen, its features cached, a logistic-regression
   head (L-BFGS): vislab's ``--recipe transfer``;
3. vit: ``hf:google/vit-base-patch16-224-in21k`` (downloaded by transformers), fine-tuned end to end,
   AdamW 5e-5, 5 epochs;

and LIME on one test image for the transfer model (which superpixels speak for its answer).

Expected, full mode: not measured by us (the data needs a Kaggle login); the script prints the table.

Measured, smoke mode (Fashion-MNIST items as JPEGs named by id in a labels.csv of 5 "breeds", 3 kept: 134
train / 34 val / 42 test images; AMD EPYC (lscpu), 2 cores, torch 2.14.1, 2026-12-02): test accuracy transfer
0.976, CNN 0.929, random-weight ViT 0.714; about 22 s wall under nice on the otherwise idle machine. Floors
checked: the CNN >= 0.45 and the ViT >= 0.30 (chance 0.33), transfer >= 0.70; LIME writes its panel.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy

from _common import (FASHION_NAMES, Checks, fashion, full_data, get_args_parser, leaderboard, run, speed, start,
                     tiny_hf_vit, write_images)

SMOKE_BREEDS = [0, 1, 5, 7, 9]  # Fashion-MNIST classes that play the breeds in smoke mode
DEFAULT_BREEDS = ["beagle", "chihuahua", "golden_retriever", "pug", "siberian_husky"]


def kaggle_layout(root: Path, seed: int) -> Path:
    """Fashion-MNIST items as Kaggle's files: train/<id>.jpg and labels.csv (id,breed)."""
    images, labels = fashion("train", per_class=70, classes=SMOKE_BREEDS, seed=seed)
    ids = [f"{i:05d}" for i in range(len(images))]
    write_images(root / "train", images, ids, ext=".jpg")
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("id", "breed"), *((i, FASHION_NAMES[c]) for i, c in zip(ids, labels))])
    return root


def main(argv=None) -> None:
    parser = get_args_parser(__doc__, "dog_breeds", data="Kaggle's dog-breed-identification folder")
    parser.add_argument("--breeds", nargs="+", default=DEFAULT_BREEDS, help="the breeds to keep")
    args = parser.parse_args(argv)
    import vislab.api as api

    out = start(args, "dog breeds: CNN vs transfer learning vs ViT",
                "Fashion-MNIST items play 5 breeds in a Kaggle-style labels.csv, 3 kept; 2 epochs for the CNN "
                "and the ViT, 64 px for transfer",
                "a 2-layer ViT with random weights (ViTConfig, save_pretrained, 32 px) stands in for "
                "google/vit-base-patch16-224-in21k, loaded through the same hf: code")
    if args.smoke:
        breeds = [FASHION_NAMES[c] for c in SMOKE_BREEDS[:3]]
        vit = f"hf:{tiny_hf_vit(out / 'vit-random')}"
        args.data = kaggle_layout(out / "data", args.seed)
    else:
        full_data(args, "PATH/TO/dog-breed-identification (labels.csv, train/)")
        breeds, vit = args.breeds, "hf:google/vit-base-patch16-224-in21k"
    data = dict(data=str(args.data / "labels.csv"), image_root=str(args.data / "train"))
    runs = {
        "cnn": dict(model="cats_dogs_convnet", optimizer="adam", lr=1e-3, batch_size=16,
                    epochs=2 if args.smoke else 30, input_size=[48, 48] if args.smoke else [150, 150]),
        "transfer": dict(recipe="transfer", input_size=[64, 64] if args.smoke else None),
        "vit": dict(model=vit, pretrained=True, optimizer="adamw", lr=1e-3 if args.smoke else 5e-5, batch_size=16,
                    epochs=2 if args.smoke else 5),
    }
    checks, results = Checks(), {}
    for name, options in runs.items():
        print(f"\n== {name}: {options.get('model', options.get('recipe'))}")
        results[name] = api.train(**data, labels=breeds, val_split=0.2, test_split=0.2, seed=args.seed,
                                  out=str(out / name), figures=not args.smoke, **options, **speed(args))
    colours = json.loads((results["cnn"].run_dir / "audit.json").read_text())["dominant_colour"]
    print("dominant colour per breed (mean RGB of each image's most common colour):")
    for breed, rgb in colours["mean_dominant_colour_per_class"].items():
        print(f"  {breed:>20}: {rgb}")
    leaderboard([r.run_dir for r in results.values()], out, title="CNN vs transfer vs ViT (test split)")
    for name, floor in (("cnn", 0.45), ("transfer", 0.70), ("vit", 0.30)):
        checks.at_least(f"{name} test accuracy", results[name].metrics["accuracy"], floor)

    image = Path(str(numpy.load(results["transfer"].run_dir / "predictions.npz")["sources"][0]))  # a test image
    lime = api.explain(results["transfer"].run_dir, [image], method="lime", out=out / "lime",
                       num_samples=100 if args.smoke else 1000)[0]
    print(f"LIME for {image.name} ({lime.get('class')}): {lime.get('png')}")
    checks.that("LIME panel written", Path(str(lime.get("png"))).is_file(), str(lime.get("png")))
    checks.verify()


if __name__ == "__main__":
    run(main)
