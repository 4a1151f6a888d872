"""Run records: atomic run.json, torn-line tolerance, resume bookkeeping, summaries."""

from __future__ import annotations

import json

from pmbench.bench import summarize_groups
from pmbench.records import GROUPS_FILE, SAMPLES_FILE, RunStore, atomic_write_text, read_jsonl


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "run.json"
    atomic_write_text(target, '{"x": 1}\n')
    atomic_write_text(target, '{"x": 2}\n')
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["run.json"]


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_resume_drops_samples_of_unfinished_groups(tmp_path):
    store = RunStore(tmp_path, "r1")
    store.append_group([{"doc_id": "0", "group_id": 0}], {"group_id": 0})
    # an interruption after group 1's samples but before its group line
    with open(store.dir / SAMPLES_FILE, "a") as fh:
        fh.write(json.dumps({"doc_id": "1", "group_id": 1}) + "\n")
    samples, groups = store.load_done()
    assert [s["doc_id"] for s in samples] == ["0"]
    assert [g["group_id"] for g in groups] == [0]
    assert len(read_jsonl(store.dir / SAMPLES_FILE)) == 1
    assert len(read_jsonl(store.dir / GROUPS_FILE)) == 1


def test_summary_medians_over_repeats():
    groups = [
        {"group_id": 0, "n_questions": 2, "prompt_tokens": 20, "output_tokens": 8,
         "prefill_s": [1.0, 2.0, 3.0], "decode_s": [1.0, 2.0, 1.0], "wall_s": [2.0, 4.0, 4.0],
         "ttft_s": [0.5, 0.7], "decode_steps": 3, "kv_cache_bytes": 10, "tokens_processed": 30},
        {"group_id": 1, "n_questions": 2, "prompt_tokens": 20, "output_tokens": 8,
         "prefill_s": [1.0, 1.0, 1.0], "decode_s": [1.0, 1.0, 1.0], "wall_s": [2.0, 2.0, 2.0],
         "ttft_s": [0.5, 0.9], "decode_steps": 3, "kv_cache_bytes": 10, "tokens_processed": 30},
    ]
    s = summarize_groups(groups, 3)
    # repeat walls: 4, 6, 6 -> 16 output tokens / wall
    assert s["throughput"]["repeats"]["output_tok_s"] == [4.0, 16 / 6, 16 / 6]
    assert s["throughput"]["output_tok_s"] == 16 / 6
    assert s["throughput"]["output_tok_s_max"] == 4.0
    assert s["throughput"]["q_s"] == 4 / 6
    assert s["latency"]["wall_s"] == 6.0
    assert s["latency"]["tpot_s"] == 2.0 / 6  # median decode 2.0 over 6 steps
    assert s["latency"]["ttft_s"] == 0.6
