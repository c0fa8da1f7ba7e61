"""LP-FT at 40 Fashion-MNIST images per class: can any fine-tuning beat the frozen-feature head here?

The transfer target is a fine-tuning recipe at >= 3 points over frozen features + logistic regression.
This is the probe behind that question, in plain PyTorch over vislab's model factory, so each
lever is one flag: the frozen EfficientNet-Lite0 features + scikit-learn LogisticRegression(C=1)
first (printed as ``frozen+LR``), then LP-FT (Kumar et al. 2022): the classifier starts from that
fit (``--init lr``) and the whole network trains for ``--epochs`` with AdamW, a 10 % warm-up then
cosine (one-cycle), ``--lr`` for the body and ``--lr-head`` for the classifier, no decay on
norms/biases, BatchNorm frozen (``--bn eval``) or training, flip / shift augmentation, label
smoothing. One JSON line per epoch with the test accuracy; every line carries ``machine`` (CPU model,
load average).

    python benchmarks/bench_lpft.py --size 160 --epochs 5 --lr 1e-4 --lr-head 1e-3 --bn eval
    OMP_NUM_THREADS=1 python benchmarks/bench_lpft.py --size 224 --epochs 2 --aug flipshift --ls 0.1
"""
import argparse
import json
import sys
import time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_transfer import per_class
from _common import machine
THREADS = torch.get_num_threads()
from vislab.models import create_model
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seed", type=int, default=0)
p.add_argument("--train-per-class", type=int, default=40)
p.add_argument("--test", type=int, default=50)
p.add_argument("--size", type=int, default=224)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--lr-head", type=float, default=None)
p.add_argument("--bn", default="eval")  # eval | train
p.add_argument("--opt", default="adamw")
p.add_argument("--wd", type=float, default=0.01)
p.add_argument("--aug", default="flip")  # none | flip | flipshift
p.add_argument("--ls", type=float, default=0.0)
p.add_argument("--bs", type=int, default=32)
p.add_argument("--init", default="lr")  # lr | zero
p.add_argument("--model", default="efficientnet_lite0")
p.add_argument("--tta", action="store_true")
p.add_argument("--speed", action="store_true")
a = p.parse_args()
torch.manual_seed(0)
tr = per_class("train", a.train_per_class, a.seed); te = per_class("t10k", a.test, a.seed + 1)
model = create_model(a.model, num_classes=10, in_chans=3, pretrained=True)
def prep(x, size=a.size):  # uint8 (N,1,28,28) -> normalized 3ch
    x = x.float() / 255
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
@torch.inference_mode()
def feats(x):
    model.eval(); return torch.cat([model.forward_head(model.forward_features(prep(c)), pre_logits=True) for c in x.split(64)])
@torch.inference_mode()
def logits(x):
    model.eval(); out = torch.cat([model(prep(c)) for c in x.split(64)])
    if a.tta: out = out.softmax(1) + torch.cat([model(prep(c.flip(-1))) for c in x.split(64)]).softmax(1)
    return out
t0 = time.perf_counter()
from sklearn.linear_model import LogisticRegression
ftr = feats(tr[0]); t_ext = time.perf_counter() - t0
lr = LogisticRegression(C=1.0, max_iter=2000).fit(ftr.numpy(), tr[1].numpy())
head = model.get_classifier()
with torch.no_grad():
    head.weight.copy_(torch.from_numpy(lr.coef_).float()); head.bias.copy_(torch.from_numpy(lr.intercept_).float())
t_lr = time.perf_counter() - t0
acc_lr = float((logits(te[0]).argmax(1) == te[1]).float().mean())
t_lr_eval = time.perf_counter() - t0
print(json.dumps({"setup": "frozen+LR", "size": a.size, "acc": round(acc_lr, 4), "fit_s": round(t_lr, 1), "with_eval_s": round(t_lr_eval, 1), "seed": a.seed, "machine": machine(), "threads": THREADS}), flush=True)
if a.init == "zero":
    nn.init.zeros_(head.weight); nn.init.zeros_(head.bias)
head_params = list(head.parameters()); hid = {id(q) for q in head_params}
body = [q for q in model.parameters() if id(q) not in hid]
decay = lambda ps: [q for q in ps if q.ndim > 1]; nodecay = lambda ps: [q for q in ps if q.ndim <= 1]
groups = [{"params": decay(body), "lr": a.lr, "weight_decay": a.wd}, {"params": nodecay(body), "lr": a.lr, "weight_decay": 0},
          {"params": head_params, "lr": a.lr_head or a.lr, "weight_decay": 0}]
opt = torch.optim.AdamW(groups) if a.opt == "adamw" else torch.optim.SGD(groups, momentum=0.9, nesterov=True)
steps = a.epochs * (len(tr[1]) // a.bs)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups], total_steps=steps, pct_start=0.1, anneal_strategy="cos")
g = torch.Generator().manual_seed(0)
x_all, y_all = tr
t1 = time.perf_counter()
for ep in range(a.epochs):
    model.train()
    if a.bn == "eval":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm): m.eval()
    order = torch.randperm(len(y_all), generator=g)
    for i in range(0, len(order) - a.bs + 1, a.bs):
        idx = order[i:i + a.bs]; x = x_all[idx]; y = y_all[idx]
        if "flip" in a.aug:
            f = torch.rand(len(x), generator=g) < 0.5; x = torch.where(f[:, None, None, None], x.flip(-1), x)
        if "shift" in a.aug:
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist(); x = torch.roll(x, (dy, dx), (-2, -1))
        loss = F.cross_entropy(model(prep(x)), y, label_smoothing=a.ls)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if a.speed and i == a.bs * 3:
            print(json.dumps({"setup": "lpft speed", "img_per_s": round(3 * a.bs / (time.perf_counter() - t1), 1), "size": a.size, "machine": machine(), "threads": THREADS}))
            sys.exit()
        if i == 0 and ep == 0: t1 = time.perf_counter()
    acc = float((logits(te[0]).argmax(1) == te[1]).float().mean())
    print(json.dumps({"setup": "lpft", "epoch": ep + 1, "acc": round(acc, 4), "train_s": round(time.perf_counter() - t1, 1), "loss": round(loss.item(), 3), "args": {k: v for k, v in vars(a).items() if k not in ("speed",)}, "machine": machine(), "threads": THREADS}), flush=True)
