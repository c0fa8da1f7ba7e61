"""Shared by the export and serve tests: one trained digits run per test session, real digit images."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import digits_arrays, write_image


def digits_run(tmp_path_factory) -> Path:
    """A chollet_convnet trained 2 epochs on scikit-learn's digits (trained once per session)."""
    run = tmp_path_factory.getbasetemp() / "deploy-digits-run"
    if not (run / "model.safetensors").is_file():
        from vislab import api

        api.train(data="digits", model="chollet_convnet", epochs=2, out=str(run), evaluate=False, seed=0)
    return run


def digit_files(folder: Path, count: int = 10) -> list[Path]:
    """``count`` real digit images as PNG files (one per class first), 16x16."""
    images, labels = digits_arrays(per_class=-(-count // 10))
    return [write_image(folder / f"digit{i}_{labels[i]}.png", images[i]) for i in range(count)]


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
