"""Preprocessing belongs to the model: channels, resize, normalise, serialise."""

from __future__ import annotations

import pytest
import torch

from vislab.data.preprocess import Preprocessing


def test_gray_to_rgb_and_back():
    pre = Preprocessing((3, 4, 4), mean=(0.5,), std=(0.5,))
    x = pre(torch.full((1, 4, 4), 255, dtype=torch.uint8))
    assert x.shape == (3, 4, 4) and torch.allclose(x, torch.ones_like(x))
    gray = Preprocessing((1, 4, 4))
    rgb = torch.zeros(3, 4, 4, dtype=torch.uint8)
    rgb[1] = 255  # pure green -> luma 0.587
    assert torch.allclose(gray(rgb), torch.full((1, 4, 4), 150 / 255), atol=1e-6)


def test_resize_and_centre_crop():
    pre = Preprocessing((3, 224, 224), crop_pct=0.875, interpolation="bicubic")
    out = pre(torch.randint(0, 255, (2, 3, 300, 400), dtype=torch.uint8))
    assert out.shape == (2, 3, 224, 224)
    assert Preprocessing((1, 28, 28))(torch.zeros(1, 8, 8, dtype=torch.uint8)).shape == (1, 28, 28)


def test_normalise_uses_mean_std_and_round_trips():
    pre = Preprocessing((3, 2, 2), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    image = torch.randint(0, 255, (3, 2, 2), dtype=torch.uint8)
    x = pre(image)
    assert torch.allclose(pre.denormalize(x), image.float() / 255, atol=1e-6)
    again = Preprocessing.from_dict(pre.to_dict())
    assert again == pre


def test_normalise_from_uint8_floats_and_augmentation_agree():
    pre = Preprocessing((3, 8, 8), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor(pre.mean).view(-1, 1, 1), torch.tensor(pre.std).view(-1, 1, 1)
    expected = (images.float() / 255 - mean) / std
    floats = images.float() / 255
    kept = floats.clone()
    assert torch.allclose(pre(images), expected, atol=1e-6)  # uint8 straight in (one pass)
    assert torch.allclose(pre(floats), expected, atol=1e-6)
    assert torch.equal(floats, kept)  # the caller's tensor is not modified
    assert torch.allclose(pre(images, augment=lambda x: x), expected, atol=1e-6)  # the float path


def test_normalise_after_inference_mode_still_differentiates():
    # the constants are cached: made first under inference mode, they must still serve autograd
    pre = Preprocessing((1, 4, 4), mean=(0.123,), std=(0.456,))
    with torch.inference_mode():
        pre.normalize(torch.rand(2, 1, 4, 4))
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    pre.normalize(x).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 1 / 0.456))


def test_bad_preprocessing_is_an_error():
    with pytest.raises(ValueError, match="2 values but the model takes 3"):
        Preprocessing((3, 8, 8), mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({"input_size": [1, 2, 2], "size": 3})
