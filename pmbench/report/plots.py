"""The paper's figures from run records, each answering one question (style: plot_style).

- ``throughput``: how fast is each method, and how does that scale with #branch? Output
  tok/s of throughput runs (``--ignore-eos``) against #branch, error bars the 95%
  interval of the median over repeats; with one #branch, bars.
- ``accuracy``: does a method lose accuracy? A forest plot: one row per method, setting,
  model and #branch, the suite's headline metric (%) of its accuracy run with the 95%
  interval of the mean over questions (from samples.jsonl: Wilson's for 0/1 scores, else
  the bootstrap), one panel per suite side by side, rows shared.
- ``ratio``: what does the share of rotary pairs on the branch axis cost, untrained and
  trained? Accuracy of rope2d runs against rope_2d_ratio, one series per model origin
  (base model, and the kind of training of a checkpoint), mask, setting and #branch.
- ``latency``: how long does a user wait for each answer? Each question's time from its
  group's start to its last token in accuracy runs (real stopping): bars at the median,
  whiskers to p99.

One suite per axes. A series is one model, method (and setting), question count and
token budget, and for speed one dtype/threads/machine: records that measured different
work are never joined by a line, and when several records fit one point the newest wins.
Each axes' title names the suite and, where its series share them, the questions and
tokens; the legend names what differs between series.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from pmbench.errors import BadInput
from pmbench.measure.stats import mean_interval, median_interval
from pmbench.report.paired import run_samples, unit_scores
from pmbench.report.plot_style import DPI, facets, legend, save, style_context, styles
from pmbench.report.results import Records, runners, trained_by
from pmbench.report.table_data import newest_runs, run_frame, setting_cell, sort_rows
from pmbench.suites import display_name, metric, suite_info

__all__ = ["DPI", "KINDS", "plot", "save"]


def _runs(records: Records, models, suites, purpose: str, point: list[str]) -> pd.DataFrame:
    """Runs of `purpose`, the newest per `point` (a series and its x)."""
    runs = run_frame(records, models, suites)
    if runs.empty:
        raise BadInput("no run records to plot (check --results, --model and --suite)")
    runs = runs.assign(short_model=[_short_model(m, records) for m in runs["model"]],
                       work=[_work(n, t, purpose) for n, t in zip(runs["n"], runs["budget"],
                                                                  strict=True)])
    return newest_runs(runs, purpose, point)


def _short_model(model: str, records: Records) -> str:
    """A legend-sized model name: a checkpoint is named by its training run's base and kind."""
    rec = trained_by(model, records.train)
    return f"{rec['model']} ({rec['kind']} {rec['run_id'][-4:]})" if rec else model


def _work(n: Any, budget: Any, purpose: str) -> str:
    q = f"{int(n)} questions" if pd.notna(n) else "questions unknown"
    return f"{q} × {int(budget)} tokens" if purpose == "throughput" and pd.notna(budget) else q


def _labels(cells: pd.DataFrame, keys: list[str]) -> pd.Series:
    """A series' legend label: its first key, then the keys that vary in the figure."""
    shown = [keys[0]] + [k for k in keys[1:] if cells[k].nunique(dropna=False) > 1]
    return cells[shown].astype(str).agg(" · ".join, axis=1)


def _common(fig: Figure, cells: pd.DataFrame, keys: list[str]) -> None:
    """What every series of the figure shares (the model, the machine), as its title: the
    legend names only what differs."""
    same = [str(cells[k].iloc[0]) for k in keys if k in cells and cells[k].nunique() == 1]
    if same:
        fig.suptitle(" · ".join(same), fontsize="medium")


def _title(ax, suite: str, rows: pd.DataFrame) -> None:
    works = rows["work"].unique()
    ax.set_title(display_name(suite) + (f" · {works[0]}" if len(works) == 1 else ""))


def _branch_axis(ax, branches: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(b) for b in branches))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("#branch (questions per group)")


