"""Data sources: folders, CSV, test CSV with numeric IDs, splits, bad files, unusable sets."""

from __future__ import annotations

import csv
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import digits_arrays, needs_fmnist, write_image
from vislab.core.config import DataConfig
from vislab.data.images import BadImageError, read_image
from vislab.data.sources import DataError, load_dataset


def test_folder_dataset_nested_uppercase_hidden(digits_folder):
    ds = load_dataset(DataConfig(source=str(digits_folder), val_split=0, test_split=0), seed=0)
    train = ds.splits["train"]
    assert ds.class_names == [str(i) for i in range(10)]
    assert len(train) == 200  # hidden file and notes.txt ignored, nested dirs found
    assert torch.bincount(train.labels).tolist() == [20] * 10
    assert any("nested/deeper" in p for p in train.paths)
    assert any(p.endswith(".JPEG") for p in train.paths)
    assert not ds.bad_files


def test_numeric_class_folders_sort_numerically(tmp_path):
    images, labels = digits_arrays(per_class=2)
    for k in range(12):
        for j in range(2):
            write_image(tmp_path / "d" / str(k) / f"{j}.png", images[(k % 10) * 2 + j])
    ds = load_dataset(DataConfig(source=str(tmp_path / "d"), val_split=0, test_split=0))
    assert ds.class_names == [str(k) for k in range(12)]  # 0,1,2,...,10,11 — never 0,1,10,11,2
    path = next(p for p, y in zip(ds.splits["train"].paths, ds.splits["train"].labels) if y == 10)
    assert "/10/" in path


def test_given_train_val_test_folders(tmp_path):
    images, labels = digits_arrays(per_class=6)
    for i, (image, label) in enumerate(zip(images, labels)):
        split = ["train", "train", "train", "train", "valid", "test"][i % 6]
        write_image(tmp_path / "d" / split / str(label) / f"{i}.png", image)
    ds = load_dataset(DataConfig(source=str(tmp_path / "d")))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [40, 10, 10]


def test_stratified_seeded_splits():
    cfg = DataConfig(source="digits", val_split=0.1, test_split=0.2)
    a, b, c = load_dataset(cfg, seed=1), load_dataset(cfg, seed=1), load_dataset(cfg, seed=2)
    assert torch.equal(a.splits["test"].images, b.splits["test"].images)
    assert not torch.equal(a.splits["test"].images, c.splits["test"].images)
    counts = np.array(a.counts()["test"])
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of ~180 per class, stratified
    assert len(a.splits["test"]) == 359  # round(0.2 * 1797)
    table = a.split_table()
    assert table[0] == ["class", "train", "val", "test"] and table[-1][0] == "total"


def test_a_split_that_leaves_fewer_training_images_than_classes_is_refused():
    # 9 training images cannot hold 10 classes: a class would train on nothing, which is said, not run
    with pytest.raises(DataError, match=r"no training image left after the hold-out.*hold out fewer images "
                                        r"\(--val-split\)"):
        load_dataset(DataConfig(source="digits", val_split=0.995, test_split=0), seed=0)
    ds = load_dataset(DataConfig(source="digits", val_split=0.99, test_split=0), seed=0)  # 18: stratified
    assert len(ds.splits["train"]) == 18 and len(set(ds.splits["train"].labels.tolist())) == 10


def test_data_only_scored_may_lack_some_of_the_labels_a_run_trained_on(tmp_path):
    """A run trained with --labels a b c, evaluated on new images of b alone (`vislab evaluate --data`)."""
    images, labels = digits_arrays(per_class=3)
    for i, (image, label) in enumerate(zip(images, labels)):
        if label == 1:
            write_image(tmp_path / "new" / "b" / f"{i}.png", image)
    rows = "file,label\n" + "".join(f"b/{p.name},b\n" for p in sorted((tmp_path / "new" / "b").iterdir()))
    (tmp_path / "new.csv").write_text(rows)
    for source, root in ((tmp_path / "new", None), (tmp_path / "new.csv", str(tmp_path / "new"))):
        cfg = DataConfig(source=str(source), image_root=root, labels=["a", "b", "c"], val_split=0, test_split=0)
        with pytest.raises(DataError, match="--labels names"):
            load_dataset(cfg)
        assert load_dataset(cfg, scoring=True).class_names == ["b"]


