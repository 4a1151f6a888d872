"""Figures of the attention analysis (`pmbench attn`), written as PNG and PDF.

Each function takes the per-model analyses (the `grid` and `per_layer` blocks of
attention.json, one dict per model; two with `--compare`, drawn side by side) and
returns a `matplotlib.figure.Figure` (no pyplot state; PNG is rendered by Agg):

- `heatmaps`: attention mass over (|Δt| bucket x key column) for the mean of all
  heads and for the top time, branch and context head (by time - branch focus,
  branch - time focus and context mass, among the heads with that label);
- `heatmap_grid`: the same small heatmap for every head of up to `GRID_ROWS` layers;
- `focus_scatter`: heads by time focus (x) and branch focus (y), coloured by layer;
- `layer_curves`: context / own / other-branch mass and mean focus scores per layer.

Heatmaps share one logarithmic colour scale; rows and columns that hold no key in
any model are cut (other branches under the isolated mask), and grey cells hold no key.

The (t, b) figures (`TB_FIGURES`, drawn from the `tb` block of each analysis: one step
of one group) lay attention out on the plane of the keys' positions: key time t across,
key branch b up (row 0 the shared context, then branches 1..N), one cell per key,
coloured by the mass per key on a logarithmic scale; grey cells are keys the query may
not see, or no key at all. A dotted line marks where the branches start, squares the
queries. The t axis is broken (`TBAxis`): the keys from two context tokens before the
branches start are drawn one column each, and the context before them, when longer, is
compressed to half that width in bins that show their largest key (so the branch rows are
not a sliver at the right of a long context, and a peak such as the first token stays
visible). Each panel's title adds the total mass on the context, the query's own row and
the other branches' rows. Each model is one block, stacked with `--compare`:

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
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pmbench.attention.analysis import CONTEXT_SHARE, FOCUS_MARGIN

DPI = 200
WIDTH = 7.0  # inches: the full text width of a two-column paper
GRID_ROWS = 8  # layers shown in the heatmap grid (evenly spaced when there are more)
MASS_FLOOR = 1e-4  # colour scale floor: smaller masses show as the darkest colour
TB_FLOOR = 1e-5  # the same for the (t, b) figures, whose cells are single keys
TITLE_CHARS = 95  # a longer (t, b) block title goes on two lines
TB_COLUMNS = 4  # panels per row in the (t, b) figures
TB_PANELS = 16  # layers shown in tb_heatmap (evenly spaced when there are more)
ZOOM_MARGIN = 2  # context keys shown at one column each before the first branch t
CTX_WIDTH = 0.5  # the context before them: this many times the zoomed part's width,
CTX_BINS = 1  # in about this many bins per column of the zoomed part
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "legend.fontsize": 7}
MARKERS = {"time": "o", "branch": "s", "context": "^", "mixed": "x"}
TARGETS = (("context_mass", "context"), ("own_branch_mass", "own branch"),
           ("other_branch_mass", "other branches"))


def _cmap():
    return matplotlib.colormaps["magma"].with_extremes(bad="#d9d9d9", under="#000004")


def _norm(floor: float = MASS_FLOOR) -> LogNorm:
    return LogNorm(vmin=floor, vmax=1.0, clip=False)


def _extent(analyses: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the grid that hold a key in any of the analyses: the rest is cut."""
    has_key = sum(np.asarray(a["grid"]["uniform"], dtype=float) for a in analyses) > 0
    return has_key.any(axis=1), has_key.any(axis=0)


