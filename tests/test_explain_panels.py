"""Explanation panels: every cell's title must sit above its image, readable, at any image size.

The panels are one picture on one axes (:func:`vislab.viz.montage.titled_grid`); a title is text placed in a
band above its image. These tests measure, with matplotlib's own renderer, where each title is drawn and
where its image's first row starts.
"""

from __future__ import annotations

import numpy as np
import pytest

from vislab.viz.explain import overlay_panel


def _image_top(ax, x: float, y: float) -> float:
    """Display y (pixels, upwards) of the top edge of the first non-white canvas row at or below data y in
    column x: the top of the image drawn under a title anchored at (x, y)."""
    image = ax.images[0]
    canvas = np.asarray(image.get_array())
    left, right, bottom, top = image.get_extent()
    rows, columns = canvas.shape[:2]
    col = int((x - left) / (right - left) * columns)
    row = max(0, int(np.floor((y - top) / (bottom - top) * rows)))
    while row < rows and (canvas[row, col] == 255).all():
        row += 1
    assert row < rows, "no image under the title"
    edge = top + row * (bottom - top) / rows
    return ax.transData.transform((x, edge))[1]


def _check_titles_above_images(fig):
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.texts
    for text in ax.texts:
        box = text.get_window_extent(renderer)
        x, y = text.get_position()
        image_top = _image_top(ax, x, y)
        assert box.y0 >= image_top, f"title {text.get_text()!r} runs {image_top - box.y0:.1f} px into its image"
        assert box.y1 <= fig.bbox.height + 0.5, f"title {text.get_text()!r} is cut at the figure's top"


@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (64, 64), (96, 128, 3), (300, 200, 3)],
                         ids=["digits-8px", "fashion-28px", "64px", "photo-96x128", "photo-300x200"])
def test_two_line_titles_sit_above_their_images(shape):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 200, shape, dtype=np.uint8) for _ in range(8)]
    heatmaps = [rng.random(shape[:2]).astype(np.float32) for _ in range(8)]
    titles = [f"true: {i}\npred: {i} (99%)" for i in range(8)]
    _check_titles_above_images(overlay_panel(images, heatmaps, titles, columns=4))


def test_one_line_titles_and_a_single_cell_sit_above_their_images():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 200, (8, 8), dtype=np.uint8)
    _check_titles_above_images(overlay_panel([image], [rng.random((8, 8))], ["pred: 5 (99%)"]))
