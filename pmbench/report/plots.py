"""The paper's figures from run records: matplotlib, written as PNG and PDF side by side.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot state; PNG is
rendered by Agg) with constrained layout so labels never overlap. Kinds:

- ``throughput``: output tok/s vs #branch, one line per method (log-2 x axis), with the
  repeat range as error bars;
- ``accuracy``: the suite's accuracy metric (%) vs #branch, one line per method and suite;
- ``ratio``: accuracy (%) vs rope_2d_ratio of rope2d runs, one line per model origin
  (a trained checkpoint counts as its training run's base model and mode), suite and #branch;
- ``latency``: prefill and decode time (s, medians over repeats) as stacked horizontal
  bars per method and #branch (the figure grows with the number of bars).

As in the tables, throughput and latency come from throughput runs (``--ignore-eos``)
and accuracy from accuracy runs, and when several records fit one point the newest wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from pmbench.errors import BadInput
from pmbench.report.results import Records, repeat_range, trained_by
from pmbench.report.table_data import col, newest_runs, run_frame
from pmbench.suites import display_name, metric

SIZE = (6.4, 4.0)  # inches: one column of a two-column paper at 2x, or a slide
DPI = 200  # PNG pixels per inch: 1280 x 800


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, layout="constrained")
    return fig, fig.add_subplot()


def _series(cells: pd.DataFrame, by: list[str]):
    """(label, rows) per series; the label is the first key plus the keys that vary."""
    shown = [0] + [i for i, c in enumerate(by[1:], 1) if cells[c].nunique(dropna=False) > 1]
    for keys, rows in cells.groupby(by, sort=True, dropna=False):
        yield " · ".join(str(keys[i]) for i in shown), rows


def _branch_axis(ax, branches: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(b) for b in branches))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("#branch (questions per group)")


def _short_model(model: str, records: Records) -> str:
    """A legend-sized model name: a checkpoint is named by its training run's base and kind."""
    rec = trained_by(model, records.train)
    return f"{rec['model']} ({rec['kind']} {rec['run_id'][-4:]})" if rec else model


def _cells(records: Records, models, suites, purpose: str) -> pd.DataFrame:
    """The newest run of `purpose` per point (as in the tables: throughput and latency
    from throughput runs, accuracy from accuracy runs)."""
    runs = run_frame(records, models, suites)
    if runs.empty:
        raise BadInput("no run records to plot (check --results, --model and --suite)")
    runs = runs.assign(
        suite_metric=[f"{display_name(s)} {metric(s).label}"
                      for s in runs["suite"]],
        short_model=[_short_model(m, records) for m in runs["model"]])
    return newest_runs(runs, purpose, ["model", "label", "suite", "branch"])


