"""The oracle answers with the gold target: every suite must score 100% on the real files.

This checks prompts, answer extraction, scoring and (HumanEval) the sandbox end to end;
the negative controls check that the 100% is earned, not built in.
"""

from pathlib import Path

import pytest

from pmbench.engine.runners import get_runner
from pmbench.engine.runners.oracle import OracleRunner
from pmbench.suites import load_suite

FIXTURES = Path(__file__).parent / "fixtures"


def oracle_samples(suite, tokenizer, mutate=None):
    runner = OracleRunner(None, tokenizer)
    gen = suite.generation(None, False, [tokenizer.eos_token_id])
    questions, outputs = [], []
    for group in suite.groups:
        if mutate:
            for q in group.questions:
                mutate(q)
        questions += group.questions
        outputs += runner.run_group(group, gen).outputs
    return suite.score_all(questions, outputs, allow_code_execution=True)


@pytest.mark.parametrize("name, options, n, metrics", [
    ("squad", {"limit": 200}, 200, ["f1", "em"]),
    ("gsm8k", {"limit": 100}, 100, ["exact_match_strict", "exact_match_flexible"]),
    ("mmlu", {"limit": 200}, 200, ["acc", "acc_macro", "acc_stem"]),
    ("mmlu", {"split": "val", "apply_chat_template": True,  # val sizes 14 + 34 + 22 + 18
              "subjects": ["anatomy", "philosophy", "sociology", "virology"]},
     88, ["acc", "acc_stem", "acc_humanities", "acc_social_sciences", "acc_other"]),
    ("ceval", {"limit": 200}, 200, ["acc", "acc_macro", "acc_other", "acc_stem"]),
    ("multirc", {"limit": 200}, 200, ["em", "f1a", "acc"]),
    ("squad_v2", {"data_dir": FIXTURES / "squad_v2"}, 4, ["f1", "has_ans_f1", "no_ans_em"]),
])
def test_oracle_scores_100_percent(tokenizer, name, options, n, metrics):
    suite = load_suite(name, tokenizer, branch=8, **options)
    samples = oracle_samples(suite, tokenizer)
    assert len(samples) == n
    assert all(s["score"] == 1.0 for s in samples)
    aggregate = suite.aggregate(samples)
    assert all(aggregate[m] == 1.0 for m in metrics), aggregate


def test_oracle_passes_all_164_humaneval_problems_in_the_sandbox(tokenizer):
    suite = load_suite("humaneval", tokenizer, branch=8)
    samples = oracle_samples(suite, tokenizer)
    failed = [(s["task_id"], s["status"], s["detail"]) for s in samples if not s["passed"]]
    assert not failed
    assert suite.aggregate(samples) == {"pass@1": 1.0, "n": 164, "samples_per_task": 1,
                                        "flagged_passes": 0}
    assert not [s["task_id"] for s in samples if s["flags"]]


def test_wrong_answers_score_zero(tokenizer):
    """Negative controls: a wrong letter, span, number or body must not pass."""
    def next_letter(q):
        q.meta["gold_output"] = " " + "BCDA"["ABCD".index(q.target)]

    mmlu = load_suite("mmlu", tokenizer, limit=16, branch=8)
    assert all(s["acc"] == 0.0 for s in oracle_samples(mmlu, tokenizer, next_letter))

    def off_by_one(q):
        q.meta["gold_output"] = q.meta["gold_output"].replace(f"#### {q.target}",
                                                              f"#### {q.target}1")

    gsm = load_suite("gsm8k", tokenizer, limit=8, branch=8)
    assert all(s["em_strict"] == 0.0 for s in oracle_samples(gsm, tokenizer, off_by_one))

    def other_paragraph(q):
        q.meta["gold_output"] = " Carolina Panthers Levi's Stadium"

    squad = load_suite("squad", tokenizer, limit=1)
    assert oracle_samples(squad, tokenizer, other_paragraph)[0]["em"] == 0.0

    def wrong_body(q):
        q.meta["gold_output"] = "    return None\n"

    code = load_suite("humaneval", tokenizer, limit=8, branch=8)
    assert not any(s["passed"] for s in oracle_samples(code, tokenizer, wrong_body))


def test_oracle_is_a_registered_validation_runner():
    cls = get_runner("oracle")
    assert cls is OracleRunner and cls.kind == "validation" and cls.needs_model is False


def test_oracle_through_pmbench_run(tmp_path):
    import json

    from typer.testing import CliRunner

    from pmbench.cli import app

    result = CliRunner().invoke(app, [
        "run", "--method", "oracle", "--suite", "squad", "--limit", "8", "--branch", "4",
        "--output-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["metrics"]["f1"] == 1.0 and record["metrics"]["n"] == 8
    assert record["method_kind"] == "validation"
