"""Segmentation drawing: colour masks, overlays, legends, 3-panel pictures, class probability maps, mask grids.

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

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from vislab.viz import PNG_COMPRESS_LEVEL  # noqa: F401  (3x faster than level 6 on a 720x960 overlay)
from vislab.viz.montage import rgb

# matplotlib is imported by the figures that need it (class maps, mask grids, IoU bars), not by the
# colour masks, overlays, panels and legends `vislab segment` writes per image: importing pyplot costs
# more than segmenting a folder of small images

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


PANEL_SIDE = 256  # small images are enlarged by a whole factor up to about this many pixels in a panel


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """Pillow's built-in font (decoded once per size: loading it costs more than drawing a legend)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def save_png(array: np.ndarray, path) -> Path:
    """An RGB (or grey) uint8 array as a PNG, written fast (:data:`PNG_COMPRESS_LEVEL`)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=PNG_COMPRESS_LEVEL)
    return Path(path)


def plot_legend(names: Sequence[str], colors: np.ndarray, path, shares: Sequence[float] | None = None,
                title: str = "Classes") -> Path:
    """Every class's colour swatch and name, with its % of pixels when ``shares`` (fractions) are given.

    Drawn with Pillow, not matplotlib: ``vislab segment`` writes one per image, and a matplotlib
    figure per image cost more than a small model's forward pass.
    """
    from PIL import Image, ImageDraw

    labels = legend_labels(names, shares)
    k = max(len(labels), 1)
    columns = 1 if k <= 24 else (2 if k <= 60 else 4)
    rows = -(-k // columns)
    font, title_font = _font(13), _font(15)
    pad, swatch, row_height, title_height = 8, 14, 20, 26
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max([measure.textlength(label, font=font) for label in labels] or [0])
    column_width = int(swatch + 6 + text_width + 2 * pad)
    width = max(columns * column_width, int(measure.textlength(title, font=title_font)) + 2 * pad)
    height = pad + title_height + rows * row_height + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill="black", font=title_font)
    for index, label in enumerate(labels):
        column, row = divmod(index, rows)
        x, y = pad + column * column_width, pad + title_height + row * row_height
        draw.rectangle([x, y + 3, x + swatch, y + 3 + swatch], fill=tuple(int(v) for v in colors[index][:3]),
                       outline="black")
        draw.text((x + swatch + 6, y + 2), label, fill="black", font=font)
    canvas.save(path, compress_level=PNG_COMPRESS_LEVEL)
    return Path(path)


def plot_panel(image: np.ndarray, color_mask: np.ndarray, blended: np.ndarray, path,
               titles: Sequence[str] = ("Input", "Predicted mask", "Overlay")) -> Path:
    """The tutorial's 3-panel picture: input, predicted colour mask, overlay, side by side and titled.

    The pixels are the images' own (a small image enlarged by a whole factor, nearest), composed in
    numpy and written by Pillow: no resampling blurs the mask's edges.
    """
    from PIL import Image, ImageDraw

    tiles = [np.asarray(t) if np.asarray(t).ndim == 3 else np.repeat(np.asarray(t)[..., None], 3, 2)
             for t in (image, color_mask, blended)]
    height, width = tiles[0].shape[:2]
    scale = max(1, PANEL_SIDE // max(height, width, 1))
    if scale > 1:
        tiles = [np.repeat(np.repeat(t, scale, 0), scale, 1) for t in tiles]
    gap, title_height = 8, 24
    tile_h, tile_w = tiles[0].shape[:2]
    canvas = np.full((title_height + tile_h, 3 * tile_w + 2 * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        left = i * (tile_w + gap)
        canvas[title_height:, left:left + tile_w] = tile[..., :3]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = _font(15)
    for i, title in enumerate(titles):
        centre = i * (tile_w + gap) + tile_w / 2
        draw.text((centre - draw.textlength(title, font=font) / 2, 4), title, fill="black", font=font)
    picture.save(path, compress_level=PNG_COMPRESS_LEVEL)
    return Path(path)


def plot_class_map(probability: np.ndarray, name: str, path) -> Path:
    """One class's per-pixel probability (0..1) as a heat map with a colour bar."""
    from vislab.viz.evaluation import _save  # one figure writer for every viz module (it selects Agg)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.8 + 5 * probability.shape[0] / max(probability.shape[1], 1)))
    shown = ax.imshow(probability, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_title(f"P({name})")
    ax.axis("off")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_mask_grid(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], path, title: str = "",
                   column_titles: Sequence[str] = ("input", "true mask", "predicted mask", "errors")) -> Path:
    """Rows of (input, true mask, predicted mask, error map) images, one row per sample image."""
    from vislab.viz.evaluation import _save

    import matplotlib.pyplot as plt

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
    from vislab.viz.evaluation import _save, per_class_bars

    fig, ax = per_class_bars(names, ious, "n/a (absent)", "{:.3f}", "IoU (dataset level)", "Per-class IoU",
                             text_cap=0.88, hide_names_over=None)
    if miou is not None:
        ax.axvline(miou, color="black", ls="--", lw=1, label=f"mIoU {miou:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