def _legend(fig: Figure) -> None:
    """The legend below the axes, outside the data; the figure grows by its height so
    the axes keep their size (constrained layout places it)."""
    labels = fig.axes[0].get_legend_handles_labels()[1]
    ncols = 2 if max(map(len, labels)) <= 34 else 1
    rows = -(-len(labels) // ncols)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.22 * rows)
    fig.legend(loc="outside lower center", ncols=ncols, fontsize="small")


def throughput(records: Records, models=None, suites=None) -> Figure:
    cells = _cells(records, models, suites, "throughput").dropna(subset=["tok_s"])
    if cells.empty:
        raise BadInput("no throughput in the selected run records")
    fig, ax = _figure()
    for label, rows in _series(cells, ["label", "suite_metric", "short_model"]):
        rows = rows.sort_values("branch")
        spans = [repeat_range(r, "output_tok_s") for r in rows["record"]]
        err = [[t - lo for t, (lo, _) in zip(rows["tok_s"], spans, strict=True)],
               [hi - t for t, (_, hi) in zip(rows["tok_s"], spans, strict=True)]]
        ax.errorbar(rows["branch"], rows["tok_s"], yerr=err, marker="o", capsize=3, label=label)
    _branch_axis(ax, cells["branch"])
    ax.set_ylabel("Output throughput (tokens/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


def accuracy(records: Records, models=None, suites=None) -> Figure:
    cells = _cells(records, models, suites, "accuracy").dropna(subset=["acc"])
    if cells.empty:
        raise BadInput("no accuracy in the selected run records")
    fig, ax = _figure()
    for label, rows in _series(cells, ["label", "suite_metric", "short_model"]):
        rows = rows.sort_values("branch")
        ax.plot(rows["branch"], rows["acc"], marker="o", label=label)
    _branch_axis(ax, cells["branch"])
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


def ratio(records: Records, models=None, suites=None) -> Figure:
    cells = _cells(records, models, suites, "accuracy")
    cells = cells[(cells["method"] == "rope2d")].dropna(subset=["acc", "rope2d.ratio"])
    if cells.empty:
        raise BadInput("no rope2d run records with accuracy to plot against rope_2d_ratio")
    origin = []
    for model in cells["model"]:
        rec = trained_by(model, records.train)
        origin.append(f"{rec['model']} ({rec['kind']})" if rec else model)
    cells = cells.assign(origin=origin, b=[f"#branch {b}" for b in cells["branch"]])
    fig, ax = _figure()
    for label, rows in _series(cells, ["origin", "suite_metric", "b"]):
        rows = rows.sort_values("rope2d.ratio")
        ax.plot(rows["rope2d.ratio"], rows["acc"], marker="o", label=label)
    ax.set_xlabel("rope_2d_ratio (share of rotary pairs on the branch axis)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


def latency(records: Records, models=None, suites=None) -> Figure:
    cells = _cells(records, models, suites, "throughput")
    cells = cells.assign(prefill=pd.to_numeric(col(cells, "latency.prefill_s")),
                         decode=pd.to_numeric(col(cells, "latency.decode_s")))
    cells = cells.dropna(subset=["prefill", "decode"])
    if cells.empty:
        raise BadInput("no latency split (prefill_s, decode_s) in the selected run records")
    cells = cells.sort_values(["model", "suite", "branch"], kind="stable")
    varying = [c for c in ("suite", "short_model") if cells[c].nunique() > 1]
    names = [" · ".join([r["label"], f"b{r['branch']}", *(str(r[c]) for c in varying)])
             for _, r in cells.iterrows()]
    fig = Figure(figsize=(SIZE[0], max(SIZE[1], 1.5 + 0.3 * len(cells))), layout="constrained")
    ax = fig.add_subplot()
    y = range(len(cells))[::-1]  # first row on top
    ax.barh(y, cells["prefill"], label="prefill")
    ax.barh(y, cells["decode"], left=cells["prefill"], label="decode")
    ax.set_yticks(list(y), names, fontsize="small")
    ax.set_ylabel("Method and #branch")
    ax.set_xlabel("Time per run (s)")
    ax.grid(alpha=0.3, axis="x")
    _legend(fig)
    return fig


KINDS: dict[str, Callable[..., Figure]] = {"throughput": throughput, "accuracy": accuracy,
                                           "ratio": ratio, "latency": latency}


def plot(kind: str, records: Records, models: Sequence[str] | None = None,
         suites: Sequence[str] | None = None) -> Figure:
    """The figure of `kind` from `records`, keeping only `models` and `suites` when given."""
    if kind not in KINDS:
        raise BadInput(f"unknown plot {kind!r}; kinds are {', '.join(KINDS)}")
    return KINDS[kind](records, models, suites)


def save(fig: Figure, output: str | Path) -> list[Path]:
    """Write `fig` as PNG and PDF: FILE.png (or FILE.pdf) and its sibling of the other type."""
    output = Path(output)
    if output.suffix not in (".png", ".pdf"):
        raise BadInput(f"--output must end in .png or .pdf, got {output.name}")
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [output.with_suffix(".png"), output.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    return paths
