"""SQuAD exact match and F1, as the official evaluate-v2.0.py computes them, for `evaluate`.

A self-contained `evaluate.Metric` script (the hub's metric scripts are fetched at run time,
which fails offline): `evaluate.load("<this file>")` loads it from its path. It takes plain
answer texts rather than the hub metric's SQuAD-shaped dicts, and returns fractions in
[0, 1] (the official script prints percentages).

Normalisation (v1.1 and v2.0 alike): lower case, drop punctuation, drop the articles
a/an/the, collapse whitespace. v2.0's rules for empty answers apply too: gold answers that
normalise to nothing are dropped, a question with none left is unanswerable (gold ""), and
F1 between an empty and a non-empty answer is 0, between two empty answers 1. On SQuAD v1.1
(no empty gold answers) these give the v1.1 script's numbers.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP 2016",
    year = "2016",
    pages = "2383--2392",
}
@inproceedings{rajpurkar-etal-2018-know,
    title = "Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}",
    author = "Rajpurkar, Pranav and Jia, Robin and Liang, Percy",
    booktitle = "Proceedings of ACL 2018",
    year = "2018",
    pages = "784--789",
}
"""

_DESCRIPTION = """\
Exact match and bag-of-tokens F1 between a predicted answer and the gold answers of a
question (the best over the gold answers), with the official SQuAD normalisation, averaged
over questions. Questions without a usable gold answer (SQuAD v2.0) count as answered
correctly by an empty prediction; the HasAns_/NoAns_ figures split the two kinds.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the predicted answer of each question.
    references (list of list of str): the gold answer texts of each question (an empty
        list for an unanswerable question).
    no_answer (str, optional): a prediction that means "no answer" (e.g. "unanswerable"),
        scored as the empty string; default "" (only the empty prediction).
    per_item (bool, optional): return a list per question instead of means.
Returns:
    exact_match, f1: means over questions, fractions in [0, 1];
    total: the number of questions;
    HasAns_exact_match, HasAns_f1, HasAns_total / NoAns_...: the same over the answerable /
        unanswerable questions, when there are some.
    With per_item=True: exact_match, f1 and has_answer, one value per question.
Examples:
    >>> squad = evaluate.load("pmbench/suites/metrics/squad.py")
    >>> squad.compute(predictions=["the Broncos"], references=[["Denver Broncos", "Broncos"]])
    {'exact_match': 1.0, 'f1': 1.0, 'total': 1, 'HasAns_exact_match': 1.0, 'HasAns_f1': 1.0,
     'HasAns_total': 1}
"""

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop articles (a/an/the), collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    """Bag-of-tokens F1; two empty answers agree (1.0), one empty answer scores 0."""
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def scores(golds: list[str], pred: str, no_answer: str = "") -> tuple[float, float, bool]:
    """(EM, F1, has_answer) of `pred`, EM and F1 each the max over the usable gold answers."""
    kept = [g for g in golds if normalize_answer(g)]
    if no_answer and normalize_answer(pred) == normalize_answer(no_answer):
        pred = ""
    candidates = kept or [""]
    return (max(exact(g, pred) for g in candidates), max(f1(g, pred) for g in candidates),
            bool(kept))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer="", per_item=False):
        rows = [scores(list(golds), pred, no_answer)
                for pred, golds in zip(predictions, references, strict=True)]
        ems, f1s, has = ([r[i] for r in rows] for i in range(3))
        if per_item:
            return {"exact_match": ems, "f1": f1s, "has_answer": has}
        out = {"exact_match": _mean(ems), "f1": _mean(f1s), "total": len(rows)}
        for prefix, flag in (("HasAns", True), ("NoAns", False)):
            part = [i for i, h in enumerate(has) if h == flag]
            if part:
                out[f"{prefix}_exact_match"] = _mean([ems[i] for i in part])
                out[f"{prefix}_f1"] = _mean([f1s[i] for i in part])
                out[f"{prefix}_total"] = len(part)
        return out
