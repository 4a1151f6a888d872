"""Two runs on the same questions, compared question by question.

Every method answers the same questions, so a difference in accuracy is judged *paired*:
the runs' samples.jsonl lines are matched by question id (``doc_id``; questions only one
run scored are counted, never silently dropped), each declared metric of the suite is
scored per question (its YAML ``sample`` field, :class:`pmbench.suites.Metric`), and
:mod:`pmbench.measure.stats` gives Δ = B - A in points with its paired-bootstrap interval,
McNemar's exact p for a 0/1 metric, a non-inferiority verdict against a margin and the
number of questions that would decide it. Agreement says how alike the outputs are where
tokens may legitimately differ (bf16 kernels on a GPU): identical predictions (the
extracted answer), identical output text, and the mean position of the first token that
differs.

Two runs compare when they scored the same suite and split with the same model, a
fine-tuned checkpoint counting as its base model (found through its training record), so
a fine-tune is compared with its control and rope2d with sequential; anything else is bad
input, one line.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pmbench.errors import BadInput
from pmbench.measure.stats import (
    mcnemar_exact,
    paired_difference,
    questions_to_decide,
    verdict,
)
from pmbench.records.store import read_record, read_samples
from pmbench.report.results import model_names, trained_by
from pmbench.suites import Metric, suite_info

MARGIN = 1.0  # points: the non-inferiority margin unless the user fixes another
MIN_SHARED = 20  # fewer shared questions than this: no paired figures, only why


@functools.lru_cache(maxsize=256)
def _samples_at(folder: str, stamp: tuple[int, int]) -> tuple[dict[str, Any], ...] | None:
    rows = read_samples(Path(folder))
    return None if rows is None else tuple(rows)


def run_samples(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The samples.jsonl lines of a run record read by :func:`pmbench.report.results.load`
    (None when its folder has none), read once per file version."""
    folder = Path(record["_path"]).parent
    try:
        st = os.stat(folder / "samples.jsonl", follow_symlinks=False)
    except FileNotFoundError:
        return None
    rows = _samples_at(str(folder), (st.st_mtime_ns, st.st_size))
    return None if rows is None else list(rows)


def unit_scores(samples: list[dict[str, Any]], metric: Metric) -> dict[str, float] | None:
    """Per unit (question, or `metric.unit`'s value) the metric's score; None when the
    metric has no per-question field or a sample lacks it (records of other versions) or
    holds no finite number (a hand-edited file)."""
    if metric.sample is None:
        return None
    units: dict[str, list[float]] = {}
    for s in samples:
        value = s.get(metric.sample)
        if not isinstance(value, int | float) or not math.isfinite(value) or "doc_id" not in s:
            return None
        unit = s.get(metric.unit) if metric.unit else s["doc_id"]
        units.setdefault(str(unit), []).append(float(value))
    fold = min if metric.reduce == "min" else (lambda v: sum(v) / len(v))
    return {unit: fold(values) for unit, values in units.items()}


@dataclass(frozen=True)
class MetricPair:
    """One metric of a paired comparison; every difference in points (Δ = B - A)."""

    key: str
    label: str
    n: int  # units both runs scored
    a: float  # the runs' scores on those units, in %
    b: float
    delta: float
    low: float
    high: float
    sd: float  # of the per-unit differences, points
    p_value: float | None  # McNemar's exact test; None when the metric is not 0/1
    a_only: int | None  # discordant units: right only in A / only in B
    b_only: int | None
    verdict: str
    to_decide: int | None  # units that make the interval's half-width the margin


def pair_metric(metric: Metric, a: dict[str, float], b: dict[str, float],
                margin: float) -> MetricPair:
    """The paired statistics of `metric` over the units both score maps hold."""
    shared = sorted(set(a) & set(b))
    x = np.array([a[u] for u in shared]) * 100
    y = np.array([b[u] for u in shared]) * 100
    diff = paired_difference(x, y)
    binary = bool(np.isin(x, (0, 100)).all() and np.isin(y, (0, 100)).all())
    a_only = int(((x == 100) & (y == 0)).sum()) if binary else None
    b_only = int(((x == 0) & (y == 100)).sum()) if binary else None
    p = mcnemar_exact(a_only, b_only) if binary else None
    return MetricPair(metric.key, metric.label, diff.n, diff.mean_a, diff.mean_b, diff.delta,
                      diff.low, diff.high, diff.sd, p, a_only, b_only,
                      verdict(diff.low, diff.high, margin),
                      questions_to_decide(diff.sd, margin))


@dataclass(frozen=True)
class Agreement:
    """How alike two runs' outputs are on the questions both answered."""

    n: int
    same_prediction: float  # share with the same extracted answer (the suite's `answer`)
    same_output: float  # share with the same output text
    differing: int  # outputs whose tokens differ
    first_difference: float | None  # mean index of the first differing token among them


