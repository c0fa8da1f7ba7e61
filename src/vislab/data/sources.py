"""Data sources: built-in sets, class-per-folder directories and CSV files -> :class:`Dataset`.

A :class:`Split` holds either one uint8 tensor of images (small sets such as
MNIST, kept in memory) or a list of file paths (streamed from disk by DataLoader
workers). Splits are stratified and seeded; bad files are found before training,
skipped and listed, never a crash.

Example:
    >>> from vislab.core.config import DataConfig
    >>> ds = load_dataset(DataConfig(source="digits", test_split=0.2), seed=0)
    >>> sorted(ds.splits), len(ds.class_names)
    (['test', 'train', 'val'], 10)
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import struct
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from vislab.core.config import SPLITS
from vislab.core.files import (BadFileError, cache_dir, code_digest, decoded_once, keep_recent, read_bytes,
                               read_text, reading, stat_digest, written_whole)
from vislab.data.images import BadImageError, is_image_file, read_image
from vislab.data.label_edits import apply_label_edits

BUILTIN = ("mnist", "fashion-mnist", "cifar10", "digits")
SPLIT_NAMES = SPLITS
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}


from vislab.core.errors import DataError, download_failure  # noqa: E402,F401  (DataError re-exported)


@dataclass
class Split:
    """One split: in-memory uint8 ``images`` (N, C, H, W) or file ``paths``, plus per-image ``labels``
    (int64 class indices for classification; a task may keep other targets, e.g. (N, K) multi-hot)."""

    labels: torch.Tensor
    images: torch.Tensor | None = None
    paths: list[str] | None = None
    name: str = "train"

    def __post_init__(self):
        if (self.images is None) == (self.paths is None):
            raise ValueError("a Split holds either images or paths")
        labels = torch.as_tensor(self.labels)
        # one class index per image (int64); a task may keep other per-image targets, e.g. (N, K) multi-hot
        self.labels = labels.to(torch.int64) if labels.ndim <= 1 else labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def load(self, index: int) -> torch.Tensor:
        """The uint8 (C, H, W) image at ``index``."""
        if self.images is not None:
            return self.images[index]
        return read_image(self.paths[index])

    def source(self, index: int) -> str:
        return self.paths[index] if self.paths is not None else f"{self.name}#{index}"

    def subset(self, indices, name: str | None = None) -> "Split":
        indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return Split(
            labels=self.labels[indices],
            images=self.images[indices] if self.images is not None else None,
            paths=[self.paths[i] for i in indices.tolist()] if self.paths is not None else None,
            name=name or self.name,
        )


@dataclass
class Dataset:
    """A named set of splits sharing one list of class names."""

    name: str
    class_names: list[str]
    splits: dict[str, Split]
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    label_edits: dict[str, int] = field(default_factory=dict)  # --exclude/--relabel: images each one changed
    # the val/test splits the source gives itself, each with what gives it ("DIR has its own valid/ folder"):
    # --val-split / --test-split hold out nothing for these (:func:`unused_split_options`)
    own_splits: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        split = next(iter(self.splits.values()))
        return int(split.images.shape[1]) if split.in_memory else _peek_channels(split)

    @property
    def native_size(self) -> tuple[int, int] | None:
        """(H, W) shared by every image of an in-memory set, else None."""
        split = next(iter(self.splits.values()))
        return tuple(split.images.shape[-2:]) if split.in_memory else None

    # what counts() counts, per class: "images" (one class per image), "pixels" (masks), ...
    counted: ClassVar[str] = "images"

    def counts(self) -> dict[str, list[int]]:
        """Per split, how many of :attr:`counted` each class has: images per class here (one class
        index per image); a data set with other targets (masks, label sets) counts them its own way."""
        return {name: torch.bincount(split.labels, minlength=self.num_classes).tolist()
                for name, split in self.splits.items()}

    def split_table(self) -> list[list[str]]:
        """Rows of (class, count per split...) for printing; the last row is the total."""
        counts = self.counts()
        names = list(counts)
        rows = [[cls] + [str(counts[s][i]) for s in names] for i, cls in enumerate(self.class_names)]
        rows.append(["total"] + [str(sum(counts[s])) for s in names])
        return [["class"] + names] + rows


def _peek_channels(split: Split) -> int:
    # Colour wins: one RGB file among the first few means the model should see RGB.
    channels = 1
    for index in range(min(len(split), 16)):
        try:
            channels = max(channels, int(split.load(index).shape[0]))
        except BadImageError:
            continue
    return channels


# --------------------------------------------------------------------------- entry point
def load_dataset(cfg, seed: int = 0, scoring: bool = False) -> Dataset:
    """Build a :class:`Dataset` from a :class:`vislab.core.config.DataConfig`. ``scoring``: data only
    scored by a trained model (``vislab evaluate --data``), which may hold a single class.

    Raises:
        DataError: nothing usable, a single class, missing files named by a CSV, ...
    """
    source = str(cfg.source)
    if source in BUILTIN:
        dataset = _load_builtin(source, cfg)
        if cfg.labels:
            dataset = _keep_classes(dataset, cfg.labels, source)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"--data {source!r}: no such file or folder, and not a built-in set "
                f"({', '.join(BUILTIN)}).{_builtin_hint(source)} Give a class-per-folder directory, a CSV file or "
                "a built-in name."
            )
        if path.is_dir():
            dataset = _load_folder(path, cfg, scoring)
        elif path.suffix.lower() == ".csv":
            dataset = _load_csv(path, cfg, scoring)
        else:
            raise DataError(f"--data {source!r} is a file but not a .csv; give a folder of class folders or a CSV")
    _check_usable(dataset, source, scoring)  # before splitting, so the message is about the data itself
    if cfg.test_csv:
        dataset.splits["test"] = _load_test_csv(Path(cfg.test_csv), dataset, cfg)
    own = _own_splits(source, dataset, cfg)
    # label_issues.csv names images as the source gives them: edit before the seeded val/test split
    dataset = apply_label_edits(dataset, getattr(cfg, "exclude", None), getattr(cfg, "relabel", None))
    dataset = _make_splits(dataset, cfg, seed, scoring)
    dataset.own_splits = own
    if cfg.max_per_class:
        dataset.splits["train"] = _cap_per_class(dataset.splits["train"], cfg.max_per_class, seed)
        if "val" in dataset.splits:
            # the same cap, or early stopping and the best checkpoint would rest on a validation set
            # larger than what is trained on (6,000 val vs 3,000 train for Fashion-MNIST at 300 a class);
            # the test split stays whole, and the split table says so
            dataset.splits["val"] = _cap_per_class(dataset.splits["val"], cfg.max_per_class, seed + 2)
    _check_usable(dataset, source, scoring)
    return dataset


def _builtin_hint(source: str) -> str:
    """`` Did you mean fashion-mnist?`` for a built-in name written otherwise (Fashion-MNIST, cifar-10,
    fashion); empty when nothing is close."""
    import difflib

    def plain(name: str) -> str:
        return re.sub(r"[^a-z0-9]", "", name.lower())

    same = [name for name in BUILTIN if plain(name) == plain(source)]
    close = same or difflib.get_close_matches(source.lower(), list(BUILTIN), n=1, cutoff=0.5)
    return f" Did you mean {close[0]}?" if close else ""


def _keep_classes(dataset: Dataset, wanted, source: str) -> Dataset:
    """``--labels`` on a built-in set: only those classes, renumbered in the set's order, in every split."""
    unknown = sorted(set(wanted) - set(dataset.class_names), key=_natural_key)
    if unknown:
        raise DataError(f"{source}: --labels names {unknown} that are not its classes ({dataset.class_names})")
    kept = [i for i, name in enumerate(dataset.class_names) if name in set(wanted)]
    renumber = torch.full((len(dataset.class_names),), -1, dtype=torch.int64)
    renumber[kept] = torch.arange(len(kept))
    splits = {}
    for name, split in dataset.splits.items():
        chosen = torch.nonzero(renumber[split.labels] >= 0).flatten()
        subset = split.subset(chosen, name=split.name)
        subset.labels = renumber[subset.labels]
        splits[name] = subset
    return Dataset(dataset.name, [dataset.class_names[i] for i in kept], splits, dataset.bad_files)


