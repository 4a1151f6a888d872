"""Regression check between two sets of run records: a baseline and a candidate.

Cells are matched on :data:`CELL_KEYS` (model, suite, method, 2D RoPE settings, prefix KV
sharing, #branch, limit, max_new_tokens, ignore_eos, dtype); in each folder the newest
record of a cell wins. Per matched cell three kinds of figures are compared (bigger is
better for all):

- **throughput** (``output_tok_s``, ``total_tok_s``, ``q_s``): the record's median, with
  the range [min, max] of its repeats. A regression is flagged only when the candidate
  median is worse by more than ``threshold`` (default 10%) *and* the two repeat ranges
  do not overlap, so run-to-run noise does not fail CI.
- **ratio** rows, machine-independent: within one folder, the output tok/s of rope2d
  over prefix, batch and sequential, of prefix over batch and of batch over
  sequential, for the same cell
  (model, suite, #branch, limit, tokens, dtype). Their range is
  [min_a / max_b, max_a / min_b]; the throughput rule applies. Compare folders from
  different machines with ``machine_independent=True``: absolute throughput is then
  reported but never flagged, and only ratios and accuracy can fail.
- **accuracy** (the accuracies the suite's YAML declares, :func:`pmbench.suites.metric_keys`,
  that a record has: fractions in [0, 1] over its ``metrics.n`` questions; per-category
  scores are not declared, since their number of questions is not recorded): a drop is flagged
  when it exceeds the binomial standard error of the difference,
  sqrt(p1(1-p1)/n1 + p2(1-p2)/n2). F1 and pass@1 use the same formula: a per-question
  score in [0, 1] with mean p has variance at most p(1-p), so for them it is a
  conservative approximation. With ``exact_accuracy=True`` any change is flagged
  (greedy decoding on a fixed subset must reproduce exactly).

A broken run never passes the gate. A figure of the candidate that is not finite (NaN,
inf), a throughput or ratio that is zero or negative (or whose repeat minimum is), an
accuracy outside [0, 1] are regressions whatever the other rules say, and so is every
figure of the baseline that the candidate lacks (a cell or a metric: status ``missing``).
The same faults in the baseline make it unusable: bad input (exit 2), not a verdict.

Output: a Markdown table for CI logs, or JSON in the github-action-benchmark
``customBiggerIsBetter`` shape: a list of ``{"name": str, "unit": str, "value": float,
"range": str, "extra": str}`` holding the *candidate's* values (accuracy in %), ``range``
as ``"± x"`` (half the repeat range around the median, or the binomial standard error),
and ``extra`` the baseline value, the ratio and the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.results import Records, method_label, newest, repeat_range
from pmbench.report.table_format import Table, to_markdown
from pmbench.rope2d.settings import RECORD_COLUMNS
from pmbench.suites import metric_keys

# Settings of one method only (they tell its runs apart, not the cell they measure).
METHOD_KEYS = [*RECORD_COLUMNS, "prefix_kv"]
CELL_KEYS = ["model", "suite", "method", *METHOD_KEYS, "branch", "limit", "max_new_tokens",
             "ignore_eos", "dtype"]
THROUGHPUT = {"output_tok_s": "tok/s", "total_tok_s": "tok/s", "q_s": "Q/s"}
# rope2d over prefix is what 2D positions and one packed sequence add beyond the prefix
# sharing that any serving engine already has; over batch and sequential, everything.
RATIOS = (("rope2d", "prefix"), ("rope2d", "batch"), ("rope2d", "sequential"),
          ("prefix", "batch"), ("batch", "sequential"))
FLAGS = ("REGRESSION", "CHANGED", "MISSING")


@dataclass(frozen=True)
class Figure:
    """One measured figure: value (median or metric) and its range [low, high]."""

    kind: str  # "throughput" | "ratio" | "accuracy"
    unit: str
    value: float
    low: float
    high: float
    n: int | None = None  # questions behind an accuracy

    @property
    def se(self) -> float | None:
        """Binomial standard error of an accuracy, None when n is unknown."""
        if self.kind != "accuracy" or not self.n:
            return None
        p = min(max(self.value, 0.0), 1.0)
        return math.sqrt(p * (1 - p) / self.n)


def fault(fig: Figure) -> str | None:
    """Why `fig` cannot be a measurement (None when it can): not finite, a speed or ratio
    that is not positive, an accuracy outside [0, 1], a range that excludes the value."""
    values = {"value": fig.value, "range low": fig.low, "range high": fig.high}
    for name, x in values.items():
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            return f"{name} {x!r} is not a finite number"
    if fig.kind == "accuracy":
        if not 0 <= fig.value <= 1:
            return f"accuracy {fig.value:g} is outside [0, 1]"
        if fig.n is not None and (not isinstance(fig.n, int) or fig.n < 0):
            return f"question count n = {fig.n!r} is not a count"
        return None
    if fig.value <= 0:
        return f"value {fig.value:g} is not positive"
    if fig.low <= 0:
        return f"repeat minimum {fig.low:g} is not positive"
    slack = 1e-9 * fig.high
    if not fig.low - slack <= fig.value <= fig.high + slack:
        return f"value {fig.value:g} is outside its range [{fig.low:g}, {fig.high:g}]"
    return None


@dataclass(frozen=True)
class Row:
    cell: str
    metric: str
    baseline: Figure
    candidate: Figure | None  # None: the candidate lacks this figure (MISSING)
    status: str  # ok | improved | info | REGRESSION | CHANGED | MISSING
    test: str  # what decided the status, for the log

    @property
    def ratio(self) -> float:
        if self.candidate is None or not self.baseline.value:
            return math.nan
        return self.candidate.value / self.baseline.value

    @property
    def flagged(self) -> bool:
        return self.status in FLAGS


@dataclass
class Comparison:
    rows: list[Row]
    only_baseline: list[str]
    only_candidate: list[str]
    threshold: float

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.flagged]


def _cell_name(row: pd.Series) -> str:
    parts = [row["suite"], method_label(row), f"b{row['branch']}", row["model"]]
    for key, fmt in (("limit", "limit={}"), ("max_new_tokens", "T={}"), ("dtype", "{}")):
        if not _missing(row.get(key)):
            parts.append(fmt.format(row[key]))
    if row.get("ignore_eos") is True:
        parts.append("ignore-eos")
    return " ".join(str(p) for p in parts)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _throughput(record: dict[str, Any], metric: str) -> Figure | None:
    value = (record["throughput"] or {}).get(metric)
    span = repeat_range(record, metric)
    if not isinstance(value, int | float) or span is None:
        return None
    return Figure("throughput", THROUGHPUT[metric], float(value), *span)


def figures(records: Records) -> dict[tuple[str, str], Figure]:
    """Every comparable figure in `records`, keyed by (cell name, metric)."""
    df = records.frame("runs")
    if df.empty:
        return {}
    for key in CELL_KEYS:
        if key not in df:
            df[key] = None
    cells = newest(df, CELL_KEYS)
    cells = cells.assign(cell=[_cell_name(r) for _, r in cells.iterrows()])
    out: dict[tuple[str, str], Figure] = {}
    for cell, rec in zip(cells["cell"], cells["record"], strict=True):
        for metric in THROUGHPUT:
            fig = _throughput(rec, metric)
            if fig:
                out[cell, metric] = fig
        n = rec["metrics"].get("n")
        for metric in metric_keys(rec["suite"]):
            value = rec["metrics"].get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[cell, metric] = Figure("accuracy", "%", float(value), value, value, n)
    # Ratios between methods of one cell: same keys but the method and its own settings.
    group = [k for k in CELL_KEYS if k != "method" and k not in METHOD_KEYS]
    for _, same in cells.groupby(group, dropna=False, sort=False):
        tok = {(r["method"], r["cell"]): out.get((r["cell"], "output_tok_s"))
               for _, r in same.iterrows()}
        for (method, cell), a in tok.items():
            for num, den in RATIOS:
                refs = [b for (m, _), b in tok.items() if m == den and b]
                if method != num or not a or len(refs) != 1 or not refs[0].value:
                    continue
                b = refs[0]
                out[cell, f"output_tok_s {num}/{den}"] = Figure(
                    "ratio", "×", _div(a.value, b.value), _div(a.low, b.high),
                    _div(a.high, b.low))
    return out


def _div(a: float, b: float) -> float:
    """a / b, NaN where b is not positive (a broken figure, judged by :func:`fault`)."""
    return a / b if b > 0 else math.nan


def _judge(base: Figure, cand: Figure, threshold: float, machine_independent: bool,
           exact_accuracy: bool) -> tuple[str, str]:
    """(status, test) for one figure: see the module docstring for the rules."""
    broken = fault(cand)
    if broken:
        return "REGRESSION", f"candidate {broken}"
    if base.kind == "accuracy":
        diff = cand.value - base.value
        if exact_accuracy:
            return ("ok" if abs(diff) < 1e-12 else "CHANGED"), "exact"
        if base.se is None or cand.se is None:
            return "info", "n unknown"
        se = math.sqrt(base.se**2 + cand.se**2)
        test = f"Δ {100 * diff:+.1f} pts, SE {100 * se:.1f}"
        return ("REGRESSION" if -diff > se else "improved" if diff > se else "ok"), test
    test = f"[{_num(base.low)}, {_num(base.high)}] → [{_num(cand.low)}, {_num(cand.high)}]"
    if base.kind == "throughput" and machine_independent:
        return "info", test
    if cand.value < base.value * (1 - threshold) and cand.high < base.low:
        return "REGRESSION", test
    if cand.value > base.value * (1 + threshold) and cand.low > base.high:
        return "improved", test
    return "ok", test


def compare(baseline: Records, candidate: Records, threshold: float = 0.10,
            machine_independent: bool = False, exact_accuracy: bool = False) -> Comparison:
    """Match the cells of two record sets and judge every shared figure."""
    if not 0 <= threshold < 1:
        raise BadInput(f"--threshold must be in [0, 1), got {threshold}")
    base, cand = figures(baseline), figures(candidate)
    broken = [(key, problem) for key, fig in base.items() if (problem := fault(fig))]
    if broken:
        (cell, metric), problem = broken[0]
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise BadInput(f"unusable baseline: {cell} {metric}: {problem}{more}")
    if not any(k in cand for k in base):
        raise BadInput("baseline and candidate have no cell in common")
    rows = [Row(cell, metric, base[cell, metric], cand[cell, metric],
                *_judge(base[cell, metric], cand[cell, metric], threshold,
                        machine_independent, exact_accuracy))
            if (cell, metric) in cand else
            Row(cell, metric, base[cell, metric], None, "MISSING", "not in the candidate")
            for cell, metric in base]
    base_cells, cand_cells = {c for c, _ in base}, {c for c, _ in cand}
    return Comparison(rows, sorted(base_cells - cand_cells), sorted(cand_cells - base_cells),
                      threshold)


def _shown(fig: Figure) -> float:
    return 100 * fig.value if fig.unit == "%" else fig.value


def _num(x: float) -> str:
    """Four significant digits, without exponents for large throughputs."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.1f}" if abs(x) >= 1000 else f"{x:.4g}"


