"""The crossover map (issue 30): where each method wins as the shared context, the
number of questions N and the answer length vary, from synthetic-suite throughput runs
(suites/grids/crossover-cpu.yaml).

A cell of the map is (model, env, context, N, answer length); in it each method has its
newest throughput run. The ratios shown are each method's output tok/s over the first
method its runner names in `ratios_over` (rope2d / prefix, prefix / sequential, batch /
sequential), a ratio of medians over repeats with its bootstrap interval
(measure/stats.median_ratio_interval, as `pmbench compare` computes its ratios). The
companion table sets each method's decoding step beside its own roof (run.json's
`roofline.step`), the figures the README's context-growth check reads.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pmbench.measure.stats import median_ratio_interval
from pmbench.report.results import Records, newest, runners
from pmbench.report.table_data import NoRecords, col, run_frame
from pmbench.report.table_format import Table

CELL = ["model", "env", "context", "N", "answer"]


def cells(records: Records, models=None) -> pd.DataFrame:
    """The newest throughput run per (cell, method) among runs of a synthetic workload,
    with the map's axes as columns and each run's tok/s repeats."""
    runs = run_frame(records, models, None)
    if runs.empty or "suite_info.synthetic.context_len" not in runs:
        raise NoRecords("no synthetic-suite throughput runs here (the crossover map reads "
                        "`pmbench sweep suites/grids/crossover-cpu.yaml` records)")
    runs = runs[runs["suite_info.synthetic.context_len"].notna()
                & (runs["purpose"] == "throughput")].copy()
    if runs.empty:
        raise NoRecords("no synthetic-suite throughput runs here")
    runs["context"] = runs["suite_info.synthetic.context_len"].astype(int)
    runs["N"] = runs["branch"].astype(int)
    runs["answer"] = runs["suite_info.synthetic.answer_len"].astype(str)
    runs["repeats"] = [((r.get("throughput") or {}).get("repeats") or {}).get("output_tok_s")
                       or [] for r in runs["record"]]
    runs["step_ms"] = 1e3 * col(runs, "roofline.step.step_s")
    runs["roof_ms"] = 1e3 * col(runs, "roofline.step.roof_s_per_step")
    runs["roof_fraction"] = col(runs, "roofline.step.roof_fraction")
    runs["kv_mb"] = col(runs, "roofline.step.kv_bytes_per_step") / 1e6
    runs["attention_share"] = col(runs, "roofline.step.attention_share_bytes")
    runs["peak_gb"] = col(runs, "memory.peak_bytes") / 1e9
    return newest(runs, [*CELL, "method"])  # one run per method and cell: its newest


def pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, over) for each method with runs whose runner names a ratio over a method
    that also has runs: its first such (`ratios_over` is in order of interest)."""
    present = set(frame["method"])
    out = []
    for name, runner in runners().items():
        over = next((o for o in runner.ratios_over if o in present), None)
        if name in present and over:
            out.append((name, over))
    return out


def ratio(by_cell: pd.DataFrame, cell: tuple, num: str, den: str) -> dict[str, Any] | None:
    """tok/s of `num` over `den` in `cell` (a CELL tuple), with its 95% interval; None
    where either has no run there. `by_cell`: the cells' frame indexed by CELL."""
    try:
        here = by_cell.loc[[cell]]
    except KeyError:
        return None
    a, b = here[here["method"] == num], here[here["method"] == den]
    if a.empty or b.empty:
        return None
    value = a["tok_s"].iloc[0] / b["tok_s"].iloc[0]
    interval = median_ratio_interval([a["repeats"].iloc[0]], [b["repeats"].iloc[0]])
    return {"value": value, "low": interval[0] if interval else None,
            "high": interval[1] if interval else None}


def _sorted_cells(frame: pd.DataFrame) -> list[tuple]:
    """The map's cells, by model, env, answer length, context and N."""
    keys = frame[CELL].drop_duplicates()
    keys = keys.assign(_answer=pd.to_numeric(keys["answer"], errors="coerce"))
    keys = keys.sort_values(["model", "env", "_answer", "answer", "context", "N"])
    return [tuple(r) for r in keys[CELL].itertuples(index=False)]