def _check_usable(dataset: Dataset, source: str, scoring: bool = False) -> None:
    train = dataset.splits.get("train")
    if train is None or len(train) == 0:
        bad = f" ({len(dataset.bad_files)} bad files skipped)" if dataset.bad_files else ""
        if Path(source).suffix.lower() == ".csv":
            raise DataError(f"{source}: no usable training image{bad}; its rows must name readable images (jpg, "
                            "png, bmp, gif, webp, tif), one row per image, e.g. cat/1.jpg,cat")
        raise DataError(
            f"{source}: no usable training image{bad}. Put images (jpg, png, bmp, gif, webp, tif) "
            "in one folder per class, e.g. data/cat/1.jpg, data/dog/2.jpg."
        )
    if scoring:
        return
    present = int((torch.bincount(train.labels, minlength=dataset.num_classes) > 0).sum())
    if dataset.num_classes < 2 or present < 2:
        raise DataError(
            f"{source}: only one class ({dataset.class_names[int(train.labels[0])]!r}) has training images; "
            "classification needs at least two. Add a folder (or CSV label) per class."
        )


# --------------------------------------------------------------------------- built-in sets
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _load_builtin(name: str, cfg) -> Dataset:
    if name == "digits":
        pixels, target = _digits()
        # 0..16 intensities -> 0..255 uint8, one gray channel
        images = torch.from_numpy(np.round(pixels * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
        return Dataset("digits", [str(i) for i in range(10)],
                       {"train": Split(torch.from_numpy(target), images=images)})
    if name in ("mnist", "fashion-mnist"):
        folder = _find_idx_folder(name, cfg.data_dir)
        splits = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = _read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
            labels = _read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
            splits[split] = Split(torch.from_numpy(labels.astype(np.int64)),
                                  images=torch.from_numpy(images).unsqueeze(1), name=split)
        classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
        return Dataset(name, classes, splits)
    if name == "cifar10":
        return _load_cifar10(cfg.data_dir)
    raise DataError(f"unknown built-in data set {name!r}; choose one of {', '.join(BUILTIN)}")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, (N, 8, 8) floats 0..16 and (N,) int64 labels: the file the
    package ships, read as its ``load_digits`` reads it, without importing scikit-learn (1 s with scipy)."""
    import io
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    roots = spec.submodule_search_locations if spec else None
    path = Path(next(iter(roots))) / "datasets" / "data" / "digits.csv.gz" if roots else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits  # another layout: the package's own reader

        digits = load_digits()
        return digits.images, digits.target.astype(np.int64)
    kind, fix = "scikit-learn's digits CSV", "reinstall scikit-learn (pip install --force-reinstall scikit-learn)"
    raw = read_bytes(path, kind, fix)
    with reading(path, kind, fix):
        data = np.loadtxt(io.StringIO(raw.decode()), delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_FILES = ", ".join(f"{stem}.gz" for stem in IDX_STEMS)


def _idx_names(stem: str) -> tuple[str, ...]:
    """The names an IDX file goes by: plain, gzipped, or with ``.idx`` (``train-images.idx3-ubyte``)."""
    return stem, f"{stem}.gz", stem.replace("-idx", ".idx")


def _idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / name for name in _idx_names(stem)):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: {stem}(.gz) is missing; the folder must hold the four standard IDX files "
                    f"({_IDX_FILES}, gzipped or not)")


def _find_idx_folder(name: str, data_dir) -> Path:
    """The folder holding ``name``'s four IDX files.

    A given ``data_dir`` (``--data-dir``) is the only place looked, and downloaded into: the run reads the
    files its config.yaml names, never another copy. Without one: Debian's ``/usr/share/datasets/NAME``,
    then the cache folder, else a download into the cache folder.
    """
    if data_dir:
        return _given_idx_folder(name, Path(data_dir).expanduser())
    candidates = [Path(DEBIAN_DIRS[name]), cache_dir() / name]
    found = _idx_folder_in(name, candidates)
    return found if found is not None else _download_mnist(name, None, candidates)


def _idx_folder_in(name: str, candidates, partial: bool = False) -> Path | None:
    """The first candidate (or its torchvision ``FashionMNIST/raw``, ``MNIST/raw`` folder) holding the
    training images; with ``partial``, any of the four IDX files (so that the missing ones get named)."""
    stems = IDX_STEMS if partial else IDX_STEMS[:1]
    for folder in candidates:
        raw = folder / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw"
        for place in (folder, raw):
            if any((place / file).exists() for stem in stems for file in _idx_names(stem)):
                return place
    return None


def _given_idx_folder(name: str, folder: Path) -> Path:
    """``--data-dir FOLDER`` for an IDX set: FOLDER/NAME or FOLDER itself; when neither holds any of the
    files, a download into FOLDER (an error naming FOLDER, the files and any other copy when that fails)."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{name}: --data-dir {folder} is a file, not a folder; give the folder holding the four "
                        f"IDX files ({_IDX_FILES}), or drop --data-dir")
    found = _idx_folder_in(name, [folder / name, folder], partial=True)
    if found is not None:
        return found  # _idx_file names a file missing among the four
    return _download_mnist(name, folder, [folder])


def _download_mnist(name: str, data_dir, searched) -> Path:
    from torchvision import datasets

    root = Path(data_dir).expanduser() if data_dir else cache_dir() / name
    state = _folder_state(root) if data_dir else ""
    kept = next(folder for folder in (root, *root.parents) if folder.exists())
    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as exc:  # torchvision raises URLError/RuntimeError variants when offline
        _remove_empty_folders(root / cls.__name__ / "raw", kept)
        if data_dir:
            raise DataError(
                f"{name}: not found in --data-dir {root} ({state}) and the download into it failed "
                f"({download_failure(exc)}). Put the four IDX files there ({_IDX_FILES}, gzipped or not)"
                f"{_other_copy(name)}."
            ) from None
        debian = " or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
        raise DataError(
            f"{name}: not found in {', '.join(map(str, searched))} and the download failed ({download_failure(exc)}). "
            f"Put the four IDX files in one of those folders (or pass --data-dir){debian}."
        ) from None
    return root / cls.__name__ / "raw"


def _other_copy(name: str) -> str:
    """For an error about ``--data-dir``: where the set is read from without it (the system's or the
    cache's copy), or how to install it; empty when there is neither."""
    other = _idx_folder_in(name, [Path(DEBIAN_DIRS[name]), cache_dir() / name])
    if other is not None:
        return f", or drop --data-dir to read the copy in {other}"
    if name == "fashion-mnist":
        return ", or `apt-get install dataset-fashion-mnist` and drop --data-dir"
    return ""


def _folder_state(folder: Path) -> str:
    """How a folder that lacks a data set's files stands, for the error: missing, empty or holding others."""
    if not folder.exists():
        return "no such folder"
    return "it holds other files" if any(folder.iterdir()) else "an empty folder"


def _remove_empty_folders(deepest: Path, kept: Path) -> None:
    """Remove ``deepest`` and its parents below ``kept`` while they are empty: the folders a failed download
    made, so that the user's folder is left as it was."""
    folder = deepest
    while folder != kept and kept in folder.parents:
        try:
            folder.rmdir()  # an empty folder only
        except OSError:
            return
        folder = folder.parent


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file's array. A gzipped one is decompressed once and its array kept in the cache folder
    (the four Fashion-MNIST files took 0.33 s to decompress on each run)."""
    return decoded_once(path, _decode_idx) if path.suffix == ".gz" else _decode_idx(path)


def _decode_idx(path: Path) -> np.ndarray:
    fix = ("replace it with the original file (e.g. from `apt-get install dataset-fashion-mnist` or the "
           "data set's site), or point --data-dir at a folder holding the four intact files")
    data = read_bytes(path, "an IDX file", fix)
    if len(data) < 4 or struct.unpack(">HBB", data[:4])[:2] != (0, 0x08):
        raise BadFileError(path, "is not an unsigned-byte IDX file (wrong magic number)", fix)
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise BadFileError(path, "is a truncated IDX file (its header is cut short)", fix)
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim)  # writable for torch
    if array.size != int(np.prod(shape)):
        raise BadFileError(path, f"is a truncated IDX file ({array.size} of {int(np.prod(shape))} bytes)", fix)
    return array.reshape(shape)


CIFAR10_BATCHES = "cifar-10-batches-bin"


def _load_cifar10(data_dir) -> Dataset:
    """CIFAR-10 from its *binary* release (no pickle is ever loaded).

    A given ``data_dir`` (``--data-dir``) is the only place looked, and downloaded into: its
    ``cifar-10-batches-bin`` folder, or the folder itself when it holds the batches. Without one,
    the cache folder's copy, else a download there.
    """
    given = Path(data_dir).expanduser() if data_dir else None
    if given is not None and given.exists() and not given.is_dir():
        raise DataError(f"cifar10: --data-dir {given} is a file, not a folder; give the folder holding "
                        f"{CIFAR10_BATCHES}/ (cifar-10-binary.tar.gz extracted), or drop --data-dir")
    root = given if given is not None else cache_dir() / "cifar10"
    if (root / CIFAR10_BATCHES).exists():
        folder = root / CIFAR10_BATCHES
    elif given is not None and any((given / batch).exists() for batch in ("data_batch_1.bin", "test_batch.bin")):
        folder = given  # --data-dir names the batches folder itself
    else:
        from torchvision.datasets.utils import download_and_extract_archive

        state = _folder_state(root) if given is not None else ""
        kept = next(place for place in (root, *root.parents) if place.exists())
        try:
            download_and_extract_archive(
                "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", str(root),
                md5="c32a1d4ab5d03f1284b67883e8d87530",
            )
        except Exception as exc:
            _remove_empty_folders(root, kept)
            if given is not None:
                cached = cache_dir() / "cifar10" / CIFAR10_BATCHES
                other = f", or drop --data-dir to read the copy in {cached}" if cached.exists() else ""
                raise DataError(
                    f"cifar10: {CIFAR10_BATCHES} not found in --data-dir {given} ({state}) and the download into "
                    f"it failed ({download_failure(exc)}). Extract cifar-10-binary.tar.gz there (giving "
                    f"{given / CIFAR10_BATCHES}/data_batch_1.bin ... test_batch.bin){other}."
                ) from None
            raise DataError(
                f"cifar10: {CIFAR10_BATCHES} not found under {root} and the download failed "
                f"({download_failure(exc)}). Extract cifar-10-binary.tar.gz there or pass --data-dir."
            ) from None
        folder = root / CIFAR10_BATCHES

    def read_batch(file: Path) -> np.ndarray:
        fix = "extract cifar-10-binary.tar.gz again (the binary version), or pass --data-dir"
        with reading(file, "a CIFAR-10 binary batch", fix):
            return np.fromfile(file, dtype=np.uint8).reshape(-1, 3073)

    def read(files):
        raw = np.concatenate([read_batch(folder / f) for f in files])
        return torch.from_numpy(raw[:, 0].astype(np.int64)), torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())

    train_labels, train_images = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    test_labels, test_images = read(["test_batch.bin"])
    return Dataset("cifar10", CIFAR10_CLASSES, {
        "train": Split(train_labels, images=train_images, name="train"),
        "test": Split(test_labels, images=test_images, name="test"),
    })


# --------------------------------------------------------------------------- folders
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _natural_key(name: str):
    """Numeric names sort as numbers (0, 1, 2, ..., 10), others alphabetically after them.

    Only ASCII digits count as a number ("²".isdigit() is true, yet int("²") fails); ties
    between names that differ only in case or leading zeros fall back to the name itself.
    """
    if _ASCII_DIGITS.fullmatch(name):
        return (0, int(name), name)
    return (1, 0, name.lower() + "\0" + name)


def list_images(folder) -> list[str]:
    """Image files under ``folder`` at any depth, sorted; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if is_image_file(f))
    return found


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: _natural_key(d.name))


