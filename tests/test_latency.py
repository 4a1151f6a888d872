"""Per-question latency (issue 25): each question's time to its first and last token from
its group's start (and from its own start), the steps its group ran after it finished, and
run.json's percentiles, which are what numpy computes from samples.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pmbench.cli import app


def _run(model: str, out: Path, method: str, *extra: str) -> tuple[dict, list[dict], list[dict]]:
    result = CliRunner().invoke(app, [
        "run", "--model", model, "--suite", "squad", "--limit", "6", "--branch", "3",
        "--method", method, "--output-dir", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    folder = out / record["run_id"]
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    groups = [json.loads(x) for x in (folder / "groups.jsonl").read_text().splitlines()]
    return record, samples, groups


@pytest.mark.parametrize("method", ["sequential", "batch", "prefix", "rope2d"])
def test_question_latencies_are_ordered_within_their_group(tiny_model_dir, tmp_path, method):
    record, samples, groups = _run(tiny_model_dir, tmp_path, method, "--max-new-tokens", "6",
                                   "--repeats", "2")
    by_group = {g["group_id"]: g for g in groups}
    for s in samples:
        elapsed = by_group[s["group_id"]]["elapsed_s"]
        assert len(s["ttft_s_repeats"]) == len(s["ttlt_s_repeats"]) == len(elapsed) == 2
        assert (s["ttft_s_repeats"][0], s["ttlt_s_repeats"][0]) == (s["ttft_s"], s["ttlt_s"])
        for first, last, wall in zip(s["ttft_s_repeats"], s["ttlt_s_repeats"], elapsed,
                                     strict=True):
            assert 0 <= first <= last <= wall
        assert 0 <= s["start_s"] <= s["ttft_s"]
        assert s["idle_steps"] >= 0
        assert s["idle_steps"] <= by_group[s["group_id"]]["decode_steps"]
    if method == "sequential":  # one at a time: each question waits for those before it
        for g in groups:
            starts = [s["start_s"] for s in samples if s["group_id"] == g["group_id"]]
            assert starts == sorted(starts) and starts[-1] > starts[0]
        assert all(s["idle_steps"] == 0 for s in samples)


def test_run_json_percentiles_are_numpys_over_samples(tiny_model_dir, tmp_path):
    record, samples, _ = _run(tiny_model_dir, tmp_path, "batch", "--max-new-tokens", "8",
                              "--repeats", "3")
    block = record["question_latency"]
    assert block["questions"] == len(samples) == 6 and block["repeats"] == 3
    for key, field in (("first_token_s", "ttft_s_repeats"), ("last_token_s", "ttlt_s_repeats")):
        pooled = [v for s in samples for v in s[field]]
        p50, p90, p99 = np.percentile(pooled, [50, 90, 99])
        assert block[key] == pytest.approx({"p50": p50, "p90": p90, "p99": p99,
                                            "max": max(pooled)})
        for r, per in enumerate(block["per_repeat"]):
            assert per[key]["p99"] == pytest.approx(np.percentile([s[field][r] for s in samples],
                                                                  99))
    service = [s["ttlt_s"] - s["start_s"] for s in samples]
    assert block["service_last_token_s"]["p50"] == pytest.approx(np.percentile(service, 50))
    idle = sum(s["idle_steps"] for s in samples)
    own = sum(len(s["output_ids"]) - 1 for s in samples)
    assert block["straggler_share"] == pytest.approx(idle / (idle + own))


def test_a_throughput_run_takes_five_repeats_and_an_interval(tiny_model_dir, tmp_path):
    record, samples, _ = _run(tiny_model_dir, tmp_path, "rope2d", "--max-new-tokens", "4",
                              "--ignore-eos")
    tp = record["throughput"]
    assert record["repeats"] == 5 and len(tp["repeats"]["output_tok_s"]) == 5
    # five repeats: the percentile bootstrap interval of the median is [min, max]
    assert (tp["output_tok_s_ci_low"], tp["output_tok_s_ci_high"]) == (
        tp["output_tok_s_min"], tp["output_tok_s_max"])
    assert record["question_latency"]["per_repeat"][4]["last_token_s"]["max"] > 0
    assert record["question_latency"]["straggler_share"] == 0  # --ignore-eos: all finish together