def tables(records: Records, models=None, suites=None) -> list[Table]:
    """`pmbench table crossover`: the map's ratios (with each run's decoding step against
    its roof as companion), then how the step grows with the context against its roof."""
    frame = cells(records, models)
    out = [_ratio_table(frame, records)]
    growth = _growth_table(frame)
    return out + ([growth] if growth is not None else [])


def _ratio_table(frame: pd.DataFrame, records: Records) -> Table:
    """Per cell, each method's tok/s and the ratios (value, 95% interval)."""
    methods = [m for m in runners() if m in set(frame["method"])]
    wanted = pairs(frame)
    rows = []
    by_cell = frame.set_index(CELL)
    for cell in _sorted_cells(frame):
        here = by_cell.loc[[cell]]
        row: dict[Any, Any] = {("", "model"): cell[0], ("", "env"): cell[1],
                               ("", "Context"): cell[2], ("", "N"): cell[3],
                               ("", "Answer"): cell[4]}
        for m in methods:
            tok = here.loc[here["method"] == m, "tok_s"]
            row[("tok/s", m)] = tok.iloc[0] if not tok.empty else None
        for num, den in wanted:
            found = ratio(by_cell, cell, num, den) or {}
            for part, key in (("×", "value"), ("low", "low"), ("high", "high")):
                row[(f"{num}/{den}", part)] = found.get(key)
        rows.append(row)
    data = pd.DataFrame(rows)
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    formats = {c: ".1f" if c[0] == "tok/s" else ".2f" for c in data.columns if c[0]}
    notes = [
        "tok/s: output tokens per second of the synthetic suite's throughput runs (each "
        "answer exactly its drawn length), median over repeats; A/B: A's tok/s over B's in "
        "the same cell (×), with its 95% bootstrap interval over both runs' repeats (low, "
        "high); > 1: A wins.",
        "Context, Answer: tokens of the shared context and of each answer; N: questions "
        "sharing the context (#branch).",
        records.provenance()]
    return Table(None, "Crossover map: throughput by context, N and answer length",
                 data, formats, notes, row_group=[("", "model"), ("", "env")],
                 suffix="crossover", companion=_roof_table(frame))


def _roof_table(frame: pd.DataFrame) -> Table:
    """Each run's decoding step against its roof (run.json roofline.step)."""
    shown = frame.sort_values(["model", "env", "answer", "N", "method", "context"])
    data = shown[["model", "env", "answer", "N", "label", "context", "step_ms", "roof_ms",
                  "roof_fraction", "kv_mb", "attention_share", "peak_gb"]].rename(columns={
        "label": "Method", "context": "Context", "answer": "Answer",
        "step_ms": "step ms", "roof_ms": "roof ms", "roof_fraction": "of roof",
        "kv_mb": "KV MB/step", "attention_share": "KV share", "peak_gb": "peak GB"})
    formats = {"step ms": ".1f", "roof ms": ".1f", "of roof": ".2f", "KV MB/step": ".1f",
               "KV share": ".2f", "peak GB": ".2f"}
    notes = ["step ms: measured decoding step (decode time / steps); roof ms: the step's "
             "roof, max(bytes / measured bandwidth, FLOPs / measured matmul peak), counting "
             "the weights and the KV it must read (the shared context once for prefix and "
             "rope2d, once per row for batch) and attention FLOPs; of roof: roof / step; KV "
             "MB/step: KV bytes a step must read; KV share: their share of the step's bytes; "
             "peak GB: the run's peak memory."]
    return Table(None, "Crossover map: the decoding step against its roof", data.reset_index(
        drop=True), formats, notes, row_group=["model", "env"], suffix="crossover-roof")


GROWTH_LIMIT = 1.5  # issue 30: a shared context's step grows at most 1.5x what its roof does