def test_split_as_count():
    ds = load_dataset(DataConfig(source="digits", val_split=100, test_split=300))
    assert len(ds.splits["val"]) == 100 and len(ds.splits["test"]) == 300


def test_csv_dataset_filter_and_ids_without_extension(tmp_path):
    images, labels = digits_arrays(per_class=5)
    breeds = ["beagle", "pug", "collie"] + [f"other{i}" for i in range(7)]
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(tmp_path / "train" / f"id{i}.jpg", image)
        rows.append({"id": f"id{i}", "breed": breeds[label]})
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "breed"])
        writer.writeheader()
        writer.writerows(rows)
    cfg = DataConfig(source=str(tmp_path / "labels.csv"), image_root=str(tmp_path / "train"),
                     labels=["beagle", "pug", "collie"], val_split=0, test_split=0)
    ds = load_dataset(cfg)
    assert ds.class_names == ["beagle", "collie", "pug"]
    assert len(ds.splits["train"]) == 15
    with pytest.raises(DataError, match="--labels"):
        load_dataset(DataConfig(source=str(tmp_path / "labels.csv"), image_root=str(tmp_path / "train"),
                                labels=["nosuchbreed"]))


def test_csv_missing_files_fail_before_training(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,x\nb.png,y\n")
    with pytest.raises(DataError, match=r"2 of 2 files .* missing.*--image-root"):
        load_dataset(DataConfig(source=str(tmp_path / "labels.csv")))


def test_csv_unknown_column_names_the_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("name,kind\na.png,x\n")
    with pytest.raises(DataError, match=r"columns are \['name', 'kind'\].*--file-col"):
        load_dataset(DataConfig(source=str(tmp_path / "labels.csv")))


def test_gtsrb_style_test_csv_numeric_ids(tmp_path):
    """Train folders 0..11 plus a Test.csv whose ClassId maps to the same class index."""
    images, labels = digits_arrays(per_class=3)
    for k in range(12):
        for j in range(3):
            write_image(tmp_path / "Train" / str(k) / f"{k}_{j}.png", images[(k % 10) * 3 + j])
    rows = []
    for k in (0, 2, 10, 11):
        path = write_image(tmp_path / "Test" / f"t{k}.png", images[(k % 10) * 3])
        rows.append({"Width": 16, "Height": 16, "ClassId": k, "Path": f"Test/{path.name}"})
    with open(tmp_path / "Test.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Width", "Height", "ClassId", "Path"])
        writer.writeheader()
        writer.writerows(rows)
    ds = load_dataset(DataConfig(source=str(tmp_path / "Train"), test_csv=str(tmp_path / "Test.csv"),
                                 val_split=0))
    test = ds.splits["test"]
    assert [ds.class_names[i] for i in test.labels.tolist()] == ["0", "2", "10", "11"]
    assert test.labels.tolist() == [0, 2, 10, 11]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def poison(folder, label: str) -> int:
    """Write every kind of bad file into class folder ``label``; returns how many."""
    target = folder / label
    target.mkdir(parents=True, exist_ok=True)
    (target / "zero.png").write_bytes(b"")
    (target / "text.jpg").write_text("this is not an image")
    good = target / "good_src.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    (target / "truncated.png").write_bytes(data[: len(data) // 2])
    # a PNG header claiming 30000 x 30000 pixels: over Pillow's decompression-bomb limit
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    (target / "bomb.png").write_bytes(header + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) +
                                      _png_chunk(b"IEND", b""))
    return 4


def test_bad_images_raise_with_reason(tmp_path):
    poison(tmp_path, "x")
    reasons = {}
    for path in sorted((tmp_path / "x").iterdir()):
        with pytest.raises(BadImageError) as info:
            read_image(path)
        reasons[path.name] = info.value.reason
    assert reasons["zero.png"] == "zero-byte file"
    assert "not an image" in reasons["text.jpg"]
    assert "truncated" in reasons["truncated.png"] or "broken" in reasons["truncated.png"].lower()
    assert "decompression-bomb" in reasons["bomb.png"]


