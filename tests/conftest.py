"""Shared fixtures: real images (scikit-learn digits, Fashion-MNIST) written as files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists()
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason="Fashion-MNIST files absent: apt-get install dataset-fashion-mnist"
)

# `make test` runs one pytest-xdist worker per core: each worker, and every process it starts, computes on one
# thread (two workers of two OpenMP threads on two cores wait on each other's spinning threads), and keeps
# its own cache, so that a speed choice one worker measures never changes another's run mid-test
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("VISLAB_CACHE", f"/tmp/vislab-test-cache{'-' + WORKER if WORKER else ''}")  # never ~/.cache


def digits_arrays(per_class: int | None = None):
    """sklearn's 1,797 real 8x8 digits as uint8 0..255 images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        images, labels = images[keep], labels[keep]
    return images, labels


def class_photos(folder: Path, classes, per_class: int, offset: int = 0, sep: str = " ") -> list[tuple[str, str]]:
    """One folder per class of real digit PNGs (digit i for class i, from its ``offset``-th image on), named
    ``<class><sep><index>.png``; returns the (path relative to ``folder``, class) rows."""
    images, labels = digits_arrays(per_class=offset + per_class)
    rows = []
    for digit, name in enumerate(classes):
        for i in np.flatnonzero(labels == digit)[offset:offset + per_class]:
            path = write_image(folder / name / f"{name}{sep}{i}.png", images[i])
            rows.append((path.relative_to(folder).as_posix(), name))
    return rows


def one_line_error(capsys) -> str:
    """The one ``error:`` line a command printed on stderr (no traceback); fails otherwise."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def write_image(path: Path, array: np.ndarray, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array).resize((size, size), Image.NEAREST)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    image.save(path, format=fmt)
    return path


def write_segmentation_set(folder: Path, count: int = 8, size: int = 32) -> Path:
    """``folder/images`` and ``folder/masks``: a bright rectangle of class 1 or 2 on class 0, with noise."""
    rng = np.random.default_rng(0)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        mask[size // 8:size * 5 // 8, size * 3 // 16:size * 13 // 16] = 1 + i % 2
        pixels = (mask[..., None] * 80 + rng.integers(0, 40, (size, size, 3))).astype(np.uint8)
        for sub, array in (("masks", mask), ("images", pixels)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / sub / f"s{i}.png")
    return folder


def trained_segmentation_run(root: Path, name: str = "run") -> Path:
    """``root/NAME``: a tiny U-Net trained one epoch (not evaluated) on :func:`write_segmentation_set`'s
    ``root/data`` (its images in ``root/data/images``)."""
    from vislab import api

    write_segmentation_set(root / "data")
    api.train(data=str(root / "data"), task="segmentation", model="unet", epochs=1, out=str(root / name),
              evaluate=False, figures=False, seed=0, model_options={"decoder_channels": [8, 8, 8, 8, 8]})
    return root / name


def written_run(root: Path, model_name: str) -> tuple[Path, Path]:
    """``root/run``: vislab's ``model_name`` (grey 16x16, 3 classes, seeded weights) written as ``vislab train``
    writes a finished run, and ``root/digit.png``, a grey 20x20 image to explain."""
    import torch

    from vislab.core.config import ModelConfig
    from vislab.data.preprocess import Preprocessing
    from vislab.models import create_model
    from vislab.runs import write_model

    torch.manual_seed(0)
    model = create_model(model_name, num_classes=3, in_chans=1, input_size=(16, 16)).eval()
    write_model(root / "run", model, Preprocessing(input_size=(1, 16, 16)), ["zero", "one", "two"],
                ModelConfig(name=model_name, input_size=[16, 16]))
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "digit.png")
    return root / "run", root / "digit.png"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a shared 2-core machine a second thread mostly spins waiting for the first (5x slower in wall time)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def digits_folder(tmp_path) -> Path:
    """Class folders 0..9 of real digit images: nested sub-folders, upper-case extensions,
    JPEG and PNG, plus a hidden file and a non-image file that must be ignored."""
    images, labels = digits_arrays(per_class=20)
    root = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(images, labels)):
        ext = [".png", ".PNG", ".jpg", ".JPEG"][i % 4]
        sub = "nested/deeper" if i % 3 == 0 else ""
        write_image(root / str(label) / sub / f"img{i}{ext}", image)
    (root / "3" / ".hidden.png").write_bytes(b"not really")
    (root / "4" / "notes.txt").write_text("not an image")
    return root
