"""`pmbench compare RUN_A RUN_B`: two runs on the same questions, whatever their method,
model weights or settings (rope2d against sequential, a fine-tune against its control).

Accuracy is compared paired (:mod:`pmbench.report.paired`); speed as the ratio B / A of
the runs' median throughput with a 95% interval over their repeats, when both are runs of
the same kind (two throughput runs, or two accuracy runs: tok/s at equal token volume, or
Q/s with real stopping); the per-question latencies as both runs' percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pmbench.measure.stats import median_ratio_interval
from pmbench.report.compare import THROUGHPUT, repeats_of
from pmbench.report.paired import MARGIN, MetricPair, RunPair, pair_runs
from pmbench.report.results import run_purpose

LATENCIES = ("first_token_s", "last_token_s")  # run.json question_latency, as compared


@dataclass(frozen=True)
class Speed:
    """B / A of one throughput figure, with its 95% interval over both runs' repeats."""

    figure: str
    a: float
    b: float
    ratio: float
    low: float | None
    high: float | None


@dataclass
class RunComparison:
    pair: RunPair
    speeds: list[Speed] = field(default_factory=list)
    speed_note: str | None = None  # why speeds are not compared
    latency: dict[str, tuple[dict[str, float] | None, dict[str, float] | None]] = field(
        default_factory=dict)

    @property
    def inferior(self) -> list[MetricPair]:
        """The metrics on which B is inferior to A beyond the margin."""
        return [m for m in self.pair.metrics if m.verdict == "inferior"]


def speeds(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[Speed], str | None]:
    """B / A for each throughput figure both runs have, or why none is compared."""
    if run_purpose(a) != run_purpose(b):
        return [], (f"speed not compared: a {run_purpose(a)} run against a "
                    f"{run_purpose(b)} run (different token volume)")
    if a.get("max_new_tokens") != b.get("max_new_tokens"):
        return [], "speed not compared: the runs' token budgets differ"
    out = []
    for key in THROUGHPUT:
        xa, xb = repeats_of(a, key), repeats_of(b, key)
        if not xa or not xb or min(xa) <= 0 or min(xb) <= 0:
            continue
        ci = median_ratio_interval([xb], [xa])
        ma, mb = (float((r["throughput"] or {})[key]) for r in (a, b))
        out.append(Speed(key, ma, mb, mb / ma, *(ci or (None, None))))
    return out, None if out else "speed not compared: a run has no throughput figures"


def compare_runs(a: dict[str, Any], b: dict[str, Any], margin: float = MARGIN,
                 train: list[dict[str, Any]] = ()) -> RunComparison:
    """Run `b` against run `a`: paired accuracy, agreement, speed and latency."""
    result = RunComparison(pair_runs(a, b, margin, train))
    result.speeds, result.speed_note = speeds(a, b)
    blocks = [r.get("question_latency") or {} for r in (a, b)]
    result.latency = {key: (blocks[0].get(key), blocks[1].get(key)) for key in LATENCIES}
    return result
