"""A user's own data at its edges: class folders without a readable image, and labels CSVs written by other
tools (semicolons or tabs, spaces after commas, Windows paths, repeated rows, no rows).

Real digit images are written as PNG files; the commands run in-process through ``vislab.cli.main``.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from conftest import class_photos, digits_arrays, one_line_error, write_image
from vislab.cli import main
from vislab.core.config import DataConfig
from vislab.core.errors import DataError
from vislab.data.multilabel import load_multilabel_dataset
from vislab.data.sources import load_dataset

CLASSES = ("cat", "dog", "owl")


def _photos(folder: Path, per_class: int = 8, classes=CLASSES, offset: int = 0) -> list[tuple[str, str]]:
    return class_photos(folder, classes, per_class, offset)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edges") / "photos"
    _photos(root)
    return root


@pytest.fixture(scope="module")
def run_dir(photos, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("edges-run") / "run"
    assert main(["train", "--data", str(photos), "--model", "mlp", "--epochs", "1", "--no-figures",
                 "--out", str(run)]) == 0
    return run


# --------------------------------------------------------------------------- class folders without images
def test_an_empty_class_folder_is_refused_by_train_audit_and_evaluate(photos, run_dir, tmp_path, capsys):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    (data / "empty_class").mkdir()
    said = f"{data / 'empty_class'} holds no images, so it cannot be a class of this run"
    assert main(["train", "--data", str(data), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "run")]) == 1
    error = one_line_error(capsys)
    assert said in error and "add images" in error and "remove the folder" in error, error
    assert not (tmp_path / "run").exists()
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "audit")]) == 1
    assert said in one_line_error(capsys)
    assert main(["evaluate", str(run_dir), "--data", str(data), "--no-figures"]) == 1
    assert said in one_line_error(capsys)
    # --labels leaves the folder out of the classes: nothing to refuse
    dataset = load_dataset(DataConfig(source=str(data), labels=list(CLASSES), val_split=0, test_split=0))
    assert dataset.class_names == list(CLASSES) and len(dataset.splits["train"]) == 24
    # the folder removed, the same data evaluates with the model's classes
    (data / "empty_class").rmdir()
    assert main(["evaluate", str(run_dir), "--data", str(data), "--no-figures"]) == 0


def test_a_class_folder_of_files_vislab_does_not_read_says_which(photos, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    (data / "seal").mkdir()
    (data / "seal" / "IMG_0001.heic").write_bytes(b"\0" * 64)
    (data / "seal" / ".DS_Store").write_bytes(b"\0")
    with pytest.raises(DataError, match=r"seal holds no images \(its 1 file\(s\), e\.g\. 'IMG_0001\.heic', are not "):
        load_dataset(DataConfig(source=str(data)))


def test_a_class_folder_of_unreadable_files_is_refused_like_an_empty_one(photos, tmp_path, capsys):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    for i in range(3):
        (data / "broken" / f"b{i}.png").parent.mkdir(exist_ok=True)
        (data / "broken" / f"b{i}.png").write_bytes(b"not a png at all")
    assert main(["train", "--data", str(data), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "run")]) == 1
    error = one_line_error(capsys)
    assert f"{data / 'broken'}: none of its 3 image file(s) can be read (first: b0.png: " in error, error
    assert "cannot be a class of this run; replace them with readable images or remove the folder" in error
    # every file bad: the whole set is unusable, which is said as before
    for name in CLASSES:
        shutil.rmtree(data / name)
    with pytest.raises(DataError, match=r"no usable training image \(3 bad files skipped\)"):
        load_dataset(DataConfig(source=str(data)))


def test_split_folders_refuse_a_class_without_training_images_only(tmp_path):
    data = tmp_path / "split"
    _photos(data / "train")
    _photos(data / "test", per_class=3, classes=CLASSES[:2], offset=10)
    (data / "test" / "owl").mkdir()
    # a class with training images but none to test: the audit's per-split warning, not an error
    dataset = load_dataset(DataConfig(source=str(data), val_split=0))
    assert dataset.class_names == list(CLASSES) and dataset.counts()["test"] == [3, 3, 0]
    # a class with test images but an empty training folder cannot be learned
    shutil.rmtree(data / "test" / "owl")
    shutil.move(str(data / "train" / "owl"), str(data / "test" / "owl"))
    (data / "train" / "owl").mkdir()
    with pytest.raises(DataError, match=r"train/owl holds no images while test/owl holds 8, so it cannot be a class "
                                        r"of this run; move some into it, or remove the class from every split"):
        load_dataset(DataConfig(source=str(data), val_split=0))
    # scored data (evaluate --data) only needs the class somewhere
    assert load_dataset(DataConfig(source=str(data), val_split=0), scoring=True).counts()["test"] == [3, 3, 8]
    # and no images in any split is the empty class folder again, scored or not
    shutil.rmtree(data / "test" / "owl")
    for scoring in (False, True):
        with pytest.raises(DataError, match=r"train/owl holds no images, so it cannot be a class of this run"):
            load_dataset(DataConfig(source=str(data), val_split=0), scoring=scoring)


def test_a_csv_class_whose_files_are_all_unreadable_is_refused(photos, tmp_path):
    rows = [f"{path},{name}" for name in CLASSES for path in sorted((photos / name).iterdir())]
    for i in range(2):
        (tmp_path / f"bad{i}.png").write_bytes(b"garbage")
        rows.append(f"bad{i}.png,seal")
    (tmp_path / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"none of the 2 file\(s\) of class 'seal' \(column 'label'\) can be read "
                                        r"\(first: .*bad0\.png: .*\), so it cannot be a class"):
        load_dataset(DataConfig(source=str(tmp_path / "labels.csv")))


# --------------------------------------------------------------------------- labels CSVs
@pytest.fixture
def csv_rows(tmp_path) -> list[tuple[str, str]]:
    return [(f"photos/{path}", label) for path, label in _photos(tmp_path / "photos")]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_separated_by_semicolons_tabs_or_pipes_just_works(tmp_path, csv_rows, sep, capsys):
    table = tmp_path / "labels.csv"
    table.write_text(f"file{sep}label\n" + "".join(f"{f}{sep}{y}\n" for f, y in csv_rows))
    dataset = load_dataset(DataConfig(source=str(table), val_split=0, test_split=0))
    assert dataset.class_names == list(CLASSES) and len(dataset.splits["train"]) == 24
    assert load_dataset(DataConfig(source=str(table), file_col="file", label_col="label", val_split=0,
                                   test_split=0)).class_names == list(CLASSES)
    if sep == ";":
        capsys.readouterr()
        assert main(["train", "--data", str(table), "--file-col", "file", "--model", "mlp", "--epochs", "1",
                     "--no-figures", "--out", str(tmp_path / "run")]) == 0
        err = capsys.readouterr().err
        assert "warning" not in err and "error" not in err, err


def test_a_csv_whose_separator_is_none_of_those_says_it_looks_wrong(tmp_path, csv_rows, capsys):
    table = tmp_path / "labels.csv"
    table.write_text("file label\n" + "".join(f"{f.replace(' ', '_')} {y}\n" for f, y in csv_rows))
    assert main(["train", "--data", str(table), "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "r")]) == 1
    error = one_line_error(capsys)
    assert "its header row 'file label' is a single column, so its separator looks wrong" in error, error


def test_spaces_after_commas_are_not_part_of_labels_or_file_names(tmp_path, csv_rows):
    table = tmp_path / "labels.csv"
    table.write_text("file, label\n" + "".join(f" {f} ,{' ' if i % 2 else ''}{y} \n"
                                               for i, (f, y) in enumerate(csv_rows)))
    dataset = load_dataset(DataConfig(source=str(table), val_split=0, test_split=0))
    assert dataset.class_names == list(CLASSES) and len(dataset.splits["train"]) == 24
    assert dataset.counts()["train"] == [8, 8, 8]


def test_windows_paths_in_a_csv_are_read_with_slashes(tmp_path, csv_rows):
    table = tmp_path / "labels.csv"
    table.write_text("file,label\n" + "".join(f"{f.replace('/', chr(92))},{y}\n" for f, y in csv_rows))
    dataset = load_dataset(DataConfig(source=str(table), val_split=0, test_split=0))
    assert len(dataset.splits["train"]) == 24
    assert all(Path(p).is_file() for p in dataset.splits["train"].paths)
    gone = tmp_path / "gone.csv"
    gone.write_text("file,label\n" + "".join(f"elsewhere\\{f.replace('/', chr(92))},{y}\n" for f, y in csv_rows))
    with pytest.raises(DataError, match=r"24 of 24 files .* missing .*the names use \\ as a folder separator"):
        load_dataset(DataConfig(source=str(gone)))


def test_repeated_rows_are_dropped_with_one_warning_and_conflicting_labels_are_kept_and_warned(
        tmp_path, csv_rows, capsys):
    table = tmp_path / "labels.csv"
    rows = [f"{f},{y}" for f, y in csv_rows]
    table.write_text("file,label\n" + "\n".join(rows + [rows[3], "./" + rows[3], rows[5]]) + "\n")
    with pytest.warns(UserWarning) as seen:
        dataset = load_dataset(DataConfig(source=str(table), val_split=0, test_split=0))
    messages = [str(w.message) for w in seen]
    assert len(dataset.splits["train"]) == 24 and dataset.counts()["train"] == [8, 8, 8]
    assert any(f"3 row(s) repeat an earlier row's file and label (first: {csv_rows[3][0]!r}) and were dropped" in m
               for m in messages), messages
    # a repeated row lands in no two splits
    split = load_dataset(DataConfig(source=str(table), val_split=0, test_split=0.25), seed=0)
    assert not set(split.splits["train"].paths) & set(split.splits["test"].paths)
    # one file under two labels: both rows kept, warned when the CSV is read and by the audit
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("file,label\n" + "\n".join(rows + [f"{csv_rows[0][0]},owl"]) + "\n")
    capsys.readouterr()
    assert main(["audit", "--data", str(conflict), "--test-split", "0", "--out", str(tmp_path / "audit")]) == 0
    said = capsys.readouterr()
    assert f"1 file(s) are listed with different labels (first: {csv_rows[0][0]!r} as 'cat' and 'owl')" in said.err
    assert "1 duplicate group(s) carry different labels" in " ".join(said.out.split()), said.out


def test_a_csv_with_a_header_and_no_rows_says_so(tmp_path, capsys):
    for sep in (",", ";"):
        table = tmp_path / f"empty{sep == ';'}.csv"
        table.write_text(f"file{sep}label\n")
        assert main(["train", "--data", str(table), "--model", "mlp", "--epochs", "1",
                     "--out", str(tmp_path / "run")]) == 1
        error = one_line_error(capsys)
        assert f"{table}: has a header row (file{sep}label) but no rows; add one row per image below it, " \
               f"e.g. cat/1.jpg{sep}cat" in error, error
        assert "folder per class" not in error
    table = tmp_path / "tags.csv"
    table.write_text("file,labels\n")
    with pytest.raises(DataError, match=r"has a header row \(file,labels\) but no rows; .*e\.g\. 1\.jpg,cat dog"):
        load_multilabel_dataset(DataConfig(source=str(table)))


# --------------------------------------------------------------------------- multi-label CSVs
def _tag_rows(tmp_path) -> list[tuple[str, list[str]]]:
    sets = [["cat"], ["dog"], ["cat", "dog"], []]
    images, _ = digits_arrays(per_class=2)
    rows = []
    for i, image in enumerate(images[:16]):
        path = write_image(tmp_path / "imgs" / f"img {i}.png", image)
        rows.append((path.relative_to(tmp_path).as_posix(), sets[i % 4]))
    return rows


def test_multilabel_cells_keep_their_own_separator_in_any_csv(tmp_path):
    rows = _tag_rows(tmp_path)
    for name, text in {
        "comma.csv": "file,labels\n" + "".join(f'{f},"{";".join(t)}"\n' if len(t) > 1 else f"{f},{';'.join(t)}\n"
                                               for f, t in rows),
        "unquoted.csv": "file,labels\n" + "".join(f"{f},{';'.join(t)}\n" for f, t in rows),
        "semicolon.csv": "file;labels\n" + "".join(f'{f};{",".join(t)}\n' for f, t in rows),
        "spaces.csv": "file, labels\n" + "".join(f'{f}, "{", ".join(t)}"\n' for f, t in rows),
        "windows.csv": "file\tlabels\n" + "".join(f"{f.replace('/', chr(92))}\t{' '.join(t)}\n" for f, t in rows),
    }.items():
        (tmp_path / name).write_text(text)
        dataset = load_multilabel_dataset(DataConfig(source=str(tmp_path / name), val_split=0, test_split=0))
        assert dataset.class_names == ["cat", "dog"], name
        assert dataset.splits["train"].labels.sum(0).tolist() == [8.0, 8.0], name
        assert len(dataset.splits["train"]) == 16, name


def test_multilabel_repeated_rows_are_dropped_with_one_warning(tmp_path):
    rows = _tag_rows(tmp_path)
    lines = [f"{f},{' '.join(t)}" for f, t in rows]
    (tmp_path / "tags.csv").write_text("file,labels\n" + "\n".join(lines + lines[2:4]) + "\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dataset = load_multilabel_dataset(DataConfig(source=str(tmp_path / "tags.csv"), val_split=0, test_split=0))
    assert len(dataset.splits["train"]) == 16
    assert any(f"2 row(s) repeat an earlier row's file and label (first: {rows[2][0]!r})" in str(w.message)
               for w in seen), [str(w.message) for w in seen]
