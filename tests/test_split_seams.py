"""Where a data set's split meets its edges: a class of one image, a hold-out smaller than the classes, a test CSV
beside --image-root, class names that differ only in case, images outside the class folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import class_photos, digits_arrays, one_line_error, write_image
from vislab.cli import main
from vislab.core.config import DataConfig
from vislab.core.errors import DataError
from vislab.data.sources import load_dataset
from vislab.data.stratify import stratified_indices

CLASSES = ("bird", "cat", "dog")


def _photos(folder: Path, per_class: int = 7, classes=CLASSES, offset: int = 0) -> list[tuple[str, str]]:
    return class_photos(folder, classes, per_class, offset, sep="")


def _csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("file,label\n" + "".join(f"{f},{y}\n" for f, y in rows))
    return path


def _loaded_with_warnings(cfg, **kwargs):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dataset = load_dataset(cfg, **kwargs)
    return dataset, [str(w.message) for w in seen]


# --------------------------------------------------------------------------- stratification
def test_a_class_of_one_image_stays_in_training_and_the_others_are_still_stratified(tmp_path):
    rows = _photos(tmp_path / "images")
    write_image(tmp_path / "images" / "rare" / "r0.png", digits_arrays(per_class=1)[0][5])
    table = _csv(tmp_path / "images" / "rare.csv", rows + [("rare/r0.png", "rare")])
    for seed in range(4):
        dataset = load_dataset(DataConfig(source=str(table)), seed=seed)
        counts = dataset.counts()
        assert dataset.class_names == [*CLASSES, "rare"]
        # 22 images: 4 held out for test over 3 classes of 7, 2 for validation over 3 classes of 5 or 6
        assert counts["train"][3] == 1, counts
        assert sorted(counts["test"][:3]) == [1, 1, 2] and counts["test"][3] == 0, (seed, counts)
        assert sorted(counts["val"][:3]) == [0, 1, 1] and counts["val"][3] == 0, (seed, counts)
    # seeded: the same seed splits the same way
    again = load_dataset(DataConfig(source=str(table)), seed=3)
    assert again.splits["test"].paths == dataset.splits["test"].paths


def test_a_hold_out_smaller_than_the_classes_takes_each_image_from_a_different_class(tmp_path):
    # 24 images in 3 classes: 5 held out for test (stratified by scikit-learn), then 2 of the 19 for validation
    table = _csv(tmp_path / "pets.csv", _photos(tmp_path, per_class=8))
    for seed in range(12):
        counts = load_dataset(DataConfig(source=str(table)), seed=seed).counts()
        assert sorted(counts["test"]) == [1, 2, 2], counts
        assert sorted(counts["val"]) == [0, 1, 1], (seed, counts)
    # never a class's last training image while another class can give one; held out in proportion
    y = np.array([0] + [1] * 4 + [2] * 4 + [3] * 6)
    for seed in range(10):
        rest, held = stratified_indices(y, 6, seed)
        assert np.bincount(y[rest], minlength=4).min() >= 1 and 0 in rest and len(held) == 6
        assert np.bincount(y[held], minlength=4).tolist() == [0, 2, 2, 2], (seed, y[held])  # quotas .4 1.6 1.6 2.4


def test_scikit_learn_still_splits_whatever_it_can_stratify():
    """Runs already made split as before: where ``train_test_split(stratify=...)`` works, its indices."""
    from sklearn.model_selection import train_test_split

    y = np.repeat(np.arange(5), [30, 12, 9, 40, 3])
    for count, seed in ((20, 0), (5, 1), (50, 7), (60, 3)):
        rest, held = stratified_indices(y, count, seed)
        want_rest, want_held = train_test_split(np.arange(len(y)), test_size=count, random_state=seed, stratify=y)
        assert rest.tolist() == sorted(want_rest) and held.tolist() == sorted(want_held)
    # scikit-learn's split of a class of 2 among large ones can hold out both: then each class keeps one
    y = np.array([0] * 2 + [1] * 50 + [2] * 50)
    rest, held = stratified_indices(y, 90, seed=0)
    assert np.bincount(y[rest], minlength=3).min() >= 1 and len(held) == 90


def test_a_class_the_hold_out_leaves_without_training_images_is_refused_in_one_line(tmp_path, capsys):
    table = _csv(tmp_path / "few.csv", _photos(tmp_path, per_class=3))
    # 9 images, 7 held out for validation: 2 left to train on, so one class has none
    cfg = DataConfig(source=str(table), test_split=0, val_split=7)
    with pytest.raises(DataError) as raised:
        load_dataset(cfg, seed=0)
    message = str(raised.value)
    assert message.startswith(f"{table}: class '") and "(train 0, val 3)" in message, message
    assert "has no training image left after the hold-out, so it cannot be a class of this run" in message
    assert "; hold out fewer images (--val-split), add images of it, or drop it" in message, message
    # data only scored (evaluate --data) needs no class to train on
    assert len(load_dataset(cfg, seed=0, scoring=True).splits["val"]) == 7
    assert main(["audit", "--data", str(table), "--test-split", "0", "--val-split", "7",
                 "--out", str(tmp_path / "audit")]) == 1
    assert "has no training image left after the hold-out" in one_line_error(capsys)


# --------------------------------------------------------------------------- --test-csv and --image-root
def test_a_test_csv_reads_its_files_under_image_root_as_the_training_csv_does(tmp_path, capsys):
    rows = _photos(tmp_path / "images")
    train = _csv(tmp_path / "tables" / "train.csv", rows[2:7] + rows[9:14] + rows[16:])
    test = _csv(tmp_path / "tests" / "test.csv", [rows[0], rows[7], rows[14]])
    cfg = DataConfig(source=str(train), image_root=str(tmp_path / "images"), test_csv=str(test), val_split=0)
    dataset = load_dataset(cfg)
    assert dataset.counts()["test"] == [1, 1, 1]
    assert dataset.splits["test"].paths[0] == str(tmp_path / "images" / rows[0][0])
    # a test CSV whose names are relative to its own folder still works with --image-root
    mine = _csv(tmp_path / "images" / "mine.csv", [rows[1], rows[8], rows[15]])
    cfg.test_csv = str(mine)
    assert load_dataset(cfg).counts()["test"] == [1, 1, 1]
    # a name found under neither: the error names both folders and the fix
    gone = _csv(tmp_path / "tests" / "gone.csv", [rows[0], ("bird/nothere.png", "bird")])
    assert main(["audit", "--data", str(train), "--image-root", str(tmp_path / "images"), "--test-csv", str(gone),
                 "--out", str(tmp_path / "audit")]) == 1
    error = one_line_error(capsys)
    assert f"1 of 2 files named in column 'file' are missing under {tmp_path / 'images'} (nor under the CSV's own " \
           f"folder {tmp_path / 'tests'}) (first: ['bird/nothere.png'])" in error, error
    assert "set --image-root to the folder holding them" in error


def test_an_image_root_that_is_missing_or_a_file_says_which(tmp_path, capsys):
    rows = _photos(tmp_path / "images")
    table = _csv(tmp_path / "pets.csv", rows)
    for root, said in ((tmp_path / "nosuch", "no such folder"),
                       (tmp_path / "images" / rows[0][0], "a file, not a folder")):
        assert main(["audit", "--data", str(table), "--image-root", str(root), "--out", str(tmp_path / "a")]) == 1
        error = one_line_error(capsys)
        assert f"--image-root {root}: {said}; set --image-root to the folder that the names in column 'file' of " \
               f"{table} are relative to" in error, error
        assert "missing" not in error


# --------------------------------------------------------------------------- class names
def test_class_names_that_differ_only_in_case_or_spacing_are_warned_about(tmp_path):
    rows = _photos(tmp_path / "images", per_class=4)
    cased = [(f, "Cat" if y == "cat" and i % 2 else y) for i, (f, y) in enumerate(rows)]
    table = _csv(tmp_path / "images" / "pets.csv", cased)
    dataset, said = _loaded_with_warnings(DataConfig(source=str(table), val_split=0, test_split=0))
    assert dataset.class_names == ["bird", "Cat", "cat", "dog"]
    assert [m for m in said if "differ only in case or spacing" in m] == [
        f"{table}: labels in column 'label' that differ only in case or spacing are separate classes: 'Cat' and "
        "'cat'; if they are one class, write its name one way"], said
    folders = tmp_path / "folders"
    _photos(folders, per_class=3, classes=("Big Cat", "big cat", "dog"))
    dataset, said = _loaded_with_warnings(DataConfig(source=str(folders), val_split=0, test_split=0))
    assert len(dataset.class_names) == 3
    assert any(m.startswith(f"{folders}: class folders that differ only in case or spacing are separate classes: "
                            "'Big Cat' and 'big cat'") for m in said), said


def test_labels_misspelt_for_a_csv_lists_the_labels_and_the_closest(tmp_path):
    table = _csv(tmp_path / "pets.csv", _photos(tmp_path, per_class=3))
    with pytest.raises(DataError, match=r"--labels names \['dgo'\] that no row of 'label' has "
                                        r"\(did you mean 'dog'\?\); its labels are \['bird', 'cat', 'dog'\]"):
        load_dataset(DataConfig(source=str(table), labels=["cat", "dgo"]))


# --------------------------------------------------------------------------- images outside the class folders
def test_images_and_folders_outside_the_class_structure_are_warned_about(tmp_path):
    split = tmp_path / "split"
    _photos(split / "train", per_class=4)
    _photos(split / "test", per_class=2, offset=4)
    _photos(split, per_class=3, classes=("fish",))  # a class folder beside train/ and test/
    dataset, said = _loaded_with_warnings(DataConfig(source=str(split), val_split=0))
    assert dataset.class_names == list(CLASSES)
    assert f"{split}: 1 image file(s) or folder(s) of images beside train/ val/ test/ and their class folders are " \
           "not read (first: fish/); move each image into its class's folder to use it" in said, said
    flat = tmp_path / "flat"
    _photos(flat, per_class=4)
    images = digits_arrays(per_class=1)[0]
    for i in range(4):
        write_image(flat / f"stray{i}.png", images[i])
    dataset, said = _loaded_with_warnings(DataConfig(source=str(flat), val_split=0, test_split=0))
    assert len(dataset.splits["train"]) == 12
    assert f"{flat}: 4 image file(s) or folder(s) of images beside the class folders are not read (first: " \
           "stray0.png, stray1.png, stray2.png, ...); move each image into its class's folder to use it" in said, said


def test_a_class_folder_given_as_the_data_names_its_loose_images(tmp_path, capsys):
    bird = tmp_path / "bird"
    images = digits_arrays(per_class=2)[0]
    for i in range(10):
        write_image(bird / f"b{i}.png", images[i % len(images)])
    _photos(bird, per_class=2, classes=("sub",))
    assert main(["audit", "--data", str(bird), "--out", str(tmp_path / "audit")]) == 1
    error = one_line_error(capsys)
    assert f"{bird}: 10 image(s) lie directly in it (first: 'b0.png'), beside one class folder 'sub'" in error, error
    assert "give the folder that holds the class folders" in error
