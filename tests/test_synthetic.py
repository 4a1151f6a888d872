"""The synthetic shared-context suite (issue 30): exact answer lengths, the same tokens
for every method, deterministic ids without special tokens, bad lengths refused; and the
decoding step's roof that counts the context once or per row."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.measure.roofline import StepShape, step_roof
from pmbench.suites import load_suite

METHODS = ("sequential", "batch", "prefix", "rope2d")


def _synthetic(tokenizer, **options):
    return load_suite("synthetic", tokenizer, branch=options.pop("branch", 4),
                      context_window=4096, **options)


def test_groups_have_the_asked_lengths_and_no_special_tokens(tokenizer):
    suite = _synthetic(tokenizer, context_len=40, question_len=5, answer_len="3-9", limit=6)
    assert [len(g.questions) for g in suite.groups] == [4, 2]
    special = set(tokenizer.all_special_ids)
    for g in suite.groups:
        assert len(g.context_ids) == 40 and not special & set(g.context_ids)
        for q in g.questions:
            assert len(q.prompt_ids) == 5 and not special & set(q.prompt_ids)
            assert 3 <= q.max_new_tokens <= 9
    drawn = [q.max_new_tokens for g in suite.groups for q in g.questions]
    assert len(set(drawn)) > 1  # uniform in a range, not one value
    again = _synthetic(tokenizer, context_len=40, question_len=5, answer_len="3-9", limit=6)
    assert [g.context_ids for g in again.groups] == [g.context_ids for g in suite.groups]
    other = _synthetic(tokenizer, context_len=40, question_len=5, answer_len="3-9", limit=6,
                       seed=1)
    assert other.groups[0].context_ids != suite.groups[0].context_ids


def test_generation_ignores_eos_and_stops_and_budgets_follow_questions(tokenizer):
    suite = _synthetic(tokenizer, context_len=8, question_len=2, answer_len="2-20")
    gen = suite.generation()
    assert gen.ignore_eos and gen.stop_strings == []
    group = suite.groups[0]
    per_group = gen.for_group(group)
    assert list(per_group.budgets) == [q.max_new_tokens for q in group.questions]
    assert per_group.max_new_tokens == max(per_group.budgets)
    assert per_group.for_stream(1).max_new_tokens == group.questions[1].max_new_tokens


@pytest.mark.parametrize("context_len", [0, 24])
def test_every_method_answers_with_exact_lengths_and_the_same_tokens(
        tiny_model_dir, tmp_path, context_len):
    """Each branch stops at its own drawn length (stragglers are real), and in float32 the
    greedy tokens of all four methods agree, with and without a shared context."""
    outputs = {}
    for method in METHODS:
        res = CliRunner().invoke(app, [
            "run", "--method", method, "--suite", "synthetic", "--model", tiny_model_dir,
            "--branch", "3", "--context-len", str(context_len), "--question-len", "4",
            "--answer-len", "2-9", "--repeats", "1", "--no-warmup",
            "--output-dir", str(tmp_path / method)])
        assert res.exit_code == 0, res.output
        run = next((tmp_path / method).iterdir())
        record = json.loads((run / "run.json").read_text())
        assert record["settings"]["ignore_eos"] is True  # a throughput run, said so
        rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
        assert all(len(r["output_ids"]) == r["answer_len"] for r in rows)
        # the ids come from the seed: samples.jsonl keeps their lengths, not the ids
        assert all("prompt_ids" not in r and r["question_len"] == 4
                   and r["context_len"] == context_len for r in rows)
        assert record["roofline"]["step"]["steps"] > 0
        outputs[method] = [r["output_ids"] for r in rows]
    assert len({json.dumps(o) for o in outputs.values()}) == 1, outputs


@pytest.mark.parametrize(("args", "needle"), [
    (["--context-len", "0", "--question-len", "0"], "--question-len must be >= 1"),
    (["--context-len", "-1"], "--context-len must be an integer >= 0"),
    (["--question-len", "-4"], "--question-len must be an integer >= 0"),
    (["--answer-len", "-3"], "--answer-len"),
    (["--answer-len", "9-2"], "A <= B"),
    (["--answer-len", "run:/no/such"], "no samples.jsonl"),
    (["--context-len", "5000"], "but the model reads 4096"),
])
def test_bad_lengths_exit_2_with_one_line(tiny_model_dir, tmp_path, args, needle):
    res = CliRunner().invoke(app, ["run", "--method", "rope2d", "--suite", "synthetic",
                                   "--model", tiny_model_dir, "--output-dir", str(tmp_path),
                                   *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_suite_option_given_to_another_suite_is_refused():
    res = CliRunner().invoke(app, ["run", "--method", "batch", "--suite", "squad",
                                   "--context-len", "64"])
    assert res.exit_code == 2
    assert "--context-len applies to --suite synthetic only, not squad" in res.output


def test_answer_lengths_drawn_from_a_finished_run(tokenizer, tmp_path):
    rows = [{"output_ids": list(range(n))} for n in (3, 7, 7, 11)]
    (tmp_path / "samples.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{torn")
    suite = _synthetic(tokenizer, context_len=4, question_len=2, answer_len=f"run:{tmp_path}",
                       branch=8, limit=32)
    drawn = {q.max_new_tokens for g in suite.groups for q in g.questions}
    assert drawn <= {3, 7, 11} and len(drawn) > 1
    assert suite.max_new_tokens == 11


SHAPE = StepShape(weight_bytes=1000, n_params=500, kv_bytes_per_token=10, flops_per_key=4.0)
PEAKS = {"copy_bytes_s": 1000.0, "matmul_flops": 1e9}  # bandwidth-bound: roof = bytes/bw


def test_step_roof_reads_the_shared_context_once_and_a_batch_once_per_row():
    """Two questions, context 100, question 2, answers 3 and 2 tokens: steps t = 1, 2
    (the first token comes from the prefill); at t = 1 both rows are live, at t = 2 one."""
    group = [[(100, 2, 3), (100, 2, 2)]]
    shared, rows = (step_roof(group, r, SHAPE, PEAKS) for r in ("shared", "rows"))
    one = step_roof(group, "one", SHAPE, PEAKS)
    assert shared["steps"] == rows["steps"] == 2 and one["steps"] == 3
    # context positions read: shared 100 + 100; rows 200 + 100; one 100 per step, 3 steps
    assert shared["context_kv_bytes_per_step"] == 10 * 200 / 2
    assert rows["context_kv_bytes_per_step"] == 10 * 300 / 2
    assert one["context_kv_bytes_per_step"] == 10 * 100
    # own positions (question + answer so far): t=1: 3 + 3, t=2: 4
    assert shared["kv_bytes_per_step"] == 10 * (200 + 10) / 2
    # attention FLOPs are the same for every method: visible keys 103+103, then 104
    for r in (shared, rows):
        assert r["attention_flops_per_step"] == 4.0 * (206 + 104) / 2
    assert one["attention_flops_per_step"] == 4.0 * (206 + 104) / 3
    assert shared["roof_s"] == pytest.approx((1000 + 10 * 106) / 1000 + (1000 + 10 * 104) / 1000)


def test_step_roof_refuses_an_unknown_read_pattern():
    with pytest.raises(ValueError, match="step_reads"):
        step_roof([[(1, 1, 2)]], "twice", SHAPE, PEAKS)


def test_data_commands_know_the_suite_has_no_files():
    res = CliRunner().invoke(app, ["data", "download", "synthetic"])
    assert res.exit_code == 2 and "makes its questions" in res.output
    res = CliRunner().invoke(app, ["data", "status"])
    assert res.exit_code == 0
    assert any("synthetic" in line and "generated" in line for line in res.output.splitlines())


def test_prefix_and_rope2d_at_64_branches_match_sequential(tiny_model_dir, tmp_path):
    """Scale in N: masks, caches and positions of 64 branches over one context give the
    same greedy tokens as one question at a time, and the record holds peak memory, the
    KV bytes and the step's attention share."""
    outputs = {}
    for method in ("sequential", "prefix", "rope2d"):
        res = CliRunner().invoke(app, [
            "run", "--method", method, "--suite", "synthetic", "--model", tiny_model_dir,
            "--branch", "64", "--context-len", "32", "--question-len", "2",
            "--answer-len", "1-4", "--repeats", "1", "--no-warmup",
            "--output-dir", str(tmp_path / method)])
        assert res.exit_code == 0, res.output
        run = next((tmp_path / method).iterdir())
        record = json.loads((run / "run.json").read_text())
        assert record["memory"]["peak_bytes"] > 0 and record["memory"]["kv_cache_bytes"] > 0
        assert 0 < record["roofline"]["step"]["attention_share_bytes"] < 1
        rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 64
        outputs[method] = [r["output_ids"] for r in rows]
    assert outputs["prefix"] == outputs["sequential"] == outputs["rope2d"]