def _split_folders(folder: Path) -> dict[str, Path]:
    """A folder's own split folders by split name (``valid/`` and ``validation/`` are ``val``)."""
    subdirs = {d.name.lower(): d for d in folder.iterdir() if d.is_dir()}
    return {_SPLIT_ALIASES[k]: v for k, v in subdirs.items() if k in _SPLIT_ALIASES}


def _own_splits(source: str, dataset: Dataset, cfg) -> dict[str, str]:
    """What gives each val/test split the source has before any is held out (``Dataset.own_splits``)."""
    path = Path(source).expanduser()
    folders = _split_folders(path) if source not in BUILTIN and path.is_dir() else {}
    own = {}
    for name in ("val", "test"):
        if name not in dataset.splits:
            continue
        if name == "test" and cfg.test_csv:
            own[name] = f"--test-csv {cfg.test_csv} is the test split"
        elif name in folders:
            own[name] = f"{source} has its own {folders[name].name}/ folder"
        else:
            own[name] = f"{source} has its own {name} split"
    return own


SPLIT_OPTIONS = {"val": ("data.val_split", "--val-split"), "test": ("data.test_split", "--test-split")}


def drop_unused_split_options(cfg, dataset: Dataset) -> list[str]:
    """Warn once for each split option the data's own split leaves unused (:func:`unused_split_options`) and
    set it back to its default, no longer the user's (config.yaml then says what was used), whatever the
    recipe; returns the dotted keys dropped."""
    from vislab.core.config import RECIPES, Config, set_value

    defaults = Config().data
    recorded = "user" in (cfg.recipe_choices or {})  # recipe auto and --time-budget record the user's keys
    if recorded:
        user = cfg.user_given()
    else:  # a named recipe (or none): a split option other than the recipe's value is the user's
        recipe = RECIPES.get(cfg.recipe or "", {})
        user = {key for key, _ in SPLIT_OPTIONS.values()
                if getattr(cfg.data, key.split(".")[1]) != recipe.get(key, getattr(defaults, key.split(".")[1]))}
    unused = unused_split_options(dataset, cfg.data, user)
    for key, message in unused.items():
        warnings.warn(message, UserWarning)
        set_value(cfg, key, getattr(defaults, key.split(".")[1]), "the data's own split")
    if unused:  # config.yaml's recipe_choices: not_used, the options and why
        cfg.recipe_choices = {**(cfg.recipe_choices or {}), "not_used": unused}
        if recorded:
            cfg.recipe_choices["user"] = sorted(user - set(unused))
    return list(unused)


