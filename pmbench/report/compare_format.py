"""`pmbench compare` as text: a Markdown report for CI logs and people, JSON for machines
(github-action-benchmark's ``customBiggerIsBetter`` list for two results folders, one
object for two runs)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pandas as pd

from pmbench.measure.stats import CONFIDENCE, RESAMPLES, SEED
from pmbench.report.compare import SINGLE_REPEAT, Comparison, Figure, Row, num
from pmbench.report.compare_runs import RunComparison
from pmbench.report.results import method_label
from pmbench.report.table_format import Table, to_markdown


def _shown(fig: Figure) -> float:
    return 100 * fig.value if fig.unit == "%" else fig.value


def to_markdown_report(result: Comparison) -> str:
    """A Markdown table (cell, metric, baseline, candidate, ratio, test, status) and a verdict."""
    data = pd.DataFrame({
        "Cell": [r.cell for r in result.rows], "Metric": [r.metric for r in result.rows],
        "Unit": [r.baseline.unit for r in result.rows],
        "Baseline": [num(_shown(r.baseline)) for r in result.rows],
        "Candidate": ["–" if r.candidate is None else num(_shown(r.candidate))
                      for r in result.rows],
        "Ratio": [r.ratio for r in result.rows], "Test": [r.test for r in result.rows],
        "Status": [r.status for r in result.rows]})
    flagged = len(result.regressions)
    missing = sum(r.status == "MISSING" for r in result.rows)
    notes = [f"{flagged} regression(s) flagged: throughput and ratios when the 95% CI of "
             f"candidate / baseline (bootstrap over repeats) lies below "
             f"{1 - result.threshold:.2f} (threshold {result.threshold:.0%}); accuracy paired "
             "on the questions both runs scored where they kept samples (the paired-bootstrap "
             "CI of Δ below 0, and McNemar's exact p < 0.05 for a 0/1 metric; verdicts at "
             f"±{result.margin:g} pt), else against the binomial SE"
             + (f"; {missing} figure(s) of the baseline missing from the candidate" if missing
                else "") + "."]
    single = sum(r.test.endswith(SINGLE_REPEAT) for r in result.rows)
    if single:
        notes.append(f"{single} figure(s) rest on a single repeat on one side or both: no "
                     "spread was measured, so they were not judged (run with --repeats 3 or "
                     "more; throughput runs take 5 by default).")
    notes += [f"Only in baseline: {c}" for c in result.only_baseline]
    notes += [f"Only in candidate: {c}" for c in result.only_candidate]
    table = Table(None, "pmbench compare: baseline vs candidate", data,
                  {"Baseline": "", "Candidate": "", "Ratio": ".3f"}, notes)
    return to_markdown(table)


def _spread(c: Figure) -> float | None:
    """Half-width shown in JSON's `range`: the binomial SE of an accuracy (%), the largest
    distance from the median to its 95% interval (else to its repeat range)."""
    if c.kind == "accuracy":
        return 100 * c.se if c.se is not None else None
    low, high = c.ci or (c.low, c.high)
    return max(c.value - low, high - c.value)


def to_benchmark_json(result: Comparison) -> list[dict[str, Any]]:
    """The candidate's figures in github-action-benchmark's customBiggerIsBetter shape.

    Figures the candidate lacks or that are not finite have no value to show: they are
    left out here (JSON has no NaN) and named on stderr by the command (:func:`unshown`).
    `extra` holds the baseline, the ratio, the 95% interval and the test that decided.
    """
    entries = []
    for r in result.rows:
        c = r.candidate
        if c is None or not all(math.isfinite(x) for x in (c.value, c.low, c.high)):
            continue
        spread = _spread(c)
        ci = c.ci
        interval = f"; 95% CI [{num(ci[0])}, {num(ci[1])}]" if ci else ""
        entries.append({
            "name": f"{r.cell} {r.metric}", "unit": c.unit, "value": _shown(c),
            "range": "" if spread is None else f"± {spread:.4g}",
            "extra": f"baseline {num(_shown(r.baseline))}; ratio {r.ratio:.3f}{interval}; "
                     f"{r.test}; {r.status}",
        })
    return entries


def unshown(result: Comparison) -> list[Row]:
    """Flagged rows that :func:`to_benchmark_json` cannot hold (missing, not finite)."""
    return [r for r in result.rows if r.flagged and (
        r.candidate is None or not all(math.isfinite(x) for x in (
            r.candidate.value, r.candidate.low, r.candidate.high)))]


# ------------------------------------------------------------------- two runs


def _run_line(name: str, rec: dict[str, Any]) -> str:
    n = (rec.get("metrics") or {}).get("n")
    kind = "throughput run" if rec.get("ignore_eos") else "accuracy run"
    return (f"{name}: {rec['run_id']}: {method_label(rec)} #branch {rec['branch']}, "
            f"{rec['model']}, {rec['suite']}, {n} questions, {kind}")


def _metric_table(result: RunComparison) -> Table:
    pair = result.pair
    rows = pair.metrics
    data = pd.DataFrame({
        "Metric": [m.label for m in rows], "n": [m.n for m in rows],
        "A (%)": [m.a for m in rows], "B (%)": [m.b for m in rows],
        "Δ (pts)": [m.delta for m in rows],
        "95% CI": [f"[{m.low:+.1f}, {m.high:+.1f}]" for m in rows],
        "McNemar p": [m.p_value for m in rows],
        "Verdict": [m.verdict for m in rows],
        f"n for ±{pair.margin:g} pt": [m.to_decide for m in rows],
    })
    formats = {"n": "d", "A (%)": ".1f", "B (%)": ".1f", "Δ (pts)": "+.1f",
               "McNemar p": ".3g", f"n for ±{pair.margin:g} pt": ".0f"}
    notes = [
        f"Δ = B - A in points on the questions both runs scored; 95% CI: paired bootstrap "
        f"over questions ({RESAMPLES:,} resamples, seed {SEED}, BCa); McNemar: exact "
        "two-sided test on the discordant pairs (0/1 metrics only). Verdict at a margin of "
        f"±{pair.margin:g} pt: better when the CI lies above 0, non-inferior when its lower "
        f"end is above -{pair.margin:g}, inferior when its upper end is below "
        f"-{pair.margin:g}, else inconclusive. n for ±{pair.margin:g} pt: questions that "
        f"would make the CI's half-width {pair.margin:g} pt at the observed variance "
        "(– where no question differs)."]
    title = f"B against A on the same questions ({CONFIDENCE:.0%} intervals)"
    return Table(None, title, data, formats, notes)


def _agreement_line(result: RunComparison) -> str | None:
    agree = result.pair.agreement
    if agree is None:
        return None
    first = (f"; the first differing token at position {agree.first_difference:.1f} on "
             "average" if agree.first_difference is not None else "")
    return (f"Agreement on {agree.n} questions: identical predictions "
            f"{agree.same_prediction:.1%}, identical output text {agree.same_output:.1%}; "
            f"{agree.differing} outputs differ in their tokens{first}.")


def _speed_lines(result: RunComparison) -> list[str]:
    if result.speed_note:
        return [result.speed_note + "."]
    lines = []
    for s in result.speeds:
        ci = (f", 95% CI [{s.low:.3f}, {s.high:.3f}]" if s.low is not None
              else " (no repeats: no interval)")
        lines.append(f"Speed B / A, {s.figure}: {num(s.b)} / {num(s.a)} = ×{s.ratio:.3f}{ci}.")
    return lines


def _latency_lines(result: RunComparison) -> list[str]:
    lines = []
    for key, (a, b) in result.latency.items():
        if a and b:
            what = "first token" if key == "first_token_s" else "last token (answer)"
            lines.append(f"Time to {what} from the group's start, p50 / p99: A "
                         f"{a['p50']:.3g} / {a['p99']:.3g} s, B {b['p50']:.3g} / "
                         f"{b['p99']:.3g} s.")
    return lines


def runs_markdown(result: RunComparison) -> str:
    """Two runs compared, for people: who A and B are, the paired table, agreement, speed."""
    pair = result.pair
    head = [_run_line("A", pair.a), _run_line("B", pair.b),
            f"Questions: {pair.shared} scored by both, {pair.only_a} only by A, "
            f"{pair.only_b} only by B.", ""]
    body = [to_markdown(_metric_table(result))] if pair.metrics else [
        f"No paired figures: {pair.note}.", ""]
    tail = [line for line in (_agreement_line(result), *_speed_lines(result),
                              *_latency_lines(result)) if line]
    return "\n".join([*head, *body, *tail]) + "\n"


def runs_json(result: RunComparison) -> dict[str, Any]:
    """Two runs compared, for machines: every figure of the Markdown report."""
    pair = result.pair
    return {
        "a": pair.a["run_id"], "b": pair.b["run_id"], "margin_points": pair.margin,
        "confidence": CONFIDENCE, "shared": pair.shared, "only_a": pair.only_a,
        "only_b": pair.only_b, "note": pair.note,
        "metrics": [asdict(m) for m in pair.metrics],
        "agreement": asdict(pair.agreement) if pair.agreement else None,
        "speed": [asdict(s) for s in result.speeds], "speed_note": result.speed_note,
        "question_latency": {k: {"a": a, "b": b} for k, (a, b) in result.latency.items()},
    }
