"""A photo's EXIF orientation is applied wherever vislab decodes an image (training, predict, the server, the
audit's sizes), as a viewer and the browser apply it: a phone's sideways-stored photo is seen upright."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vislab.data.images import open_image, pil_to_tensor, read_image, upright_size

ORIENTATION = 0x0112


def _sideways(upright: Image.Image, path, fmt: str = "PNG") -> None:
    """``upright`` stored turned 90 degrees, tagged orientation 6 (turn 270 degrees to view), as phones save it."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def _picture(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 255 // width, y * 255 // height, (x < width // 3) * 255], -1)
                           .astype(np.uint8))


def test_a_sideways_stored_photo_is_read_upright_by_files_and_the_server(tmp_path):
    from vislab.serve.uploads import decode_image

    upright = _picture(30, 20)
    path = tmp_path / "phone.png"
    _sideways(upright, path)
    with Image.open(path) as stored:
        assert stored.size == (20, 30) and upright_size(stored) == (30, 20)
    expected = pil_to_tensor(upright)
    assert torch.equal(read_image(path), expected)
    assert torch.equal(decode_image(path.read_bytes(), "phone.png", 10**8), expected)  # the server's decoder
    plain = tmp_path / "plain.png"
    upright.save(plain)
    assert torch.equal(read_image(plain), expected)  # an untagged file as it is stored


def test_a_reduced_jpeg_decode_asks_for_the_upright_size(tmp_path):
    # the loader asks the JPEG decoder for a size at least the model's input; for a turned photo that size is
    # the upright picture's, so the decoder's scale is chosen on the swapped sides
    path = tmp_path / "phone.jpg"
    _sideways(_picture(400, 240), path, "JPEG")
    image = open_image(path, draft=lambda height, width: (width // 4, height // 4))
    assert image.size == (100, 60)


def test_the_audit_measures_the_upright_photo(tmp_path):
    from vislab import api

    photos = tmp_path / "photos"
    for label in ("a", "b"):
        (photos / label).mkdir(parents=True)
        for i in range(4):
            _sideways(_picture(36 + i, 24), photos / label / f"{label}{i}.png")  # stored 24 wide, 36+ high
    geometry = api.audit(str(photos), out=str(tmp_path / "audit"))["geometry"]
    assert geometry["images_measured"] == 8
    assert all(size.endswith("x24") for size in geometry["common_sizes"]), geometry["common_sizes"]
    assert geometry["aspect_ratio"]["min"] > 1


def test_a_turned_photos_mask_pairs_in_either_orientation(tmp_path):
    # a mask drawn on the upright picture (as a viewer shows it) or on the pixels as stored: both pair
    from vislab.core.config import DataConfig, SegmentationConfig
    from vislab.data.masks import load_segmentation_dataset

    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(8):
        upright = _picture(30, 20)
        _sideways(upright, root / "images" / f"p{i}.png")
        mask = np.zeros((20, 30), np.uint8)
        mask[:, : 10 + i] = 1  # the upright picture's left part
        Image.fromarray(mask if i % 2 else np.rot90(mask).copy()).save(root / "masks" / f"p{i}.png")
    dataset = load_segmentation_dataset(DataConfig(source=str(root), val_split=0, test_split=0),
                                        SegmentationConfig(), seed=0)
    split = dataset.splits["train"]
    assert len(split) == 8 and not dataset.bad_files
