"""pmbench's metrics, loaded through `evaluate` from their scripts, against hand-worked cases
from the official definitions (no model, no data)."""

import sys
from math import comb

import pytest

from pmbench.suites.metrics import argmax, cut_at_stops, load


def module(name: str):
    """The Python module `evaluate` imported metric `name` from (its helper functions)."""
    return sys.modules[type(load(name)).__module__]


# --- SQuAD (official evaluate-v2.0.py; v1.1 normalisation is the same) -------------------


@pytest.fixture(scope="module")
def squad():
    return load("squad")


def squad_one(squad, golds, pred, no_answer="unanswerable"):
    m = squad.compute(predictions=[pred], references=[golds], no_answer=no_answer)
    return m["exact_match"], m["f1"]


@pytest.mark.parametrize("raw, norm", [
    ("The  Quick, brown fox!", "quick brown fox"),       # case, punctuation, article, spaces
    ("an apple a day", "apple day"),                      # every article
    ("Theatre and anthem", "theatre and anthem"),         # articles only as whole words
    ("  Denver\tBroncos \n", "denver broncos"),
    ("U.S.-based", "usbased"),                            # punctuation removed, not spaced
    ("", ""),
])
def test_normalize_answer(raw, norm):
    assert module("squad").normalize_answer(raw) == norm


def test_squad_f1_by_hand(squad):
    # gold tokens [cat, sat, on, mat], pred [cat, on, mat]: 3 common, P = 1, R = 3/4
    assert squad_one(squad, ["the cat sat on the mat"], "a cat on a mat")[1] == pytest.approx(6 / 7)
    # 1 common of 2 and 2: P = R = 1/2
    assert squad_one(squad, ["Denver Broncos"], "Broncos team")[1] == pytest.approx(0.5)
    assert squad_one(squad, ["Denver Broncos"], "Carolina Panthers") == (0.0, 0.0)
    # repeated tokens count with multiplicity: gold [x, b], pred [b, b]: 1 common
    assert squad_one(squad, ["x b"], "b b")[1] == pytest.approx(0.5)
    assert squad_one(squad, ["The Broncos."], "broncos") == (1.0, 1.0)


def test_squad_max_over_gold_answers(squad):
    golds = ["Denver Broncos", "Broncos", "the Denver Broncos"]
    assert squad_one(squad, golds, "the Broncos") == (1.0, 1.0)
    em, f1 = squad_one(squad, golds, "Denver")  # best F1: vs "Denver Broncos", P = 1, R = 1/2
    assert em == 0.0 and f1 == pytest.approx(2 / 3)


def test_squad_v2_no_answer(squad):
    assert squad_one(squad, [], "") == (1.0, 1.0)
    assert squad_one(squad, [], "Unanswerable.") == (1.0, 1.0)
    assert squad_one(squad, [], "Unanswerable.", no_answer="") == (0.0, 0.0)  # the official rule
    assert squad_one(squad, [], "Denver") == (0.0, 0.0)
    assert squad_one(squad, ["The"], "") == (1.0, 1.0)  # a gold that normalizes to nothing
    assert squad_one(squad, ["Denver"], "unanswerable") == (0.0, 0.0)
    assert squad_one(squad, ["Denver"], "") == (0.0, 0.0)