def _first_difference(x: list[int], y: list[int]) -> int | None:
    """Index of the first token where `x` and `y` differ (None when they are equal)."""
    if x == y:
        return None
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                min(len(x), len(y)))


def agreement(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]],
              answer: str) -> Agreement:
    """Agreement of samples keyed by question id, over the ids both hold."""
    shared = sorted(set(a) & set(b))
    firsts = [f for q in shared if (f := _first_difference(
        list(a[q].get("output_ids") or []), list(b[q].get("output_ids") or []))) is not None]
    n = len(shared)
    return Agreement(
        n, sum(a[q].get(answer) == b[q].get(answer) for q in shared) / n if n else 0.0,
        sum(a[q].get("output_text") == b[q].get("output_text") for q in shared) / n if n else 0.0,
        len(firsts), float(np.mean(firsts)) if firsts else None)


@dataclass
class RunPair:
    """Run B compared with run A on the questions both scored."""

    a: dict[str, Any]
    b: dict[str, Any]
    margin: float
    shared: int = 0
    only_a: int = 0
    only_b: int = 0
    metrics: tuple[MetricPair, ...] = ()
    agreement: Agreement | None = None
    note: str | None = None  # why there are no paired figures (no samples, too few shared)


def base_model(record: dict[str, Any], train: list[dict[str, Any]]) -> str:
    """The model a run's weights come from: a fine-tuned checkpoint's base model, a
    pre-trained one's size (two runs from scratch of one size differ only in their
    training, as two fine-tunes of one base do), found in its training record among
    `train` or the train.json beside the checkpoint; else the run's own model."""
    rec = trained_by(model_names(record), train, intermediate=True)
    if rec is None:
        for name in model_names(record):
            beside = Path(name).parent / "train.json"
            if beside.is_file():
                try:
                    rec = read_record(beside, "training record")
                except BadInput:
                    continue
                break
    base = rec.get("model") if rec else None
    trained = isinstance(base, str) and rec.get("kind") in ("finetune", "pretrain")
    return str(base) if trained else str(record["model"])


def check_comparable(a: dict[str, Any], b: dict[str, Any],
                     train: list[dict[str, Any]] = ()) -> None:
    """BadInput (one line) unless runs `a` and `b` scored the same suite and split with the
    same (base) model."""
    if a["suite"] != b["suite"]:
        raise BadInput(f"runs of different suites ({a['suite']} vs {b['suite']}): a paired "
                       "comparison needs the same questions")
    splits = [(r.get("suite_info") or {}).get("split") for r in (a, b)]
    if None not in splits and splits[0] != splits[1]:
        raise BadInput(f"runs of different {a['suite']} splits ({splits[0]} vs {splits[1]})")
    models = [base_model(r, list(train)) for r in (a, b)]
    if models[0] != models[1]:
        raise BadInput(f"runs of different models ({models[0]} vs {models[1]}): compare a "
                       "model's runs, or a fine-tune with its base model's (found through its "
                       "train.json)")


def pair_runs(a: dict[str, Any], b: dict[str, Any], margin: float = MARGIN,
              train: list[dict[str, Any]] = (), min_shared: int = MIN_SHARED) -> RunPair:
    """Run `b` against run `a` (records as :func:`pmbench.report.results.load` reads them),
    every declared metric of their suite paired per question."""
    if margin < 0:
        raise BadInput(f"--margin must be >= 0 points, got {margin:g}")
    check_comparable(a, b, train)
    pair = RunPair(a, b, margin)
    samples = [run_samples(r) for r in (a, b)]
    if any(s is None for s in samples):
        missing = next(r for r, s in zip((a, b), samples, strict=True) if s is None)
        pair.note = f"no samples.jsonl beside {missing['_path']}: no per-question figures"
        return pair
    by_id = [{str(s.get("doc_id")): s for s in rows} for rows in samples]
    pair.shared = len(set(by_id[0]) & set(by_id[1]))
    pair.only_a, pair.only_b = (len(set(x) - set(y)) for x, y in (by_id, by_id[::-1]))
    if pair.shared < min_shared:
        pair.note = f"only {pair.shared} shared questions (fewer than {min_shared})"
        return pair
    info = suite_info(a["suite"])
    pair.agreement = agreement(by_id[0], by_id[1], info.answer)
    shared_rows = [[rows[q] for q in sorted(set(by_id[0]) & set(by_id[1]))] for rows in by_id]
    pairs = []
    for metric in info.metrics:
        scores = [unit_scores(rows, metric) for rows in shared_rows]
        if scores[0] is not None and scores[1] is not None:
            pairs.append(pair_metric(metric, scores[0], scores[1], margin))
    pair.metrics = tuple(pairs)
    return pair