def unused_split_options(dataset: Dataset, data_cfg, given) -> dict[str, str]:
    """{dotted key: one-line warning} for each split option among ``given`` (the keys the user set) that
    holds out nothing because the data has that split of its own (a ``valid/`` or ``test/`` folder, a
    built-in test split, ``--test-csv``): the data's own split is always the one used, ``0`` included.
    The default value is not warned about: it means "when the data has no such split" (a run's
    config.yaml, given back with ``--config``, holds it).

    Example:
        >>> ds = Dataset("toy", ["a", "b"], {"train": Split(torch.tensor([0, 1]), images=torch.zeros(2, 1, 4, 4,
        ...              dtype=torch.uint8))}, own_splits={"test": "toy has its own test split"})
        >>> from vislab.core.config import DataConfig
        >>> unused_split_options(ds, DataConfig(test_split=0.3), {"data.test_split"})
        {'data.test_split': '--test-split 0.3 is not used: toy has its own test split'}
    """
    unused = {}
    defaults = type(data_cfg)()
    for name, why in dataset.own_splits.items():
        key, flag = SPLIT_OPTIONS[name]
        value = getattr(data_cfg, key.split(".")[1])
        if key not in given or value is None or value == getattr(defaults, key.split(".")[1]):
            continue
        note = "" if value else (" (a split of the data's own is always used, 0 included"
                                 + ("; to train without validation, move that folder out of the data)"
                                    if name == "val" else ")"))
        unused[key] = f"{flag} {float(value):g} is not used: {why}{note}"
    return unused


def _load_folder(folder: Path, cfg, scoring: bool = False) -> Dataset:
    from vislab.data.masks import is_segmentation_folder

    if is_segmentation_folder(folder):  # images/ and masks/ are not two classes
        raise DataError(f"{folder} holds images/ and masks/: a segmentation set, not one folder per class; give "
                        "--task segmentation (train, lr-find, audit, augment-preview), or evaluate a segmentation "
                        "run on it")
    given = _split_folders(folder)
    if "train" in given:
        class_names = [d.name for d in _class_dirs(given["train"])]
        roots = given
    else:
        class_names = [d.name for d in _class_dirs(folder)]
        roots = {"train": folder}
    loose = {root: _loose_images(root) for root in dict.fromkeys([folder, *roots.values()])}
    if not class_names:
        here = (f" (its {len(loose[folder])} image(s), e.g. {Path(loose[folder][0]).name!r}, lie directly in it)"
                if loose[folder] else "")
        raise DataError(
            f"{folder}: no class folders found{here}. Expected one sub-folder per class "
            f"(e.g. {folder}/cat/*.jpg) or train/ val/ test/ folders holding class folders."
        )
    if len(class_names) == 1 and loose[roots["train"]] and not scoring:
        images = loose[roots["train"]]
        raise DataError(
            f"{roots['train']}: {len(images)} image(s) lie directly in it (first: {Path(images[0]).name!r}), beside "
            f"one class folder {class_names[0]!r}; classification needs a folder per class: move the images into "
            f"class folders (e.g. {roots['train']}/cat/1.jpg), or give the folder that holds the class folders"
        )
    _warn_if_ignored(folder, given, loose)
    _warn_if_names_differ_only_in_case(roots["train"], "class folders", class_names)
    every_class = set(class_names)
    if cfg.labels:  # --labels: only these classes, in every split (as for a CSV)
        unknown = sorted(set(cfg.labels) - every_class, key=_natural_key)
        if unknown and not scoring:  # data only scored may lack some of the model's classes
            raise DataError(f"{folder}: --labels names {unknown} that are not class folders "
                            f"({class_names[:10]}{'...' if len(class_names) > 10 else ''})")
        class_names = [name for name in class_names if name in set(cfg.labels)]
    index = {name: i for i, name in enumerate(class_names)}
    splits, bad, listed = {}, [], {}
    for split, root in roots.items():
        paths, labels = [], []
        for class_dir in _class_dirs(root):
            if class_dir.name in every_class and class_dir.name not in index:
                continue  # a class --labels leaves out
            if class_dir.name not in index:
                raise DataError(
                    f"{class_dir}: class {class_dir.name!r} is not among the training classes "
                    f"{class_names}; every split must use the training folders' class names."
                )
            files = list_images(class_dir)
            paths += files
            labels += [index[class_dir.name]] * len(files)
            listed[split, class_dir.name] = (class_dir, files)
        good, good_labels, split_bad = validate_files(paths, labels, cfg.workers)
        bad += split_bad
        splits[split] = Split(torch.tensor(good_labels, dtype=torch.int64), paths=good, name=split)
    _refuse_classes_without_images(class_names, splits, listed, bad, scoring)
    return Dataset(folder.name, class_names, splits, bad)


def _loose_images(folder: Path) -> list[str]:
    """The image files directly in ``folder`` (not in a class folder), sorted; hidden ones skipped."""
    return sorted((str(f) for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and is_image_file(f.name)), key=lambda name: _natural_key(Path(name).name))


def _warn_if_ignored(folder: Path, given: dict[str, Path], loose: dict[Path, list[str]]) -> None:
    """Images a class-per-folder set does not read, said in one warning: image files directly in the data
    folder (or in a split folder) beside the class folders, and folders of images beside train/ val/ test/."""
    ignored = [Path(name).relative_to(folder).as_posix() for images in loose.values() for name in images]
    if "train" in given:
        splits = set(given.values())
        for other in _class_dirs(folder):
            if other not in splits and list_images(other):
                ignored.append(f"{other.name}/")
    if not ignored:
        return
    where = "beside train/ val/ test/ and their class folders" if "train" in given else "beside the class folders"
    _warn_once(("ignored files", str(folder), tuple(ignored)),
               f"{folder}: {len(ignored)} image file(s) or folder(s) of images {where} are not read (first: "
               f"{', '.join(ignored[:3])}{', ...' if len(ignored) > 3 else ''}); move each image into its class's "
               "folder to use it")


def _refuse_classes_without_images(class_names, splits, listed, bad, scoring: bool) -> None:
    """A class folder without a readable image (empty, or its files all bad) cannot be learned, and a model
    would still get an output for it: an error naming the folder and the fix, as torchvision's ImageFolder
    refuses one. For training that is a class without a readable image in train/ (a class missing from test/
    only is the audit's per-split warning); data only scored needs one in some split. When no class has a
    training image, :func:`_check_usable` says so instead."""
    counts = {name: torch.bincount(split.labels, minlength=len(class_names)).tolist() for name, split in splits.items()}
    if not sum(counts.get("train", [])):
        return
    reasons = dict(bad)
    problems = []
    for label, name in enumerate(class_names):
        if scoring and any(counts[split][label] for split in counts):
            continue
        if not scoring and counts["train"][label]:
            continue
        class_dir, files = listed.get(("train", name), (None, []))
        if class_dir is None:
            continue
        elsewhere = [f"{split}/{name} holds {counts[split][label]}" for split in counts
                     if split != "train" and counts[split][label]]
        if files:
            problem = (f"{class_dir}: none of its {len(files)} image file(s) can be read (first: "
                       f"{Path(files[0]).name}: {reasons.get(files[0], 'unreadable')})")
            fix = "replace them with readable images or remove the folder"
        else:
            problem = f"{class_dir} holds no images{_other_files(class_dir)}"
            fix = "add images (jpg, png, bmp, gif, webp, tif) to it or remove the folder"
        if elsewhere:
            problem += f" while {', '.join(elsewhere)}"
            fix = "move some into it, or remove the class from every split"
        problems.append((problem, fix))
    if len(problems) == 1:
        problem, fix = problems[0]
        raise DataError(f"{problem}, so it cannot be a class of this run; {fix}")
    if problems:
        shown = "; ".join(problem for problem, _ in problems[:5]) + ("; ..." if len(problems) > 5 else "")
        raise DataError(f"{len(problems)} class folders have no readable image, so they cannot be classes of this "
                        f"run ({shown}); add images to them or remove the folders")