def test_poisoned_folder_trains_and_lists_bad_files(digits_folder, tmp_path):
    from vislab.api import train

    injected = poison(digits_folder, "5") + poison(digits_folder, "7")
    result = train(data=str(digits_folder), model="mlp", epochs=1, out=str(tmp_path / "run"),
                   model_options={"hidden": [32]}, test_split=0.2)
    with open(result.run_dir / "bad_files.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "reason"]
    assert len(rows) - 1 == injected
    assert all(row[1] for row in rows[1:])


def test_unusable_datasets_fail_before_training(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="no usable training image"):
        load_dataset(DataConfig(source=str(tmp_path / "empty")))
    images, _ = digits_arrays(per_class=3)
    for i in range(5):
        write_image(tmp_path / "one" / "cats" / f"{i}.png", images[i])
    with pytest.raises(DataError, match="only one class"):
        load_dataset(DataConfig(source=str(tmp_path / "one"), val_split=0, test_split=0))
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(DataConfig(source=str(tmp_path / "nope")))
    only_bad = tmp_path / "bad"
    poison(only_bad, "a")
    poison(only_bad, "b")
    with pytest.raises(DataError, match=r"no usable training image \(8 bad files skipped\)"):
        load_dataset(DataConfig(source=str(only_bad)))


def test_grayscale_and_rgba_files_read(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "a.png")
    assert tuple(read_image(tmp_path / "g.png").shape) == (1, 4, 5)
    rgba = read_image(tmp_path / "a.png")
    assert tuple(rgba.shape) == (3, 4, 5) and int(rgba.min()) == 255  # transparent over white


@needs_fmnist
def test_fashion_mnist_from_debian_files():
    ds = load_dataset(DataConfig(source="fashion-mnist", val_split=0), seed=0)
    assert len(ds.splits["train"]) == 60000 and len(ds.splits["test"]) == 10000
    assert ds.splits["train"].images.dtype == torch.uint8
    assert tuple(ds.splits["train"].images.shape[1:]) == (1, 28, 28)
    assert ds.class_names[0] == "T-shirt/top" and ds.counts()["test"] == [1000] * 10


def test_a_failed_download_is_one_line_naming_the_folders(tmp_path, monkeypatch):
    """torchvision lists every mirror it tried, over several lines: the user gets one line with the fix."""
    from torchvision import datasets

    import vislab.data.sources as sources

    class Offline:  # what torchvision's MNIST raises on a machine without a network
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
                               "<urlopen error [Errno -2] Name or service not known>\n")

    monkeypatch.setattr(datasets, "MNIST", Offline)
    monkeypatch.setitem(sources.DEBIAN_DIRS, "mnist", str(tmp_path / "none"))
    with pytest.raises(DataError) as raised:
        load_dataset(DataConfig(source="mnist", data_dir=str(tmp_path / "here")), seed=0)
    message = str(raised.value)
    assert "\n" not in message and "no network connection: Name or service not known" in message
    assert str(tmp_path / "here") in message and "--data-dir" in message


@pytest.mark.parametrize("typed, meant", [("Fashion-MNIST", "fashion-mnist"), ("fashion", "fashion-mnist"),
                                           ("cifar-10", "cifar10"), ("MNIST", "mnist")])
