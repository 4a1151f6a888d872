"""The paired companion of Tables 1, 2 and 5: each row's accuracy against its reference on
the same questions, with the interval and the non-inferiority verdict.

A table's point estimates cannot say whether a difference is real; its companion can. For
every row that has a reference (Tables 1 and 5: the same model's sequential run of the
suite; Table 2: a trained checkpoint's ratio-0 control of the same mask, or for the
untrained model its sequential run) and each accuracy column, the two accuracy runs are
paired by question id (:func:`pmbench.report.paired.pair_runs`). The companion is a long
table, one line per (row, metric), so it reads the same in Markdown, LaTeX and CSV:
Δ = row - reference in points, its 95% interval, McNemar's p for 0/1 metrics, and the
verdict; a pair that cannot be judged (no samples, too few shared questions) says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.measure.stats import RESAMPLES
from pmbench.report.paired import MIN_SHARED, RunPair, pair_runs
from pmbench.report.results import reference_method
from pmbench.report.table_format import Table


@dataclass(frozen=True)
class Pairing:
    """One accuracy cell of a table and the run it is judged against."""

    keys: dict[str, Any]  # the row's identity, as the companion's first columns show it
    metric: str  # the column's name, e.g. "SQuAD F1"
    key: str  # the metric's key in run.json
    run: dict[str, Any] = field(repr=False)  # the row's accuracy run
    ref: dict[str, Any] = field(repr=False)  # the reference's accuracy run
    reference: str  # the reference as the companion names it


def _pair(p: Pairing, margin: float, train: list[dict[str, Any]],
          cache: dict[tuple[str, str], RunPair | str]) -> RunPair | str:
    """The runs' paired comparison, or why there is none (one line)."""
    ids = (p.ref["_path"], p.run["_path"])
    if ids not in cache:
        try:
            cache[ids] = pair_runs(p.ref, p.run, margin, train)
        except BadInput as exc:
            cache[ids] = str(exc)
    return cache[ids]


def _why(result: RunPair | str) -> str:
    """Why a pair has no figures, in a few words."""
    if isinstance(result, str):  # pmbench compare says why in full
        return "not comparable" if result.startswith("runs of different") else result
    if result.note and result.note.startswith("no samples"):
        return "no samples.jsonl"
    if result.shared < MIN_SHARED:
        return f"{result.shared} shared questions"
    return "no per-question score"


def _line(p: Pairing, result: RunPair | str) -> dict[str, Any]:
    row: dict[str, Any] = {**p.keys, "Metric": p.metric, "Reference": p.reference}
    metric = None if isinstance(result, str) else next(
        (m for m in result.metrics if m.key == p.key), None)
    if metric is None:
        n = None if isinstance(result, str) else result.shared
        return {**row, "n": n, "Verdict": _why(result)}
    return {**row, "n": metric.n, "Reference (%)": metric.a, "Row (%)": metric.b,
            "Δ (pts)": metric.delta, "CI low": metric.low, "CI high": metric.high,
            "McNemar p": metric.p_value, "Verdict": metric.verdict}


def reference_run(runs: pd.DataFrame, model: str, suite: str, branch: int,
                  n: Any = None) -> dict[str, Any] | None:
    """The accuracy run a row of `model` on `suite` is judged against: that model's run of
    the suite by the reference method (sequential), preferring the row's #branch (the same
    groups, hence the same contexts), then the same number of questions, then its default
    variant (`default_variant`: sequential's greedy tokens are the same with its context
    cached or not, so it only breaks ties), then the most questions, then the newest.
    `runs` is a run frame of accuracy runs (``record``, ``n``, ``label`` and ``created``
    columns)."""
    seq = runs[(runs["method"] == reference_method()) & (runs["model"] == model)
               & (runs["suite"] == suite)]
    if seq.empty:
        return None
    size = pd.to_numeric(seq["n"], errors="coerce").fillna(0)
    ranked = seq.assign(_branch=seq["branch"] == branch, _n=size == n, _size=size,
                        _default=default_variant(seq))
    return ranked.sort_values(["_branch", "_n", "_default", "_size", "created"]
                              ).iloc[-1]["record"]


def default_variant(runs: pd.DataFrame) -> pd.Series:
    """Per run of a run frame, whether it is its method's default variant, labelled by the
    method's bare name: of the reference's runs, "sequential" (its context cached) is
    preferred, and "sequential no-cache" (every record made before the option) stands in
    only where no such run fits."""
    return runs["label"] == runs["method"]


NUMBERS = {"n": ".0f", "Reference (%)": ".1f", "Row (%)": ".1f", "Δ (pts)": "+.1f",
           "CI low": "+.1f", "CI high": "+.1f", "McNemar p": ".3g"}


def companion(number: int, pairings: Sequence[Pairing], margin: float,
              train: list[dict[str, Any]], reference: str,
              key_formats: dict[str, str] | None = None) -> tuple[Table | None, str]:
    """Table `number`'s paired companion and the note its main table carries; no table
    when no pair has per-question samples to judge (the note says so)."""
    if not pairings:
        return None, "Paired Δ: no row has a reference run among these records."
    cache: dict[tuple[str, str], RunPair | str] = {}
    results = [_pair(p, margin, train, cache) for p in pairings]
    lines = [_line(p, r) for p, r in zip(pairings, results, strict=True)]
    if not any("Δ (pts)" in line for line in lines):
        reasons = sorted({line["Verdict"] for line in lines})
        return None, f"Paired Δ to the reference: none could be judged ({'; '.join(reasons)})."
    data = pd.DataFrame(lines).reindex(columns=[
        *pairings[0].keys, "Metric", "Reference", *NUMBERS, "Verdict"])
    notes = [f"Δ = row - reference in points, on the questions both accuracy runs scored "
             f"(matched by question id). Reference: {reference}. CI low / high: the 95% "
             "interval of Δ, by a paired bootstrap "
             f"over questions ({RESAMPLES:,} resamples, BCa); McNemar: exact test on the "
             "discordant pairs (0/1 metrics). Verdict at a non-inferiority margin of "
             f"±{margin:g} pt (--margin, fixed in advance): better when the CI lies above 0, "
             f"non-inferior when its lower end is above -{margin:g}, inferior when its upper "
             f"end is below -{margin:g}, else inconclusive; a pair with fewer than "
             f"{MIN_SHARED} shared questions, or without samples.jsonl, says so instead."]
    table = Table(number, "paired differences: accuracy against the reference on the same "
                  "questions", data, {**(key_formats or {}), **NUMBERS}, notes, suffix="b")
    return table, (f"Paired Δ to the reference, its 95% CI and verdict at ±{margin:g} pt: "
                   f"Table {number}b (alone: pmbench table {number}b).")