def _other_files(folder: Path) -> str:
    """`` (its 3 file(s), e.g. 'a.heic', are not ... images)`` for a class folder holding visible files of a
    format vislab does not read, else nothing."""
    others = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        others += [str(Path(root, name).relative_to(folder)) for name in sorted(names) if not name.startswith(".")]
    if not others:
        return ""
    return f" (its {len(others)} file(s), e.g. {others[0]!r}, are not jpg, png, bmp, gif, webp or tif images)"


# file lists whose check is kept in the cache folder, the least recently used dropped first
KEPT_CHECKS = 64


def validate_files(paths, labels, workers: int = 2):
    """Decode every file once; returns (good_paths, good_labels, [(path, reason), ...]).

    Every command that reads a folder or CSV checks its files, and decoding them is most of that (10,000
    small PNGs: 2.9 s on two cores). The outcome is kept in ``cache_dir()/checked``, named by a digest of
    each file's path, size and modification time (and the decoder's version): the same files are checked
    once, and any file added, removed, replaced or touched checks them all again."""
    key = _check_key(paths)
    reasons = _kept_check(key, len(paths))
    if reasons is None:
        def check(path):
            try:
                read_image(path)
                return None
            except BadImageError as exc:
                return exc.reason

        with ThreadPoolExecutor(max_workers=max(1, workers or 1)) as pool:
            reasons = list(pool.map(check, paths))
        if key is not None:
            _keep_check(key, reasons)
    good = [(p, y) for p, y, r in zip(paths, labels, reasons) if r is None]
    bad = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    return [p for p, _ in good], [y for _, y in good], bad


def _check_key(paths) -> str | None:
    """A digest of each file's path, size and modification time, and of the decoder; None when a file
    cannot be stat'ed or has just been modified (:func:`~vislab.core.files.stat_digest`): checked every time."""
    import hashlib

    import vislab.data.images as images

    digest = hashlib.sha256(code_digest([images.__file__], ("pillow",)).encode())
    return digest.hexdigest() if stat_digest(paths, digest) else None


def _kept_check(key: str | None, count: int) -> list | None:
    """The kept outcome of a check (one reason or None a file), or None when there is none to trust."""
    if key is None:
        return None
    from vislab.core.errors import UserError
    from vislab.core.files import read_json

    path = cache_dir() / "checked" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        reasons = read_json(path, "a kept file check", f"delete {path}")
        if not (isinstance(reasons, list) and len(reasons) == count and
                all(r is None or isinstance(r, str) for r in reasons)):
            raise ValueError("not one reason a file")
        os.utime(path)  # recently used: kept longest
    except (UserError, OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    return reasons


def _keep_check(key: str, reasons: list) -> None:
    """Keep a check's outcome (written whole, then renamed into place); a cache that cannot be written only
    costs the next command the check."""
    import json

    root = cache_dir() / "checked"
    with contextlib.suppress(OSError):
        with written_whole(root / f"{key}.json") as partial:
            partial.write_text(json.dumps(reasons))
        keep_recent(list(root.glob("*.json")), KEPT_CHECKS)


# --------------------------------------------------------------------------- CSV
_CSV_FIX = "give a CSV (UTF-8 text) with a header row, then one row per image, e.g. file,label"
# the cell separators a labels CSV may use: spreadsheets in many locales write ; and exports often use tabs
CSV_SEPARATORS = (",", ";", "\t", "|")
_SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _csv_separator(path: Path, text: str) -> str:
    """The separator of a CSV's cells: of :data:`CSV_SEPARATORS`, the one that splits the header into two
    or more cells and the most of the first rows into as many (a comma on a tie); a comma when none does.

    Example:
        >>> import tempfile
        >>> table = Path(tempfile.mkdtemp()) / "labels.csv"
        >>> _ = table.write_text("file;label\\na.png;cat\\n")
        >>> _csv_separator(table, table.read_text()), _csv_separator(table, "file,labels\\na.png,cat;dog\\n")
        (';', ',')
    """
    lines = [line for line in text.splitlines() if line.strip()][:50]
    best, best_fit = ",", -1
    with reading(path, "a labels CSV", _CSV_FIX):
        for sep in CSV_SEPARATORS:
            rows = list(csv.reader(lines, delimiter=sep, skipinitialspace=True))
            if not rows or len(rows[0]) < 2:
                continue
            fit = sum(len(row) == len(rows[0]) for row in rows[1:])
            if fit > best_fit:
                best, best_fit = sep, fit
    return best


def _read_csv(path: Path, example: tuple[str, str] = ("cat/1.jpg", "cat")) -> tuple[list[str], list[dict]]:
    """A CSV's header and its rows as dicts, each cell stripped of surrounding spaces; the separator is
    detected (:func:`_csv_separator`). A row with more or fewer cells than the header is refused, and so are
    a header of one column (a separator that is none of these) and a header without rows (``example``: the
    file and label cells such a row would hold)."""
    text = read_text(path, "a labels CSV", _CSV_FIX)
    sep = _csv_separator(path, text)
    with reading(path, "a labels CSV", _CSV_FIX):
        # skipinitialspace: "x.png, cat" is the label "cat", and a quoted cell after a space is still quoted
        rows = list(csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True))
    lines = [(number, [cell.strip() for cell in row]) for number, row in enumerate(rows, start=1)
             if any(cell.strip() for cell in row)]
    if not lines:
        raise BadFileError(path, "holds no rows", _CSV_FIX)
    (_, header), body = lines[0], lines[1:]
    if len(header) == 1:
        raise DataError(f"{path}: its header row {header[0]!r} is a single column, so its separator looks wrong "
                        "(or it has no label column); separate the cells with a comma, semicolon, tab or |, "
                        "e.g. file,label")
    if len(set(header)) != len(header) or not all(header):
        raise BadFileError(path, f"its header row {header[:8]} has an empty or repeated column name", _CSV_FIX)
    if not body:
        raise DataError(f"{path}: has a header row ({sep.join(header)}) but no rows; add one row per image below "
                        f"it, e.g. {sep.join(example)}")
    for number, row in body:
        if len(row) != len(header):
            raise BadFileError(path, f"row {number} has {len(row)} cells where the header has {len(header)} "
                                     f"({row[:4]})",
                               f"fix that row (a {_SEPARATOR_NAMES[sep]} inside a name needs quotes)")
    return header, [dict(zip(header, row)) for _, row in body]


