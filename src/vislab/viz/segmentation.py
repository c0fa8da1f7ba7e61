"""Segmentation drawing: colour masks, overlays, legends, 3-panel figures, class probability maps, mask grids.

Only numpy in, PNGs out. The overlay is ``cv2.addWeighted(image, alpha, color_mask, beta, 0)``
computed in numpy: ``saturate(round(alpha * image + beta * mask))``, rounding half to even as
OpenCV's ``cvRound`` does (the tutorial's alpha 1.0 and beta 0.6 are the defaults).

Example:
    >>> import numpy as np
    >>> mask = np.array([[0, 1], [1, 1]]); palette = np.array([[0, 0, 0], [200, 100, 0]], np.uint8)
    >>> colorize(mask, palette)[1, 1].tolist(), overlay(np.full((2, 2, 3), 100, np.uint8), colorize(mask, palette))[1, 1].tolist()
    ([200, 100, 0], [220, 160, 100])
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vislab.viz.evaluation import _save, per_class_bars  # noqa: E402  (one figure writer for every viz module)
from vislab.viz.montage import rgb  # noqa: E402

IGNORE_COLOR = (255, 255, 255)  # ignore-index pixels in true masks


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class IDs -> (H, W, 3) uint8 colours; ``ignore_index`` (or any ID past the palette) is white."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut = np.concatenate([palette, np.asarray(IGNORE_COLOR, dtype=np.uint8).reshape(1, 3)])
    mask = np.asarray(mask)
    index = np.where((mask >= 0) & (mask < len(palette)), mask, len(palette))
    return np.take(lut, index, axis=0)  # a table lookup: 10x faster than boolean-mask assignment at 720x960


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 1.0, beta: float = 0.6,
            gamma: float = 0.0) -> np.ndarray:
    """``cv2.addWeighted(image, alpha, color_mask, beta, gamma)`` for uint8 (H, W, 3) arrays."""
    blended = alpha * np.asarray(image, dtype=np.float64) + beta * np.asarray(color_mask, dtype=np.float64) + gamma
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def legend_labels(names: Sequence[str], shares: Sequence[float] | None = None) -> list[str]:
    """The legend's text per class: ``"ID: name"`` and, with ``shares`` (fractions), ``"  12.34 %"``."""
    return [f"{index}: {name}" + (f"  {100 * shares[index]:.2f} %" if shares is not None else "")
            for index, name in enumerate(names)]


def plot_legend(names: Sequence[str], colors: np.ndarray, path, shares: Sequence[float] | None = None,
                title: str = "Classes") -> Path:
    """Every class's colour swatch and name, with its % of pixels when ``shares`` (fractions) are given."""
    k = len(names)
    columns = 1 if k <= 24 else (2 if k <= 60 else 4)
    rows = -(-k // columns)
    fig, ax = plt.subplots(figsize=(3.4 * columns, 0.6 + 0.28 * rows))
    ax.set_xlim(0, columns)
    ax.set_ylim(rows, -0.8)
    ax.axis("off")
    ax.text(0, -0.45, title, fontsize=10, weight="bold")
    for index, label in enumerate(legend_labels(names, shares)):
        column, row = divmod(index, rows)
        color = np.asarray(colors[index], dtype=float) / 255.0
        ax.add_patch(plt.Rectangle((column + 0.02, row + 0.1), 0.16, 0.8, facecolor=color, edgecolor="black", lw=0.5))
        ax.text(column + 0.22, row + 0.55, label, fontsize=8, va="center")
    return _save(fig, path)


def plot_panel(image: np.ndarray, color_mask: np.ndarray, blended: np.ndarray, path,
               titles: Sequence[str] = ("Input", "Predicted mask", "Overlay")) -> Path:
    """The tutorial's 3-panel figure: input, predicted colour mask, overlay."""
    height, width = image.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.6 + 4 * height / max(width, 1)))
    for ax, picture, title in zip(axes, (image, color_mask, blended), titles):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    return _save(fig, path)


def plot_class_map(probability: np.ndarray, name: str, path) -> Path:
    """One class's per-pixel probability (0..1) as a heat map with a colour bar."""
    fig, ax = plt.subplots(figsize=(6, 0.8 + 5 * probability.shape[0] / max(probability.shape[1], 1)))
    shown = ax.imshow(probability, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_title(f"P({name})")
    ax.axis("off")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_mask_grid(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], path, title: str = "",
                   column_titles: Sequence[str] = ("input", "true mask", "predicted mask", "errors")) -> Path:
    """Rows of (input, true mask, predicted mask, error map) images, one row per sample image."""
    n = max(len(rows), 1)
    columns = len(column_titles)
    fig, axes = plt.subplots(n, columns, figsize=(2.2 * columns, 2.3 * n + 0.4), squeeze=False)
    for r, (cells, row_title) in enumerate(zip(rows, row_titles)):
        for c, cell in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(rgb(cell) if cell.ndim == 3 and cell.shape[0] in (1, 3) else cell, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=9)
        axes[r][0].set_ylabel(row_title, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_class_iou(names: Sequence[str], ious: Sequence[float | None], path, miou: float | None = None) -> Path:
    """Horizontal bars of per-class IoU; a class absent from truth and prediction is marked n/a."""
    fig, ax = per_class_bars(names, ious, "n/a (absent)", "{:.3f}", "IoU (dataset level)", "Per-class IoU",
                             text_cap=0.88, hide_names_over=None)
    if miou is not None:
        ax.axvline(miou, color="black", ls="--", lw=1, label=f"mIoU {miou:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