def to_markdown_report(result: Comparison) -> str:
    """A Markdown table (cell, metric, baseline, candidate, ratio, test, status) and a verdict."""
    data = pd.DataFrame({
        "Cell": [r.cell for r in result.rows], "Metric": [r.metric for r in result.rows],
        "Unit": [r.baseline.unit for r in result.rows],
        "Baseline": [_num(_shown(r.baseline)) for r in result.rows],
        "Candidate": ["–" if r.candidate is None else _num(_shown(r.candidate))
                      for r in result.rows],
        "Ratio": [r.ratio for r in result.rows], "Test": [r.test for r in result.rows],
        "Status": [r.status for r in result.rows]})
    flagged = len(result.regressions)
    missing = sum(r.status == "MISSING" for r in result.rows)
    notes = [f"{flagged} regression(s) flagged (threshold {result.threshold:.0%}, "
             "repeat ranges must not overlap; accuracy against the binomial SE"
             + (f"; {missing} figure(s) of the baseline missing from the candidate" if missing
                else "") + ")."]
    notes += [f"Only in baseline: {c}" for c in result.only_baseline]
    notes += [f"Only in candidate: {c}" for c in result.only_candidate]
    table = Table(None, "pmbench compare: baseline vs candidate", data,
                  {"Baseline": "", "Candidate": "", "Ratio": ".3f"}, notes)
    return to_markdown(table)