def _growth_table(frame: pd.DataFrame) -> Table | None:
    """Per (N, answer, method) run at two contexts or more: the step's growth from the
    shortest context to the longest against its roof's (None: no such runs)."""
    rows = []
    for key, runs in frame.dropna(subset=["step_ms", "roof_ms"]).groupby(
            ["model", "env", "N", "answer", "label"]):
        if runs["context"].nunique() < 2:
            continue
        low, high = runs.loc[runs["context"].idxmin()], runs.loc[runs["context"].idxmax()]
        step, roof = high["step_ms"] - low["step_ms"], high["roof_ms"] - low["roof_ms"]
        rows.append({**dict(zip(["model", "env", "N", "Answer", "Method"], key, strict=True)),
                     "Context": f"{low['context']} → {high['context']}",
                     "step ms": f"{low['step_ms']:.1f} → {high['step_ms']:.1f}",
                     "roof ms": f"{low['roof_ms']:.1f} → {high['roof_ms']:.1f}",
                     "Δstep / Δroof": step / roof if roof > 0 else None})
    if not rows:
        return None
    notes = [f"Δstep / Δroof: how much more the measured decoding step grew than its roof "
             "(weights + the KV the method must read + attention FLOPs at the measured "
             "peaks); a method that reads a shared context once (prefix, rope2d) should "
             f"stay within {GROWTH_LIMIT}x (issue 30), a batch reads it once per row and its "
             "own roof grows with it."]
    return Table(None, "Crossover map: decoding-step growth with the context against the "
                 "roof's", pd.DataFrame(rows), {"Δstep / Δroof": ".2f"}, notes,
                 row_group=["model", "env"], suffix="crossover-growth")


def figure(records: Records, models=None, suites=None):
    """`pmbench plot crossover`: one heatmap per (ratio, answer length), context down and
    N across, each cell its ratio and interval; red where the first method wins, blue
    where it loses (log scale, centred on 1). One model and machine: the one with the
    most runs (`pmbench table crossover` lists every one)."""
    import matplotlib.pyplot as plt

    from pmbench.report.plot_style import style_context

    frame = cells(records, models)
    model, env = frame.groupby(["model", "env"]).size().idxmax()
    frame = frame[(frame["model"] == model) & (frame["env"] == env)]
    wanted = pairs(frame)
    answers = sorted(frame["answer"].unique(), key=lambda a: (len(a), a))
    shape = (sorted(frame["context"].unique()), sorted(frame["N"].unique()))
    by_cell = frame.set_index(CELL)
    with style_context():
        fig, axes = plt.subplots(len(wanted), len(answers), squeeze=False,
                                 figsize=(1.4 + 1.2 * len(shape[1]) * len(answers),
                                          0.8 + 1.0 * len(shape[0]) * len(wanted)))
        for i, pair in enumerate(wanted):
            for j, answer in enumerate(answers):
                image = _heatmap(axes[i][j], by_cell, (model, env), answer, pair, shape)
        fig.colorbar(image, ax=axes, shrink=0.6, label="log2 of the ratio (> 0: first wins)")
        fig.suptitle(f"Throughput ratio (output tok/s, 95% interval)\n{model} · {env}")
    return fig


def _heatmap(ax, by_cell: pd.DataFrame, where: tuple, answer: str, pair: tuple[str, str],
             shape: tuple[list, list]):
    """One panel: `pair`'s ratio over contexts (rows) and N (columns) at `answer`
    (`by_cell`: the cells' frame indexed by CELL)."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    contexts, ns = shape
    grid = np.full((len(contexts), len(ns)), np.nan)
    for r, c in enumerate(contexts):
        for k, n in enumerate(ns):
            found = ratio(by_cell, (*where, c, n, answer), *pair)
            if found is None:
                continue
            grid[r, k] = np.log2(found["value"])
            text = f"{found['value']:.2f}"
            if found["low"] is not None:
                text += f"\n[{found['low']:.2f}, {found['high']:.2f}]"
            dark = abs(grid[r, k]) > 1.2  # beyond 2.3x either way the colour is deep
            ax.text(k, r, text, ha="center", va="center", fontsize=6,
                    color="white" if dark else "black")
    image = ax.imshow(grid, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -2.0, 2.0), aspect="auto")
    ax.set_xticks(range(len(ns)), [str(n) for n in ns])
    ax.set_yticks(range(len(contexts)), [str(c) for c in contexts])
    ax.set_title(f"{pair[0]} / {pair[1]}, answer {answer}")
    ax.set_xlabel("N (questions)")
    ax.set_ylabel("context tokens")
    return image