def _refuse_empty_cells(path: Path, rows: list[dict], columns, label_col: str | None = None) -> None:
    """An empty file or label cell is an error naming the row, never a file "" or a class named "". Where
    other rows' ``label_col`` cells hold several labels, a multi-label CSV (in which an image may have
    none) is the likely mistake: the error says so."""
    for number, row in enumerate(rows, start=2):
        for column in columns:
            if not row[column].strip():
                cells = _label_lists(sorted({r[column].strip() for r in rows if r[column].strip()}))
                several = column == label_col and cells is not None and any(len(c) > 1 for c in cells.values())
                hint = (" (its other rows hold several labels in a cell: if an image may have several labels, or "
                        "none, train with --task multilabel)" if several else "")
                raise DataError(f"{path}: row {number} has an empty {column!r} cell; fill it in or delete the "
                                f"row{hint}")


def _resolve_file(root: Path, name: str) -> Path | None:
    """The file a CSV cell names under ``root``; a name without an extension may omit it, and a Windows
    path (``imgs\\cat 0.png``) is also tried with ``/``, where ``\\`` is a character of a name, not a separator."""
    found = _resolve_name(root, name)
    if found is None and "\\" in name and os.sep == "/":
        found = _resolve_name(root, name.replace("\\", "/"))
    return found


def _resolve_name(root: Path, name: str) -> Path | None:
    candidate = root / name
    if candidate.is_file():
        return candidate
    if not Path(name).suffix:  # e.g. dog-breeds labels.csv gives ids without ".jpg"
        for ext in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".webp"):
            if (root / f"{name}{ext}").is_file():
                return root / f"{name}{ext}"
    return None


def missing_files_hint(names) -> str:
    """What a list of missing file names suggests beyond a wrong folder: Windows paths, read with / too."""
    if any("\\" in name for name in names):
        return (" (the names use \\ as a folder separator, as Windows writes paths; read with / instead, they are "
                "missing too)")
    return ""


def drop_repeated_rows(path: Path, rows: list[tuple[str, str, object, str]]) -> list[int]:
    """The rows to keep of a CSV's (file name, resolved path, label, label as shown) rows: a row that repeats
    an earlier one's file and label is dropped, so that no image counts twice or lands in both the training
    and the test split; a file given different labels is kept under each. One warning says each."""
    kept, repeated, labels_of, seen = [], [], {}, set()
    for number, (name, resolved, label, shown) in enumerate(rows):
        same_file = os.path.normpath(resolved)
        if (same_file, label) in seen:
            repeated.append(name)
            continue
        seen.add((same_file, label))
        labels_of.setdefault(same_file, (name, []))[1].append(shown)
        kept.append(number)
    conflicting = [(name, shown) for name, shown in labels_of.values() if len(shown) > 1]
    version = (str(path), _modified(path))
    if repeated:
        _warn_once(("repeated rows", *version),
                   f"{path}: {len(repeated)} row(s) repeat an earlier row's file and label (first: "
                   f"{repeated[0]!r}) and were dropped, so that no image counts twice or lands in both "
                   "training and test")
    if conflicting:
        name, shown = conflicting[0]
        _warn_once(("conflicting labels", *version),
                   f"{path}: {len(conflicting)} file(s) are listed with different labels (first: {name!r} as "
                   f"{' and '.join(repr(s) for s in shown)}); each row is kept, so the image is trained "
                   "under each; keep the right row and delete the others")
    return kept


# what _warn_once said in this process
_WARNED: set[tuple] = set()


