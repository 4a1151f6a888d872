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

The (t, b) figures (`TB_FIGURES`) are drawn by `tb_plots`. `write_figures` draws them all
into a run's folder; `python -m pmbench.attention.plots RUN_FOLDER...` draws them again
from the records alone (`redraw`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pmbench.attention.grid import CONTEXT_SHARE, FOCUS_MARGIN
from pmbench.attention.style import GRID_ROWS, MASS_FLOOR, STYLE, WIDTH, cmap, grid_layers, norm
from pmbench.attention.tb_plots import TB_FIGURES
from pmbench.records.store import read_record
from pmbench.safe_io import atomic_write_bytes

DPI = 200
MARKERS = {"time": "o", "branch": "s", "context": "^", "mixed": "x"}
TARGETS = (("context_mass", "context"), ("own_branch_mass", "own branch"),
           ("other_branch_mass", "other branches"))


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
    im = ax.imshow(mass, origin="lower", aspect="auto", cmap=cmap(), norm=norm(),
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
                    im = ax.imshow(mass[i, c], origin="lower", aspect="auto", cmap=cmap(),
                                   norm=norm(), interpolation="nearest")
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


FIGURES = {"heatmaps": heatmaps, "heatmap_grid": heatmap_grid,
           "focus_scatter": focus_scatter, "layer_curves": layer_curves}


def redraw(folder: Path | str) -> list[str]:
    """Draw the figures of a finished `pmbench attn` run again, from its records alone (no
    model): `folder/attention.json` and, when it compared two models,
    `folder/compare/attention.json`. Overwrites the PNG and PDF files in `folder` and no
    other; the records are left as they are. Returns the file names."""
    folder = Path(folder)
    analyses = [read_record(folder / "attention.json", "attention record")]
    if (folder / "compare" / "attention.json").exists():
        analyses.append(read_record(folder / "compare" / "attention.json", "attention record"))
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
        for ext in ("png", "pdf"):  # drawn in memory, then renamed in: no link is followed
            buffer = io.BytesIO()
            fig.savefig(buffer, format=ext, dpi=DPI)
            atomic_write_bytes(folder / f"{name}.{ext}", buffer.getvalue())
            names.append(f"{name}.{ext}")
    return names


if __name__ == "__main__":  # python -m pmbench.attention.plots RUN_FOLDER...
    import sys

    for arg in sys.argv[1:]:
        print(arg, " ".join(redraw(arg)))
