"""The audit's label-issues grid: the images most likely mislabelled, each captioned "given → suggested"."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402

from vislab.viz.evaluation import GRID_CELL, WRONG, _as_numpy, _save  # noqa: E402
from vislab.viz.montage import fit_width, rgb, titled_grid  # noqa: E402


def plot_label_issues(images: Sequence, captions: Sequence[str], path, title: str = "Likely label errors",
                      columns: int = 6) -> Path:
    """One canvas of uint8 (C, H, W) ``images``, each under its caption (``"Bag → Sandal\\nscore 0.003"``).

    Example:
        >>> import numpy as np, tempfile, os
        >>> plot_label_issues([np.zeros((1, 8, 8), np.uint8)] * 2, ["a → b", "b → a"],
        ...                   os.path.join(tempfile.mkdtemp(), "issues.png")).exists()
        True
    """
    fig = plt.figure()
    cells = [rgb(_as_numpy(image)) for image in images]
    titled_grid(fig, cells, list(captions), colours=[WRONG] * len(cells), columns=columns, cell_max=GRID_CELL)
    fit_width(fig, fig.suptitle(title, y=1 - 0.1 / fig.get_figheight(), va="top", fontsize=11))
    return _save(fig, path, tight=False)
