"""Scorer functions against hand-computed values (no model, no data)."""

from math import comb

import pytest

from pmbench.suites.metrics import (
    INVALID,
    argmax,
    binary_f1,
    cut_at_stops,
    extract_flexible,
    extract_strict,
    gsm8k_match,
    gsm8k_normalize,
    multirc_em,
    normalize_answer,
    pass_at_k,
    squad_exact,
    squad_f1,
    squad_scores,
)

# --- SQuAD ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, norm", [
    ("The  Quick, brown fox!", "quick brown fox"),       # case, punctuation, article, spaces
    ("an apple a day", "apple day"),                      # every article
    ("Theatre and anthem", "theatre and anthem"),         # articles only as whole words
    ("  Denver\tBroncos \n", "denver broncos"),
    ("U.S.-based", "usbased"),                            # punctuation removed, not spaced
    ("", ""),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_squad_f1_by_hand():
    # gold tokens [cat, sat, on, mat], pred [cat, on, mat]: 3 common, P = 1, R = 3/4
    assert squad_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # 1 common of 2 and 2: P = R = 1/2
    assert squad_f1("Denver Broncos", "Broncos team") == pytest.approx(0.5)
    assert squad_f1("Denver Broncos", "Carolina Panthers") == 0.0
    # repeated tokens count with multiplicity: gold [x, b], pred [b, b]: 1 common
    assert squad_f1("x b", "b b") == pytest.approx(0.5)
    assert squad_exact("The Broncos.", "broncos") == 1.0


def test_squad_max_over_gold_answers():
    golds = ["Denver Broncos", "Broncos", "the Denver Broncos"]
    assert squad_scores(golds, "the Broncos") == (1.0, 1.0)
    em, f1 = squad_scores(golds, "Denver")  # best F1: vs "Denver Broncos", P = 1, R = 1/2
    assert em == 0.0 and f1 == pytest.approx(2 / 3)


def test_squad_v2_no_answer():
    assert squad_scores([], "") == (1.0, 1.0)
    assert squad_scores([], "Unanswerable.") == (1.0, 1.0)
    assert squad_scores([], "Denver") == (0.0, 0.0)
    assert squad_scores(["The"], "") == (1.0, 1.0)  # a gold that normalizes to nothing is no answer
    assert squad_scores(["Denver"], "unanswerable") == (0.0, 0.0)
    assert squad_scores(["Denver"], "") == (0.0, 0.0)


# --- GSM8K ---------------------------------------------------------------------------------


def test_gsm8k_strict_takes_the_first_hash_answer():
    assert extract_strict("5 + 3 = 8\n#### 8") == "8"
    assert extract_strict("#### 1,234.\n#### 7") == "1,234."
    assert extract_strict("#### -5") == "-5"
    assert extract_strict("The answer is 8") == INVALID


def test_gsm8k_flexible_takes_the_last_number():
    assert extract_flexible("I had 3 apples and 12 pears") == "12"
    assert extract_flexible("It costs $5") == "$5"
    assert extract_flexible("so 18, and then 20.") == "20."
    assert extract_flexible("-7 degrees") == "-7"
    assert extract_flexible("no digits") == INVALID


def test_gsm8k_exact_match_ignores_commas_dollars_and_final_period():
    assert gsm8k_normalize("$1,234.") == "1234"
    assert gsm8k_normalize("Work: 2 * 9 = 18\n#### 18") == "18"
    assert gsm8k_match("1,234.", "1234") == 1.0
    assert gsm8k_match("$18", "18") == 1.0
    assert gsm8k_match("18.5", "18") == 0.0
    assert gsm8k_match(INVALID, "18") == 0.0
    assert gsm8k_match(extract_flexible("#### 2,125"), "2,125") == 1.0


# --- pass@k, MultiRC, helpers ------------------------------------------------------------


@pytest.mark.parametrize("n, c, k", [(10, 3, 1), (10, 3, 5), (20, 1, 10), (5, 0, 1), (5, 5, 3),
                                     (7, 2, 7), (100, 37, 10)])
def test_pass_at_k_matches_the_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_by_hand():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_multirc_em_and_f1a_by_hand():
    # question q1: options (1,1) (0,0) all right; q2: (1,0) wrong; q3: (0,1) wrong, (0,0)
    items = [("q1", 1, 1), ("q1", 0, 0), ("q2", 1, 0), ("q3", 0, 1), ("q3", 0, 0)]
    assert multirc_em(items) == pytest.approx(1 / 3)
    labels = [y for _, y, _ in items]
    preds = [p for _, _, p in items]
    # tp = 1, fp = 1, fn = 1: F1 = 2 / 4
    assert binary_f1(labels, preds) == pytest.approx(0.5)
    assert binary_f1([0, 0], [0, 0]) == 0.0


def test_cut_at_stops_uses_the_earliest_stop():
    assert cut_at_stops("a\nb Question: c", ["Question:", "\n"]) == "a"
    assert cut_at_stops("abc", ["\n"]) == "abc"
    assert cut_at_stops("    return x\ndef g():", ["\nclass", "\ndef"]) == "    return x"


def test_argmax_takes_the_first_on_ties():
    assert argmax([0.1, 2.0, -1.0, 2.0]) == 1
    assert argmax([1.0, 1.0]) == 0