def test_a_built_in_name_written_otherwise_gets_the_name(typed, meant, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file or folder of that name here
    with pytest.raises(DataError, match=f"Did you mean {meant}\\?"):
        load_dataset(DataConfig(source=typed), seed=0)


def _write_idx_gz(path, array):
    import gzip

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _write_mnist_like(folder, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_gzipped_idx_files_are_decompressed_once(tmp_path, monkeypatch):
    """The second load reads the cached arrays (nothing decompressed); a replaced file, or a cache file cut
    short, is decoded again; an unwritable cache folder only costs time."""
    import os

    import vislab.data.sources as sources

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "mnist"
    _write_mnist_like(data, seed=0)
    config = DataConfig(source="mnist", data_dir=str(data), val_split=0)
    first = load_dataset(config)
    cached = sorted((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert len(cached) == 4 and not list((tmp_path / "cache" / "decoded").glob(".*"))

    real = sources._decode_idx
    decoded = []
    monkeypatch.setattr(sources, "_decode_idx", lambda path: decoded.append(path.name) or real(path))
    again = load_dataset(config)
    assert decoded == []
    assert torch.equal(again.splits["train"].images, first.splits["train"].images)
    assert torch.equal(again.splits["test"].labels, first.splits["test"].labels)
    again.splits["train"].images[0] += 1  # the arrays read back are the caller's to change

    _write_mnist_like(data, seed=1)  # new files, same names and sizes
    for file in data.iterdir():
        os.utime(file, ns=(1, 1))  # a modification time unlike the old files'
    replaced = load_dataset(config)
    assert len(decoded) == 4 and not torch.equal(replaced.splits["train"].images, first.splits["train"].images)
    assert len(sorted((tmp_path / "cache" / "decoded").glob("*.npy"))) == 4  # the old versions removed

    cut = next(p for p in (tmp_path / "cache" / "decoded").glob("train-images*.npy"))
    cut.write_bytes(cut.read_bytes()[:100])
    assert torch.equal(load_dataset(config).splits["train"].images, replaced.splits["train"].images)
    assert len(decoded) == 5

    monkeypatch.setenv("VISLAB_CACHE", str(data / "t10k-labels-idx1-ubyte.gz"))  # a file: no folder there
    assert torch.equal(load_dataset(config).splits["test"].labels, replaced.splits["test"].labels)


def test_builtin_missing_files_message(tmp_path, monkeypatch):
    """MNIST absent locally: the real torchvision download runs; offline (as here) the error says
    where vislab looked and how to supply the files; online it downloads and loads."""
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    import vislab.data.sources as sources

    monkeypatch.setitem(sources.DEBIAN_DIRS, "mnist", str(tmp_path / "no-debian"))
    try:
        ds = load_dataset(DataConfig(source="mnist", data_dir=str(tmp_path / "dd")))
    except DataError as exc:
        assert "mnist: not found in" in str(exc) and "--data-dir" in str(exc)
        assert str(tmp_path / "dd") in str(exc)
    else:
        assert len(ds.splits["test"]) == 10000


def _write_cifar_like(folder, count: int = 12):
    """CIFAR-10's binary format (label byte + 3x32x32 bytes per record) from ``count`` real digit images in
    each of the six batches; returns their labels."""
    images, labels = digits_arrays(per_class=6)
    folder.mkdir(parents=True)

    def record(image, label):
        rgb = np.asarray(Image.fromarray(image).resize((32, 32)).convert("RGB")).transpose(2, 0, 1)
        return bytes([int(label)]) + rgb.astype(np.uint8).tobytes()

    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(b"".join(record(im, y) for im, y in zip(images[:count], labels[:count])))
    return labels[:count]


@pytest.fixture
def system_mnist(tmp_path, monkeypatch):
    """A 20-image MNIST-like copy where the system's would be, and an empty cache folder: what vislab reads
    without --data-dir, and must never read when --data-dir names another folder."""
    import vislab.data.sources as sources

    system = tmp_path / "system"
    _write_mnist_like(system, seed=0)
    monkeypatch.setitem(sources.DEBIAN_DIRS, "mnist", str(system))
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    return system


def test_without_data_dir_the_system_copy_is_read(system_mnist):
    ds = load_dataset(DataConfig(source="mnist", val_split=0), seed=0)
    assert len(ds.splits["train"]) == 20 and len(ds.splits["test"]) == 10


@pytest.mark.parametrize("given", ["missing", "empty", "other-files"])
def test_a_data_dir_without_the_files_is_an_error_never_the_system_copy(given, system_mnist, tmp_path):
    """--data-dir is where the run reads the set (and what its config.yaml records): a folder without the
    files is downloaded into, and when that fails (offline, as here) the error names the folder, the four
    files it needs and the copy that dropping --data-dir would read. Online, the set is read from there."""
    folder = tmp_path / "given"
    if given != "missing":
        folder.mkdir()
    if given == "other-files":
        (folder / "notes.txt").write_text("not an IDX file")
    try:
        ds = load_dataset(DataConfig(source="mnist", data_dir=str(folder), val_split=0), seed=0)
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message and f"--data-dir {folder} (" in message, message
        assert {"missing": "no such folder", "empty": "an empty folder",
                "other-files": "it holds other files"}[given] in message, message
        assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message, message
        assert f"drop --data-dir to read the copy in {system_mnist}" in message, message
        # the failed download leaves the folder as it was: still missing, or holding only what it held
        left = sorted(p.name for p in folder.iterdir()) if folder.exists() else None
        assert left == {"missing": None, "empty": [], "other-files": ["notes.txt"]}[given], left
    else:  # a machine with a network: the set was downloaded into the folder given, and read from there
        assert len(ds.splits["train"]) == 60000 and list(folder.rglob("train-images-idx3-ubyte*"))


def test_a_data_dir_missing_one_of_the_files_names_it(system_mnist, tmp_path):
    folder = tmp_path / "given" / "mnist"  # --data-dir DIR reads DIR/mnist too
    _write_mnist_like(folder, seed=1)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"{folder}: train-images-idx3-ubyte\\(.gz\\) is missing"):
        load_dataset(DataConfig(source="mnist", data_dir=str(tmp_path / "given"), val_split=0), seed=0)


def test_a_data_dir_that_is_a_file_is_an_error(system_mnist, tmp_path):
    (tmp_path / "data.txt").write_text("a file")
    for source in ("mnist", "cifar10"):
        with pytest.raises(DataError, match="--data-dir .*data.txt is a file, not a folder.*drop --data-dir"):
            load_dataset(DataConfig(source=source, data_dir=str(tmp_path / "data.txt"), val_split=0), seed=0)


def test_cifar10_reads_only_the_data_dir_given(tmp_path, monkeypatch):
    """The cache's copy is read without --data-dir; with one, only that folder (its cifar-10-batches-bin,
    or the batches folder itself), and an empty one is an error that names the cache's copy."""
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    _write_cifar_like(tmp_path / "cache" / "cifar10" / "cifar-10-batches-bin", count=12)
    _write_cifar_like(tmp_path / "mine" / "cifar-10-batches-bin", count=8)
    assert len(load_dataset(DataConfig(source="cifar10", val_split=0)).splits["test"]) == 12
    for given in (tmp_path / "mine", tmp_path / "mine" / "cifar-10-batches-bin"):
        ds = load_dataset(DataConfig(source="cifar10", data_dir=str(given), val_split=0), seed=0)
        assert len(ds.splits["train"]) == 40 and len(ds.splits["test"]) == 8
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        ds = load_dataset(DataConfig(source="cifar10", data_dir=str(empty), val_split=0), seed=0)
    except DataError as exc:
        message = str(exc)
        assert f"--data-dir {empty} (an empty folder)" in message and "cifar-10-binary.tar.gz" in message, message
        assert f"drop --data-dir to read the copy in {tmp_path / 'cache' / 'cifar10'}" in message, message
        assert not list(empty.iterdir())
    else:  # online: downloaded into the folder given
        assert len(ds.splits["test"]) == 10000 and (empty / "cifar-10-batches-bin").is_dir()


def test_cli_data_dir_without_the_files_is_one_line(system_mnist, tmp_path, capsys):
    """`vislab train --data mnist --data-dir EMPTY` stops before the run folder is made, with one line."""
    from vislab.cli import main

    (tmp_path / "empty").mkdir()
    code = main(["train", "--data", "mnist", "--data-dir", str(tmp_path / "empty"), "--model", "mlp",
                 "--epochs", "1", "--max-per-class", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    if code == 0:  # online: trained on the copy downloaded into the folder given
        assert list((tmp_path / "empty").rglob("train-images-idx3-ubyte*"))
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vislab train: error: mnist: not found in --data-dir ") and "drop --data-dir" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cifar10_binary_release_is_read_without_pickle(tmp_path):
    """CIFAR-10's binary format, written here from real digit images; vislab reads it from --data-dir and
    never touches the pickled release."""
    labels = _write_cifar_like(tmp_path / "cifar-10-batches-bin")
    ds = load_dataset(DataConfig(source="cifar10", data_dir=str(tmp_path), val_split=0), seed=0)
    assert len(ds.splits["train"]) == 60 and len(ds.splits["test"]) == 12
    assert tuple(ds.splits["train"].images.shape[1:]) == (3, 32, 32)
    assert ds.class_names[0] == "airplane"
    assert ds.splits["test"].labels.tolist() == labels.tolist()


def test_read_image_modes_and_no_open_files(tmp_path):
    """Every mode comes back as uint8 (C, H, W) with C in {1, 3}; no file is left open (multi-frame included)."""
    import gc
    import os
    import warnings

    from PIL import Image

    from vislab.data.images import open_image, read_image

    def open_files():
        fds = "/proc/self/fd"
        return {os.path.realpath(os.path.join(fds, fd)) for fd in os.listdir(fds)} if os.path.isdir(fds) else set()

    cases = {"rgb.png": ("RGB", {}), "grey.png": ("L", {}), "rgba.png": ("RGBA", {}), "p.gif": ("P", {}),
             "one.tif": ("RGB", {}),
             "multi.tif": ("RGB", {"save_all": True, "append_images": [Image.new("RGB", (5, 4), (9, 9, 9))]})}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for name, (mode, options) in cases.items():
            fill = {"L": 200, "RGBA": (200, 200, 200, 255)}.get(mode, (200, 200, 200))
            picture = Image.new("RGB", (5, 4), fill).convert("P") if mode == "P" else Image.new(mode, (5, 4), fill)
            picture.save(tmp_path / name, **options)
            image = read_image(tmp_path / name)
            assert image.dtype == torch.uint8 and image.shape == ((1,) if mode == "L" else (3,)) + (4, 5), name
            assert image.is_contiguous() and abs(int(image.max()) - 200) <= 8, name  # GIF: a web palette
            kept = open_image(tmp_path / name)  # the decoded image outlives the call; its file must not
            assert str((tmp_path / name).resolve()) not in open_files(), name
            del image, kept
            gc.collect()


def test_the_built_in_digits_are_scikit_learns_read_without_importing_it():
    """vislab reads the CSV scikit-learn ships (its import costs 1 s with scipy); same images, same labels."""
    from sklearn.datasets import load_digits

    from vislab.data.sources import _digits

    images, labels = _digits()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


def test_csv_column_errors_say_what_is_missing(tmp_path):
    (tmp_path / "labels.csv").write_text("file,kind\na.png,x\n")
    # a file column found, no label column: the message is about labels, never "column None"
    with pytest.raises(DataError, match=r"no column of labels found.*columns are \['file', 'kind'\].*--label-col") as error:
        load_dataset(DataConfig(source=str(tmp_path / "labels.csv")))
    assert "None" not in str(error.value)
    # a named column that is not there
    with pytest.raises(DataError, match=r"--label-col 'breed' is not a column; its columns are \['file', 'kind'\]"):
        load_dataset(DataConfig(source=str(tmp_path / "labels.csv"), label_col="breed"))


def test_a_csv_of_label_combinations_is_read_by_its_labels_column_and_says_multilabel(tmp_path):
    """A "labels" (or "tags") column is found as the labels; cells that combine the same labels read as one
    class per combination, with one warning naming --task multilabel."""
    images, _ = digits_arrays(per_class=1)
    cells = ["cat", "dog", "cat dog", "car", "car dog", "cat"] * 2
    rows = ["file,labels"]
    for i, cell in enumerate(cells):
        write_image(tmp_path / f"i{i}.png", images[i % len(images)])
        rows.append(f"i{i}.png,{cell}")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"tags.csv: 2 of the 5 classes in column 'labels' .*--task multilabel"):
        data = load_dataset(DataConfig(source=str(tmp_path / "tags.csv")))
    assert data.class_names == ["car", "car dog", "cat", "cat dog", "dog"]
    # one label per image, some of them two words: a plain classification set, no warning
    (tmp_path / "pets.csv").write_text("file,labels\n" + "".join(
        f"i{i}.png,{name}\n" for i, name in enumerate(["great dane", "pug", "shih tzu"] * 4)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(DataConfig(source=str(tmp_path / "pets.csv"))).class_names == \
            ["great dane", "pug", "shih tzu"]


def test_a_folder_check_is_kept_until_a_file_changes(tmp_path, monkeypatch):
    """Every command decodes a folder's files to find the bad ones; the outcome is kept per set of files
    (path, size, modification time), so the same files are decoded once, and a file replaced, added or just
    written is decoded again."""
    import os
    import time

    import vislab.data.sources as sources

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    paths = [write_image(tmp_path / "data" / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
             for i in range(5)]
    broken = tmp_path / "data" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    paths = [str(p) for p in [*paths, broken]]
    decoded = []
    real_read = sources.read_image
    monkeypatch.setattr(sources, "read_image", lambda path: decoded.append(path) or real_read(path))

    def check():
        decoded.clear()
        good, labels, bad = sources.validate_files(paths, list(range(len(paths))))
        return len(decoded), good, labels, [path for path, _ in bad]

    assert check()[0] == 6 and check()[0] == 6  # just written: decoded every time
    old = time.time() - 60
    for path in paths:
        os.utime(path, (old, old))
    first = check()
    assert first[0] == 6 and first[3] == [str(broken)] and first[2] == [0, 1, 2, 3, 4]
    assert check() == (0, *first[1:])  # the same files: nothing decoded
    with open(paths[1], "r+b") as handle:  # cut short in place, then dated a little later
        handle.truncate(20)
    os.utime(paths[1], (old + 1, old + 1))
    assert check() == (6, paths[:1] + paths[2:5], [0, 2, 3, 4], [paths[1], str(broken)])
    assert len(list((tmp_path / "cache" / "checked").glob("*.json"))) == 2


def test_what_a_killed_writer_left_in_the_cache_is_removed_after_an_hour(tmp_path, monkeypatch):
    """Each cache entry is written under a hidden name of its writer's (core.files.partial_path), then renamed
    into place; a writer killed in between leaves that behind. The next write to the same folder removes
    such leftovers once they are an hour old, and never a younger one: another run may be writing it."""
    import os
    import time

    from vislab.core.files import decoded_once
    from vislab.core.measure import Choice, ChoiceCache
    from vislab.data.audit import audit_dataset
    from vislab.data.sources import Dataset, Split, validate_files

    cache = tmp_path / "cache"
    monkeypatch.setenv("VISLAB_CACHE", str(cache))
    hour_ago = time.time() - 3700
    stale, fresh = [], []
    for folder in ("checked", "audit", "decoded", ""):
        (cache / folder).mkdir(parents=True, exist_ok=True)
        left = cache / folder / ".0123abcd.json.4242.partial"
        (left.mkdir() if folder == "audit" else left.write_text("{"))
        os.utime(left, (hour_ago, hour_ago))
        stale.append(left)
        young = cache / folder / ".4567cdef.json.4343.partial"
        young.write_text("{")
        fresh.append(young)
    (cache / "audit" / ".0123abcd.json.4242.partial" / "audit.json").write_text("{")
    os.utime(cache / "audit" / ".0123abcd.json.4242.partial", (hour_ago, hour_ago))
    keep = [cache / "checked" / ".DS_Store", cache / "decoded" / "notes.4242",  # not a writer's partial name
            cache / "decoded" / ".backup.4242", cache / "checked" / "x.4242.partial"]
    for path in keep:
        path.write_text("x")
        os.utime(path, (hour_ago, hour_ago))

    images = [write_image(tmp_path / "data" / f"{i}.png", np.full((8, 8), 40 * i, np.uint8)) for i in range(3)]
    for path in images:
        os.utime(path, (hour_ago, hour_ago))
    validate_files([str(p) for p in images], [0, 1, 0])
    dataset = Dataset("toy", ["a", "b"], {"train": Split(torch.tensor([0, 1, 0, 1]),
                                                          images=torch.zeros(4, 1, 6, 6, dtype=torch.uint8),
                                                          name="train")})
    audit_dataset(dataset, tmp_path / "audit", figures=False)
    decoded_once(images[0], lambda path: np.zeros(3, np.uint8))
    ChoiceCache(cache / "choices.json").put("k", Choice("fp32", False, source="measured"))

    assert [path for path in stale if path.exists()] == []
    assert all(path.exists() for path in fresh + keep)
    assert len(list((cache / "checked").glob("*.json"))) == 1 and len(list((cache / "audit").glob("[!.]*"))) == 1