def _grid(analysis: dict[str, Any], extent) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(mass [L, H, T, C], mean over heads [T, C], axis labels) cut to `extent`.

    Cells without keys are NaN (grey); a zero mass where keys exist is floored so it
    shows as the scale's darkest colour.
    """
    rows, cols = extent
    grid = analysis["grid"]
    no_key = (np.asarray(grid["uniform"], dtype=float) <= 0)[rows][:, cols]
    mass = np.asarray(grid["mass"], dtype=float)[:, :, rows][:, :, :, cols]
    mean = mass.mean(axis=(0, 1))
    labels = {"time_buckets": [x for x, k in zip(grid["time_buckets"], rows, strict=True) if k],
              "branch_columns": [x for x, k in zip(grid["branch_columns"], cols, strict=True)
                                 if k]}
    floor = MASS_FLOOR / 2
    return (np.where(no_key, np.nan, np.maximum(mass, floor)),
            np.where(no_key, np.nan, np.maximum(mean, floor)), labels)


def _heatmap(ax, mass: np.ndarray, grid: dict[str, Any], xlabels: bool, ylabels: bool):
    im = ax.imshow(mass, origin="lower", aspect="auto", cmap=_cmap(), norm=_norm(),
                   interpolation="nearest")
    cols, rows = grid["branch_columns"], grid["time_buckets"]
    ax.set_xticks(range(len(cols)), cols if xlabels else [], rotation=90 if len(cols) > 4 else 0)
    ax.set_yticks(range(len(rows)), rows if ylabels else [])
    if xlabels:
        ax.set_xlabel("key column")
    if ylabels:
        ax.set_ylabel("|Δt| (tokens)")
    return im


def _heads(analysis: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """(layer index in the grid, head index in the grid, head entry) for every head."""
    return [(i, j, h) for i, layer in enumerate(analysis["per_layer"])
            for j, h in enumerate(layer["heads"])]


def _top(heads, label: str, score):
    """The head with the highest score among those labelled `label` (else among all)."""
    pool = [x for x in heads if x[2]["label"] == label] or heads
    return max(pool, key=lambda x: score(x[2]))


def _colorbar(fig: Figure, im, axes) -> None:
    fig.colorbar(im, ax=axes, label="attention mass per branch query", extend="min",
                 shrink=0.9)


def heatmaps(analyses: Sequence[dict[str, Any]]) -> Figure:
    """Rows: models; panels: mean of all heads, then the most time-, branch- and
    context-focused heads."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 2.4 * len(analyses) + 0.3), layout="constrained")
        axes = fig.subplots(len(analyses), 4, squeeze=False)
        im = None
        extent = _extent(analyses)
        for r, analysis in enumerate(analyses):
            mass, mean, grid = _grid(analysis, extent)
            heads = _heads(analysis)
            picks = [("time", _top(heads, "time", lambda h: h["time_focus"] - h["branch_focus"])),
                     ("branch", _top(heads, "branch",
                                     lambda h: h["branch_focus"] - h["time_focus"])),
                     ("context", _top(heads, "context", lambda h: h["context_mass"]))]
            im = _heatmap(axes[r, 0], mean, grid, True, True)
            axes[r, 0].set_title(f"{analysis['model']}\nmean of {len(heads)} heads")
            for c, (what, (i, j, h)) in enumerate(picks, start=1):
                _heatmap(axes[r, c], mass[i, j], grid, True, False)
                layer = analysis["per_layer"][i]["layer"]
                axes[r, c].set_title(
                    f"top {what}: L{layer} H{h['head']}\n{h['label']} · "
                    f"t {h['time_focus']:.2f} · b {h['branch_focus']:.2f}", fontsize=7)
        _colorbar(fig, im, axes)
    return fig


def grid_layers(n: int, rows: int = GRID_ROWS) -> list[int]:
    """Indices of at most `rows` of n layers, evenly spaced, first and last included."""
    if n <= rows:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, rows)})


