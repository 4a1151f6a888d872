"""Scoring functions, written out so they run offline and can be checked by hand.

Each follows a reference implementation (named in its docstring) line for line where
it matters for the numbers: the `evaluate` library would fetch its metric scripts from
the hub at run time, which fails offline.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

# --- SQuAD: the official evaluate-v2.0.py (normalization identical to v1.1) -------------

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
NO_ANSWER = "unanswerable"  # a prediction meaning "no answer", as well as the empty string


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop articles (a/an/the), collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def squad_exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def squad_f1(gold: str, pred: str) -> float:
    """Bag-of-tokens F1; two empty answers agree (1.0), one empty answer scores 0."""
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: Sequence[str], pred: str) -> tuple[float, float]:
    """(EM, F1) of `pred`, each the max over the gold answers.

    SQuAD v2: gold answers that normalize to nothing are dropped, and a question with
    none left is unanswerable (gold ""). A prediction of "unanswerable" counts as "".
    """
    kept = [g for g in golds if normalize_answer(g)] or [""]
    if normalize_answer(pred) == NO_ANSWER:
        pred = ""
    return max(squad_exact(g, pred) for g in kept), max(squad_f1(g, pred) for g in kept)


# --- GSM8K: lm-evaluation-harness gsm8k.yaml v3 (filters + exact_match options) ---------

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
INVALID = "[invalid]"  # lm-eval's fallback when a regex filter finds nothing
_IGNORE = [re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]


def extract_strict(text: str) -> str:
    """The number after the first `#### ` (lm-eval "strict-match")."""
    found = STRICT.findall(text)
    return found[0].strip() if found else INVALID


def extract_flexible(text: str) -> str:
    """The last number-like span anywhere (lm-eval "flexible-extract", group_select -1)."""
    found = FLEXIBLE.findall(text)
    if not found:
        return INVALID
    return next(g for g in found[-1] if g).strip()


def gsm8k_normalize(s: str) -> str:
    """lm-eval exact_match with regexes_to_ignore [",", "$", ".*#### ", "\\.$"], ignore_case."""
    for pattern in _IGNORE:
        s = pattern.sub("", s)
    return s.lower()


def gsm8k_match(extracted: str, gold: str) -> float:
    return float(gsm8k_normalize(extracted) == gsm8k_normalize(gold))


# --- HumanEval: the unbiased pass@k estimator of Chen et al. (2021) ---------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn from n passes | c of n passed) = 1 - C(n-c,k)/C(n,k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# --- MultiRC: SuperGLUE EM (per question) and F1a (over answer options) -----------------


def binary_f1(labels: Sequence[int], preds: Sequence[int]) -> float:
    """F1 of the positive class (label 1), as sklearn's f1_score; 0 when undefined."""
    tp = sum(1 for y, p in zip(labels, preds, strict=True) if y == 1 and p == 1)
    fp = sum(1 for y, p in zip(labels, preds, strict=True) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, preds, strict=True) if y == 1 and p == 0)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def multirc_em(items: Iterable[tuple[str, int, int]]) -> float:
    """Share of questions with every answer option judged right; items (question, label, pred)."""
    per_question: dict[str, bool] = {}
    for question, label, pred in items:
        per_question[question] = per_question.get(question, True) and label == pred
    return sum(per_question.values()) / len(per_question) if per_question else 0.0


# --- shared helpers ---------------------------------------------------------------------


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (as numpy.argmax)."""
    return int(np.argmax(np.asarray(values, dtype=np.float64)))


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the earliest stop string (lm-eval's `until`)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]
