"""Segmentation time-to-mIoU: vislab's U-Net on the shipped EfficientNet-Lite0 encoder vs a plain PyTorch
loop over the same smp model, on the offline Fashion-MNIST composite set, at equal training time.

    python benchmarks/bench_segmentation.py                      # 2000 train / 400 test composites, 64 px
    python benchmarks/bench_segmentation.py --epochs 4 --train 800

Both sides train the same smp Unet: the shipped Lite0 encoder with a decoder of ``--decoder`` channels
(default 128,64,32,16,8: half smp's default widths, 1.3-1.75x the training images/s at 64 px on a
2-core EPYC, 42-56 vs 29-32 img/s in a plain loop, bench_seg_levers.py --speed). vislab's side adds what vislab offers a user by flag:
median-frequency class weights (``--class-weights auto``) and cross-entropy + Dice (``--loss
ce+dice``); without them, both sides first collapse to "all background" (85 % of the pixels) and
sit at mIoU 0.08 for the first epochs (measured: plain Adam + CE, 4 epochs of 2,000, mIoU 0.079).

vislab side: ``vislab.api.train(task="segmentation", model="unet", pretrained=True, ...)`` (mIoU per epoch
from history.csv, the test mIoU from metrics.json). Plain side: the same smp Unet with the same encoder
weights, Adam + cross-entropy, a plain ``for x, y in batches`` loop stopped when it has trained as long
as vislab did, then scored with the same confusion-matrix mIoU. One JSON line per measurement; the
machine record holds the CPU model and the load average (a shared machine inflates every time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, versions  # noqa: E402


def _versions() -> dict:
    from importlib.metadata import version

    return {**versions(), "segmentation_models_pytorch": version("segmentation-models-pytorch"),
            "timm": version("timm")}


def _read_split(folder: Path):
    from PIL import Image

    names = sorted(p.name for p in (folder / "images").iterdir())
    images = np.stack([np.asarray(Image.open(folder / "images" / n)) for n in names])
    masks = np.stack([np.asarray(Image.open(folder / "masks" / n)) for n in names])
    return torch.from_numpy(images)[:, None], torch.from_numpy(masks).long()


def plain_loop(data: Path, seconds: float, args) -> dict:
    """The same smp model trained by a plain loop for ``seconds``, then its test mIoU."""
    from vislab.models.segmentation_nets import create_segmentation_model
    from vislab.tasks.segmentation import confusion_matrix, segmentation_metrics

    torch.manual_seed(args.seed)
    train_x, train_y = _read_split(data / "train")
    test_x, test_y = _read_split(data / "test")
    net = create_segmentation_model("unet", num_classes=11, in_chans=3, pretrained=True,
                                    decoder_channels=_decoder(args)).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)

    def prepare(x):  # grey -> RGB, [-1, 1] as the Lite0 weights expect
        return (x.float() / 127.5 - 1).expand(-1, 3, -1, -1).contiguous()

    start, steps, epochs = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(train_x))
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            index = order[i:i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(net(prepare(train_x[index])), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        epochs += 1
    trained = time.perf_counter() - start
    net.eval()
    matrix = torch.zeros(11, 11, dtype=torch.int64)
    with torch.inference_mode():
        for i in range(0, len(test_x), 64):
            matrix += confusion_matrix(net(prepare(test_x[i:i + 64])).argmax(1), test_y[i:i + 64], 11)
    miou = segmentation_metrics(matrix.numpy(), [str(i) for i in range(11)])["miou"]
    return {"side": "plain", "train_seconds": round(trained, 1), "steps": steps, "epochs_started": epochs,
            "test_miou": round(miou, 4)}


def _decoder(args) -> list[int]:
    return [int(c) for c in args.decoder.split(",")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/vislab-bench/fashion-seg")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--decoder", default="128,64,32,16,8", help="U-Net decoder channels, both sides")
    parser.add_argument("--loss", default="ce+dice", help="vislab side's --loss")
    parser.add_argument("--class-weights", default="auto", help="vislab side's --class-weights ('none': off)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/vislab-bench/seg-runs")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args(argv)
    from vislab import api

    info = {"machine": machine(), "versions": _versions(), "threads": torch.get_num_threads()}
    data = Path(args.data)
    if not (data / "classes.txt").is_file():
        api.make_segmentation_data(data, train=args.train, test=args.test, seed=args.seed)
    run = Path(args.out) / f"unet-lite0-{time.strftime('%H%M%S')}"
    start = time.perf_counter()
    result = api.train(task="segmentation", data=str(data), model="unet", pretrained=True, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, optimizer="adam", scheduler="onecycle",
                       val_split=0.1, monitor="val_miou", hflip=True, out=str(run), seed=args.seed,
                       model_options={"decoder_channels": _decoder(args)}, loss=args.loss,
                       class_weights=args.class_weights)
    wall = time.perf_counter() - start
    elapsed = 0.0
    for row in result.history:
        elapsed += row["seconds"]
        emit({"bench": "segmentation", "side": "vislab", "epoch": row["epoch"], "train_seconds": round(elapsed, 1),
              "val_miou": round(row["val_miou"], 4), **info})
    trained = sum(r["seconds"] for r in result.history)
    emit({"bench": "segmentation", "side": "vislab", "train_seconds": round(trained, 1),
          "wall_seconds_with_data_eval_report": round(wall, 1), "test_miou": round(result.metrics["miou"], 4),
          "run": str(run), "decoder": args.decoder, "loss": args.loss, "class_weights": args.class_weights,
          "epochs": args.epochs, **info})
    if not args.skip_plain:
        emit({"bench": "segmentation", **plain_loop(data, trained, args), **info,
              "machine_end": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
