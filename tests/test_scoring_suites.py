"""Suite scorers on hand-made outputs: what a runner returns -> per-sample fields -> metrics."""

from pathlib import Path

import pytest

from pmbench.errors import BadInput
from pmbench.suites import load_suite
from pmbench.types import QuestionOutput

FIXTURES = Path(__file__).parent / "fixtures"


def out(tokenizer, text: str, logits=None) -> QuestionOutput:
    ids = tokenizer.encode(text, add_special_tokens=False)
    # as a runner does: the text drops special tokens, the ids keep them
    return QuestionOutput(ids, tokenizer.decode(ids, skip_special_tokens=True), 0.0,
                          first_logits=logits)


def test_mmlu_letter_scoring(tokenizer):
    suite = load_suite("mmlu", tokenizer, limit=2)
    q = suite.groups[0].questions[0]  # abstract_algebra test item 0, answer B
    assert q.target == "B" and q.meta["gold_index"] == 1
    right = suite.score(q, out(tokenizer, " C", logits=[0.1, 2.5, 0.3, -1.0]))
    assert right["prediction"] == "B" and right["acc"] == right["score"] == 1.0
    wrong = suite.score(q, out(tokenizer, " B", logits=[0.1, 2.5, 3.0, -1.0]))
    assert wrong["prediction"] == "C" and wrong["acc"] == 0.0  # the logits decide, not the text
    # a runner without logits: the first letter of the text is the answer
    assert suite.score(q, out(tokenizer, " B. Because"))["acc"] == 1.0
    assert suite.score(q, out(tokenizer, " I think"))["prediction"] is None


