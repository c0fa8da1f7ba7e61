"""Segmentation levers, one flag each, in a plain loop over vislab's smp U-Net on the Lite0 encoder.

The probe behind the segmentation notes in docs/benchmarks.md: training images/s by decoder width
(``--speed --dec 256,128,64,32,16`` 29-32 img/s vs ``--dec 128,64,32,16,8`` 42-56 on a 2-core EPYC),
cross-entropy alone collapsing to "all background" (``--loss ce``: mIoU 0.079 for 4 epochs),
median-frequency class weights (``--loss wce+dice``; ``--wpow 0.5`` damps them), encoder and
decoder LRs (``--lr-enc``), input upscaling (``--up 2``). Trains on the whole training split of
``bench_segmentation.py``'s composite set (made here when ``--data`` holds none: ``--n`` training
composites, a fifth as many test ones) and prints the test mIoU after each epoch as one JSON line
(with ``machine``: CPU model, load average).

    python benchmarks/bench_seg_levers.py --dec 128,64,32,16,8 --lr 3e-3 --loss wce+dice --sched onecycle --epochs 12
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from bench_segmentation import _read_split
from vislab.models.segmentation_nets import create_segmentation_model
from vislab.tasks.segmentation import confusion_matrix, segmentation_metrics
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--dec", default="256,128,64,32,16")
p.add_argument("--seconds", type=float, default=120)
p.add_argument("--bs", type=int, default=32)
p.add_argument("--in-chans", type=int, default=3)
p.add_argument("--sched", default="const")
p.add_argument("--cl", action="store_true")
p.add_argument("--speed", action="store_true")
p.add_argument("--wd", type=float, default=0)
p.add_argument("--diag", action="store_true")
p.add_argument("--loss", default="ce")
p.add_argument("--epochs", type=int, default=0)
p.add_argument("--pct", type=float, default=0.3)
p.add_argument("--lr-enc", type=float, default=None)
p.add_argument("--up", type=int, default=1)
p.add_argument("--n", type=int, default=2000)
p.add_argument("--wpow", type=float, default=1.0)
p.add_argument("--depth", type=int, default=5)
p.add_argument("--data", default="/tmp/vislab-bench/fashion-seg")
a = p.parse_args()
data = Path(a.data)
if not (data / "classes.txt").is_file():  # bench_segmentation.py's composite set, made here when absent
    from vislab import api

    api.make_segmentation_data(data, train=a.n, test=max(16, a.n // 5), seed=0)
tx, ty = _read_split(data / "train"); vx, vy = _read_split(data / "test")
torch.manual_seed(0)
dec = tuple(int(c) for c in a.dec.split(","))
net = create_segmentation_model("unet", num_classes=11, in_chans=a.in_chans, pretrained=True, decoder_channels=dec, encoder_depth=a.depth).train()
mf = torch.channels_last if a.cl else torch.contiguous_format
net = net.to(memory_format=mf)
def prep(x):
    x = x.float() / 127.5 - 1
    if a.up > 1: x = torch.nn.functional.interpolate(x, scale_factor=a.up, mode="bilinear", align_corners=False)
    if a.in_chans == 3: x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=mf)
from vislab.tasks.segmentation import median_frequency_weights
from segmentation_models_pytorch.losses import DiceLoss
W = torch.tensor(median_frequency_weights(torch.bincount(ty.flatten(), minlength=11).numpy()), dtype=torch.float32) ** a.wpow
DICE = DiceLoss(mode="multiclass", from_logits=True)
def lossf(o, y):
    l = torch.nn.functional.cross_entropy(o, y, weight=W if "wce" in a.loss else None)
    if "dice" in a.loss: l = l + DICE(o, y)
    return l
enc = [q for n, q in net.named_parameters() if ".encoder." in n or n.startswith("encoder.")]
eid = {id(q) for q in enc}; rest = [q for q in net.parameters() if id(q) not in eid]
print("encoder params", sum(q.numel() for q in enc), "rest", sum(q.numel() for q in rest))
groups = [{"params": enc, "lr": a.lr_enc or a.lr}, {"params": rest, "lr": a.lr}]
opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=a.wd)
if a.speed:
    for i in range(8):
        if i == 3: t = time.perf_counter()
        idx = torch.randint(0, len(tx), (a.bs,))
        loss = torch.nn.functional.cross_entropy(net(prep(tx[idx])), ty[idx]); opt.zero_grad(); loss.backward(); opt.step()
    print(json.dumps({"dec": a.dec, "cl": a.cl, "depth": a.depth, "img_s": round(5 * a.bs / (time.perf_counter() - t), 1), "machine": machine()})); sys.exit()
steps_per_epoch = a.n // a.bs
est_steps = int(a.seconds * 33 / a.bs)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g['lr'] for g in groups], total_steps=a.epochs * (a.n // a.bs), pct_start=a.pct) if a.sched == "onecycle" else None
def evaluate():
    net.eval(); m = torch.zeros(11, 11, dtype=torch.int64)
    with torch.inference_mode():
        for i in range(0, len(vx), 100): m += confusion_matrix(torch.nn.functional.avg_pool2d(net(prep(vx[i:i+100])), a.up).argmax(1), vy[i:i+100], 11)
    net.train(); r = segmentation_metrics(m.numpy(), [str(i) for i in range(11)]); return r["miou"], r["pixel_accuracy"]
start = time.perf_counter(); ep = 0; steps = 0; tr = 0
while (ep < a.epochs) if a.epochs else (tr < a.seconds):
    t0 = time.perf_counter()
    order = torch.randperm(a.n)
    for i in range(0, a.n - a.bs + 1, a.bs):
        idx = order[i:i+a.bs]; x = tx[idx]; y = ty[idx]
        if torch.rand(()) < 0.5: x = x.flip(-1); y = y.flip(-1)
        o = net(prep(x))
        if a.up > 1: o = torch.nn.functional.avg_pool2d(o, a.up)
        loss = lossf(o, y); opt.zero_grad(); loss.backward(); opt.step(); steps += 1
        if sched: sched.step()
    tr += time.perf_counter() - t0; ep += 1
    miou, pa = evaluate()
    if a.diag:
        vx0, vy0 = vx, vy
        globals()["vx"], globals()["vy"] = tx[:400], ty[:400]
        tm, _ = evaluate(); globals()["vx"], globals()["vy"] = vx0, vy0
        net.train(); m = torch.zeros(11, 11, dtype=torch.int64)
        with torch.no_grad():
            for i in range(0, len(vx), 100): m += confusion_matrix(torch.nn.functional.avg_pool2d(net(prep(vx[i:i+100])), a.up).argmax(1), vy[i:i+100], 11)
        print("diag train-set eval-mode miou", round(tm, 4), "test train-mode miou", round(segmentation_metrics(m.numpy(), [str(i) for i in range(11)])["miou"], 4))
    print(json.dumps({"epoch": ep, "train_s": round(tr, 1), "loss": round(float(loss.detach()), 3), "miou": round(miou, 4), "pa": round(pa, 4), "args": vars(a), "machine": machine()}), flush=True)
