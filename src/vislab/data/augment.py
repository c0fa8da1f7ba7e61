"""Augmentation with Keras ImageDataGenerator names and meanings, per sample, on whole batches.

One affine warp (``F.affine_grid`` + ``F.grid_sample``) applies rotation, zoom,
shifts, shear and flips with independent random parameters for every image of a
batch, on whatever device the batch is on. That is what makes augmentation of
in-memory data nearly free, where a per-image torchvision pipeline would dominate
the epoch. It is a ``torch.nn.Module`` taking an image tensor, so it also sits in
a ``torchvision.transforms.v2.Compose`` or an ``nn.Sequential`` (not importing
torchvision here saves about 1.2 s of start-up, most of it ``torch._dynamo``).

Meanings (as in Keras):
    rotation: degrees, uniform in [-r, r]; zoom: scale uniform in [1 - z, 1 + z]
    (> 1 zooms out); width_shift/height_shift: fraction of the size when < 1, pixels
    when >= 1 (a whole number n gives whole-pixel shifts, uniform over -n..n: exact
    pixels, no interpolation, like a pad-and-random-crop); shear: degrees;
    fill_mode: nearest | constant (fill_value, 0..255) | reflect | wrap.

Example:
    >>> import torch
    >>> from vislab.core.config import AugmentConfig
    >>> aug = Augment(AugmentConfig(hflip=True, rotation=15))
    >>> aug(torch.rand(4, 1, 28, 28), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 28, 28])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PADDING = {"nearest": "border", "reflect": "reflection", "constant": "zeros", "wrap": "zeros"}


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, H, W), align_corners=False)`` in two broadcast passes.

    The same sampling grid (to float rounding) about 10x faster on the CPU, where
    ``F.affine_grid`` runs a batched matmul with an inner dimension of 3 over every pixel.

    Example:
        >>> theta = torch.tensor([[[0.9, -0.2, 0.1], [0.2, 0.9, 0.0]]])
        >>> ref = F.affine_grid(theta, [1, 1, 5, 7], align_corners=False)
        >>> bool((affine_grid(theta, 5, 7) - ref).abs().max() < 1e-6)
        True
    """
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1  # pixel centres
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    grid = torch.empty(theta.shape[0], height, width, 2, device=theta.device, dtype=theta.dtype)
    t = theta.reshape(-1, 2, 3, 1, 1)
    for k in range(2):  # grid[..., k] = theta[k, 0] * x + theta[k, 1] * y + theta[k, 2]
        torch.add(t[:, k, 0] * xs.view(1, 1, width), t[:, k, 1] * ys.view(1, height, 1) + t[:, k, 2],
                  out=grid[..., k])
    return grid