X_NAMES = {"branch": "#branch", "rope2d.ratio": "rope_2d_ratio"}  # a bar chart's one x


def _dodge(x: pd.Series, k: int, n: int, log: bool) -> pd.Series:
    """`x` shifted a little for series `k` of `n`, so error bars at one x do not hide
    each other (by a factor on a log axis)."""
    step = (k - (n - 1) / 2) * min(0.06, 0.3 / max(n, 1))
    return x * 2 ** step if log else x + step / 3


def _draw(ax, rows: pd.DataFrame, x: str, y: str, err: str, look: dict) -> None:
    """Each series as a line with error bars, or, with one x for all, as bars."""
    single = rows[x].nunique() == 1
    groups = list(rows.groupby("series", sort=False))
    for k, (label, series) in enumerate(groups):
        series = series.sort_values(x)
        yerr = [[v - lo for v, (lo, _) in zip(series[y], series[err], strict=True)],
                [hi - v for v, (_, hi) in zip(series[y], series[err], strict=True)]]
        style = look[label]
        if single:
            ax.bar([k], series[y], yerr=yerr, color=style["color"], label=label,
                   edgecolor="black", linewidth=0.5, ecolor="#777777")
        else:
            xs = _dodge(series[x], k, len(groups), log=x == "branch")
            ax.errorbar(xs, series[y], yerr=yerr, label=label, **style)
    if single:
        ax.set_xticks([])
        ax.set_xlabel(f"{X_NAMES.get(x, x)} {rows[x].iloc[0]:g}")


def _faceted(cells: pd.DataFrame, x: str, y: str, ylabel: Callable[[str], str],
             xaxis: Callable[[Any, pd.DataFrame], None] | None) -> Figure:
    """One axes per suite, the series of `cells` (columns series, x, y, err) drawn in each,
    and one legend for the figure."""
    suites = sorted(cells["suite"].unique(), key=lambda s: display_name(s))
    look = styles(cells["series"])
    with style_context():
        fig, axes = facets(len(suites))
        for ax, suite in zip(axes, suites, strict=True):
            rows = cells[cells["suite"] == suite]
            _draw(ax, rows, x, y, "err", look)
            if xaxis is not None and rows[x].nunique() > 1:
                xaxis(ax, rows)
            ax.set_ylabel(ylabel(suite))
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            _title(ax, suite, rows)
        _common(fig, cells, ["short_model", "env"])
        _shared_legend(fig, axes)
    return fig


def _tok_s_interval(rec: dict[str, Any], value: float) -> tuple[float, float]:
    tp = rec.get("throughput") or {}
    if isinstance(tp.get("output_tok_s_ci_low"), int | float):
        return tp["output_tok_s_ci_low"], tp["output_tok_s_ci_high"]
    repeats = [v for v in (tp.get("repeats") or {}).get("output_tok_s") or []
               if isinstance(v, int | float)]
    return median_interval(repeats) or (value, value)


def throughput(records: Records, models=None, suites=None) -> Figure:
    keys = ["label", "short_model", "work", "env"]
    cells = _runs(records, models, suites, "throughput",
                  ["model", "env", "label", "suite", "branch", "n", "budget"])
    cells = cells.dropna(subset=["tok_s"])
    if cells.empty:
        raise BadInput("no throughput in the selected run records")
    cells = cells.assign(series=_labels(cells, keys), err=[
        _tok_s_interval(r, v) for r, v in zip(cells["record"], cells["tok_s"], strict=True)])
    return _faceted(cells, "branch", "tok_s", lambda s: "Output throughput (tokens/s)",
                    lambda ax, rows: _branch_axis(ax, rows["branch"]))


def _acc_interval(rec: dict[str, Any], value: float) -> tuple[float, float]:
    """95% interval (in %) of a run's headline accuracy over its questions' scores."""
    samples = run_samples(rec)
    info = suite_info(rec["suite"]) if samples else None
    scores = unit_scores(samples, info.metric()) if info else None
    ci = mean_interval(list(scores.values())) if scores else None
    return (100 * ci[0], 100 * ci[1]) if ci else (value, value)


