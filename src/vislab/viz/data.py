"""Dataset figures (audit and augmentation preview). One function per PNG; they only draw.

Images are uint8 ``(C, H, W)`` arrays or tensors, C in {1, 3}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vislab.viz.evaluation import _as_numpy, _save, _short, _show  # noqa: E402
from vislab.viz.montage import cell_size, paste, rgb as _rgb  # noqa: E402


def plot_class_balance(counts: Mapping[str, Sequence[int]], class_names: Sequence[str], path) -> Path:
    """Grouped bars: images per class, one bar colour per split.

    Args:
        counts: split name -> K counts (e.g. ``{"train": [50, 48], "test": [10, 9]}``).
        class_names: K names.

    Example:
        >>> import tempfile, os
        >>> plot_class_balance({"train": [5, 3], "test": [1, 1]}, ["a", "b"],
        ...                    os.path.join(tempfile.mkdtemp(), "bal.png")).exists()
        True
    """
    k = len(class_names)
    splits = list(counts)
    fig, ax = plt.subplots(figsize=(min(max(7, 0.7 * k + 3), 24), 4.8))
    x = np.arange(k)
    width = 0.8 / max(1, len(splits))
    for j, split in enumerate(splits):
        ax.bar(x + (j - (len(splits) - 1) / 2) * width, counts[split], width, label=f"{split} ({sum(counts[split])})")
    ax.set_xticks(x, [_short(n) for n in class_names] if k <= 60 else [""] * k, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set(ylabel="Images", title="Class balance per split")
    ax.legend()
    return _save(fig, path)


def plot_image_geometry(widths: Sequence[int], heights: Sequence[int], path) -> Path:
    """Width/height scatter beside a histogram of aspect ratios (width / height).

    Example:
        >>> import tempfile, os
        >>> plot_image_geometry([28, 30, 64], [28, 20, 48], os.path.join(tempfile.mkdtemp(), "geo.png")).exists()
        True
    """
    widths = np.asarray(widths, dtype=float)
    heights = np.asarray(heights, dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    # one marker per distinct size, its area by how many images have it (70k points drew in ~0.5 s)
    sizes, counts = np.unique(np.stack([widths, heights], 1), axis=0, return_counts=True) if len(widths) \
        else (np.zeros((0, 2)), np.zeros(0))
    area = 8 + 292 * np.sqrt(counts / max(1, counts.max(initial=0)))
    left.scatter(sizes[:, 0], sizes[:, 1], s=area, alpha=0.5, edgecolors="none")
    left.set(xlabel="Width (px)", ylabel="Height (px)",
             title=f"Image sizes ({len(widths)} images, {len(sizes)} distinct; area = count)")
    if len(widths):
        # A single size would give a zero-width axis; pad it so the point is visible.
        pad = max(1.0, 0.05 * max(widths.max(), heights.max()))
        left.set_xlim(widths.min() - pad, widths.max() + pad)
        left.set_ylim(heights.min() - pad, heights.max() + pad)
    aspect = widths / np.maximum(heights, 1)
    right.hist(aspect, bins=30 if len(aspect) and np.ptp(aspect) > 0 else 1, color="#4c72b0", edgecolor="black")
    right.set(xlabel="Aspect ratio (width / height)", ylabel="Images", title="Aspect ratios")
    return _save(fig, path)


def plot_dominant_colours(colours, labels: Sequence[int], class_names: Sequence[str], path) -> Path:
    """Each image's dominant RGB colour (0-255) by class: a 3-D scatter, or for grey images (every colour
    with R = G = B) one row of grey levels per class, where a 3-D scatter would put every point on the
    cube's diagonal.

    Example:
        >>> import numpy as np, tempfile, os
        >>> plot_dominant_colours(np.array([[255, 0, 0], [0, 0, 255]]), [0, 1], ["red", "blue"],
        ...                       os.path.join(tempfile.mkdtemp(), "col.png")).exists()
        True
    """
    colours = np.asarray(colours, dtype=float).reshape(-1, 3)
    labels = np.asarray(labels).reshape(-1)
    if len(colours) and (colours == colours[:, :1]).all():
        return _plot_dominant_greys(colours[:, 0], labels, class_names, path)
    fig = plt.figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot(projection="3d")
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            ax.scatter(*colours[mask].T, s=10, alpha=0.6, color=cmap(c % cmap.N), label=_short(name))
    ax.set(xlabel="R", ylabel="G", zlabel="B", xlim=(0, 255), ylim=(0, 255), zlim=(0, 255))
    ax.set_title(f"Dominant colour per image ({len(colours)} images)")
    if 0 < len(class_names) <= 20:
        ax.legend(loc="upper left", fontsize=8, markerscale=2)
    return _save(fig, path)


def _plot_dominant_greys(greys, labels, class_names: Sequence[str], path) -> Path:
    """Grey images' dominant levels: one row of points per class (a fixed jitter spreads each row), each point
    drawn in its own grey with a dark edge."""
    k = max(1, len(class_names))
    fig, ax = plt.subplots(figsize=(8, min(max(2.5, 0.35 * k + 1.2), 16)))
    jitter = (np.random.default_rng(0).random(len(greys)) - 0.5) * 0.6
    ax.scatter(greys, labels + jitter, c=greys, cmap="gray", vmin=0, vmax=255, s=12, edgecolors="#333333",
               linewidths=0.6)  # a visible edge: near-white points on the white axes
    ax.set_yticks(range(k), [_short(name) for name in class_names] if k <= 60 else [""] * k, fontsize=8)
    ax.set(xlim=(-5, 260), ylim=(k - 0.5, -0.5), xlabel="Dominant grey level (0 black, 255 white)",
           title=f"Dominant grey level per image ({len(greys)} images)")
    return _save(fig, path)


def plot_samples_per_class(samples: Sequence[Sequence], class_names: Sequence[str], path, title: str = "Samples per class") -> Path:
    """One row per class, a few images each (sizes may differ between images).

    Args:
        samples: for each class, a sequence of uint8 (C, H, W) images (may be empty).

    Example:
        >>> import numpy as np, tempfile, os
        >>> s = [[np.zeros((1, 8, 8), np.uint8)] * 2, [np.full((3, 6, 9), 200, np.uint8)]]
        >>> plot_samples_per_class(s, ["a", "b"], os.path.join(tempfile.mkdtemp(), "s.png")).exists()
        True
    """
    # One image of all the cells (one axes, not rows x columns subplots: 10x faster to draw)
    rows = max(1, len(class_names))
    columns = max([1] + [len(s) for s in samples])
    images = [[_rgb(_as_numpy(image)) for image in (samples[r] if r < len(samples) else [])] for r in range(rows)]
    cell_h, cell_w = cell_size([image for row in images for image in row] or [np.zeros((8, 8, 3))], MONTAGE_CELL)
    gap = max(1, cell_h // 12)
    canvas = np.full((rows * (cell_h + gap), columns * (cell_w + gap), 3), 255, np.uint8)
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            paste(canvas, image, r * (cell_h + gap), c * (cell_w + gap), cell_h, cell_w)
    # 1.5 in a cell for MONTAGE_CELL-pixel images, less for small ones (28 px Fashion-MNIST: 0.75 in, still
    # 2.7 screen pixels an image pixel): matplotlib scales the canvas to the figure's pixels in float RGBA
    # buffers, and at 1.5 in the 10 x 8 cells of 28 px images made 2 million of them, 0.4-1.3 s to draw
    inches = 1.5 * max(cell_h, cell_w, MONTAGE_CELL // 2) / MONTAGE_CELL
    fig, ax = plt.subplots(figsize=(inches * columns + 1.2, inches * rows + 0.5))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * (cell_h + gap) + cell_h / 2 for r in range(len(class_names))],
                  [_short(name) for name in class_names], fontsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    fig.suptitle(title)
    return _save(fig, path)


MONTAGE_CELL = 128  # largest side of a cell in the samples montage, in pixels


def plot_augment_preview(originals, augmented, path, title: str = "Augmentation preview") -> Path:
    """Each row: the original image, then its augmented versions.

    Args:
        originals: uint8 (N, C, H, W), or a list of N uint8 (C, H, W) images of any sizes.
        augmented: uint8 (N, A, C, H, W), A augmented versions of each original (or nested lists).

    Example:
        >>> import numpy as np, tempfile, os
        >>> o = np.zeros((2, 1, 8, 8), np.uint8); a = np.full((2, 3, 1, 8, 8), 128, np.uint8)
        >>> plot_augment_preview(o, a, os.path.join(tempfile.mkdtemp(), "aug.png")).exists()
        True
    """
    n = len(originals)
    versions = len(augmented[0]) if n else 0
    fig, axes = plt.subplots(n, versions + 1, figsize=(1.6 * (versions + 1), 1.6 * n + 0.6), squeeze=False)
    for r in range(n):
        for c in range(versions + 1):
            ax = axes[r, c]
            ax.axis("off")
            _show(ax, _as_numpy(originals[r] if c == 0 else augmented[r][c - 1]))
            if r == 0:
                ax.set_title("original" if c == 0 else f"augmented {c}", fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)
