"""Reading image files safely: every failure becomes a :class:`BadImageError` with a reason.

Pillow decodes (it covers jpg/png/bmp/gif/webp/tif alike); the result is a
uint8 ``(C, H, W)`` tensor with C in {1, 3}, upright: a file's EXIF orientation (a phone stores a photo
sideways and tags how to turn it) is applied, as an image viewer and a browser apply it, so the model,
the figures and the web page see one picture. Truncated files, zero-byte files,
files that are not images and files over Pillow's decompression-bomb limit are
all rejected, never half-decoded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vislab.core.files import BadFileError, reading

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class BadImageError(BadFileError):
    """An image file that cannot be used, with the path and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file with an image extension (any case)."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# what a cache of decoded images' results names (with each file's size and time): a decoding change makes it new
DECODING = "pillow L/RGB, EXIF orientation applied"
_ORIENTATION = 0x0112  # the EXIF tag: 1 as stored, 2-8 mirrored and/or turned; 5-8 swap width and height


def orientation(image: Image.Image) -> int:
    """The EXIF orientation ``image`` (opened, not necessarily loaded) is tagged with: 1 (as stored) when none."""
    try:
        value = int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def upright(image: Image.Image, turn: int | None = None) -> Image.Image:
    """``image`` as a viewer shows it: its EXIF orientation (``turn``, read when None) applied; the same
    object when there is nothing to apply, else a new image (the caller closes the old one).

    Example:
        >>> image = Image.new("L", (3, 2))
        >>> exif = image.getexif(); exif[0x0112] = 6
        >>> image.info["exif"] = exif.tobytes()
        >>> upright(image).size
        (2, 3)
    """
    turn = orientation(image) if turn is None else turn
    return image if turn == 1 else ImageOps.exif_transpose(image)


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as :func:`upright` gives the image, from its header alone."""
    return image.size[::-1] if orientation(image) >= 5 else image.size


def open_image(path: str | os.PathLike, draft=None, turn: bool = True) -> Image.Image:
    """Open and fully decode ``path`` as a PIL image in mode L or RGB, upright (:func:`upright`); with
    ``turn=False`` as its pixels are stored (a segmentation mask drawn on the stored pixels pairs with those).

    ``draft(height, width) -> (W, H)`` may ask a JPEG decoder for a reduced scale (1/2..1/8)
    that is still at least (W, H): much cheaper decoding when the model input is small.

    Raises:
        BadImageError: the file is missing, empty, truncated, not an image or too large.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise BadImageError(path, "zero-byte file")
    try:
        with reading(path, "an image", "replace it with the original image, or delete it"):
            try:
                with warnings.catch_warnings():
                    # DecompressionBombWarning (between 1x and 2x the limit) is treated as an error too.
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    image = Image.open(path)
                    keep = False
                    try:
                        tag = orientation(image) if turn else 1  # 1: the pixels as stored
                        if draft is not None and image.format == "JPEG":
                            if tag >= 5:  # the size asked for is the upright image's
                                width, height = draft(image.width, image.height)
                                image.draft(image.mode, (height, width))
                            else:
                                image.draft(image.mode, draft(image.height, image.width))
                        image.load()
                        if tag != 1:
                            turned = upright(image, tag)
                            image.close()
                            image = turned
                        if image.mode in ("L", "RGB"):
                            # a single-frame file is closed by load(): the decoded image is returned as it is
                            # (no copy); a multi-frame one keeps its file open, so a copy is returned instead
                            keep = getattr(image, "n_frames", 1) == 1 and getattr(image, "fp", None) is None
                            return image if keep else image.copy()
                        if image.mode in ("1", "I;16", "I", "F"):
                            return _to_gray(image)
                        if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
                            return _flatten_alpha(image)
                        return image.convert("RGB")
                    finally:
                        if not keep:
                            image.close()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                try:
                    with open(path, "rb") as handle:  # the header again, for the size Pillow's check does not give
                        size = header_size(handle)
                except OSError:  # the file cannot be read again: the count Pillow's message gives
                    size = None
                raise BadImageError(path, bomb_reason(size, exc)) from None
            except UnidentifiedImageError:
                raise BadImageError(path, "not an image (Pillow cannot identify it)") from None
            except OSError as exc:
                reason = str(exc)
                if "truncated" in reason.lower():
                    reason = f"truncated image ({reason})"
                raise BadImageError(path, reason or "unreadable image") from None
            except (ValueError, SyntaxError, EOFError) as exc:
                raise BadImageError(path, f"corrupt image ({exc})") from None
    except BadImageError:
        raise
    except BadFileError as exc:  # what the clauses above do not name (a folder, a decoder's other errors)
        raise BadImageError(path, exc.reason) from None


def header_size(source) -> tuple[int, int] | None:
    """The (width, height) an image's header claims (``source``: a binary file object, seekable), read
    without decoding the pixels and without Pillow's decompression-bomb check, which refuses to say it;
    None when no Pillow plugin identifies the file."""
    Image.init()
    source.seek(0)
    prefix = source.read(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in Image.ID:
            factory, accept = Image.OPEN[name]
            try:
                result = not accept or accept(prefix)
                if not result or isinstance(result, str):
                    continue
                source.seek(0)
                image = factory(source, "")
                size = image.size
            except Exception:  # noqa: BLE001 - a plugin that cannot read the header: try the next one
                continue
            return int(size[0]), int(size[1])
    return None


def claimed_pixels(size: tuple[int, int] | None, exc: Exception) -> str:
    """``"WxH = N pixels"`` for an image Pillow refused as a decompression bomb, from its header's ``size``
    (:func:`header_size`: Pillow's message gives the count alone), else the count from ``exc``."""
    import re

    if size is not None:
        return f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels"
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{found.group(1)} pixels" if found else "more pixels than Pillow allows"


def bomb_reason(size: tuple[int, int] | None, exc: Exception) -> str:
    """Why an image over Pillow's decompression-bomb limit is refused: its size (:func:`claimed_pixels`), the
    limit, the fix.

    vislab refuses from ``Image.MAX_IMAGE_PIXELS`` on (Pillow's warning is an error here, not only twice it)."""
    limit = Image.MAX_IMAGE_PIXELS
    return (f"{claimed_pixels(size, exc)}, over Pillow's decompression-bomb limit of {limit}; "
            f"downscale the image below {limit} pixels")


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode == "1":
        return image.convert("L")
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL L/RGB image -> uint8 (C, H, W) tensor."""
    array = np.array(image, dtype=np.uint8)  # one writable copy of the pixels
    if array.ndim == 2:
        return torch.from_numpy(array)[None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike, turn: bool = True) -> torch.Tensor:
    """Read ``path`` as a uint8 (C, H, W) tensor, C in {1, 3}, upright (``turn=False``: as stored).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> tmp = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> Image.new("RGB", (5, 4)).save(tmp)
        >>> tuple(read_image(tmp).shape)
        (3, 4, 5)
    """
    return pil_to_tensor(open_image(path, turn=turn))