def _accuracy_cells(records: Records, models, suites, point: list[str]) -> pd.DataFrame:
    cells = _runs(records, models, suites, "accuracy", point).dropna(subset=["acc"])
    if cells.empty:
        raise BadInput("no accuracy in the selected run records")
    return cells.assign(err=[_acc_interval(r, v) for r, v in zip(cells["record"],
                                                                  cells["acc"], strict=True)])


def _metric_label(suite: str) -> str:
    return f"{metric(suite).label} (%)"


def _model_tag(model: str, records: Records) -> str:
    """A checkpoint as its training kind and run, a shipped model as itself."""
    rec = trained_by(model, records.train)
    return f"{rec['kind']} {rec['run_id'].rsplit('-', 1)[-1]}" if rec else model


def accuracy(records: Records, models=None, suites=None) -> Figure:
    cells = _accuracy_cells(records, models, suites, ["model", "label", "suite", "branch", "n"])
    cells = cells.assign(tag=[_model_tag(m, records) for m in cells["model"]],
                         b=[f"b{b}" for b in cells["branch"]])
    cells = sort_rows(cells, ["label", "tag", "branch"])
    cells = cells.assign(row=_labels(cells, ["label", "tag", "b", "work"]))
    rows = list(dict.fromkeys(cells["row"]))
    suite_list = sorted(cells["suite"].unique(), key=lambda s: display_name(s))
    methods = list(dict.fromkeys(lab.split(" ")[0] for lab in cells["label"]))
    look = styles(methods)
    with style_context():
        fig = Figure(figsize=(min(7.0, 1.7 + 1.9 * len(suite_list)), 0.9 + 0.17 * len(rows)))
        axes = fig.subplots(1, len(suite_list), sharey=True, squeeze=False)[0]
        for ax, suite in zip(axes, suite_list, strict=True):
            for _, r in cells[cells["suite"] == suite].iterrows():
                y = len(rows) - 1 - rows.index(r["row"])
                lo, hi = r["err"]
                method = r["label"].split(" ")[0]
                ax.errorbar([r["acc"]], [y], xerr=[[r["acc"] - lo], [hi - r["acc"]]],
                            color=look[method]["color"], marker=look[method]["marker"],
                            linestyle="none", label=method)
            ax.set_xlabel(_metric_label(suite))
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3, axis="x")
            _title(ax, suite, cells[cells["suite"] == suite])
        axes[0].set_yticks(range(len(rows)), rows[::-1])
        axes[0].set_ylim(-0.7, len(rows) - 0.3)
        _common(fig, cells, ["short_model"])
        _shared_legend(fig, axes)
    return fig