def _warn_once(key: tuple, message: str) -> None:
    """``warnings.warn(message)`` the first time ``key`` comes: a run reads its CSV more than once (the
    data, the audit, the test split), and the user is told a thing about it once."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message)


def _modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


# the column names a CSV's file and label columns are found by, in order, when no flag names them
CSV_FILE_COLUMNS = ("file", "filename", "path", "Path", "image", "image_name", "id")
CSV_LABEL_COLUMNS = ("label", "labels", "class", "ClassId", "breed", "target", "tags")


def _csv_columns(path: Path, columns: list[str], file_col, label_col) -> tuple[str, str]:
    file_col = file_col or next((c for c in CSV_FILE_COLUMNS if c in columns), None)
    label_col = label_col or next((c for c in CSV_LABEL_COLUMNS if c in columns), None)
    for flag, col, what, names in (("--file-col", file_col, "image file names", CSV_FILE_COLUMNS),
                                   ("--label-col", label_col, "labels", CSV_LABEL_COLUMNS)):
        if col is None:
            raise DataError(f"{path}: no column of {what} found (looked for {', '.join(names)}); its columns are "
                            f"{columns}. Name the column with {flag} COLUMN.")
        if col not in columns:
            raise DataError(f"{path}: {flag} {col!r} is not a column; its columns are {columns}.")
    return file_col, label_col



def _label_lists(cells) -> dict[str, list[str]] | None:
    """Each labels cell as the labels ``--task multilabel`` reads in it (its separator detected; a cell it
    cannot split stands for itself), or None when the cells mix separators: no list of labels in one form."""
    from vislab.data.multilabel import detect_separator, split_cell

    try:
        sep = detect_separator(cells)
    except DataError:
        return None
    return {cell: split_cell(cell, sep) or [cell] for cell in cells}


def _warn_if_several_labels(path: Path, label_col: str, class_names: list[str]) -> None:
    """A classification CSV whose classes are combinations of the same labels ("cat dog", "cat"): most
    likely a multi-label set read as one class per combination. Say so; the user decides.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     _warn_if_several_labels(Path("tags.csv"), "tags", ["cat", "cat dog", "dog", "car dog"])
        >>> "--task multilabel" in str(seen[0].message)
        True
        >>> _warn_if_several_labels(Path("pets.csv"), "label", ["great dane", "pug", "shih tzu"])  # one label each
    """
    tokens = _label_lists(class_names)
    if tokens is None:
        return
    combined = [name for name, parts in tokens.items() if len(parts) > 1]
    uses = Counter(part for parts in tokens.values() for part in set(parts))  # class names holding each label
    # several labels per cell, each of which is also used on its own or in other cells
    if len(uses) < len(class_names) and any(all(uses[part] > 1 for part in tokens[name]) for name in combined):
        _warn_once(("several labels", str(path), label_col),
                   f"{path}: {len(combined)} of the {len(class_names)} classes in column {label_col!r} are "
                   f"several labels (e.g. {combined[0]!r}), so each combination is trained as a class of its "
                   "own; if an image can have several labels, train with --task multilabel")


def _load_csv(path: Path, cfg, scoring: bool = False) -> Dataset:
    columns, rows = _read_csv(path)
    file_col, label_col = _csv_columns(path, columns, cfg.file_col, cfg.label_col)
    _refuse_empty_cells(path, rows, (file_col, label_col), label_col=label_col)
    root = _image_root(cfg, path, file_col) if cfg.image_root else path.parent
    if cfg.labels:
        wanted = set(cfg.labels)
        every_label = sorted({r[label_col] for r in rows}, key=_natural_key)
        rows = [r for r in rows if r[label_col] in wanted]
        missing_labels = wanted - {r[label_col] for r in rows}
        if missing_labels and not scoring:  # data only scored may lack some of the model's classes
            raise DataError(f"{path}: --labels names {sorted(missing_labels, key=_natural_key)} that no row of "
                            f"{label_col!r} has{_label_suggestions(missing_labels, every_label)}; its labels are "
                            f"{every_label[:10]}{'...' if len(every_label) > 10 else ''}")
    class_names = sorted({r[label_col] for r in rows}, key=_natural_key)
    _warn_if_several_labels(path, label_col, class_names)
    _warn_if_names_differ_only_in_case(path, f"labels in column {label_col!r}", class_names)
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels, names, missing = [], [], [], []
    for row in rows:
        resolved = _resolve_file(root, row[file_col])
        if resolved is None:
            missing.append(row[file_col])
        else:
            paths.append(str(resolved))
            labels.append(index[row[label_col]])
            names.append(row[file_col])
    if missing:
        raise DataError(
            f"{path}: {len(missing)} of {len(rows)} files named in column {file_col!r} are missing under "
            f"{root} (first: {missing[:3]}){missing_files_hint(missing)}. Fix the paths or set --image-root to the "
            "folder holding them."
        )
    kept = drop_repeated_rows(path, [(name, file, label, class_names[label])
                                     for name, file, label in zip(names, paths, labels)])
    paths, labels = [paths[i] for i in kept], [labels[i] for i in kept]
    good, good_labels, bad = validate_files(paths, labels, cfg.workers)
    _refuse_unreadable_classes(path, label_col, class_names, paths, labels, good_labels, bad)
    return Dataset(path.stem, class_names, {"train": Split(torch.tensor(good_labels, dtype=torch.int64), paths=good)}, bad)


def _image_root(cfg, path: Path, file_col: str) -> Path:
    """``--image-root`` as a folder, or an error naming what it is instead and the fix."""
    root = Path(cfg.image_root).expanduser()
    if root.is_dir():
        return root
    fix = (f"set --image-root to the folder that the names in column {file_col!r} of {path} are relative to "
           "(or leave it out to read them relative to the CSV's own folder)")
    if root.exists():
        raise DataError(f"--image-root {cfg.image_root}: a file, not a folder; {fix}")
    raise DataError(f"--image-root {cfg.image_root}: no such folder; {fix}")


def _label_suggestions(unknown, labels) -> str:
    """`` (did you mean 'dog'?)`` for names close to ``labels`` (difflib), else nothing."""
    import difflib

    close = [match for name in sorted(unknown, key=_natural_key)
             for match in difflib.get_close_matches(name, labels, n=1, cutoff=0.6)]
    return f" (did you mean {' / '.join(repr(name) for name in close)}?)" if close else ""


def _plain_name(name: str) -> str:
    """A class name without case or spacing: 'Big Cat', 'big  cat' and 'big_cat' are all 'big cat'."""
    return " ".join(re.sub(r"[_\s]+", " ", name).split()).casefold()


def _warn_if_names_differ_only_in_case(where: Path, what: str, class_names) -> None:
    """Class names that differ only in case or spacing ('Cat' and 'cat', 'Big Cat/' and 'big cat/') are each
    trained as a class of their own, most likely by mistake: one warning lists them.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     _warn_if_names_differ_only_in_case(Path("pets.csv"), "labels in column 'label'", ["Cat", "cat", "dog"])
        >>> str(seen[0].message).split(";")[0]
        "pets.csv: labels in column 'label' that differ only in case or spacing are separate classes: 'Cat' and 'cat'"
    """
    groups: dict[str, list[str]] = {}
    for name in class_names:
        groups.setdefault(_plain_name(name), []).append(name)
    alike = [names for names in groups.values() if len(names) > 1]
    if not alike:
        return
    shown = "; ".join(" and ".join(repr(name) for name in names) for names in alike[:5])
    more = f"; ... ({len(alike)} groups)" if len(alike) > 5 else ""
    _warn_once(("names differ in case", str(where), tuple(class_names)),
               f"{where}: {what} that differ only in case or spacing are separate classes: {shown}{more}; "
               "if they are one class, write its name one way")


def _refuse_unreadable_classes(path: Path, label_col: str, class_names, paths, labels, good_labels, bad) -> None:
    """A CSV class whose every file is unreadable cannot be learned, nor scored: an error naming it and the
    first file, as for a class folder of bad files (when no class has a readable file, the error says that)."""
    if not good_labels:
        return
    readable = set(good_labels)
    reasons = dict(bad)
    for label, name in enumerate(class_names):
        if label in readable:
            continue
        files = [file for file, y in zip(paths, labels) if y == label]
        raise DataError(f"{path}: none of the {len(files)} file(s) of class {name!r} (column {label_col!r}) can be "
                        f"read (first: {files[0]}: {reasons.get(files[0], 'unreadable')}), so it cannot be a class; "
                        "replace them with readable images or delete those rows")


def _load_test_csv(path: Path, dataset: Dataset, cfg) -> Split:
    """A test CSV whose labels are class IDs or names of the training classes (e.g. GTSRB Test.csv).

    A label is a training class's name, or a number that names a class folder called by the
    same number ("07" -> folder ``7``), or an ID that ``--class-ids FILE`` maps to a class name.
    ``--labels`` keeps only those classes' rows, as it does for the training CSV.
    """
    if not path.is_file():
        raise DataError(f"--test-csv {path}: no such file")
    columns, rows = _read_csv(path)
    file_col, label_col = _csv_columns(path, columns, cfg.test_file_col, cfg.test_label_col)
    _refuse_empty_cells(path, rows, (file_col, label_col))
    index = {name: i for i, name in enumerate(dataset.class_names)}
    ids = read_class_ids(Path(cfg.class_ids), dataset.class_names) if getattr(cfg, "class_ids", None) else {}
    wanted = set(cfg.labels) if cfg.labels else None
    chosen = []  # (file name, class index) of the rows kept
    for row in rows:
        label = row[label_col].strip()
        if label in ids:
            label = ids[label]
        elif label not in index and re.fullmatch(r"\d+", label):
            if str(int(label)) in ids:
                label = ids[str(int(label))]
            elif str(int(label)) in index:
                label = str(int(label))  # "07" -> folder "7"
        if wanted is not None and label not in wanted:
            continue  # --labels: a class this run does not train on
        if label not in index:
            raise DataError(_test_label_message(path, label, dataset.class_names, bool(ids)))
        chosen.append((row[file_col], index[label]))
    names = [name for name, _ in chosen]
    labels = [label for _, label in chosen]
    paths = [str(found) for found in _test_files(path, names, cfg, file_col)]
    if not paths:
        raise DataError(f"{path}: no row of column {label_col!r} names one of the training classes "
                        f"{dataset.class_names[:10]}; check --labels and the CSV's label column")
    kept = drop_repeated_rows(path, [(name, file, label, dataset.class_names[label])
                                     for name, file, label in zip(names, paths, labels)])
    paths, labels = [paths[i] for i in kept], [labels[i] for i in kept]
    good, good_labels, bad = validate_files(paths, labels, cfg.workers)
    dataset.bad_files.extend(bad)
    return Split(torch.tensor(good_labels, dtype=torch.int64), paths=good, name="test")


def _test_files(path: Path, names: list[str], cfg, file_col: str) -> list[Path]:
    """The files a test CSV's rows name: under ``--image-root`` when given, as for the training CSV, else
    under the test CSV's own folder; a test CSV whose names are relative to its own folder still works with
    ``--image-root`` (its files are looked for there when some are missing under the image root). When every
    name is found under both, to different files, the image root's are used and a warning says so."""
    own = path.parent
    roots = list(dict.fromkeys([_image_root(cfg, path, file_col), own] if cfg.image_root else [own]))
    resolved = {root: [_resolve_file(root, name) for name in names] for root in roots}
    missing = {root: [name for name, file in zip(names, resolved[root]) if file is None] for root in roots}
    usable = [root for root in roots if not missing[root]]
    if usable:
        root = usable[0]
        if len(usable) > 1 and any(not a.samefile(b) for a, b in zip(resolved[root], resolved[usable[1]])):
            _warn_once(("test files in two folders", str(path), _modified(path), str(root)),
                       f"{path}: its files are found both under --image-root {root} and under the CSV's own folder "
                       f"{own}; those under --image-root are tested, as for the training CSV; if that is wrong, "
                       "give the folder holding them with --image-root")
        return resolved[root]
    root = roots[0]
    gone = missing[root]
    tried = f" (nor under the CSV's own folder {own})" if len(roots) > 1 else ""
    raise DataError(f"{path}: {len(gone)} of {len(names)} files named in column {file_col!r} are missing under "
                    f"{root}{tried} (first: {gone[:3]}){missing_files_hint(gone)}. Fix the paths or set --image-root "
                    "to the folder holding them.")