def heatmap_grid(analyses: Sequence[dict[str, Any]], rows: int = GRID_ROWS) -> Figure:
    """Small heatmaps, layers (rows) x heads (columns), one block per model."""
    with matplotlib.rc_context(STYLE):
        shown = [grid_layers(len(a["per_layer"]), rows) for a in analyses]
        n_heads = max(len(a["grid"]["heads"]) for a in analyses)
        height = 0.75 * max(len(s) for s in shown) + 1.2
        fig = Figure(figsize=(max(WIDTH, 0.75 * n_heads * len(analyses) + 1.2), height),
                     layout="constrained")
        subfigs = np.atleast_1d(fig.subfigures(1, len(analyses)))
        im, extent = None, _extent(analyses)
        for sub, analysis, layer_idx in zip(subfigs, analyses, shown, strict=True):
            mass, _, labels = _grid(analysis, extent)
            grid = analysis["grid"]
            axes = sub.subplots(len(layer_idx), len(grid["heads"]), squeeze=False)
            for r, i in enumerate(layer_idx):
                for c, head in enumerate(grid["heads"]):
                    ax = axes[r, c]
                    im = ax.imshow(mass[i, c], origin="lower", aspect="auto", cmap=_cmap(),
                                   norm=_norm(), interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    label = analysis["per_layer"][i]["heads"][c]["label"]
                    ax.text(0.96, 0.94, label[0].upper(), transform=ax.transAxes, ha="right",
                            va="top", fontsize=6,
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                  "alpha": 0.8})
                    if r == 0:
                        ax.set_title(f"H{head}")
                    if c == 0:
                        ax.set_ylabel(f"L{grid['layers'][i]}")
            n_layers = len(analysis["per_layer"])
            sub.suptitle(analysis["model"] + (f" ({len(layer_idx)} of {n_layers} captured layers)"
                                              if len(layer_idx) < n_layers else ""))
        fig.supxlabel(f"each panel: |Δt| bucket ({labels['time_buckets'][0]} at the bottom, "
                      f"{labels['time_buckets'][-1]} at the top) x key column "
                      f"({', '.join(labels['branch_columns'])})\n"
                      "letter: the head's label (Time, Branch, Context, Mixed)")
        # one shared colour scale: the last block carries the colour bar
        sub.colorbar(im, ax=list(axes.flat), label="attention mass per branch query",
                     extend="min", shrink=0.6)
    return fig


def focus_scatter(analyses: Sequence[dict[str, Any]]) -> Figure:
    """One panel per model: every head at (time focus, branch focus), coloured by layer."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.4 * len(analyses) + 0.8, 3.4), layout="constrained")
        axes = fig.subplots(1, len(analyses), squeeze=False, sharex=True, sharey=True)[0]
        n_layers = max(a["per_layer"][-1]["layer"] for a in analyses) + 1
        sc = None
        for ax, analysis in zip(axes, analyses, strict=True):
            for label, marker in MARKERS.items():
                pts = [(h["time_focus"], h["branch_focus"], layer["layer"])
                       for layer in analysis["per_layer"] for h in layer["heads"]
                       if h["label"] == label]
                if not pts:
                    continue
                x, y, c = map(np.asarray, zip(*pts, strict=True))
                sc = ax.scatter(x, y, c=c, cmap="viridis", vmin=0, vmax=max(n_layers - 1, 1),
                                marker=marker, s=18, linewidths=0.8,
                                label=f"{label} ({len(pts)})")
            line = np.array([0, 1])
            ax.plot(line, line + FOCUS_MARGIN, ls="--", lw=0.6, color="grey")
            ax.plot(line, line - FOCUS_MARGIN, ls="--", lw=0.6, color="grey")
            ax.set_xlim(-0.03, 1.03)
            ax.set_ylim(-0.03, 1.03)
            ax.set_aspect("equal")
            ax.set_xlabel("time focus")
            ax.set_title(analysis["model"])
            legend = ax.legend(loc="lower left", title_fontsize=7,
                               title=f"label (context: ≥{CONTEXT_SHARE:.0%} on ctx)")
            for handle in legend.legend_handles:
                handle.set_color("0.35")  # marker shape is the key; colour is the layer
        axes[0].set_ylabel("branch focus")
        if sc is not None:
            bar = fig.colorbar(sc, ax=list(axes), label="layer")
            bar.locator = MaxNLocator(integer=True)
            bar.update_ticks()
    return fig


def layer_curves(analyses: Sequence[dict[str, Any]]) -> Figure:
    """Top: where branch tokens attend, per layer. Bottom: mean focus scores per layer."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 4.6), layout="constrained")
        axes = fig.subplots(2, len(analyses), squeeze=False, sharex="col", sharey="row")
        for c, analysis in enumerate(analyses):
            layers = [x["layer"] for x in analysis["per_layer"]]
            top, bottom = axes[0, c], axes[1, c]
            for key, name in TARGETS:
                top.plot(layers, [x[key] for x in analysis["per_layer"]], marker=".",
                         label=name, lw=2.0 if key == "other_branch_mass" else 1.2)
            top.plot(layers, [x["first_token_mass"] for x in analysis["per_layer"]], ls=":",
                     color="grey", label="first token (in context)")
            top.set_ylim(-0.02, 1.02)
            top.set_title(analysis["model"])
            for key, name in (("time_focus_mean", "time focus"),
                              ("branch_focus_mean", "branch focus")):
                bottom.plot(layers, [x[key] for x in analysis["per_layer"]], marker=".",
                            label=name)
            bottom.set_ylim(-0.02, 1.02)
            bottom.set_xlabel("layer")
            bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0, 0].set_ylabel("attention mass of branch tokens")
        axes[1, 0].set_ylabel("mean over heads")
        fig.legend(handles=axes[0, -1].get_lines(), loc="outside right upper")
        fig.legend(handles=axes[1, -1].get_lines(), loc="outside right lower")
    return fig