def to_benchmark_json(result: Comparison) -> list[dict[str, Any]]:
    """The candidate's figures in github-action-benchmark's customBiggerIsBetter shape.

    Figures the candidate lacks or that are not finite have no value to show: they are
    left out here (JSON has no NaN) and named on stderr by the command (:func:`unshown`).
    """
    entries = []
    for r in result.rows:
        c = r.candidate
        if c is None or not all(math.isfinite(x) for x in (c.value, c.low, c.high)):
            continue
        spread = (100 * c.se if c.se is not None else None) if c.kind == "accuracy" else max(
            c.value - c.low, c.high - c.value)
        entries.append({
            "name": f"{r.cell} {r.metric}", "unit": c.unit, "value": _shown(c),
            "range": "" if spread is None else f"± {spread:.4g}",
            "extra": f"baseline {_num(_shown(r.baseline))}; ratio {r.ratio:.3f}; {r.status}",
        })
    return entries


def unshown(result: Comparison) -> list[Row]:
    """Flagged rows that :func:`to_benchmark_json` cannot hold (missing, not finite)."""
    return [r for r in result.rows if r.flagged and (
        r.candidate is None or not all(math.isfinite(x) for x in (
            r.candidate.value, r.candidate.low, r.candidate.high)))]


def resolve(spec: str, results_dir: str | Path = "results") -> Path:
    """A folder or record file as given, else the folder of run id `spec` under `results_dir`."""
    path = Path(spec)
    if path.exists():
        return path
    root = Path(results_dir)
    found = sorted(p for p in root.rglob(path.name) if p.is_dir() and p.name == spec
                   ) if root.is_dir() and path.name == spec else []
    if not found:
        raise BadInput(f"{spec!r} is neither a folder nor a run id under {root}/")
    return found[0]
