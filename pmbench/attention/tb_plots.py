"""The (t, b) figures of the attention analysis, drawn from the `tb` block of each analysis.

They show one step of one group (`pmbench.attention.tb`) on the plane of the keys'
positions: key time t across, key branch b up (row 0 the shared context, then branches
1..N), one cell per key, coloured by the mass per key on a logarithmic scale; grey cells
are keys the query may not see, or no key at all. A dotted line marks where the branches
start, squares the queries. The t axis is broken (`TBAxis`): the keys from two context
tokens before the branches start are drawn one column each, and the context before them,
when longer, is compressed to half that width in bins that show their largest key (so the
branch rows are not a sliver at the right of a long context, and a peak such as the first
token stays visible). Each panel's title adds the total mass on the context, the query's
own row and the other branches' rows. Each model is one block, stacked with `--compare`:

- `tb_heatmap`: one panel per captured layer (at most `TB_PANELS`, evenly spaced),
  averaged over heads and over the step's query branches;
- `tb_branches`: the record's `figure_layer`, one panel per query branch, averaged over
  heads: its own row against the context and (cross mask) its neighbours' rows;
- `tb_heads` (with `--tb-heads`): the same layer, one panel per head, averaged over the
  query branches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pmbench.attention.style import STYLE, WIDTH, cmap, grid_layers, norm

TB_FLOOR = 1e-5  # colour scale floor (cells are single keys: lower than MASS_FLOOR)
TITLE_CHARS = 95  # a longer (t, b) block title goes on two lines
TB_COLUMNS = 4  # panels per row in the (t, b) figures
TB_PANELS = 16  # layers shown in tb_heatmap (evenly spaced when there are more)
ZOOM_MARGIN = 2  # context keys shown at one column each before the first branch t
CTX_WIDTH = 0.5  # the context before them: this many times the zoomed part's width,
CTX_BINS = 1  # in about this many bins per column of the zoomed part


Panel = tuple[str, Any, list[int]]  # (title, one value per key, indices of outlined queries)


def _tb_image(tb: dict[str, Any], values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """[N + 1, T] image of one value per key (row b, column t); NaN (grey) for hidden keys
    and for cells without a key, a zero mass floored to the scale's darkest colour."""
    t, b = np.asarray(tb["keys"]["t"]), np.asarray(tb["keys"]["b"])
    v = np.asarray(values, dtype=float)  # None -> NaN
    image = np.full((b.max() + 1, t.max() + 1), np.nan)
    image[b, t] = np.maximum(v, TB_FLOOR / 2)  # NaN stays NaN
    return image


