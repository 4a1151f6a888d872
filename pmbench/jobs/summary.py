"""What a run writes about its groups and questions, and the figures run.json sums them to.

- a group's row in groups.jsonl (:func:`group_row`): its sizes and each repeat's timings;
- a question's line in samples.jsonl (:func:`sample_row`): its tokens, its score and its
  own latencies, measured from the moment its group started: time to its first token
  (``ttft_s``) and to its last (``ttlt_s``), when its own prefill began (``start_s``: for
  a one-at-a-time method the time it queued behind the group's earlier questions), and
  the decoding steps its group ran after it had finished (``idle_steps``);
- run.json's ``throughput`` and ``latency`` blocks (:func:`summarize_groups`): medians over
  repeats, their [min, max], and a 95% bootstrap interval of the median over repeats
  (``<figure>_ci_low`` / ``_ci_high``, :mod:`pmbench.measure.stats`);
- run.json's ``question_latency`` block (:func:`question_latency`): p50 / p90 / p99 / max of
  every question's time to first and last token, from its group's start and from its own
  start, pooled over repeats and per repeat, and the straggler share.
"""

from __future__ import annotations

import statistics
from typing import Any

from pmbench.measure.stats import median_interval, percentiles
from pmbench.types import Group, GroupOutput, Question, QuestionOutput

THROUGHPUT_FIGURES = ("output_tok_s", "total_tok_s", "q_s")


def group_row(group: Group, outs: list[GroupOutput], elapsed: list[float]) -> dict[str, Any]:
    """A group's line in groups.jsonl: sizes from its first repeat, timings of each.

    `wall_s` is what the decoding loop timed (prefill + decode: throughput's clock);
    `elapsed_s` the whole call of the runner (its set-up too), which every question's
    times from the group's start fall within."""
    first = outs[0]
    return {
        "group_id": group.group_id,
        "n_questions": len(group.questions),
        "context_tokens": len(group.context_ids),
        "prompt_tokens": sum(len(group.context_ids) + len(q.prompt_ids) for q in group.questions),
        "output_tokens": sum(len(o.output_ids) for o in first.outputs),
        "prefill_s": [o.prefill_s for o in outs],
        "decode_s": [o.decode_s for o in outs],
        "wall_s": [o.wall_s for o in outs],
        "elapsed_s": elapsed,
        "ttft_s": [o.ttft_s for o in first.outputs],
        "kv_cache_bytes": first.kv_cache_bytes,
        "tokens_processed": first.tokens_processed,
        "decode_steps": first.decode_steps,
        "deterministic": all(
            [x.output_ids for x in o.outputs] == [x.output_ids for x in first.outputs]
            for o in outs
        ),
    }


def sample_row(group: Group, k: int, outs: list[QuestionOutput],
               scored: dict[str, Any], prompt_ids: bool = True) -> dict[str, Any]:
    """Question `k` of `group` as a samples.jsonl line: `outs` are its outputs in each
    repeat (the first one is scored and kept), `scored` the suite's fields. Without
    `prompt_ids` (a suite that draws its ids from the seed: Suite.keeps_prompt_ids) the
    line holds their lengths only, which keeps long-context records small."""
    q: Question = group.questions[k]
    out = outs[0]
    row: dict[str, Any] = {
        "doc_id": q.doc_id,
        "group_id": group.group_id,
        "branch": k,
        **({"prompt_ids": group.context_ids + q.prompt_ids} if prompt_ids else {}),
        "context_len": len(group.context_ids),
        "question_len": len(q.prompt_ids),
        "output_ids": out.output_ids,
        "output_text": out.output_text,
        "finish_reason": out.finish_reason,
        "ttft_s": out.ttft_s,
        "ttlt_s": out.ttlt_s,
        "start_s": out.start_s,
        "idle_steps": out.idle_steps,
    }
    if len(outs) > 1:
        row["ttft_s_repeats"] = [o.ttft_s for o in outs]
        row["ttlt_s_repeats"] = [o.ttlt_s for o in outs]
    return {**row, **scored}


def _throughput(per_repeat: dict[str, list[float | None]]) -> dict[str, Any]:
    throughput: dict[str, Any] = {}
    for key, vals in per_repeat.items():
        clean = [v for v in vals if v is not None]
        if not clean:
            throughput[key] = None
            continue
        throughput.update({key: statistics.median(clean), f"{key}_min": min(clean),
                           f"{key}_max": max(clean)})
        ci = median_interval(clean)
        if ci is not None:
            throughput.update({f"{key}_ci_low": ci[0], f"{key}_ci_high": ci[1]})
    throughput["repeats"] = per_repeat
    return throughput