# --- the (t, b) plane ------------------------------------------------------------------------

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
    style = {"origin": "lower", "aspect": "auto", "cmap": _cmap(), "norm": _norm(TB_FLOOR)}
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


FIGURES = {"heatmaps": heatmaps, "heatmap_grid": heatmap_grid,
           "focus_scatter": focus_scatter, "layer_curves": layer_curves}
# the (t, b) figures and the key of `tb` each needs: drawn for the analyses that have it
TB_FIGURES = {"tb_heatmap": ("mass", tb_heatmap), "tb_branches": ("mass", tb_branches),
              "tb_heads": ("head_mass", tb_heads)}


def redraw(folder: Path | str) -> list[str]:
    """Draw the figures of a finished `pmbench attn` run again, from its records alone (no
    model): `folder/attention.json` and, when it compared two models,
    `folder/compare/attention.json`. Overwrites the PNG and PDF files in `folder` and no
    other; the records are left as they are. Returns the file names."""
    import json

    folder = Path(folder)
    analyses = [json.loads((folder / "attention.json").read_text())]
    if (folder / "compare" / "attention.json").exists():
        analyses.append(json.loads((folder / "compare" / "attention.json").read_text()))
    return write_figures(analyses, folder)


def write_figures(analyses: Sequence[dict[str, Any]], folder: Path) -> list[str]:
    """Draw every figure into `folder` as PNG and PDF; return the file names.

    A (t, b) figure is left out when no analysis has its data (`tb` is null when every
    branch stopped before the step; `head_mass` needs `--tb-heads`)."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(name, draw, analyses) for name, draw in FIGURES.items()]
    for name, (needs, draw) in TB_FIGURES.items():
        shown = [a for a in analyses if needs in (a.get("tb") or {})]
        if shown:
            todo.append((name, draw, shown))
    names = []
    for name, draw, shown in todo:
        fig = draw(shown)
        for ext in ("png", "pdf"):
            fig.savefig(folder / f"{name}.{ext}", dpi=DPI)
            names.append(f"{name}.{ext}")
    return names


if __name__ == "__main__":  # python -m pmbench.attention.plots RUN_FOLDER...
    import sys

    for arg in sys.argv[1:]:
        print(arg, " ".join(redraw(arg)))
