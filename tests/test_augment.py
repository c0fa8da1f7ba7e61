"""Augmentation: Keras meanings, per-sample randomness, errors for unknown or ignored options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vislab.core.config import AugmentConfig, ConfigError, resolve_config
from vislab.data.augment import Augment, affine_grid


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def dot_image(row=2, col=3, size=9):
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def test_hflip_is_an_exact_mirror_per_sample():
    x = torch.rand(64, 3, 8, 8)
    y = Augment(AugmentConfig(hflip=True))(x, generator=gen())
    mirrored = [torch.equal(y[i], x[i].flip(-1)) for i in range(64)]
    unchanged = [torch.equal(y[i], x[i]) for i in range(64)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 10 < sum(mirrored) < 54  # each sample draws its own coin


def test_vflip():
    x = torch.rand(32, 1, 6, 6)
    y = Augment(AugmentConfig(vflip=True))(x, generator=gen(1))
    assert any(torch.equal(y[i], x[i].flip(-2)) and not torch.equal(x[i], x[i].flip(-2)) for i in range(32))


def test_rotation_by_90_degrees_moves_a_dot_around_the_centre():
    aug = Augment(AugmentConfig(rotation=90))
    # force the extreme angle: a range of exactly 90 and a generator draw of 1.0 are hard to hit,
    # so check the matrix directly and the warp with a fixed matrix
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 9, 9], align_corners=False)
    out = torch.nn.functional.grid_sample(dot_image(), grid, align_corners=False)
    assert out.flatten().argmax().item() != dot_image().flatten().argmax().item()
    mats = aug.matrices(500, 9, 9, gen())
    angles = torch.rad2deg(torch.atan2(mats[:, 1, 0], mats[:, 0, 0]))
    assert angles.abs().max() <= 90.0 + 1e-4 and angles.abs().max() > 80  # uniform in [-90, 90]
    assert angles.std() > 40


def test_shift_moves_by_at_most_the_fraction():
    aug = Augment(AugmentConfig(width_shift=0.25, fill_mode="constant"))
    x = dot_image(4, 4, 9).repeat(200, 1, 1, 1)
    y = aug(x, generator=gen())
    cols = torch.stack([(img[0].sum(0) * torch.arange(9)).sum() / img[0].sum() for img in y])
    assert (cols - 4).abs().max() <= 0.25 * 9 + 1e-3
    assert (cols - 4).abs().max() > 1.5  # shifts really happen
    rows = torch.stack([(img[0].sum(1) * torch.arange(9)).sum() / img[0].sum() for img in y])
    assert torch.allclose(rows, torch.full_like(rows, 4.0), atol=1e-4)  # width only


def test_whole_pixel_shifts_move_exact_pixels_over_minus_n_to_n():
    """width_shift=2, height_shift=2: every image is the input moved by whole pixels in -2..2, unblurred."""
    aug = Augment(AugmentConfig(width_shift=2, height_shift=2, fill_mode="constant"))
    x = torch.randint(1, 256, (400, 1, 12, 12), dtype=torch.uint8)
    y = aug(x, generator=gen())
    seen = set()
    for source, moved in zip(x, y):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(moved, torch.roll(F.pad(source, (2, 2, 2, 2)), (dy, dx), (1, 2))[:, 2:-2, 2:-2])]
        assert len(found) == 1  # exactly one whole-pixel move explains the output
        seen.add(found[0])
    assert len(seen) == 25  # all of -2..2 x -2..2 occur


def test_pixel_shifts_from_one_up_are_pixels_not_fractions():
    mats = Augment(AugmentConfig(width_shift=1.5)).matrices(2000, 28, 28, gen())
    pixels = mats[:, 0, 2] * 28 / 2  # normalised -> pixels
    assert pixels.abs().max() <= 1.5 + 1e-4 and pixels.abs().max() > 1.4
    assert (pixels - pixels.round()).abs().max() > 0.1  # continuous, not whole pixels


def test_zoom_range_and_shear_range():
    mats = Augment(AugmentConfig(zoom=0.2)).matrices(1000, 28, 28, gen())
    sx = mats[:, 0, 0]
    assert sx.min() >= 0.8 - 1e-6 and sx.max() <= 1.2 + 1e-6 and sx.std() > 0.05
    mats = Augment(AugmentConfig(shear=30)).matrices(1000, 28, 28, gen())
    shear = torch.rad2deg(torch.asin(-mats[:, 0, 1]))
    assert shear.abs().max() <= 30 + 1e-3 and shear.abs().max() > 25


@pytest.mark.parametrize("mode", ["nearest", "constant", "reflect", "wrap"])
def test_fill_modes_differ_at_the_border(mode):
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(4, 1, 1, 1) / 64
    cfg = AugmentConfig(width_shift=0.4, fill_mode=mode, fill_value=255 if mode == "constant" else 0)
    y = Augment(cfg)(x, generator=gen(3))
    if mode == "constant":
        assert (y == 1.0).any()  # 255 / 255 filled in
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (28, 28), (33, 64)])
def test_affine_grid_is_torchs(size):
    theta = torch.randn(6, 2, 3, generator=gen(1)) * 0.5 + torch.eye(2, 3)
    ours = affine_grid(theta, *size)
    assert torch.allclose(ours, F.affine_grid(theta, [6, 1, *size], align_corners=False), atol=1e-6)
    assert torch.allclose(affine_grid(theta.double(), *size),
                          F.affine_grid(theta.double(), [6, 1, *size], align_corners=False), atol=1e-12)


def test_constant_fill_value_reaches_the_border_only():
    x = torch.full((2, 1, 6, 6), 0.25)
    y = Augment(AugmentConfig(width_shift=3, fill_mode="constant", fill_value=51))(x, generator=gen(2))
    assert set(torch.unique(y).tolist()) <= {0.25, 0.2}  # whole-pixel shifts: the image or 51 / 255
    assert (y == 0.25).any()


def test_uint8_in_uint8_out():
    x = torch.randint(0, 255, (5, 1, 10, 10), dtype=torch.uint8)
    y = Augment(AugmentConfig(rotation=10))(x, generator=gen())
    assert y.dtype == torch.uint8 and y.shape == x.shape


def test_same_generator_same_augmentation():
    x = torch.rand(8, 3, 12, 12)
    aug = Augment(AugmentConfig(rotation=20, zoom=0.1, hflip=True))
    assert torch.equal(aug(x, generator=gen(5)), aug(x, generator=gen(5)))


def test_unknown_and_ignored_options_are_errors():
    with pytest.raises(ConfigError, match="unknown key 'rotate'.*Did you mean 'rotation'"):
        resolve_config(overrides={"augment.rotate": 10})
    with pytest.raises(ConfigError, match="fill_mode='reflect' only applies"):
        resolve_config(overrides={"augment.fill_mode": "reflect", "augment.hflip": True})
    with pytest.raises(ConfigError, match="fill_value is only used with fill_mode=constant"):
        resolve_config(overrides={"augment.fill_value": 128, "augment.rotation": 5})
    with pytest.raises(ConfigError, match="zoom must be a fraction"):
        resolve_config(overrides={"augment.zoom": 3})
    with pytest.raises(ConfigError, match="width_shift must be >= 0"):
        resolve_config(overrides={"augment.width_shift": -0.1})
    assert resolve_config(overrides={"augment.width_shift": 3}).augment.width_shift == 3  # pixels
    assert math.isclose(resolve_config(overrides={"augment.zoom": 0.2}).augment.zoom, 0.2)


def test_augment_preview_of_a_segmentation_set_moves_each_mask_with_its_image(tmp_path, monkeypatch):
    """`augment-preview --task segmentation`: every copy is the original pair flipped together or not at all
    (a mask left behind would make a blend that is neither), and the class-folder reader never sees images/
    and masks/ as two classes."""
    import numpy as np
    from PIL import Image

    import vislab.viz.data as viz_data
    from vislab import api

    rng = np.random.default_rng(0)
    for i in range(6):
        mask = np.zeros((16, 16), np.uint8)
        mask[:, : 3 + i % 3] = 1  # a band on the left: a horizontal flip moves it to the right
        image = (mask * 200 + rng.integers(0, 40, (16, 16))).astype(np.uint8)
        for sub, array in (("images", image), ("masks", mask)):
            (tmp_path / "seg" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(tmp_path / "seg" / sub / f"p{i}.png")
    drawn = {}
    real = viz_data.plot_augment_preview

    def keep(originals, augmented, path, title=""):
        drawn.update(originals=originals, augmented=augmented, title=title)
        return real(originals, augmented, path, title=title)

    monkeypatch.setattr(viz_data, "plot_augment_preview", keep)
    path = api.augment_preview(str(tmp_path / "seg"), out=str(tmp_path / "aug.png"), count=3, versions=6,
                               task="segmentation", hflip=True, val_split=0, test_split=0)
    assert path.is_file() and "masks over their images" in drawn["title"]
    flipped = 0
    for original, copies in zip(drawn["originals"], drawn["augmented"]):
        assert original.shape[0] == 3
        for copy in copies:
            copy = np.asarray(copy)
            same, mirror = np.array_equal(copy, original), np.array_equal(copy, original[:, :, ::-1])
            assert same or mirror
            flipped += mirror and not same
    assert flipped  # 18 fair coin flips: some copies were flipped
    with pytest.raises(Exception, match="--task segmentation"):  # images/ and masks/ are not two classes
        api.augment_preview(str(tmp_path / "seg"), out=str(tmp_path / "aug2.png"), hflip=True)