def summarize_groups(groups: list[dict], repeats: int) -> dict[str, Any]:
    """Throughput and latency blocks from the per-group rows (medians over repeats)."""
    if not groups:
        return {"throughput": None, "latency": None}
    out_tok = sum(g["output_tokens"] for g in groups)
    all_tok = out_tok + sum(g["prompt_tokens"] for g in groups)
    n_q = sum(g["n_questions"] for g in groups)
    walls = [sum(g["wall_s"][r] for g in groups) for r in range(repeats)]
    prefills = [sum(g["prefill_s"][r] for g in groups) for r in range(repeats)]
    decodes = [sum(g["decode_s"][r] for g in groups) for r in range(repeats)]
    throughput = _throughput({
        "output_tok_s": [out_tok / w if w > 0 else None for w in walls],
        "total_tok_s": [all_tok / w if w > 0 else None for w in walls],
        "q_s": [n_q / w if w > 0 else None for w in walls],
    })
    steps = sum(g["decode_steps"] for g in groups)
    decode_med = statistics.median(decodes)
    ttfts = [t for g in groups for t in g["ttft_s"]]
    latency = {
        "ttft_s": statistics.median(ttfts) if ttfts else None,
        "tpot_s": decode_med / steps if steps else None,
        "prefill_s": statistics.median(prefills),
        "decode_s": decode_med,
        "wall_s": statistics.median(walls),
        "ttft_s_mean": statistics.fmean(ttfts) if ttfts else None,
        "ttft_s_max": max(ttfts) if ttfts else None,
    }
    return {"throughput": throughput, "latency": latency,
            "tokens": {"output": out_tok, "prompt": all_tok - out_tok, "questions": n_q}}


def _repeats_of(sample: dict[str, Any], key: str) -> list[float]:
    """A question's `key` latency in every repeat (only the first where one was run)."""
    values = sample.get(f"{key}_repeats") or [sample.get(key)]
    return [float(v) for v in values if isinstance(v, int | float)]


def _block(samples: list[dict[str, Any]], pick) -> dict[str, Any]:
    """Percentiles of the latencies `pick(sample)` returns (a list per question)."""
    values = [v for s in samples for v in pick(s)]
    return percentiles(values)


def question_latency(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """run.json's ``question_latency`` block from samples.jsonl lines; None when a line
    lacks the per-question latencies (records of older versions, resumed)."""
    keys = ("ttft_s", "ttlt_s", "start_s", "idle_steps")
    if not samples or any(not isinstance(s.get(k), int | float) for s in samples for k in keys):
        return None
    repeats = min(len(_repeats_of(s, "ttft_s")) for s in samples)

    def starts(s: dict[str, Any]) -> float:
        return float(s["start_s"])

    block: dict[str, Any] = {
        "first_token_s": _block(samples, lambda s: _repeats_of(s, "ttft_s")),
        "last_token_s": _block(samples, lambda s: _repeats_of(s, "ttlt_s")),
        # from the question's own start: the service time without its queueing
        "service_first_token_s": _block(samples, lambda s: [s["ttft_s"] - starts(s)]),
        "service_last_token_s": _block(samples, lambda s: [s["ttlt_s"] - starts(s)]),
        "straggler_share": straggler_share(samples),
        "questions": len(samples),
        "repeats": repeats,
    }
    if repeats > 1:
        block["per_repeat"] = [
            {"first_token_s": _block(samples, lambda s, r=r: [_repeats_of(s, "ttft_s")[r]]),
             "last_token_s": _block(samples, lambda s, r=r: [_repeats_of(s, "ttlt_s")[r]])}
            for r in range(repeats)]
    return block


def straggler_share(samples: list[dict[str, Any]]) -> float | None:
    """The share of row-steps spent on rows that had already finished: over every
    question, the steps its decoding loop ran after its last token, over all the steps
    its loop ran (its own, one per token after the first, plus those). 0 for a method
    whose loop holds one question; for a group decoded together, what the slowest branch
    makes the others wait (computed for them by a static step, dropped by an eager one)."""
    idle = sum(int(s["idle_steps"]) for s in samples)
    total = idle + sum(max(len(s.get("output_ids") or []) - 1, 0) for s in samples)
    return idle / total if total else None
