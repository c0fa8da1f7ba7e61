"""Figures for explanations: heatmap overlays, LIME masks, activation and filter grids.

Each function only draws what it is given (arrays, titles) and returns a
matplotlib ``Figure`` built without pyplot (Agg canvas), so it works headless
and in threads; :func:`save_figure` writes it.

Example:
    >>> import numpy as np
    >>> image = np.zeros((32, 32, 3), np.uint8)
    >>> fig = overlay_figure(image, np.random.rand(32, 32), title="gradcam: cat (91%)")
    >>> save_figure(fig, "/tmp/overlay.png")  # doctest: +ELLIPSIS
    PosixPath('/tmp/overlay.png')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vislab.viz import PNG_COMPRESS_LEVEL
from vislab.viz.montage import display_rgb, resize

HEATMAP_COLORMAP = "jet"  # Chollet's Grad-CAM overlay (seed 002) uses the jet colormap


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _as_hwc(image, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8/float image in (H, W), (H, W, C) or (C, H, W) -> float (h, w, 3) in 0..1 at ``size`` (default: its
    display size, :func:`vislab.viz.montage.display_size`). A large photo is shrunk channel by channel first
    (:func:`vislab.viz.montage.display_rgb`), so it is never turned into floats at its full size."""
    shown = display_rgb(image, size)
    return shown.astype(np.float32) / 255.0 if shown.dtype == np.uint8 else np.clip(shown.astype(np.float32), 0, 1)


def _map_at(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0..1 heatmap at ``size`` (the image as it is drawn): bilinear, as it was mapped onto the image."""
    return np.clip(resize(np.asarray(heatmap, dtype=np.float32), *size), 0, 1)


def draw_overlay(ax, image, heatmap: np.ndarray, title: str | None = None, alpha: float = 0.45, colorbar: bool = True):
    """Draw ``heatmap`` (H, W, 0..1) over ``image`` on an existing axes, both at the image's display size."""
    shown = _as_hwc(image)
    ax.imshow(shown)
    heat = ax.imshow(_map_at(heatmap, shown.shape[:2]), cmap=HEATMAP_COLORMAP, alpha=alpha, vmin=0.0, vmax=1.0)
    if colorbar:
        ax.figure.colorbar(heat, ax=ax, fraction=0.046, pad=0.04, label="relevance")
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    return heat


def overlay_figure(image, heatmap: np.ndarray, title: str | None = None, alpha: float = 0.45) -> Figure:
    """The image, then the heatmap over it with a colour bar.

    Args:
        image: uint8 or 0..1 float, (H, W), (H, W, C) or (C, H, W); drawn at its display size
            (:func:`vislab.viz.montage.display_size`: at most 512 px a side).
        heatmap: (H, W) in 0..1 over the whole image: at the image's size or at its display size
            (``explain(..., size=display_size(H, W))``, which never makes a large photo's map at full size).
    """
    fig = _new_figure(8, 4)
    left, right = fig.subplots(1, 2)
    shown = _as_hwc(image)
    left.imshow(shown)
    left.set_title("image", fontsize=9)
    left.axis("off")
    draw_overlay(right, shown, heatmap, title)
    fig.tight_layout()
    return fig


def lime_image_with_mask(image, mask: np.ndarray) -> np.ndarray:
    """Seed 000's LIME picture: superpixels for the class tinted green, against it red, outlined (at the
    image's display size)."""
    from skimage.segmentation import mark_boundaries

    picture = _as_hwc(image).copy()
    mask = resize(np.asarray(mask), *picture.shape[:2], nearest=True)
    # lime's get_image_and_mask(positive_only=False) sets the green (for) or red (against) channel to the maximum.
    picture[mask > 0, 1] = 1.0
    picture[mask < 0, 0] = 1.0
    return mark_boundaries(picture, mask.astype(int) + 1, color=(1, 1, 0))


def lime_figure(image, mask: np.ndarray, heatmap: np.ndarray | None = None, title: str | None = None) -> Figure:
    """LIME's marked superpixels (green for, red against), and its weights as a heatmap if given."""
    panels = 2 if heatmap is not None else 1
    fig = _new_figure(4 * panels, 4)
    axes = np.atleast_1d(fig.subplots(1, panels))
    shown = _as_hwc(image)
    axes[0].imshow(lime_image_with_mask(shown, mask))
    axes[0].set_title(title or "LIME: green for, red against", fontsize=9)
    axes[0].axis("off")
    if heatmap is not None:
        draw_overlay(axes[1], shown, heatmap, "positive superpixel weights")
    fig.tight_layout()
    return fig


def overlay_panel(images, heatmaps, titles=None, columns: int = 4, alpha: float = 0.45) -> Figure:
    """A grid of overlays, e.g. Grad-CAM for the sample and the most-wrong images of a report.

    Each heatmap is blended over its image as ``imshow(heatmap, alpha=alpha)`` would
    draw it, and the grid is one picture (:mod:`vislab.viz.montage`).
    """
    from matplotlib import colormaps

    from vislab.viz.montage import titled_grid

    colormap = colormaps[HEATMAP_COLORMAP]
    cells = []
    for image, heatmap in zip(images, heatmaps):
        shown = _as_hwc(image)
        heat = colormap(_map_at(heatmap, shown.shape[:2]))[..., :3]
        cells.append(np.round(((1 - alpha) * shown + alpha * heat) * 255).astype(np.uint8))
    fig = _new_figure(3, 3)
    titled_grid(fig, cells, list(titles) if titles else [""] * len(cells), columns=columns, cell_max=128,
                inches_per_column=3.0, title_band=0.22, header_inches=0.0)
    return fig


def write_overlay_panel(images, heatmaps, titles, path, columns: int = 4) -> Path:
    """:func:`overlay_panel` written to ``path`` (a function a helper interpreter can run). The grid fills
    its figure, titles included, so it is saved as it is: a tight bounding box would draw it twice to
    measure it."""
    return save_figure(overlay_panel(images, heatmaps, titles, columns=columns), path, tight=False)


def activation_grid_figure(grid: np.ndarray, title: str) -> Figure:
    """One layer's channels side by side (uint8 grid), viridis as in Chollet's figures."""
    height, width = grid.shape
    fig = _new_figure(10, min(40.0, max(1.5, 10 * height / width + 0.6)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return fig


def filter_grid_figure(grid: np.ndarray, title: str) -> Figure:
    """Filter patterns found by gradient ascent, as one (H, W, C) uint8 grid image."""
    fig = _new_figure(8, 8)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid if grid.shape[-1] == 3 else grid[..., 0], cmap=None if grid.shape[-1] == 3 else "gray")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return fig


def save_figure(fig: Figure, path, tight: bool = True):
    """Write ``fig`` as PNG to ``path`` (parent folders made; a binary file object, such as the server's
    buffer, is written as it is) and return it; ``tight``: cropped to what is drawn (matplotlib draws the
    figure once more to find it)."""
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight" if tight else None,
                pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return path
