"""Regression check between two sets of run records: a baseline and a candidate.

Cells are matched on :func:`~pmbench.report.cells.cell_keys` (model, suite, method and the
settings its runner tells its runs apart by, #branch, limit, max_new_tokens, ignore_eos,
dtype); in each folder the newest record of a cell wins. Per matched cell three kinds of
figures are compared (bigger is better for all):

- **throughput** (``output_tok_s``, ``total_tok_s``, ``q_s``): the record's median over
  repeats. The candidate / baseline ratio gets a 95% interval by bootstrapping each
  record's repeats (:func:`pmbench.measure.stats.median_ratio_interval`); a regression is
  flagged when that interval lies wholly below ``1 - threshold`` (default 10%), an
  improvement when it lies wholly above ``1 + threshold``, so run-to-run noise does not
  fail CI and few repeats make a wide interval, not a verdict.
- **ratio** rows, machine-independent: within one folder, the output tok/s of a method
  over each method its runner names in `ratios_over` (rope2d over prefix, batch and
  sequential, prefix over batch, batch over sequential), for the same cell (model,
  suite, #branch, limit, tokens, dtype), with the interval of a ratio of medians;
  candidate over baseline is judged as throughput is.
  Compare folders from different machines with ``machine_independent=True``: absolute
  throughput is then reported but never flagged, and only ratios and accuracy can fail.
- **accuracy** (the accuracies the suite's YAML declares, :func:`pmbench.suites.metric_keys`,
  that a record has: fractions in [0, 1] over its ``metrics.n`` questions). Where both
  runs kept their samples the difference is paired on the questions both scored
  (:mod:`pmbench.report.paired`): a drop is flagged when its paired-bootstrap interval lies
  wholly below 0 and, for a 0/1 metric, McNemar's exact p is below 0.05; the test column
  gives Δ, the interval and the non-inferiority verdict at ``margin``. Without samples
  (older records) a drop is flagged when it exceeds the binomial standard error of the
  difference, sqrt(p1(1-p1)/n1 + p2(1-p2)/n2). With ``exact_accuracy=True`` any change is
  flagged (greedy decoding on a fixed subset must reproduce exactly).

A broken run never passes the gate. A figure of the candidate that is not finite (NaN,
inf), a throughput or ratio that is zero or negative (or whose repeat minimum is), an
accuracy outside [0, 1] are regressions whatever the other rules say, and so is every
figure of the baseline that the candidate lacks (a cell or a metric: status ``missing``).
The same faults in the baseline make it unusable: bad input (exit 2), not a verdict.
Text and JSON output: :mod:`pmbench.report.compare_format`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.measure.stats import median_ratio_interval
from pmbench.report.cells import cell_frame, cell_keys, check_inputs, method_keys
from pmbench.report.paired import MARGIN, RunPair, pair_runs
from pmbench.report.results import Records, method_label, repeat_range, runners
from pmbench.suites import metric_keys

THROUGHPUT = {"output_tok_s": "tok/s", "total_tok_s": "tok/s", "q_s": "Q/s"}
FLAGS = ("REGRESSION", "CHANGED", "MISSING")
ALPHA = 0.05  # McNemar's level for a paired accuracy drop of a 0/1 metric


@dataclass(frozen=True)
class Figure:
    """One measured figure: value (median or metric) and its range [low, high].

    A throughput or ratio figure keeps the repeats behind it (`num` over `den`: the
    samples whose medians multiply and divide to its value), for intervals; an accuracy
    keeps its run record, for the paired test."""

    kind: str  # "throughput" | "ratio" | "accuracy"
    unit: str
    value: float
    low: float
    high: float
    n: int | None = None  # questions behind an accuracy
    num: tuple[tuple[float, ...], ...] = ()
    den: tuple[tuple[float, ...], ...] = ()
    record: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def se(self) -> float | None:
        """Binomial standard error of an accuracy, None when n is unknown."""
        if self.kind != "accuracy" or not self.n:
            return None
        p = min(max(self.value, 0.0), 1.0)
        return math.sqrt(p * (1 - p) / self.n)

    @property
    def ci(self) -> tuple[float, float] | None:
        """95% interval of a throughput or ratio figure over its repeats (None: one repeat)."""
        return median_ratio_interval(self.num, self.den) if self.num else None


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
    margin: float = MARGIN

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.flagged]


def repeats_of(record: dict[str, Any], metric: str) -> tuple[float, ...] | None:
    """The repeats behind a throughput median: every repeat's value, the median alone for
    records without them, None when the record has no such figure."""
    tp = record.get("throughput") or {}
    values = [v for v in (tp.get("repeats") or {}).get(metric) or []
              if isinstance(v, int | float) and not isinstance(v, bool)]
    if values:
        return tuple(float(v) for v in values)
    median = tp.get(metric)
    return (float(median),) if isinstance(median, int | float) else None


def _throughput(record: dict[str, Any], metric: str) -> Figure | None:
    value = (record["throughput"] or {}).get(metric)
    span = repeat_range(record, metric)
    if not isinstance(value, int | float) or span is None:
        return None
    return Figure("throughput", THROUGHPUT[metric], float(value), *span,
                  num=(repeats_of(record, metric) or (float(value),),))


def figures(records: Records) -> dict[tuple[str, str], Figure]:
    """Every comparable figure in `records`, keyed by (cell name, metric)."""
    cells = cell_frame(records)
    if cells.empty:
        return {}
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
                out[cell, metric] = Figure("accuracy", "%", float(value), value, value, n,
                                           record=rec)
    # Ratios between methods of one cell: same keys but the method and its own settings.
    own = method_keys()
    group = [k for k in cell_keys() if k != "method" and k not in own]
    over = {name: runner.ratios_over for name, runner in runners().items()}
    for _, same in cells.groupby(group, dropna=False, sort=False):
        tok = [(r["method"], method_label(r), r["cell"], out.get((r["cell"], "output_tok_s")))
               for _, r in same.iterrows()]
        for method, _, cell, a in tok:
            for den in over.get(method, ()):
                b = _denominator(tok, den)
                if not a or b is None or not b.value:
                    continue
                out[cell, f"output_tok_s {method}/{den}"] = Figure(
                    "ratio", "×", _div(a.value, b.value), _div(a.low, b.high),
                    _div(a.high, b.low), num=a.num, den=b.num)
    return out


def _denominator(tok: list[tuple[str, str, str, Figure | None]], den: str) -> Figure | None:
    """Method `den`'s tok/s among one cell's methods (method, label, cell, tok/s), None
    unless one is found. Where `den` ran in several variants, its default one (labelled
    by its bare name: sequential with its context cached, not "sequential no-cache")."""
    refs = [(label, b) for method, label, _, b in tok if method == den and b]
    if len(refs) > 1:
        refs = [(label, b) for label, b in refs if label == den]
    return refs[0][1] if len(refs) == 1 else None


def _div(a: float, b: float) -> float:
    """a / b, NaN where b is not positive (a broken figure, judged by :func:`fault`)."""
    return a / b if b > 0 else math.nan


def _judge(base: Figure, cand: Figure, threshold: float, machine_independent: bool,
           exact_accuracy: bool, pair: RunPair | None, key: str) -> tuple[str, str]:
    """(status, test) for one figure: see the module docstring for the rules."""
    broken = fault(cand)
    if broken:
        return "REGRESSION", f"candidate {broken}"
    if base.kind == "accuracy":
        return _judge_accuracy(base, cand, exact_accuracy, pair, key)
    if not spread_measured(base, cand):
        return "info", f"×{num(cand.value / base.value)}, {SINGLE_REPEAT}"
    low, high = median_ratio_interval(cand.num + base.den, cand.den + base.num)
    test = f"×{num(cand.value / base.value)}, 95% CI [{num(low)}, {num(high)}]"
    if base.kind == "throughput" and machine_independent:
        return "info", test
    if high < 1 - threshold:
        return "REGRESSION", test
    if low > 1 + threshold:
        return "improved", test
    return "ok", test


SINGLE_REPEAT = "no spread measured (a single repeat): not judged"


def spread_measured(*figs: Figure) -> bool:
    """Whether every sample behind these throughput or ratio figures has two repeats or
    more: a single repeat measures no spread, so no interval can decide on it."""
    return all(len(x) > 1 for f in figs for x in (*f.num, *f.den))


def _judge_accuracy(base: Figure, cand: Figure, exact_accuracy: bool, pair: RunPair | None,
                    key: str) -> tuple[str, str]:
    diff = cand.value - base.value
    if exact_accuracy:
        return ("ok" if abs(diff) < 1e-12 else "CHANGED"), "exact"
    paired = next((m for m in pair.metrics if m.key == key), None) if pair else None
    if paired is not None:
        p = f", McNemar p {paired.p_value:.3g}" if paired.p_value is not None else ""
        test = (f"paired n {paired.n}: Δ {paired.delta:+.1f} pts [{paired.low:+.1f}, "
                f"{paired.high:+.1f}]{p}; {paired.verdict} at ±{pair.margin:g}")
        significant = paired.p_value is None or paired.p_value < ALPHA
        if paired.high < 0 and significant:
            return "REGRESSION", test
        if paired.low > 0 and significant:
            return "improved", test
        return "ok", test
    if base.se is None or cand.se is None:
        return "info", "n unknown"
    se = math.sqrt(base.se**2 + cand.se**2)
    test = f"Δ {100 * diff:+.1f} pts, SE {100 * se:.1f} (unpaired: no samples)"
    return ("REGRESSION" if -diff > se else "improved" if diff > se else "ok"), test


def _pairs(base: dict[tuple[str, str], Figure], cand: dict[tuple[str, str], Figure],
           margin: float) -> dict[str, RunPair]:
    """The paired comparison of each cell whose accuracy both folders have, where both
    runs kept their samples (cells without stay unpaired)."""
    out = {}
    for (cell, _), fig in base.items():
        other = next((cand[k] for k in cand if k[0] == cell and cand[k].kind == "accuracy"),
                     None) if fig.kind == "accuracy" and cell not in out else None
        if other is None or fig.record is None or other.record is None:
            continue
        try:
            pair = pair_runs(fig.record, other.record, margin)
        except BadInput:  # not comparable after all: judged unpaired
            continue
        if pair.metrics:
            out[cell] = pair
    return out


def compare(baseline: Records, candidate: Records, threshold: float = 0.10,
            machine_independent: bool = False, exact_accuracy: bool = False,
            margin: float = MARGIN) -> Comparison:
    """Match the cells of two record sets and judge every shared figure."""
    if not 0 <= threshold < 1:
        raise BadInput(f"--threshold must be in [0, 1), got {threshold}")
    if margin < 0:
        raise BadInput(f"--margin must be >= 0 points, got {margin:g}")
    base, cand = figures(baseline), figures(candidate)
    broken = [(key, problem) for key, fig in base.items() if (problem := fault(fig))]
    if broken:
        (cell, metric), problem = broken[0]
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise BadInput(f"unusable baseline: {cell} {metric}: {problem}{more}")
    check_inputs(baseline, candidate, base, cand)
    pairs = {} if exact_accuracy else _pairs(base, cand, margin)
    rows = [Row(cell, metric, base[cell, metric], cand[cell, metric],
                *_judge(base[cell, metric], cand[cell, metric], threshold,
                        machine_independent, exact_accuracy, pairs.get(cell), metric))
            if (cell, metric) in cand else
            Row(cell, metric, base[cell, metric], None, "MISSING", "not in the candidate")
            for cell, metric in base]
    base_cells, cand_cells = {c for c, _ in base}, {c for c, _ in cand}
    return Comparison(rows, sorted(base_cells - cand_cells), sorted(cand_cells - base_cells),
                      threshold, margin)


def num(x: float) -> str:
    """Four significant digits, without exponents for large throughputs."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.1f}" if abs(x) >= 1000 else f"{x:.4g}"


def is_run(path: Path) -> bool:
    """Whether `path` is one run (its folder, or its run.json), not a results folder."""
    return (path.is_file() and path.name == "run.json") or (path / "run.json").is_file()


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
