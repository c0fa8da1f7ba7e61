"""Automatic augmentation policies from torchvision v2 (TrivialAugmentWide, RandAugment), per image.

torchvision's v2 transforms draw one random operation per call, so a whole batch passed
at once would get the same operation. :class:`AugmentPolicy` applies the policy to each
uint8 image of a batch at its native size (cheap: before any upsampling), drawing its
randomness from the loop's epoch generator so a run repeats exactly.

Example:
    >>> policy = AugmentPolicy("trivialaugment")
    >>> images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    >>> policy(images, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 28, 28])
"""

from __future__ import annotations

import torch

from vislab.core.errors import ConfigError

POLICIES = ("trivialaugment", "randaugment")


class AugmentPolicy:
    """A torchvision v2 policy on uint8 (N, C, H, W) batches, image by image.

    Args:
        name: ``trivialaugment`` (TrivialAugmentWide: one op at a random strength, no
            tuning) or ``randaugment`` (2 ops at magnitude 9, torchvision's defaults).
    """

    def __init__(self, name: str):
        from torchvision.transforms import v2

        if name not in POLICIES:
            raise ConfigError(f"unknown augmentation policy {name!r}; choose one of {', '.join(POLICIES)}")
        self.name = name
        self.transform = v2.TrivialAugmentWide() if name == "trivialaugment" else v2.RandAugment()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"AugmentPolicy works on uint8 images, got {images.dtype}")
        # torchvision draws from the global RNG: seed a private copy of it from the epoch stream
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        device = images.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([self.transform(image) for image in images.cpu()])
        return out.to(device)
