"""GSM8K exact match, as lm-evaluation-harness's gsm8k task (v3) scores it, for `evaluate`.

A self-contained `evaluate.Metric` script, loadable offline by path. Two extractions of the
final answer from a model's text, as lm-eval's filters: "strict-match" (the number after
the first `#### `, the format the few-shot solutions teach) and "flexible-extract" (the last
number anywhere); each is then compared with the gold number by lm-eval's exact_match with
regexes_to_ignore [",", "\\$", "(?s).*#### ", "\\.$"] and ignore_case.
"""

import re

import datasets
import evaluate

_CITATION = """\
@article{cobbe2021gsm8k,
    title = {Training Verifiers to Solve Math Word Problems},
    author = {Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and
              Jun, Heewoo and Kaiser, Lukasz and Plappert, Matthias and Tworek, Jerry and
              Hilton, Jacob and Nakano, Reiichiro and Hesse, Christopher and Schulman, John},
    journal = {arXiv preprint arXiv:2110.14168},
    year = {2021}
}
@software{eval-harness,
    author = {Gao, Leo and others},
    title = {A framework for few-shot language model evaluation},
    publisher = {Zenodo},
    url = {https://github.com/EleutherAI/lm-evaluation-harness}
}
"""

_DESCRIPTION = """\
Share of GSM8K answers whose final number equals the gold number, with the answer found in
two ways (strict: after `#### `; flexible: the last number in the text), as
lm-evaluation-harness's gsm8k task. A text with no number found extracts "[invalid]".
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the model's answer texts (already cut at the stop strings).
    references (list of str): the gold final numbers (what follows `#### ` in a solution).
    per_item (bool, optional): return a list per answer instead of means.
Returns:
    exact_match_strict, exact_match_flexible: means over answers, fractions in [0, 1].
    With per_item=True: those two per answer, and extracted_strict, extracted_flexible
    (the numbers found, or "[invalid]").
Examples:
    >>> gsm8k = evaluate.load("pmbench/suites/metrics/gsm8k.py")
    >>> gsm8k.compute(predictions=["5 + 3 = 8\\n#### 8", "so 1,200 eggs."],
    ...               references=["8", "1200"])
    {'exact_match_strict': 0.5, 'exact_match_flexible': 1.0}
"""

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


def normalize(s: str) -> str:
    """lm-eval exact_match's regexes_to_ignore, then ignore_case."""
    for pattern in _IGNORE:
        s = pattern.sub("", s)
    return s.lower()


def match(extracted: str, gold: str) -> float:
    return float(normalize(extracted) == normalize(gold))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gsm8k(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Value("string"),
            }),
            codebase_urls=["https://github.com/EleutherAI/lm-evaluation-harness"],
            reference_urls=["https://github.com/openai/grade-school-math"],
        )

    def _compute(self, predictions, references, per_item=False):
        strict = [extract_strict(p) for p in predictions]
        flexible = [extract_flexible(p) for p in predictions]
        em_strict = [match(e, g) for e, g in zip(strict, references, strict=True)]
        em_flexible = [match(e, g) for e, g in zip(flexible, references, strict=True)]
        if per_item:
            return {"exact_match_strict": em_strict, "exact_match_flexible": em_flexible,
                    "extracted_strict": strict, "extracted_flexible": flexible}
        return {"exact_match_strict": _mean(em_strict),
                "exact_match_flexible": _mean(em_flexible)}
