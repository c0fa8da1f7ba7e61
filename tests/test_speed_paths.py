"""The speed paths keep accuracy: bf16 autocast, channels_last, batched per-sample augmentation, fast recipe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vislab.core.config import RECIPES, AugmentConfig, resolve_config
from vislab.data.augment import Augment
from vislab.models import create_model


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as float (N, 1, 8, 8) in 0..1, split 1,297 / 500."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    return (x[:1297], y[:1297]), (x[1297:], y[1297:])


@pytest.fixture(scope="module")
def trained(digits):
    """A small fastnet trained in fp32 for a few hundred steps (about a second)."""
    torch.manual_seed(0)
    (x, y), _ = digits
    model = create_model("fastnet", num_classes=10, in_chans=1, widths=(8, 16, 32), blocks=(0, 1), input_size=(8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        index = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = F.cross_entropy(model(x[index]), y[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_bf16_autocast_and_channels_last_predict_like_fp32(trained, digits):
    _, (x, y) = digits
    with torch.inference_mode():
        fp32 = trained(x)
        model = trained.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x.contiguous(memory_format=torch.channels_last)).float()
        trained.to(memory_format=torch.contiguous_format)
    accuracy = (fp32.argmax(1) == y).float().mean().item()
    assert accuracy > 0.85  # the model has learnt something, so agreement means something
    agree = (fp32.argmax(1) == fast.argmax(1)).float().mean().item()
    assert agree >= 0.98
    assert abs((fast.argmax(1) == y).float().mean().item() - accuracy) <= 0.01


def test_channels_last_equals_contiguous_in_fp32(trained, digits):
    _, (x, _) = digits
    with torch.inference_mode():
        plain = trained(x)
        trained.to(memory_format=torch.channels_last)
        last = trained(x.contiguous(memory_format=torch.channels_last))
        trained.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-4)


def test_augmentation_is_per_sample_not_per_batch():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 2:6, 3:12] = 1.0  # asymmetric, so flips and rotations show
    batch = image.expand(32, 1, 16, 16).contiguous()
    out = Augment(AugmentConfig(rotation=30, width_shift=0.1, height_shift=0.1))(
        batch, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten().round(decimals=3).tolist()) for o in out}
    assert len(distinct) > 16  # one transform for the whole batch would give a single distinct image

    flips = Augment(AugmentConfig(hflip=True))(batch, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, image[0].flip(-1)) for o in flips])
    kept = torch.tensor([torch.equal(o, image[0]) for o in flips])
    assert bool((flipped | kept).all()) and 4 < int(flipped.sum()) < 28  # exact pixels, about half flipped


def test_augmentation_is_reproducible_from_its_generator():
    batch = torch.rand(8, 1, 12, 12)
    aug = Augment(AugmentConfig(hflip=True, rotation=15, zoom=0.1))
    a = aug(batch, generator=torch.Generator().manual_seed(5))
    b = aug(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_every_recipe_is_a_cli_choice_and_resolves():
    from vislab.cli import build_parser

    for name in RECIPES:
        args = build_parser().parse_args(["train", "--recipe", name])
        cfg = resolve_config(overrides={"recipe": args.recipe, "train.epochs": 1})
        assert cfg.model.name == RECIPES[name]["model.name"] and cfg.train.epochs == 1  # flags beat the recipe
    assert resolve_config(overrides={"recipe": "accurate"}).model.options["widths"] == [32, 96, 192]


def test_fast_recipe_resolves_and_its_network_is_small():
    cfg = resolve_config(overrides={"recipe": "fast"})
    assert cfg.model.name == RECIPES["fast"]["model.name"]
    model = create_model(cfg.model.name, num_classes=10, in_chans=1, **cfg.model.options)
    # the budget that makes >= 92% within 60 s on 2 CPU cores possible: well under a chollet_convnet's work
    params = sum(p.numel() for p in model.parameters())
    assert params < 250_000
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_training_without_validation_split_monitors_train_loss(tmp_path):
    """val_split 0 (the fast recipe's setting): early stopping falls back to train_loss instead of failing."""
    from vislab.pipelines import train as fit

    cfg = resolve_config(overrides={"data.source": "digits", "data.val_split": 0, "model.name": "mlp",
                                    "model.input_size": [8, 8], "train.epochs": 1, "out": str(tmp_path / "run")})
    result = fit(cfg, progress=False, evaluate=False)
    assert result.history[0].get("val_loss") is None and result.history[0]["train_loss"] > 0
    assert (tmp_path / "run" / "model.json").exists()



def test_auto_precision_is_bf16_on_bf16_cpus():
    from vislab.core.device import cpu_has_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is (torch.bfloat16 if cpu_has_bf16() else None)
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("fp32", cpu) is None


def test_training_start_imports_no_torchvision_timm_or_sklearn():
    """Start-up time: the in-memory training path (loop, audit, model.json) needs none of these.

    Each costs 0.6-1.3 s to import (torchvision pulls in torch._dynamo); the fast recipe
    is timed from a cold start.
    """
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vislab.train import loop\n"
        "from vislab.data import audit\n"
        "from vislab.runs import versions\n"
        "import vislab.cli\n"
        "v = versions()\n"
        "heavy = sorted(m for m in ('torchvision', 'timm', 'sklearn') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none', v['torchvision'] is not None, v['timm'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["none", "True", "True"]


def test_augment_sits_in_a_torchvision_v2_pipeline():
    from torchvision.transforms import v2

    pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), Augment(AugmentConfig(hflip=True, rotation=10))])
    out = pipeline(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("precision", [None, torch.bfloat16])
def test_pool_before_relu_trains_bit_identically(digits, precision):
    from vislab.models.classic import materialize
    from vislab.train.speed import pool_before_relu

    (x, y), _ = digits
    x = F.interpolate(x[:256], size=(28, 28), mode="nearest")  # vgg_like at its 28x28
    weights = {}
    for swap in (False, True):
        torch.manual_seed(0)
        model = materialize(create_model("vgg_like", num_classes=10, in_chans=1, dropout=0.25), (1, 28, 28))
        model = model.to(memory_format=torch.channels_last)
        fresh_keys = list(model.state_dict())
        if swap:
            assert pool_before_relu(model) == 3  # one per VGG block
            assert [type(m).__name__ for m in model.features[2:6]] == ["Conv2d", "MaxPool2d", "ReLU", "Dropout"]
            assert list(model.state_dict()) == fresh_keys  # checkpoints load into the registry's network
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for step in range(4):
            torch.manual_seed(100 + step)  # the same dropout masks in both runs
            with torch.autocast("cpu", dtype=precision or torch.bfloat16, enabled=precision is not None):
                logits = model(x[step * 64:(step + 1) * 64].contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), y[step * 64:(step + 1) * 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights[swap] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights[False], weights[True]))


def test_reuse_freed_memory_takes_on_glibc():
    import platform

    from vislab.train.speed import reuse_freed_memory

    assert reuse_freed_memory() is (platform.libc_ver()[0] == "glibc" and platform.system() == "Linux")
