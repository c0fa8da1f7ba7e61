"""Many small images as one picture on one axes.

Drawing a grid of N images as N subplots costs matplotlib about 50 ms per subplot
(layout, ticks, titles); pasting them into one uint8 canvas and placing the titles as
text on a single axes draws the same figure in a fraction of that. The samples,
prediction and explanation grids all use it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) or (H, W) -> (H, W, 3)."""
    if image.ndim == 2:
        image = image[None]
    image = np.transpose(image, (1, 2, 0))
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]


def fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink (never enlarge) to fit height x width, keeping the aspect ratio."""
    scale = min(height / image.shape[0], width / image.shape[1], 1.0)
    if scale == 1.0:
        return image
    from PIL import Image

    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def cell_size(cells: Sequence[np.ndarray], cell_max: int) -> tuple[int, int]:
    """The (height, width) of a grid cell: the largest image's, capped at ``cell_max``."""
    return (min(cell_max, max(c.shape[0] for c in cells)), min(cell_max, max(c.shape[1] for c in cells)))


def paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int, cell_h: int, cell_w: int) -> None:
    """Shrink ``image`` to fit the cell at (top, left) and centre it there."""
    image = fit(image, cell_h, cell_w)
    top += (cell_h - image.shape[0]) // 2
    left += (cell_w - image.shape[1]) // 2
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image


def titled_grid(fig, cells: Sequence[np.ndarray], titles: Sequence[str], colours: Sequence[str] | None = None,
                columns: int = 6, cell_max: int = 96, inches_per_column: float = 2.1, title_band: float = 0.36,
                header_inches: float = 0.45, fontsize: int = 9):
    """Draw uint8 (H, W, 3) ``cells`` row by row, each under its (up to two-line) title.

    The figure is resized so the canvas keeps its aspect ratio, with ``header_inches``
    left at the top for a suptitle. Returns the axes.

    Example:
        >>> from matplotlib.figure import Figure
        >>> fig = Figure()
        >>> ax = titled_grid(fig, [np.zeros((8, 8, 3), np.uint8)] * 3, ["a", "b", "c"], columns=2)
        >>> round(float(fig.get_figwidth()), 1), len(ax.texts)
        (4.2, 3)
    """
    count = len(cells)
    if not count:
        ax = fig.add_axes((0, 0, 1, 1))
        ax.axis("off")
        return ax
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    cell_h, cell_w = cell_size(cells, cell_max)
    gap = max(1, cell_w // 14)
    band = round(title_band * cell_w)  # room above each image for its title, in canvas pixels
    pitch_y, pitch_x = band + cell_h + gap, cell_w + gap
    canvas = np.full((rows * pitch_y, columns * pitch_x - gap, 3), 255, np.uint8)
    width_in = inches_per_column * columns
    height_in = width_in * canvas.shape[0] / canvas.shape[1]
    fig.set_size_inches(width_in, height_in + header_inches)
    ax = fig.add_axes((0, 0, 1, height_in / (height_in + header_inches)))
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        paste(canvas, cell, r * pitch_y + band, c * pitch_x, cell_h, cell_w)
        ax.text(c * pitch_x + cell_w / 2, r * pitch_y + band * 0.92, titles[i], ha="center", va="bottom",
                color=colours[i] if colours else "black", fontsize=fontsize)
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    return ax


def fit_width(fig, *texts, margin_inches: float = 0.3) -> None:
    """Widen ``fig`` until each text artist (a suptitle, say) fits inside it: a grid of one or two
    images is narrower than its title, which would be cut at both edges. The images keep their
    size (the grid's axes keep their aspect ratio), centred in the wider figure.

    Example:
        >>> from matplotlib.figure import Figure
        >>> from matplotlib.backends.backend_agg import FigureCanvasAgg
        >>> fig = Figure(figsize=(2, 2)); _ = FigureCanvasAgg(fig)
        >>> fit_width(fig, fig.suptitle("a title much wider than two inches of figure"))
        >>> bool(fig.get_figwidth() > 2)
        True
    """
    renderer = fig.canvas.get_renderer()
    needed = max((text.get_window_extent(renderer).width / fig.dpi for text in texts), default=0.0) + margin_inches
    if needed > fig.get_figwidth():
        fig.set_size_inches(needed, fig.get_figheight())
