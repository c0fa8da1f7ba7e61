"""Segmentation folders at their seams: a stray mask value that widens the inferred classes, folders in which
no image has a mask, and a JPEG mask beside the PNG of the same stem."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_segmentation_set
from vislab.core.config import DataConfig, SegmentationConfig
from vislab.core.errors import DataError
from vislab.data.masks import audit_masks, load_segmentation_dataset


def _load(folder: Path, **seg):
    return load_segmentation_dataset(DataConfig(source=str(folder), val_split=0, test_split=0),
                                     SegmentationConfig(**seg))


def _grey(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def test_a_stray_mask_value_warns_once_naming_the_gap_the_file_and_the_fix(tmp_path):
    data = write_segmentation_set(tmp_path / "seg")  # classes 0, 1, 2
    mask = np.array(Image.open(data / "masks" / "s3.png"))
    mask[0, :9] = 7  # 9 stray pixels, as a resized or JPEG-saved mask makes them
    Image.fromarray(mask).save(data / "masks" / "s3.png")
    dataset = _load(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit = audit_masks(dataset, tmp_path / "audit", figures=False)
    gaps = [str(w.message) for w in caught if "inferred" in str(w.message)]
    assert len(gaps) == 1, [str(w.message) for w in caught]
    message = gaps[0]
    assert "\n" not in message
    assert "0..7" in message and "values 3-6 never occur" in message
    assert f"{data / 'masks' / 's3.png'} (9 pixels)" in message
    assert "JPEG" in message and "anti-aliased" in message
    assert "--classes" in message and str(data / "classes.txt") in message and "--palette" in message
    assert audit["class_gaps"] == message  # audit.json keeps it
    # the classes made stay what they were: 0..7
    assert dataset.class_names == [str(i) for i in range(8)] and audit["num_classes"] == 8
    # named classes make the stray mask a bad pair, as the warning says, and warn no more
    (data / "classes.txt").write_text("background\nbar\nbox\n")
    named = _load(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "class_gaps" not in audit_masks(named, tmp_path / "audit2", figures=False)
    assert not [w for w in caught if "inferred" in str(w.message)]
    assert named.class_names == ["background", "bar", "box"]
    assert [Path(p).name for p, _ in named.bad_files] == ["s3.png"]


def test_masks_whose_ids_run_without_a_gap_do_not_warn(tmp_path):
    data = write_segmentation_set(tmp_path / "seg")
    dataset = _load(data)
    assert dataset.class_names == ["0", "1", "2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "class_gaps" not in audit_masks(dataset, tmp_path / "audit", figures=False)
    assert not [w for w in caught if "inferred" in str(w.message)]


def test_a_cli_warning_of_the_gap_is_one_line_in_audit_and_train(tmp_path, capsys):
    from vislab.cli import main

    data = write_segmentation_set(tmp_path / "seg", count=4)
    mask = np.array(Image.open(data / "masks" / "s1.png"))
    mask[-1, -3:] = 5
    Image.fromarray(mask).save(data / "masks" / "s1.png")
    assert main(["audit", "--task", "segmentation", "--data", str(data), "--out", str(tmp_path / "audit")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "inferred" in line]
    assert len(lines) == 1 and lines[0].startswith("vislab audit: warning: ")
    assert "values 3-4 never occur" in lines[0] and "s1.png (3 pixels)" in lines[0]
    run = tmp_path / "run"
    assert main(["train", "--task", "segmentation", "--data", str(data), "--model", "unet", "--epochs", "1",
                 "--no-evaluate", "--no-figures", "--no-progress", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "inferred" in line]
    assert len(lines) == 1 and lines[0].startswith("vislab train: warning: ") and "s1.png (3 pixels)" in lines[0]
    # evaluate reads the masks as the run's classes (0..5 here): no word on inferred classes
    assert main(["evaluate", str(run), "--data", str(data), "--no-figures"]) == 0
    assert "inferred" not in capsys.readouterr().err


@pytest.mark.parametrize("masks", [[], ["im1.png"]], ids=["empty-masks", "other-stem"])
def test_no_image_with_a_mask_is_named_as_such_not_as_empty_masks(tmp_path, masks):
    data = tmp_path / "segy"
    for i in range(2):
        _grey(data / "images" / f"im{i}.png", np.full((8, 8), 40 * i))
    (data / "masks").mkdir()
    for name in masks:  # a mask for no image: im1.png is an image only when images/ holds it
        _grey(data / "masks" / name, np.zeros((8, 8)))
    if masks:
        (data / "images" / "im1.png").unlink()
    with pytest.raises(DataError) as raised:
        _load(data)
    message = str(raised.value)
    assert "ignore index" not in message and "\n" not in message
    assert f"{data / 'images'}" in message and f"{data / 'masks'}" in message
    assert "images/im0.png <-> masks/im0.png" in message
    if masks:
        assert "the image in" in message and "im1.png" in message
    else:
        assert "none of the 2 images" in message and "holds no mask" in message


def test_no_pairs_in_split_folders_names_the_split(tmp_path, capsys):
    from vislab.cli import main

    data = tmp_path / "segs"
    _grey(data / "train" / "images" / "a.png", np.zeros((8, 8)))
    _grey(data / "train" / "masks" / "b.png", np.zeros((8, 8)))
    assert main(["audit", "--task", "segmentation", "--data", str(data), "--out", str(tmp_path / "audit")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vislab audit: error: ") and "\n" not in err
    assert f"{data / 'train' / 'images'}" in err and "b.png" in err and "ignore index" not in err


def test_pairs_that_all_fail_to_read_give_the_reason_not_empty_masks(tmp_path):
    data = tmp_path / "rgb"
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4, :, 0] = 200  # a colour mask, which needs --palette
    _grey(data / "images" / "x.png", np.zeros((8, 8)))
    (data / "masks").mkdir()
    Image.fromarray(rgb).save(data / "masks" / "x.png")
    with pytest.raises(DataError) as raised:
        _load(data)
    message = str(raised.value)
    assert "ignore index" not in message and "--palette" in message and "x.png" in message


def test_a_png_mask_wins_over_a_jpeg_of_the_same_stem(tmp_path):
    data = write_segmentation_set(tmp_path / "seg", count=4)
    png = np.array(Image.open(data / "masks" / "s0.png"))
    # a stray lossy copy beside it, sorting first by name, its values blurred at the edges
    Image.fromarray((png * 60).astype(np.uint8)).save(data / "masks" / "s0.jpg", quality=50)
    dataset = _load(data)
    reasons = {Path(p).name: r for p, r in dataset.bad_files}
    assert list(reasons) == ["s0.jpg"] and "kept: s0.png" in reasons["s0.jpg"]
    assert dataset.class_names == ["0", "1", "2"]
    index = [Path(s).name for s in dataset.splits["train"].sources].index("s0.png")
    assert np.array_equal(dataset.splits["train"].labels[index].numpy(), png)


def test_of_two_lossless_masks_the_first_by_name_stays(tmp_path):
    data = write_segmentation_set(tmp_path / "seg", count=2)
    mask = np.array(Image.open(data / "masks" / "s0.png"))
    Image.fromarray(mask).save(data / "masks" / "s0_mask.png")  # the same stem: s0
    dataset = _load(data)
    reasons = {Path(p).name: r for p, r in dataset.bad_files}
    assert list(reasons) == ["s0_mask.png"] and "first: s0.png" in reasons["s0_mask.png"]


def test_a_split_folder_without_masks_names_the_folder_and_the_fix(tmp_path):
    data = tmp_path / "segv"
    write_segmentation_set(data / "train", count=2)
    _grey(data / "val" / "images" / "v.png", np.zeros((32, 32)))
    with pytest.raises(DataError) as raised:
        _load(data)
    assert str(raised.value).startswith(f"{data / 'val'}: has images/ but no masks/; put its masks in "
                                        f"{data / 'val' / 'masks'}")