class Augment(nn.Module):
    """Per-sample random affine + flips for a float (N, C, H, W) batch scaled 0..1 (or uint8)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def _uniform(self, n: int, half_width: float, generator) -> torch.Tensor:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * half_width

    def _shift(self, n: int, value: float, size: int, generator) -> torch.Tensor:
        """Shifts in pixels: a fraction of ``size`` below 1, pixels from 1 up, whole pixels for a whole number."""
        if value >= 1 and float(value).is_integer():
            return torch.randint(-int(value), int(value) + 1, (n,), generator=generator).double()
        return self._uniform(n, value * size if value < 1 else value, generator)

    def matrices(self, n: int, height: int, width: int, generator=None) -> torch.Tensor:
        """(n, 2, 3) sampling matrices in grid_sample's normalised coordinates (output -> input)."""
        cfg = self.cfg
        theta = torch.deg2rad(self._uniform(n, cfg.rotation, generator))
        shear = torch.deg2rad(self._uniform(n, cfg.shear, generator))
        zoom_x = 1 + self._uniform(n, cfg.zoom, generator)
        zoom_y = 1 + self._uniform(n, cfg.zoom, generator)
        shift_x = self._shift(n, cfg.width_shift, width, generator)  # pixels
        shift_y = self._shift(n, cfg.height_shift, height, generator)
        flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(n)
        flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if cfg.vflip else torch.ones(n)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # pixel space, centred: input = R @ Shear @ Zoom @ Flip @ output + shift (Keras' order)
        m = torch.zeros(n, 2, 2, dtype=torch.float64)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shr = torch.zeros(n, 2, 2, dtype=torch.float64)
        shr[:, 0, 0], shr[:, 0, 1], shr[:, 1, 1] = 1.0, -torch.sin(shear), torch.cos(shear)
        scale = torch.zeros(n, 2, 2, dtype=torch.float64)
        scale[:, 0, 0], scale[:, 1, 1] = zoom_x * flip_x, zoom_y * flip_y
        m = rot @ shr @ scale
        # to normalised coordinates: x_norm = x_pix / (W/2)
        to_norm = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64)
        m = m * to_norm.view(1, 2, 1) / to_norm.view(1, 1, 2)
        shift = torch.stack([shift_x, shift_y], -1) * to_norm
        return torch.cat([m, shift.unsqueeze(-1)], -1).float()

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.cfg.active:
            return images
        squeeze = images.dim() == 3
        if squeeze:
            images = images.unsqueeze(0)
        is_uint8 = images.dtype == torch.uint8
        x = images.float() / 255.0 if is_uint8 else images
        n, _, height, width = x.shape
        if not self.cfg.geometric:  # flips only: no resampling, exact pixels
            out = x
            if self.cfg.hflip:
                mask = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
                out = torch.where(mask, out.flip(-1), out)
            if self.cfg.vflip:
                mask = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
                out = torch.where(mask, out.flip(-2), out)
        else:
            theta = self.matrices(n, height, width, generator).to(x.device, x.dtype)
            grid = affine_grid(theta, height, width)
            mode = self.cfg.fill_mode
            if mode == "wrap":
                grid = torch.remainder(grid + 1.0, 2.0) - 1.0
            fill = self.cfg.fill_value / 255.0 if mode == "constant" else 0.0
            # grid_sample pads with zeros: a constant fill is shifted to zero and back
            out = F.grid_sample(x - fill if fill else x, grid, mode="bilinear", padding_mode=_PADDING[mode],
                                align_corners=False)
            if fill:
                out += fill
        if is_uint8:
            out = (out * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return out[0] if squeeze else out


def augment_with_masks(augment: Augment, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
                       ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images and their (N, H, W) label masks with the same geometry.

    The masks replay the images' random draws (the generator's state is copied first),
    so every flip, rotation, zoom, shift and shear is identical; they are sampled with
    nearest only (a label is never blended into a new one), and pixels that come from
    outside the mask are ``ignore_index`` whatever the images' fill mode, so the loss never
    learns from made-up borders. Photometric changes (none in :class:`Augment` yet) would
    touch the images only.

    Example:
        >>> from vislab.core.config import AugmentConfig
        >>> aug = Augment(AugmentConfig(rotation=30))
        >>> masks = torch.randint(0, 3, (2, 16, 16))
        >>> _, out = augment_with_masks(aug, torch.rand(2, 3, 16, 16), masks, torch.Generator().manual_seed(0))
        >>> sorted(set(out.unique().tolist()) - {0, 1, 2})
        [255]
    """
    if not augment.cfg.active:
        return images, masks
    replay = torch.Generator()
    replay.set_state(generator.get_state())
    images = augment(images, generator=generator)
    cfg = augment.cfg
    n, height, width = masks.shape
    if not cfg.geometric:  # the same draws, in the same order, as Augment.forward's flips
        out = masks
        if cfg.hflip:
            flip = (torch.rand(n, generator=replay) < 0.5).to(masks.device).view(-1, 1, 1)
            out = torch.where(flip, out.flip(-1), out)
        if cfg.vflip:
            flip = (torch.rand(n, generator=replay) < 0.5).to(masks.device).view(-1, 1, 1)
            out = torch.where(flip, out.flip(-2), out)
        return images, out
    theta = augment.matrices(n, height, width, replay).to(masks.device)
    grid = affine_grid(theta, height, width)
    if cfg.fill_mode == "wrap":
        grid = torch.remainder(grid + 1.0, 2.0) - 1.0
    # labels + 1 with zero padding: 0 marks "outside", which becomes the ignore index
    shifted = (masks.float() + 1).unsqueeze(1)
    sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    sampled = sampled.round().long()
    out = torch.where(sampled == 0, torch.full_like(sampled, ignore_index), sampled - 1)
    return images, out.to(masks.dtype)
