"""What every attention figure shares: size, fonts, one colour scale, and which layers to
show when there are more than fit."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, LogNorm

WIDTH = 7.0  # inches: the full text width of a two-column paper
GRID_ROWS = 8  # layers shown in the heatmap grid (evenly spaced when there are more)
MASS_FLOOR = 1e-4  # colour scale floor: smaller masses show as the darkest colour
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "legend.fontsize": 7}


def cmap() -> Colormap:
    """magma, grey where a cell holds no key (NaN), black below the floor."""
    return matplotlib.colormaps["magma"].with_extremes(bad="#d9d9d9", under="#000004")


def norm(floor: float = MASS_FLOOR) -> LogNorm:
    return LogNorm(vmin=floor, vmax=1.0, clip=False)


def grid_layers(n: int, rows: int = GRID_ROWS) -> list[int]:
    """Indices of at most `rows` of n layers, evenly spaced, first and last included."""
    if n <= rows:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, rows)})