def query_mean(mass: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Mean over query branches of per-key masses [Q][K]: a hidden key counts as 0 for that
    query (so the mean still sums to 1), and is NaN only where no query sees it."""
    m = np.asarray(mass, dtype=float)
    seen = ~np.isnan(m)
    return np.where(seen.any(axis=0), np.nansum(m, axis=0) / m.shape[0], np.nan)


def tb_shares(tb: dict[str, Any], values: Sequence[float | None],
              query_b: int | None = None) -> dict[str, float | None]:
    """Mass on the context (row 0) and on the branch rows: with the query's branch
    `query_b`, split into its own row and the other rows (None when every key there is
    hidden from it), else as one `branches` share."""
    b = np.asarray(tb["keys"]["b"])
    v = np.asarray(values, dtype=float)  # None -> NaN
    out = {"ctx": float(np.nansum(v[b == 0]))}
    if query_b is None:
        out["branches"] = float(np.nansum(v[b > 0]))
        return out
    other = (b > 0) & (b != query_b)
    out["own"] = float(np.nansum(v[b == query_b]))
    out["other"] = float(np.nansum(v[other])) if (~np.isnan(v[other])).any() else None
    return out


def _shares_text(shares: dict[str, float | None]) -> str:
    """"ctx .64 · own .11 · other .24": short enough for a panel title."""
    return " · ".join(f"{k} {v:.2f}".replace(" 0.", " .") for k, v in shares.items()
                      if v is not None)


def _mean_shares(tb: dict[str, Any], mass: Sequence[Sequence[float | None]]) -> str:
    """The shares of `tb_shares` averaged over the query branches (a query's hidden keys
    count as 0; `other` shown when some query sees another branch's key)."""
    each = [tb_shares(tb, m, b) for m, b in zip(mass, tb["queries"]["b"], strict=True)]
    mean = {k: (None if all(x[k] is None for x in each)
                else float(np.mean([x[k] or 0.0 for x in each]))) for k in each[0]}
    return _shares_text(mean)


class TBAxis:
    """How the (t, b) panels lay key time out across: the keys from `zoom` (`ZOOM_MARGIN`
    context keys before the first branch t) to the last at one column each, and the context
    before them, when longer, compressed into `CTX_WIDTH` times that width with a gap (a
    broken axis). x is in columns of the zoomed part; `zoom` is 0 when nothing is compressed.
    """

    def __init__(self, tb: dict[str, Any]):
        t, b = np.asarray(tb["keys"]["t"]), np.asarray(tb["keys"]["b"])
        self.end = int(t.max()) + 1
        self.start = int(t[b > 0].min())  # the branches' first t
        zoom = max(0, self.start - ZOOM_MARGIN)
        self.ctx_width = CTX_WIDTH * (self.end - zoom)
        if zoom <= self.ctx_width:  # a short context: nothing to gain
            zoom, self.ctx_width = 0, 0.0
        self.zoom = zoom
        self.gap = max(1.0, 0.05 * (self.end - zoom)) if zoom else 0.0
        # the compressed context is drawn in bins of `bin` keys, each shown at its largest mass
        # per key (a pixel holds several keys: peaks such as the first token's stay visible)
        self.bin = max(1, math.ceil(zoom / (CTX_BINS * self.ctx_width))) if zoom else 1
        self.offset = self.ctx_width + self.gap - zoom  # x = t + offset in the zoomed part

    def x(self, t):
        """Column position of key time t (array-aware)."""
        t = np.asarray(t, dtype=float)
        if not self.zoom:
            return t
        return np.where(t < self.zoom - 0.5, (t + 0.5) * self.ctx_width / self.zoom - 0.5,
                        t + self.offset)

    def limits(self) -> tuple[float, float]:
        return -0.5, self.end - 0.5 + self.offset  # offset 0 when nothing is compressed

    def ticks(self) -> tuple[list[float], list[str]]:
        """At most 4 ticks on the zoomed part, from the branches' first t; 0 and a round t
        clear of it on the compressed part."""
        if not self.zoom:
            shown = [int(v) for v in MaxNLocator(4, integer=True).tick_values(0, self.end - 1)
                     if 0 <= v < self.end]
        else:
            ctx = MaxNLocator(2, integer=True).tick_values(0, self.zoom - 1)
            shown = [int(v) for v in ctx if 0 <= v <= 0.6 * self.zoom] or [0]
            step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9)
                        if (self.end - 1 - self.start) // s < 4)
            shown += list(range(self.start, self.end, step))
        return [float(v) for v in self.x(shown)], [str(v) for v in shown]

    def compress(self, image: np.ndarray) -> np.ndarray:
        """The columns t < zoom of an image, each key showing the largest value of its bin."""
        ctx = image[:, :self.zoom]
        if self.bin == 1:
            return ctx
        edges = np.arange(0, self.zoom, self.bin)
        peaks = np.fmax.reduceat(ctx, edges, axis=1)  # NaN only where a whole bin is
        return np.repeat(peaks, np.diff([*edges, self.zoom]), axis=1)

    def label(self) -> str:
        text = "key time t (dotted: the branches start; squares: the queries)"
        if not self.zoom:
            return text
        binned = f", each cell the largest of {self.bin} keys" if self.bin > 1 else ""
        return f"{text}\nleft of the break: the context t < {self.zoom}, compressed{binned}"


def _break_marks(ax, axis: TBAxis) -> None:
    """A white band over the gap, through the frame, with the usual slashes."""
    lo, hi = axis.ctx_width - 0.5, axis.ctx_width + axis.gap - 0.5
    trans = ax.get_xaxis_transform()  # x in data, y in axes
    ax.add_patch(matplotlib.patches.Rectangle((lo, -0.02), hi - lo, 1.04, transform=trans,
                                              facecolor="white", edgecolor="none",
                                              clip_on=False, zorder=3))
    dx = 0.35 * axis.gap
    for x in (lo, hi):
        for y in (0.0, 1.0):
            ax.plot([x - dx / 2, x + dx / 2], [y - 0.03, y + 0.03], transform=trans,
                    color="black", lw=0.6, clip_on=False, zorder=4)


def _tb_panel(ax, tb: dict[str, Any], panel: Panel):
    """One (t, b) heatmap, its queries outlined and the branches' first t dotted; the context
    before the branches compressed (`TBAxis`)."""
    title, values, queries = panel
    image = _tb_image(tb, values)
    axis = TBAxis(tb)
    rows = image.shape[0]
    style = {"origin": "lower", "aspect": "auto", "cmap": cmap(), "norm": norm(TB_FLOOR)}
    im = ax.imshow(image[:, axis.zoom:], interpolation="nearest",
                   extent=(axis.x(axis.zoom) - 0.5, axis.x(axis.end - 1) + 0.5, -0.5, rows - 0.5),
                   **style)
    if axis.zoom:
        ax.imshow(axis.compress(image), interpolation="nearest",
                  extent=(-0.5, axis.ctx_width - 0.5, -0.5, rows - 0.5), **style)
        _break_marks(ax, axis)
    ax.set_xlim(*axis.limits())
    ax.set_ylim(-0.5, rows - 0.5)
    for r in range(rows - 1):  # the rows b apart
        ax.axhline(r + 0.5, color="white", lw=0.5)
    ax.axvline(axis.x(axis.start) - 0.5, color="white", lw=0.6, ls=":")
    q = tb["queries"]
    ax.scatter(axis.x([q["t"][i] for i in queries]), [q["b"][i] for i in queries], marker="s",
               s=10, facecolors="none", edgecolors="#00e5ff", linewidths=0.6, zorder=5)
    every = max(1, -(-(rows - 1) // 8))  # at most about 8 branch labels
    ticks = [0, *range(1, rows, every)]
    ax.set_yticks(ticks, ["ctx" if r == 0 else f"b{r}" for r in ticks], fontsize=6)
    ax.set_xticks(*axis.ticks())
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(title, fontsize=6.5)
    return im


def _tb_figure(blocks: Sequence[tuple[str, dict[str, Any], list[Panel]]]) -> Figure:
    """Blocks (one per model: title, its `tb`, its panels) stacked, `TB_COLUMNS` panels to
    a row, each block with its colour bar (the scale is the same in all)."""
    heights = [1.45 * -(-len(panels) // TB_COLUMNS) + 0.7 for _, _, panels in blocks]
    cols = min(TB_COLUMNS, max(len(panels) for _, _, panels in blocks))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, sum(heights)), layout="constrained")
        subfigs = np.atleast_1d(fig.subfigures(len(blocks), 1, height_ratios=heights))
        for sub, (title, tb, panels) in zip(subfigs, blocks, strict=True):
            axes = sub.subplots(-(-len(panels) // cols), cols, squeeze=False, sharex=True,
                                sharey=True).flatten()
            for ax in axes[len(panels):]:
                ax.remove()
            shown = axes[:len(panels)]
            ims = [_tb_panel(ax, tb, panel) for ax, panel in zip(shown, panels, strict=True)]
            for ax in shown[len(panels) - cols:]:  # t labels also above an empty slot
                ax.tick_params(labelbottom=True)
            sub.suptitle(title)
            sub.supxlabel(TBAxis(tb).label())
            sub.supylabel("key branch b")
            sub.colorbar(ims[-1], ax=list(shown), label="attention mass per key",
                         extend="min", shrink=0.9,
                         ticks=[10.0 ** k for k in range(round(math.log10(TB_FLOOR)), 1)])
    return fig


def _tb_title(analysis: dict[str, Any], what: str) -> str:
    tb = analysis["tb"]
    title = (f"{analysis['model']}: step {tb['step']} of group {tb['group']} "
             f"({len(tb['queries']['b'])} branch queries); {what}")
    return title if len(title) <= TITLE_CHARS else title.replace("; ", "\n", 1)


def tb_heatmap(analyses: Sequence[dict[str, Any]]) -> Figure:
    """Per captured layer: where the step's branch queries attend on the (t, b) plane,
    averaged over heads and query branches; the title adds the mean mass on the context,
    the query's own row and the other rows."""
    blocks = []
    for a in analyses:
        tb = a["tb"]
        everyone = list(range(len(tb["queries"]["b"])))
        panels = [(f"L{tb['layers'][i]}\n{_mean_shares(tb, tb['mass'][i])}",
                   query_mean(tb["mass"][i]), everyone)
                  for i in grid_layers(len(tb["layers"]), TB_PANELS)]
        what = f"mean of {len(tb['heads'])} heads and of the branch queries"
        blocks.append((_tb_title(a, what), tb, panels))
    return _tb_figure(blocks)


def tb_branches(analyses: Sequence[dict[str, Any]]) -> Figure:
    """One layer, one panel per query branch: its own row, the context, its neighbours, with
    the mass on each in the title."""
    blocks = []
    for a in analyses:
        tb = a["tb"]
        i = tb["layers"].index(tb["figure_layer"])
        q = tb["queries"]
        panels = [(f"query b{b} (t = {t})\n{_shares_text(tb_shares(tb, tb['mass'][i][j], b))}",
                   tb["mass"][i][j], [j])
                  for j, (t, b) in enumerate(zip(q["t"], q["b"], strict=True))]
        what = f"layer {tb['figure_layer']}, mean of {len(tb['heads'])} heads"
        blocks.append((_tb_title(a, what), tb, panels))
    return _tb_figure(blocks)


def tb_heads(analyses: Sequence[dict[str, Any]]) -> Figure:
    """One layer, one panel per head, averaged over the step's query branches; the title
    adds the mass on the context and on the branch rows."""
    blocks = []
    for a in analyses:
        tb = a["tb"]
        i = tb["layers"].index(tb["figure_layer"])
        everyone = list(range(len(tb["queries"]["b"])))
        panels = [(f"H{h}\n{_shares_text(tb_shares(tb, tb['head_mass'][i][j]))}",
                   tb["head_mass"][i][j], everyone) for j, h in enumerate(tb["heads"])]
        what = f"layer {tb['figure_layer']}, mean of the branch queries"
        blocks.append((_tb_title(a, what), tb, panels))
    return _tb_figure(blocks)


# the (t, b) figures and the key of `tb` each needs: drawn for the analyses that have it
TB_FIGURES = {"tb_heatmap": ("mass", tb_heatmap), "tb_branches": ("mass", tb_branches),
              "tb_heads": ("head_mass", tb_heads)}
