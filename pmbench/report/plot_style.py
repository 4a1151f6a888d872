"""How pmbench's figures look: sized for a two-column paper, colour-blind-safe, one suite
per axes, a legend that fits, vector files beside the PNG.

Sizes are the printed ones: one column is COLUMN inches wide (two facets side by side
take the page's width), text is FONT points, so a figure needs no scaling to be read in
print. Colours are Okabe and Ito's palette, safe for the common colour-vision
deficiencies; each method keeps its colour in every figure (its runner's `color`:
sequential black, batch orange, prefix sky blue, rope2d green), further settings of a
method take the palette's other colours, and every series also differs in marker and
line style, so the figure reads in grey too. Figures are built as
`matplotlib.figure.Figure` objects (no pyplot state) with constrained layout, so labels
never overlap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from pmbench.errors import BadInput
from pmbench.report.results import runners

COLUMN = 3.4  # inches: one column of a two-column paper
PANEL_HEIGHT = 2.5  # inches per row of facets
FONT = 8  # points
DPI = 300  # PNG pixels per inch
FORMATS = (".png", ".pdf", ".svg")
OTHER_COLORS = ("#0072B2", "#D55E00", "#CC79A7", "#999999", "#F0E442")  # Okabe-Ito
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
RC = {"font.size": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT,
      "xtick.labelsize": FONT - 1, "ytick.labelsize": FONT - 1, "legend.fontsize": FONT - 1,
      "lines.linewidth": 1.2, "lines.markersize": 4, "errorbar.capsize": 2,
      "figure.constrained_layout.use": True}


def style_context():
    """The rc settings a figure is drawn under (text sizes are fixed when text is made)."""
    return matplotlib.rc_context(RC)


def styles(labels: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker and line style per series label: a method's own colour for its first
    series (by the label's first word), the palette's others after; markers and line
    styles cycle, so no two series look alike."""
    out: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    spare = iter(OTHER_COLORS * 4)
    colors = {name: runner.color for name, runner in runners().items()}
    for k, label in enumerate(dict.fromkeys(labels)):
        own = colors.get(label.split(" ")[0])
        color = own if own and own not in taken else next(spare)
        taken.add(color)
        out[label] = {"color": color, "marker": MARKERS[k % len(MARKERS)],
                      "linestyle": LINESTYLES[k // len(MARKERS) % len(LINESTYLES)]}
    return out


def facets(n: int, height: float = PANEL_HEIGHT) -> tuple[Figure, list[Any]]:
    """A figure of `n` axes, two per row at most: one column wide for one, the page's
    width for more."""
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(COLUMN * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def legend(fig: Figure, handles: list[Any], labels: list[str]) -> None:
    """One legend for the figure, below its axes; the figure grows by its height."""
    width, height = fig.get_size_inches()
    longest = max(map(len, labels))
    ncols = max(1, min(len(labels), int(width * 13 // max(longest, 1))))
    rows = math.ceil(len(labels) / ncols)
    fig.set_size_inches(width, height + 0.16 * rows + 0.1)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False)


def save(fig: Figure, output: str | Path) -> list[Path]:
    """Write `fig` as PNG, PDF and SVG: the file named and its siblings of the other types."""
    output = Path(output)
    if output.suffix not in FORMATS:
        raise BadInput(f"--output must end in {', '.join(FORMATS)}, got {output.name}")
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [output.with_suffix(suffix) for suffix in FORMATS]
    with style_context():
        for path in paths:
            fig.savefig(path, dpi=DPI)
    return paths