def _shared_legend(fig: Figure, axes) -> None:
    """One legend entry per label over all `axes`."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    legend(fig, handles, labels)


def ratio(records: Records, models=None, suites=None) -> Figure:
    cells = _accuracy_cells(records, models, suites,
                            ["model", "label", "suite", "branch", "n"])
    rope2d = [name for name, runner in runners().items() if runner.uses_rope2d]
    cells = cells[cells["method"].isin(rope2d)].dropna(subset=["rope2d.ratio"])
    if cells.empty:
        raise BadInput("no rope2d run records with accuracy to plot against rope_2d_ratio")
    trained = [trained_by(m, records.train) for m in cells["model"]]
    cells = cells.assign(
        stage=[rec["kind"] if rec else "as shipped" for rec in trained],
        base=[rec["model"] if rec else m for rec, m in zip(trained, cells["model"], strict=True)],
        mask=[f"{m} mask" for m in cells["rope2d.mask"]],
        setting=[setting_cell(r, ("rope2d.mode", "rope2d.branch_freqs"))
                 for _, r in cells.iterrows()],
        b=[f"#branch {b}" for b in cells["branch"]])
    # the ablation's own runs: per model and suite, those with the most questions (a
    # checkpoint's shorter runs at other #branch are Table 3's), the newest per point
    most = pd.to_numeric(cells["n"]).fillna(0)
    cells = cells[most == most.groupby([cells["suite"], cells["model"]]).transform("max")]
    cells = cells.sort_values("created").drop_duplicates(
        ["stage", "base", "mask", "setting", "b", "suite", "rope2d.ratio"], keep="last")
    cells = cells.assign(series=_labels(cells, ["stage", "mask", "base", "setting", "b"]))

    def xaxis(ax, rows) -> None:
        ax.set_xlabel("rope_2d_ratio (share of rotary pairs on b)")
        ax.set_xlim(-0.05, 1.05)

    return _faceted(cells, "rope2d.ratio", "acc", _metric_label, xaxis)


def latency(records: Records, models=None, suites=None) -> Figure:
    cells = _runs(records, models, suites, "accuracy", ["model", "label", "suite", "branch",
                                                        "n"])
    answer = [((r.get("question_latency") or {}).get("last_token_s") or {})
              for r in cells["record"]]
    cells = cells.assign(p50=[a.get("p50") for a in answer], p99=[a.get("p99") for a in answer])
    cells = cells.dropna(subset=["p50", "p99"])
    if cells.empty:
        raise BadInput("no per-question latencies in the selected run records (accuracy "
                       "runs record them since pmbench kept question_latency)")
    cells = cells.sort_values(["suite", "branch"], kind="stable")
    cells = cells.assign(series=_labels(cells, ["label", "short_model", "work"]),
                         row=[f"b{b}" for b in cells["branch"]])
    return _latency_figure(cells)


def _latency_figure(cells: pd.DataFrame) -> Figure:
    suites = sorted(cells["suite"].unique(), key=lambda s: display_name(s))
    look = styles(cells["series"])
    tallest = max(len(cells[cells["suite"] == s]) for s in suites)
    with style_context():
        fig, axes = facets(len(suites), height=1.0 + 0.22 * tallest)
        for ax, suite in zip(axes, suites, strict=True):
            rows = cells[cells["suite"] == suite].reset_index(drop=True)
            y = list(range(len(rows)))[::-1]
            for yk, (_, r) in zip(y, rows.iterrows(), strict=True):
                ax.barh(yk, r["p50"], xerr=[[0], [r["p99"] - r["p50"]]], label=r["series"],
                        color=look[r["series"]]["color"], edgecolor="black", linewidth=0.5)
            ax.set_yticks(y, [f"{r['series'].split(' · ')[0]} {r['row']}"
                              for _, r in rows.iterrows()])
            ax.set_xlabel("Time to answer (s): bar p50, whisker p99")
            ax.grid(alpha=0.3, axis="x")
            _title(ax, suite, rows)
        _common(fig, cells, ["short_model", "env"])
        _shared_legend(fig, axes)
    return fig


def crossover(records: Records, models=None, suites=None) -> Figure:
    """The crossover map's heatmaps (pmbench.report.crossover)."""
    from pmbench.report import crossover as xmap

    return xmap.figure(records, models, suites)


def learning_curve(records: Records, models=None, suites=None) -> Figure:
    """Learning curves against the ratio-0 control (pmbench.report.curve)."""
    from pmbench.report import curve

    return curve.figure(records, models, suites)


KINDS: dict[str, Callable[..., Figure]] = {"throughput": throughput, "accuracy": accuracy,
                                           "ratio": ratio, "latency": latency,
                                           "crossover": crossover,
                                           "learning-curve": learning_curve}


def plot(kind: str, records: Records, models: Sequence[str] | None = None,
         suites: Sequence[str] | None = None) -> Figure:
    """The figure of `kind` from `records`, keeping only `models` and `suites` when given."""
    if kind not in KINDS:
        raise BadInput(f"unknown plot {kind!r}; kinds are {', '.join(KINDS)}")
    return KINDS[kind](records, models, suites)