def test_squad_means_and_has_ans_no_ans_split(squad):
    preds, refs = ["Denver", "Broncos team", "", "Panthers"], [["Denver"], ["Denver Broncos"],
                                                              [], []]
    m = squad.compute(predictions=preds, references=refs)
    assert m["total"] == 4 and m["exact_match"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert (m["HasAns_exact_match"], m["HasAns_f1"], m["HasAns_total"]) == (0.5, 0.75, 2)
    assert (m["NoAns_exact_match"], m["NoAns_f1"], m["NoAns_total"]) == (0.5, 0.5, 2)
    per = squad.compute(predictions=preds, references=refs, per_item=True)
    assert per == {"exact_match": [1.0, 0.0, 1.0, 0.0], "f1": [1.0, 0.5, 1.0, 0.0],
                   "has_answer": [True, True, False, False]}
    only_answerable = squad.compute(predictions=["Denver"], references=[["Denver"]])
    assert "NoAns_total" not in only_answerable  # as the official script: parts that exist


# --- GSM8K (lm-evaluation-harness gsm8k v3: filters, then exact_match) ---------------------


def test_gsm8k_strict_takes_the_first_hash_answer():
    extract_strict, invalid = module("gsm8k").extract_strict, module("gsm8k").INVALID
    assert extract_strict("5 + 3 = 8\n#### 8") == "8"
    assert extract_strict("#### 1,234.\n#### 7") == "1,234."
    assert extract_strict("#### -5") == "-5"
    assert extract_strict("The answer is 8") == invalid == "[invalid]"


def test_gsm8k_flexible_takes_the_last_number():
    extract_flexible = module("gsm8k").extract_flexible
    assert extract_flexible("I had 3 apples and 12 pears") == "12"
    assert extract_flexible("It costs $5") == "$5"
    assert extract_flexible("so 18, and then 20.") == "20."
    assert extract_flexible("-7 degrees") == "-7"
    assert extract_flexible("no digits") == "[invalid]"


def test_gsm8k_exact_match_ignores_commas_dollars_and_final_period():
    normalize, match = module("gsm8k").normalize, module("gsm8k").match
    assert normalize("$1,234.") == "1234"
    assert normalize("Work: 2 * 9 = 18\n#### 18") == "18"
    assert match("1,234.", "1234") == 1.0
    assert match("$18", "18") == 1.0
    assert match("18.5", "18") == 0.0
    assert match("[invalid]", "18") == 0.0


def test_gsm8k_compute_extracts_then_matches():
    gsm8k = load("gsm8k")
    texts = ["2 * 9 = 18\n#### 18", "She pays $1,234. in all.", "#### 2,125", "I do not know"]
    golds = ["18", "1234", "2,125", "5"]
    per = gsm8k.compute(predictions=texts, references=golds, per_item=True)
    assert per["extracted_strict"] == ["18", "[invalid]", "2,125", "[invalid]"]
    assert per["extracted_flexible"] == ["18", "$1,234.", "2,125", "[invalid]"]
    assert per["exact_match_strict"] == [1.0, 0.0, 1.0, 0.0]
    assert per["exact_match_flexible"] == [1.0, 1.0, 1.0, 0.0]
    assert gsm8k.compute(predictions=texts, references=golds) == {
        "exact_match_strict": 0.5, "exact_match_flexible": 0.75}


# --- pass@k (Chen et al. 2021, unbiased) ---------------------------------------------------


@pytest.mark.parametrize("n, c, k", [(10, 3, 1), (10, 3, 5), (20, 1, 10), (5, 0, 1), (5, 5, 3),
                                     (7, 2, 7), (100, 37, 10)])
def test_pass_at_k_matches_the_formula(n, c, k):
    passed = [True] * c + [False] * (n - c)
    m = load("pass_at_k").compute(predictions=[passed], k=[k])
    assert m[f"pass@{k}"] == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_by_hand_and_averaged_over_tasks():
    pass_at_k = load("pass_at_k")
    tasks = [[True, False, False, True, False, False, False, False, True, False],  # c = 3
             [False] * 10]
    m = pass_at_k.compute(predictions=tasks, k=[1, 5])
    assert m["pass@1"] == pytest.approx((0.3 + 0) / 2)
    assert m["pass@5"] == pytest.approx((1 - 21 / 252 + 0) / 2)
    assert pass_at_k.compute(predictions=tasks, k=[1], per_item=True) == {"pass@1": [
        pytest.approx(0.3), 0.0]}
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k.compute(predictions=[[True, False, False]], k=[5])


# --- MultiRC (SuperGLUE exact_match, f1_a), helpers ----------------------------------------


def test_multirc_em_and_f1a_by_hand():
    # question q1: options (1,1) (0,0) all right; q2: (1,0) wrong; q3: (0,1) wrong, (0,0)
    items = [("q1", 1, 1), ("q1", 0, 0), ("q2", 1, 0), ("q3", 0, 1), ("q3", 0, 0)]
    m = load("multirc").compute(question_ids=[q for q, _, _ in items],
                                references=[y for _, y, _ in items],
                                predictions=[p for _, _, p in items])
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["f1_a"] == pytest.approx(0.5)  # tp = 1, fp = 1, fn = 1: F1 = 2 / 4
    assert load("multirc").compute(predictions=[0, 0], references=[0, 0],
                                   question_ids=["a", "b"])["f1_a"] == 0.0


def test_cut_at_stops_uses_the_earliest_stop():
    assert cut_at_stops("a\nb Question: c", ["Question:", "\n"]) == "a"
    assert cut_at_stops("abc", ["\n"]) == "abc"
    assert cut_at_stops("    return x\ndef g():", ["\nclass", "\ndef"]) == "    return x"


def test_argmax_takes_the_first_on_ties():
    assert argmax([0.1, 2.0, -1.0, 2.0]) == 1
    assert argmax([1.0, 1.0]) == 0