def test_mmlu_aggregate_micro_macro_categories(tokenizer):
    suite = load_suite("mmlu", tokenizer, limit=1)
    samples = (
        [{"subject": "anatomy", "category": "stem", "acc": a} for a in (1, 1, 1, 0)]
        + [{"subject": "philosophy", "category": "humanities", "acc": a} for a in (1, 0)]
    )
    m = suite.aggregate(samples)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["acc_macro"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["acc_stem"] == pytest.approx(0.75) and m["acc_humanities"] == pytest.approx(0.5)
    assert m["acc_other"] is None and m["acc_social_sciences"] is None
    assert m["n"] == 6 and m["n_subjects"] == 2


def test_ceval_categories(tokenizer):
    suite = load_suite("ceval", tokenizer, limit=1, subjects=["clinical_medicine"])
    q = suite.groups[0].questions[0]
    assert suite.score(q, out(tokenizer, " A", [1, 0, 0, 0]))["category"] == "other"
    m = suite.aggregate([{"subject": "law", "category": "humanities", "acc": 1.0},
                         {"subject": "marxism", "category": "social_science", "acc": 0.0}])
    assert m["acc_humanities"] == 1.0 and m["acc_social_science"] == 0.0 and m["acc_stem"] is None


def test_gsm8k_cuts_at_stop_strings_and_eos(tokenizer):
    suite = load_suite("gsm8k", tokenizer, limit=1)  # EOS: the tokenizer's, from the start
    q = suite.groups[0].questions[0]
    assert q.target == "18"
    # --ignore-eos: the model went on into a new question with another answer
    s = suite.score(q, out(tokenizer, " She makes 18 dollars.\n\nQuestion: x\nAnswer: #### 5"))
    assert s["extracted_strict"] == "[invalid]" and s["em_strict"] == 0.0
    assert s["extracted_flexible"] == "18" and s["em_flexible"] == 1.0
    # text after EOS never counts
    s = suite.score(q, out(tokenizer, " #### 18<|im_end|>99"))
    assert s["prediction"] == " #### 18" and s["score"] == 1.0 and s["em_flexible"] == 1.0
    # the metrics block comes from the gsm8k metric, over the stored answers and targets
    m = suite.aggregate([{"prediction": " #### 18", "target": "18"},
                         {"prediction": " so 18 eggs.", "target": "18"}])
    assert m == {"exact_match": 0.5, "exact_match_strict": 0.5, "exact_match_flexible": 1.0,
                 "n": 2}



def test_scores_do_not_depend_on_call_order(tokenizer):
    """The EOS ids a score cuts at are the suite's (given at construction, default the
    tokenizer's) or the ones passed to scoring: never what an earlier generation() call
    was given."""
    newline = tokenizer.encode("\n", add_special_tokens=False)[0]
    output = out(tokenizer, " #### 18\n#### 5")  # "\n" is an EOS only where we say so
    fresh = load_suite("gsm8k", tokenizer, limit=1)
    q = fresh.groups[0].questions[0]
    before = fresh.score(q, output)
    gen = fresh.generation(None, True, [newline])
    assert gen.eos_token_ids == [newline] and fresh.eos_token_ids == (tokenizer.eos_token_id,)
    assert fresh.score(q, output) == before  # generation() changed nothing
    assert before["extracted_strict"] == "18" and before["extracted_flexible"] == "5"
    assert fresh.generation().eos_token_ids == [tokenizer.eos_token_id]
    # explicit ids: at construction (generation follows them) or per scoring call
    cut = load_suite("gsm8k", tokenizer, limit=1, eos_token_ids=[newline])
    assert cut.generation().eos_token_ids == [newline]
    expected = {**before, "prediction": " #### 18", "extracted_flexible": "18",
                "em_flexible": 1.0}
    assert cut.score(q, output) == expected
    assert fresh.score(q, output, eos_token_ids=[newline]) == expected
    assert fresh.score_all([q], [output], eos_token_ids=[newline]) == [expected]
    assert fresh.score(q, output) == before

def test_squad_scores_the_first_line(tokenizer):
    suite = load_suite("squad", tokenizer, limit=1)
    q = suite.groups[0].questions[0]
    s = suite.score(q, out(tokenizer, " The Denver Broncos.\nQuestion: who lost?"))
    assert s["prediction"] == "The Denver Broncos." and s["em"] == 1.0 and s["f1"] == 1.0
    assert s["target"] == ["Denver Broncos"] * 3 and s["has_answer"] is True
    # gold [denver, broncos], pred [broncos, of, denver]: P = 2/3, R = 1, F1 = 0.8
    m = suite.aggregate([s, suite.score(q, out(tokenizer, " Broncos of Denver"))])
    assert m["em"] == 0.5 and m["f1"] == pytest.approx((1 + 0.8) / 2)
    assert "has_ans_f1" not in m  # v1.1: no HasAns / NoAns split


def test_squad_v2_has_ans_no_ans(tokenizer):
    suite = load_suite("squad_v2", tokenizer, data_dir=FIXTURES / "squad_v2", branch=4)
    qs = {q.doc_id: q for g in suite.groups for q in g.questions}
    samples = [
        suite.score(qs["tt-1"], out(tokenizer, " Ada Brook")),          # HasAns right
        suite.score(qs["tt-2"], out(tokenizer, " the Lee family bakers")),  # HasAns, F1 0.8
        suite.score(qs["tt-3"], out(tokenizer, " unanswerable")),       # NoAns right
        suite.score(qs["tt-4"], out(tokenizer, " every Monday")),       # NoAns wrong
    ]
    assert [s["has_answer"] for s in samples] == [True, True, False, False]
    m = suite.aggregate(samples)
    # tt-2: gold [lee, family], pred [lee, family, bakers]: P = 2/3, R = 1, F1 = 0.8
    assert m["has_ans_f1"] == pytest.approx((1 + 0.8) / 2) and m["has_ans_em"] == 0.5
    assert m["no_ans_f1"] == 0.5 and m["no_ans_em"] == 0.5
    assert m["has_ans_n"] == 2 and m["no_ans_n"] == 2
    assert m["f1"] == pytest.approx((1 + 0.8 + 1 + 0) / 4)


def test_multirc_yes_no_scoring(tokenizer):
    suite = load_suite("multirc", tokenizer, limit=4, branch=4)
    qs = suite.groups[0].questions  # val passage 0, question 0: labels 0, 1, 1, 0
    assert [q.meta["label"] for q in qs] == [0, 1, 1, 0]
    judged = [suite.score(q, out(tokenizer, "", logits)) for q, logits in
              zip(qs, ([0, 1], [1, 0], [0, 1], [0, 1]), strict=True)]  # yes/no logits
    assert [s["pred_label"] for s in judged] == [0, 1, 0, 0]
    m = suite.aggregate(judged)
    # one question, one option wrong: EM 0; tp 1, fn 1, fp 0: F1a = 2/3; acc 3/4
    assert m["em"] == 0.0 and m["f1a"] == pytest.approx(2 / 3) and m["acc"] == 0.75
    assert m["n"] == 4 and m["n_questions"] == 1


def test_humaneval_aggregate_pass_at_k(tokenizer):
    suite = load_suite("humaneval", tokenizer, limit=1)
    samples = ([{"task_id": "a", "passed": p} for p in (1, 0, 0, 0, 0)]
               + [{"task_id": "b", "passed": p} for p in (1, 1, 0, 0, 0)])
    m = suite.aggregate(samples)
    # pass@1 = mean(1/5, 2/5); k = 10 > 5 samples is not reported
    assert m["pass@1"] == pytest.approx(0.3) and "pass@10" not in m
    assert m["n"] == 2 and m["samples_per_task"] == 5


def test_humaneval_refuses_to_run_code_without_opt_in(tokenizer, monkeypatch):
    monkeypatch.delenv("PMBENCH_ALLOW_CODE_EXECUTION", raising=False)
    suite = load_suite("humaneval", tokenizer, limit=1)
    q = suite.groups[0].questions[0]
    with pytest.raises(BadInput, match="--allow-code-execution"):
        suite.score_all([q], [out(tokenizer, "    return True\n")])


def test_humaneval_runs_completions_in_the_sandbox(tokenizer):
    suite = load_suite("humaneval", tokenizer, limit=1)
    q = suite.groups[0].questions[0]  # has_close_elements
    good = ("    return any(abs(a - b) < threshold for i, a in enumerate(numbers)"
            " for b in numbers[i + 1:])\n\ndef unused():\n    pass\n")
    bad = "    return False\n"
    s_good, s_bad = suite.score_all([q, q], [out(tokenizer, good), out(tokenizer, bad)],
                                    allow_code_execution=True)
    assert s_good["completion"].endswith("numbers[i + 1:])\n")  # cut at "\ndef"
    assert s_good["passed"] and s_good["score"] == 1.0
    assert not s_bad["passed"] and s_bad["status"] == "failed"
