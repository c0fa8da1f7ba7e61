"""CamVid driving scenes: train a U-Net, then ``vislab segment`` with the CamVid palette, overlays and legends.

    python examples/camvid_segmentation.py --data PATH/TO/camvid    # fastai's CamVid folder
    python examples/camvid_segmentation.py --smoke                  # offline, seconds

Full mode reads fastai's CamVid (https://s3.amazonaws.com/fast-ai-imagelocal/camvid.tgz: ``images/*.png``,
``labels/*_P.png`` holding the 32 class IDs in ``codes.txt`` order, which is vislab's ``camvid`` palette order,
and ``valid.txt``), links it into vislab's layout (train/ and test/ with images/ + masks/; the valid.txt images
are the test split), trains a U-Net on the shipped ImageNet EfficientNet-Lite0 encoder at 360 x 480 (Adam
one-cycle 3e-3, 20 epochs, batch 8), then runs the CLI on the test images:

    vislab segment RUN test/images --palette camvid --out OUT/segment

which writes, per image, the indexed mask, the colour mask, the ``cv2.addWeighted`` overlay, a 3-panel figure
and a legend with each class's share of the pixels, and pixel_shares.csv for all of them.

Expected, full mode: not measured by us; the script prints the test mIoU and pixel accuracy.

Measured, smoke mode (vislab's offline Fashion-MNIST composites, ``make_segmentation_data``: 11 classes on 48
px canvases, 64 train / 16 test; 6 epochs, batch 8, recipe auto's class weights and CE + Dice; AMD EPYC (lscpu),
2 cores, torch 2.14.1, 2026-12-03): test mIoU 0.134, pixel accuracy 0.744; about 16 s wall on the otherwise idle
machine. Floors checked: pixel accuracy >= 0.60, mIoU >= 0.10; every segmented image has its overlay and legend,
and its pixel shares sum to 1.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from _common import CheckFailed, Checks, full_data, get_args_parser, link_files, run, speed, start


def fastai_layout(camvid: Path, out: Path) -> Path:
    """Link fastai's CamVid into out/{train,test}/{images,masks}/ (masks: labels/STEM_P.png -> masks/STEM.png)."""
    valid = set((camvid / "valid.txt").read_text().split()) if (camvid / "valid.txt").is_file() else set()
    link_files(((source, out / ("test" if image.name in valid else "train") / kind / image.name)
                for image in sorted((camvid / "images").glob("*.png"))
                for kind, source in (("images", image), ("masks", camvid / "labels" / f"{image.stem}_P.png"))),
               "--data must be fastai's camvid folder (images/, labels/*_P.png, codes.txt, valid.txt)")
    if not valid or not (out / "train").is_dir():
        from vislab.core.errors import DataError

        raise DataError(f"{camvid}: no valid.txt or no images/*.png; --data must be fastai's camvid folder")
    return out


def main(argv=None) -> None:
    args = get_args_parser(__doc__, "camvid_segmentation", data="fastai's camvid folder").parse_args(argv)
    import vislab.api as api
    from vislab import cli

    out = start(args, "CamVid segmentation: U-Net, then vislab segment with the CamVid palette",
                "vislab's Fashion-MNIST composites (11 classes, 48 px) stand in for CamVid's driving scenes; "
                "--palette camvid draws their classes in CamVid's first 11 colours")
    if args.smoke:
        data = api.make_segmentation_data(out / "data", train=64, test=16, size=48, seed=args.seed)
        options = dict(epochs=6, batch_size=8)
    else:
        data = fastai_layout(full_data(args, "PATH/TO/camvid (fastai's folder)"), out / "data")
        options = dict(epochs=20, batch_size=8, input_size=[360, 480], palette="camvid")
    result = api.train(task="segmentation", data=str(data), model="unet", pretrained=True, optimizer="adam", lr=3e-3,
                       scheduler="onecycle", monitor="val_miou", seed=args.seed, out=str(out / "unet"),
                       figures=not args.smoke, **options, **speed(args))
    metrics = result.metrics
    print(f"test mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}")

    images = sorted((Path(data) / "test" / "images").glob("*.png"))[: 4 if args.smoke else None]
    command = ["segment", str(result.run_dir), *map(str, images), "--palette", "camvid", "--out",
               str(out / "segment"), "--device", args.device, "--precision", "fp32" if args.smoke else "auto"]
    print("$ vislab segment RUN IMAGES --palette camvid --out", out / "segment")
    if cli.main(command) != 0:  # the command line itself, in this process
        raise CheckFailed("vislab segment failed (its message is above)")

    checks = Checks()
    checks.at_least("pixel accuracy", metrics["pixel_accuracy"], 0.60)
    checks.at_least("mIoU", metrics["miou"], 0.10)
    shares = defaultdict(float)
    with open(out / "segment" / "pixel_shares.csv") as handle:
        for row in csv.DictReader(handle):
            shares[row["image"]] += float(row["share"])
    for image in images:
        written = all((out / "segment" / f"{image.stem}_{kind}.png").is_file() for kind in ("overlay", "legend"))
        share = next((v for k, v in shares.items() if Path(k).name == image.name), 0.0)
        checks.that(f"{image.name} segmented", written and abs(share - 1) < 1e-4,  # shares are rounded to 1e-6
                    f"overlay + legend written, shares sum to {share:.4f}")
    checks.verify()


if __name__ == "__main__":
    run(main)
