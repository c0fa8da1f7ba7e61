"""Preprocessing that belongs to a model and travels with its weights.

A :class:`Preprocessing` is written to ``model.json`` and read back by train,
evaluate, predict, explain, serve and export alike, the way timm's
``pretrained_cfg`` or torchvision's ``Weights.transforms()`` work. No other
module keeps its own copy of input size, mean or std.

Example:
    >>> import torch
    >>> pre = Preprocessing(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> x = pre(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))  # gray batch in
    >>> tuple(x.shape)
    (2, 3, 32, 32)
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")


@dataclass(frozen=True)
class Preprocessing:
    """How raw uint8 images become model input.

    Attributes:
        input_size: (channels, height, width) the model takes.
        mean: per-channel mean on the 0..1 scale.
        std: per-channel std on the 0..1 scale.
        interpolation: resize filter, one of ``nearest|bilinear|bicubic``.
        crop_pct: resize the short side to ``size / crop_pct`` then centre-crop
            ``size`` (timm's convention); 1.0 resizes straight to the input size.
        keep_aspect: resize the short side to the input height and keep the aspect ratio,
            with no crop (torchvision's segmentation weights' transforms); the model then
            sees each image at its own shape.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    keep_aspect: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        channels = self.input_size[0]
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) == 1 and channels > 1:
                value = value * channels
            if len(value) != channels:
                raise ValueError(
                    f"Preprocessing.{name} has {len(value)} values but the model takes "
                    f"{channels} channels; give one value or {channels}."
                )
            object.__setattr__(self, name, value)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
            )
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    # ---- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        if not data["extra"]:
            data.pop("extra")
        if not data["keep_aspect"]:  # the usual case: model.json stays as it was
            data.pop("keep_aspect")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        known = {"input_size", "mean", "std", "interpolation", "crop_pct", "keep_aspect", "extra"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys {sorted(unknown)}; valid keys are {sorted(known)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_timm(cls, model, in_chans: int | None = None) -> "Preprocessing":
        """Read a timm model's pretrained config (timm.data.resolve_data_config)."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        input_size = tuple(cfg["input_size"])
        if in_chans is not None and in_chans != input_size[0]:
            input_size = (in_chans, *input_size[1:])
        mean, std = cfg["mean"], cfg["std"]
        if len(mean) != input_size[0]:
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        interp = cfg.get("interpolation", "bilinear")
        return cls(
            input_size=input_size,
            mean=mean,
            std=std,
            interpolation=interp if interp in INTERPOLATIONS else "bilinear",
            crop_pct=float(cfg.get("crop_pct", 1.0)),
        )

    # ---- the transform -----------------------------------------------------
    def convert_channels(self, images: torch.Tensor) -> torch.Tensor:
        """Gray <-> RGB conversion of a (..., C, H, W) tensor to the model's channels."""
        have, want = images.shape[-3], self.channels
        if have == want:
            return images
        if have == 4:  # RGBA: drop alpha
            images, have = images[..., :3, :, :], 3
            if want == 3:
                return images
        if have == 1:
            return images.expand(*images.shape[:-3], want, *images.shape[-2:])
        if have == 3 and want == 1:
            weights = torch.tensor(_GRAY_WEIGHTS, dtype=torch.float32, device=images.device)
            gray = (images.float() * weights.view(3, 1, 1)).sum(-3, keepdim=True)
            return gray.round().clamp(0, 255).to(images.dtype) if not images.is_floating_point() else gray
        raise ValueError(f"cannot convert {have}-channel images to {want} channels")

    def output_size(self, in_h: int, in_w: int) -> tuple[int, int]:
        """(H, W) the model sees for an image of (in_h, in_w): the input size, or with ``keep_aspect``
        the image's shape with its short side at the input height."""
        return self._resize_target(in_h, in_w) if self.keep_aspect else self.size

    def _resize_target(self, in_h: int, in_w: int) -> tuple[int, int]:
        """(H, W) to resize to before the centre crop (timm's crop_pct convention)."""
        height, width = self.size
        if self.keep_aspect:  # torchvision's resize([size]): the long side truncated, as it does
            short, long = min(in_h, in_w), max(in_h, in_w)
            new_long = int(height * long / short)
            return (height, new_long) if in_h <= in_w else (new_long, height)
        if self.crop_pct >= 1.0:
            return height, width
        ratio = max(math.floor(height / self.crop_pct) / in_h, math.floor(width / self.crop_pct) / in_w)
        return max(height, round(in_h * ratio)), max(width, round(in_w * ratio))

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (and centre-crop per ``crop_pct``) a float (N, C, H, W) batch."""
        height, width = self.output_size(*images.shape[-2:])
        if images.shape[-2:] == (height, width):
            return images
        target = self._resize_target(*images.shape[-2:])
        if self.interpolation == "nearest":
            images = F.interpolate(images, size=target, mode="nearest")
        else:  # antialias=True matches PIL's resize, which the file loader uses
            images = F.interpolate(images, size=target, mode=self.interpolation, antialias=True, align_corners=False)
        if target != (height, width):
            top = (target[0] - height) // 2
            left = (target[1] - width) // 2
            images = images[..., top : top + height, left : left + width]
        return images

    def resize_pil(self, image):
        """The same resize and crop on a PIL image (DataLoader workers: PIL's C resize is cheaper)."""
        from PIL import Image

        height, width = self.output_size(image.height, image.width)
        if image.size == (width, height):
            return image
        target_h, target_w = self._resize_target(image.height, image.width)
        filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
        image = image.resize((target_w, target_h), filters[self.interpolation])
        if (target_h, target_w) != (height, width):
            top, left = (target_h - height) // 2, (target_w - width) // 2
            image = image.crop((left, top, left + width, top + height))
        return image

    def draft_size(self, in_h: int, in_w: int) -> tuple[int, int]:
        """(W, H) a JPEG may be decoded at (DCT scaling) and still be resized down, not up."""
        target_h, target_w = self._resize_target(in_h, in_w)
        return target_w, target_h

    def normalize(self, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``(images * scale - mean) / std`` in one pass (``scale=1/255`` for uint8 images)."""
        dtype = images.dtype if images.is_floating_point() else torch.float32
        offset, multiplier = _affine_constants(tuple(self.mean), tuple(self.std), scale, images.device, dtype)
        return torch.addcmul(offset, images, multiplier)  # a new tensor; the input is left as it was

    def __call__(self, images: torch.Tensor, augment=None) -> torch.Tensor:
        """uint8 (N, C, H, W) or (C, H, W) in any channel count -> normalised float input.

        ``augment`` (e.g. :class:`vislab.data.augment.Augment`) runs on the resized 0..1
        batch, before normalisation, so train and eval share every other step.
        """
        single = images.dim() == 3
        if single:
            images = images.unsqueeze(0)
        images = self.convert_channels(images)
        scale = 1.0
        if not images.is_floating_point():
            if augment is None and images.shape[-2:] == self.output_size(*images.shape[-2:]):
                scale = 1 / 255.0  # straight from uint8: one pass in all
            else:
                images = images.float().div_(255.0)
        images = self.resize(images.contiguous())
        if augment is not None:
            images = augment(images)
        images = self.normalize(images, scale)
        return images[0] if single else images

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Model input back to 0..1 floats, for display."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images * std + mean).clamp(0, 1)


@functools.lru_cache(maxsize=64)
def _affine_constants(mean: tuple, std: tuple, scale: float, device: torch.device, dtype: torch.dtype):
    """(-mean / std, scale / std) as (C, 1, 1) tensors, computed in float64 once per setting."""
    with torch.inference_mode(False):  # cached: must also serve autograd after a first inference-mode call
        mean_t = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
        return (-mean_t / std_t).to(device, dtype), (scale / std_t).to(device, dtype)
