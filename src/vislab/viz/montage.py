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


# The longest side an image is drawn at in a single figure (an explanation's overlay): its panels are about
# 350 px wide at the figures' 100 dpi, so a photo of thousands of pixels shows no more detail than this.
DISPLAY_SIDE = 512


def shrunk_size(height: int, width: int, max_height: int, max_width: int) -> tuple[int, int]:
    """(height, width) shrunk (never enlarged) to fit max_height x max_width, keeping the aspect ratio.

    Example:
        >>> shrunk_size(8000, 6000, 512, 512), shrunk_size(40, 30, 512, 512)
        ((512, 384), (40, 30))
    """
    scale = min(max_height / height, max_width / width, 1.0)
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def display_size(height: int, width: int, side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """The (height, width) an image of height x width is drawn at: within ``side`` x ``side``
    (:data:`DISPLAY_SIDE`), aspect kept, never enlarged."""
    return shrunk_size(height, width, side, side)


def resize(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """A uint8 (H, W) or (H, W, C) image, or a float (H, W) map, at height x width (PIL's bilinear filter,
    which averages over the shrunk pixels; ``nearest`` for label maps, whose values must not blend).

    Example:
        >>> resize(np.ones((40, 20), np.float32), 4, 2).shape, resize(np.zeros((40, 20, 3), np.uint8), 4, 2).shape
        ((4, 2), (4, 2, 3))
    """
    if image.shape[:2] == (height, width):
        return image
    if nearest:  # pixel centres, as torch's "nearest-exact" and PIL's NEAREST pick them
        rows = np.minimum(((np.arange(height) + 0.5) * image.shape[0] / height).astype(np.intp), image.shape[0] - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * image.shape[1] / width).astype(np.intp), image.shape[1] - 1)
        return image[rows[:, None], cols]
    from PIL import Image

    if image.dtype != np.uint8:
        plane = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # mode F
        return np.asarray(plane.resize((width, height), Image.BILINEAR))
    if image.ndim == 3 and image.shape[2] not in (3, 4):  # one or two channels: each a grey plane
        return np.stack([resize(image[..., c], height, width) for c in range(image.shape[2])], axis=-1)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BILINEAR))


def display_rgb(image, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image in (H, W), (H, W, C) or (C, H, W) as (h, w, 3) in its own dtype, at ``size`` (default: its
    :func:`display_size`). Each channel is shrunk on its own, so a (C, H, W) photo, whose channels are
    contiguous planes, is never copied at its full size.

    Example:
        >>> display_rgb(np.zeros((3, 2000, 1000), np.uint8)).shape, display_rgb(np.zeros((28, 28), np.uint8)).shape
        ((512, 256, 3), (28, 28, 3))
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        planes = list(array[:3])
    elif array.ndim == 2:
        planes = [array]
    else:
        planes = [array[..., channel] for channel in range(min(3, array.shape[-1]))]
    size = tuple(size) if size is not None else display_size(*planes[0].shape)
    planes = [resize(plane, *size) for plane in planes]
    return np.stack(planes * 3 if len(planes) == 1 else planes, axis=-1)


def fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink (never enlarge) to fit height x width, keeping the aspect ratio."""
    return resize(image, *shrunk_size(image.shape[0], image.shape[1], height, width))


def cell_size(cells: Sequence[np.ndarray], cell_max: int) -> tuple[int, int]:
    """The (height, width) of a grid cell: the largest image's, capped at ``cell_max``."""
    return (min(cell_max, max(c.shape[0] for c in cells)), min(cell_max, max(c.shape[1] for c in cells)))


def paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int, cell_h: int, cell_w: int) -> None:
    """Shrink ``image`` to fit the cell at (top, left) and centre it there."""
    image = fit(image, cell_h, cell_w)
    top += (cell_h - image.shape[0]) // 2
    left += (cell_w - image.shape[1]) // 2
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image


# A title's line height (matplotlib's default line spacing) and its gap to the image below it.
TITLE_LINE_SPACING = 1.2
TITLE_PAD_POINTS = 2.0


def titled_grid(fig, cells: Sequence[np.ndarray], titles: Sequence[str], colours: Sequence[str] | None = None,
                columns: int = 6, cell_max: int = 96, inches_per_column: float = 2.1, title_band: float = 0.36,
                header_inches: float = 0.45, fontsize: int = 9):
    """Draw uint8 (H, W, 3) ``cells`` row by row, each under its (up to two-line) title.

    Each title sits above its image: the band left for it is at least ``title_band`` of a cell's width and at
    least what its lines need at ``fontsize``, however few pixels the images have. The figure is resized so the
    canvas keeps its aspect ratio, with ``header_inches`` left at the top for a suptitle. Returns the axes.

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
    from matplotlib.transforms import ScaledTranslation

    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    cell_h, cell_w = cell_size(cells, cell_max)
    gap = max(1, cell_w // 14)
    pitch_x = cell_w + gap
    width_in = inches_per_column * columns
    pixels_per_inch = (columns * pitch_x - gap) / width_in  # canvas pixels per inch of figure
    # Room above each image for its title, in canvas pixels: ``title_band`` of the cell's width, and never less
    # than the title's lines need at ``fontsize`` (a cell of a few pixels is drawn inches wide, so a band in
    # pixels alone can be thinner than one line of text).
    lines = max((str(title).count("\n") + 1 for title in titles), default=1)
    text_in = (lines * fontsize * TITLE_LINE_SPACING + 2 * TITLE_PAD_POINTS) / 72
    band = max(round(title_band * cell_w), int(np.ceil(text_in * pixels_per_inch)))
    pitch_y = band + cell_h + gap
    canvas = np.full((rows * pitch_y, columns * pitch_x - gap, 3), 255, np.uint8)
    height_in = width_in * canvas.shape[0] / canvas.shape[1]
    fig.set_size_inches(width_in, height_in + header_inches)
    ax = fig.add_axes((0, 0, 1, height_in / (height_in + header_inches)))
    # each title's bottom a few points above its image's top edge, whatever a canvas pixel measures in points
    above = ax.transData + ScaledTranslation(0, TITLE_PAD_POINTS / 72, fig.dpi_scale_trans)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        paste(canvas, cell, r * pitch_y + band, c * pitch_x, cell_h, cell_w)
        ax.text(c * pitch_x + cell_w / 2, r * pitch_y + band, titles[i], ha="center", va="bottom",
                color=colours[i] if colours else "black", fontsize=fontsize, transform=above)
    # extent: canvas pixel (row, col) covers [col, col + 1] x [row, row + 1], so row ``band`` starts at y = band
    ax.imshow(canvas, interpolation="nearest", extent=(0, canvas.shape[1], canvas.shape[0], 0))
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
