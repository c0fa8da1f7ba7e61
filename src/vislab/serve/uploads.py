"""Reading a request's images safely: bounded body, bounded pixels, a stable error code for each failure.

Every failure is an :class:`ApiError` (HTTP status, a stable ``code``, a message saying what
was expected); the app turns it into ``{"error": {"code", "message"}}``. The body is read
in chunks and refused the moment it passes the limit (a Content-Length over the limit is
refused before anything is read). Image dimensions are checked from the header, before
the pixels are decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from vislab.data.images import _flatten_alpha, _to_gray, claimed_pixels, header_size, pil_to_tensor, upright

# code -> HTTP status; the codes are part of the API and do not change
ERROR_STATUS = {
    "empty_body": 400, "not_an_image": 400, "truncated_image": 400, "missing_file": 400, "bad_multipart": 400,
    "too_large": 413, "too_many_pixels": 413, "too_many_images": 413, "unsupported_media_type": 415,
    "invalid_parameter": 422, "not_found": 404, "method_not_allowed": 405, "not_segmentation": 404,
    "segmentation_model": 404,
    "not_supported": 501, "not_ready": 503, "queue_full": 503, "timeout": 504, "internal_error": 500,
}


class ApiError(Exception):
    """An HTTP error with a stable code; ``retry_after`` (seconds) adds a Retry-After header."""

    def __init__(self, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after
        self.status = ERROR_STATUS[code]

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with ``too_large`` as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("too_large", f"the request body is {int(declared)} bytes; the limit is {limit} bytes "
                                    "(vislab serve --max-body-mb); send a smaller image")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # stop reading here: the rest is never buffered
            raise ApiError("too_large", f"the request body passed {limit} bytes (vislab serve --max-body-mb); "
                                        "send a smaller image")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(data: bytes, name: str, max_pixels: int) -> torch.Tensor:
    """Bytes -> uint8 (C, H, W), C in {1, 3}, converted as ``vislab.data.images.read_image`` converts files
    (so the server's answer equals ``vislab predict``'s for the same file)."""
    if not data:
        raise ApiError("empty_body", f"{name}: the image is empty (0 bytes); send the file's bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ApiError("too_many_pixels", _too_many(name, width, height, max_pixels))
                image.load()
                image = upright(image)  # as read_image: the picture a browser shows
                if image.mode in ("L", "RGB"):
                    converted = image.copy()
                elif image.mode in ("1", "I;16", "I", "F"):
                    converted = _to_gray(image)
                elif image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
                    converted = _flatten_alpha(image)
                else:
                    converted = image.convert("RGB")
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check fired in Image.open, before the size could be compared with --max-pixels
        size = header_size(io.BytesIO(data))
        if size is not None and size[0] * size[1] > max_pixels:
            raise ApiError("too_many_pixels", _too_many(name, *size, max_pixels)) from None
        # a --max-pixels above Pillow's limit: Pillow's is the one that holds
        raise ApiError("too_many_pixels", f"{name}: {claimed_pixels(size, exc)}; the limit is "
                                          f"{Image.MAX_IMAGE_PIXELS}, Pillow's decompression-bomb limit, below "
                                          f"vislab serve --max-pixels {max_pixels}; send a smaller image") from None
    except UnidentifiedImageError:
        raise ApiError("not_an_image", f"{name}: not an image Pillow can identify; send a JPEG, PNG, BMP, GIF, "
                                       "WebP or TIFF file") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text.lower() or "broken data stream" in text.lower():
            raise ApiError("truncated_image", f"{name}: the image is truncated ({text}); send the whole file") \
                from None
        raise ApiError("not_an_image", f"{name}: unreadable image ({text})") from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ApiError("truncated_image", f"{name}: corrupt or truncated image ({exc})") from None
    return pil_to_tensor(converted)


def _too_many(name: str, width: int, height: int, max_pixels: int) -> str:
    return (f"{name}: {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(vislab serve --max-pixels)")


async def request_images(request, max_body: int, max_images: int,
                         limit: str = "vislab serve --max-images") -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in a multipart (``file`` / ``files``) or raw ``image/*`` request;
    ``limit`` says where ``max_images`` comes from (the flag, or an endpoint that takes one image)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data" or kind == "application/octet-stream"):
        raise ApiError("unsupported_media_type",
                       f"content type {kind or 'none'!r} is not accepted; send multipart/form-data with a `file` "
                       "(or several `files`) field, or the raw image with an image/* content type")
    body = await read_body(request, max_body)
    if not body:
        raise ApiError("empty_body", "the request body is empty; send an image")
    if kind != "multipart/form-data":
        return [(request.headers.get("x-filename", "upload"), body)]

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=max_images + 1, max_fields=16).parse()
    except MultiPartException as exc:
        if "files" in str(exc).lower():
            raise ApiError("too_many_images", f"more than {max_images} images in one request; the limit is "
                                              f"{max_images} ({limit})") from None
        raise ApiError("bad_multipart", f"cannot read the multipart body ({exc}); send at most {max_images} "
                                        "images as `file` or `files` fields") from None
    uploads = [value for key, value in form.multi_items() if key in ("file", "files") and not isinstance(value, str)]
    if not uploads:
        raise ApiError("missing_file", "no `file` or `files` field with an image in the multipart body "
                                       "(e.g. curl -F file=@cat.jpg)")
    if len(uploads) > max_images:
        raise ApiError("too_many_images", f"{len(uploads)} images in one request; the limit is {max_images} "
                                          f"({limit})")
    images = [(upload.filename or f"file{i}", await upload.read()) for i, upload in enumerate(uploads)]
    await form.close()
    return images