def _test_label_message(path: Path, label: str, class_names: list[str], have_ids: bool) -> str:
    shown = f"{class_names[:10]}{'...' if len(class_names) > 10 else ''}"
    if re.fullmatch(r"\d+", label) and not have_ids:
        return (f"{path}: label {label!r} is a numeric ID, and a numeric ID matches the class folder named by the "
                f"same number ('07' -> folder 7); the training classes are {shown}, with no folder {int(label)}. "
                "Pass --class-ids FILE mapping each ID to a class name (a CSV of id,class rows, or the class "
                "names one per line in ID order)")
    hint = " (--class-ids maps it to no training class)" if have_ids else ""
    return f"{path}: label {label!r} is not a training class{hint}; the training classes are {shown}"


def read_class_ids(path: Path, class_names: list[str]) -> dict[str, str]:
    """``--class-ids FILE``: numeric ID -> class name, from ``id,class`` rows or names one per line in ID order.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "ids.csv"
        >>> _ = f.write_text("0,cat\\n1,dog\\n")
        >>> read_class_ids(f, ["cat", "dog"])
        {'0': 'cat', '1': 'dog'}
    """
    fix = "give a CSV of id,class rows or the class names one per line in ID order"
    text = read_text(path, "a class-ids file (--class-ids)", fix)
    mapping: dict[str, str] = {}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        if "," in line:
            key, name = (part.strip() for part in line.split(",", 1))
            if not re.fullmatch(r"\d+", key):
                if number == 0:
                    continue  # a header row
                raise DataError(f"--class-ids {path}: line {number + 1} {line!r} does not start with a numeric ID")
            mapping[str(int(key))] = name
        else:
            mapping[str(number)] = line
    unknown = sorted(set(mapping.values()) - set(class_names))
    if unknown:
        raise DataError(f"--class-ids {path}: {unknown[:5]} are not training classes ({class_names[:10]}); "
                        "each ID must map to a class folder's name")
    return mapping


# --------------------------------------------------------------------------- splits
def _count(value, total: int, flag: str = "the split") -> int:
    """A fraction (0 < v < 1) or an absolute count (a whole number; config.validate checks both)."""
    if value is None or value == 0:
        return 0
    value = float(value)
    count = int(round(value * total)) if value < 1 else int(value)
    if count >= total:
        raise DataError(f"{flag} {value:g} holds out {count} of the {total} training images and leaves none to "
                        f"train on; give a fraction in (0, 1) (e.g. {flag} 0.1) or a count below {total}")
    return count


def stratified_split(labels: torch.Tensor, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) indices; held-out classes in proportion, seeded (scikit-learn's ``train_test_split``,
    in a helper interpreter when a run has them: :mod:`vislab.core.background`)."""
    from vislab.core.background import compute

    return compute("vislab.data.stratify:stratified_indices", np.asarray(labels), count, seed)


def _make_splits(dataset: Dataset, cfg, seed: int, scoring: bool = False) -> Dataset:
    splits = dataset.splits
    train = splits["train"]
    before = torch.bincount(train.labels, minlength=dataset.num_classes) if train.labels.ndim == 1 else None
    flags = []  # the options that held images out
    if "test" not in splits:
        n_test = _count(cfg.test_split, len(train), "--test-split")
        if n_test:
            rest, held = stratified_split(train.labels, n_test, seed)
            splits["test"], train = train.subset(held, "test"), train.subset(rest, "train")
            flags.append("--test-split")
    if "val" not in splits:
        n_val = _count(cfg.val_split, len(train), "--val-split")
        if n_val:
            rest, held = stratified_split(train.labels, n_val, seed + 1)
            splits["val"], train = train.subset(held, "val"), train.subset(rest, "train")
            flags.append("--val-split")
    splits["train"] = train
    dataset.splits = {k: splits[k] for k in SPLIT_NAMES if k in splits}
    if before is not None and flags and not scoring:
        _refuse_classes_held_out(dataset, before, cfg, flags)
    return dataset


def _refuse_classes_held_out(dataset: Dataset, before: torch.Tensor, cfg, flags: list[str]) -> None:
    """A class whose every image the val/test hold-out took cannot be learned: an error naming it and the
    fix, as a class folder with no image in ``train/`` is refused (:func:`_refuse_classes_without_images`).
    The hold-out keeps a class's last image to train on while it can; it cannot when ``flags`` (the options
    that held images out) leave fewer training images than there are classes."""
    counts = dataset.counts()
    train = counts["train"]
    lost = [label for label in range(dataset.num_classes) if before[label] and not train[label]]
    if not lost:
        return

    def shown(label: int) -> str:
        held = ", ".join(f"{name} {counts[name][label]}" for name in counts if name != "train" and counts[name][label])
        return f"{dataset.class_names[label]!r} (train 0, {held})"

    names = "; ".join(shown(label) for label in lost[:5]) + ("; ..." if len(lost) > 5 else "")
    # the hold-out keeps a class's last image while it can: it took one only because too few images are left
    fewer = f"hold out fewer images ({' / '.join(flags)}), " if sum(train) < dataset.num_classes else ""
    if len(lost) == 1:
        what = f"class {names} has no training image left after the hold-out, so it cannot be a class of this run"
        fix = f"{fewer}add images of it, or drop it (--labels naming the other classes, or delete its rows or folder)"
    else:
        what = (f"{len(lost)} classes have no training image left after the hold-out ({names}), so they cannot be "
                "classes of this run")
        fix = (f"{fewer}add images of them, or drop them (--labels naming the other classes, or delete their rows "
               "or folders)")
    raise DataError(f"{cfg.source}: {what}; {fix}")


def _cap_per_class(split: Split, cap: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    keep = []
    labels = split.labels.numpy()
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.extend(rng.permutation(members)[:cap].tolist())
    return split.subset(sorted(keep), split.name)


def split_notes(dataset: Dataset) -> list[str]:
    """What the split table alone does not make obvious: a split larger than the training set."""
    counts = {name: len(split) for name, split in dataset.splits.items()}
    train = counts.get("train", 0)
    return [f"the {name} split ({count:,} images) is larger than the training split ({train:,}); "
            "--max-per-class caps train and val only" for name, count in counts.items()
            if name != "train" and count > train]


def expand_image_paths(inputs) -> tuple[list[str], list[tuple[str, str]]]:
    """Files and folders (searched recursively) -> (image paths, [(path, reason)] for bad inputs)."""
    import os

    paths, bad = [], []
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found = list_images(item)
            if not found:
                bad.append((item, "folder holds no image files"))
            paths += found
        elif os.path.exists(item):
            paths.append(item)
        else:
            bad.append((item, "no such file or folder"))
    return paths, bad
