"""MultiRC's SuperGLUE metrics, exact match per question and F1a over answer options, for
`evaluate`.

A self-contained `evaluate.Metric` script, loadable offline by path. The same numbers as the
hub's super_glue metric (config multirc: exact_match, f1_a), from flat inputs: one row per
answer option, with the question it belongs to.
"""

import datasets
import evaluate

_CITATION = """\
@inproceedings{MultiRC2018,
    author = {Daniel Khashabi and Snigdha Chaturvedi and Michael Roth and Shyam Upadhyay and
              Dan Roth},
    title = {Looking Beyond the Surface: A Challenge Set for Reading Comprehension over
             Multiple Sentences},
    booktitle = {Proceedings of NAACL 2018},
    year = {2018}
}
@article{wang2019superglue,
    title = {SuperGLUE: A Stickier Benchmark for General-Purpose Language Understanding Systems},
    author = {Wang, Alex and Pruksachatkun, Yada and Nangia, Nikita and Singh, Amanpreet and
              Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
    journal = {arXiv preprint arXiv:1905.00537},
    year = {2019}
}
"""

_DESCRIPTION = """\
MultiRC judges every answer option of a question as correct (1) or not (0). exact_match is
the share of questions whose options are all judged right; f1_a is the binary F1 of the
positive class over all options (as sklearn's f1_score; 0 when undefined).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): per answer option, 1 if judged correct, else 0.
    references (list of int): per answer option, its label (1 correct, 0 not).
    question_ids (list of str): per answer option, the question it belongs to.
Returns:
    exact_match, f1_a: fractions in [0, 1].
Examples:
    >>> multirc = evaluate.load("pmbench/suites/metrics/multirc.py")
    >>> multirc.compute(predictions=[1, 0, 1], references=[1, 0, 0],
    ...                 question_ids=["q1", "q1", "q2"])
    {'exact_match': 0.5, 'f1_a': 0.6666666666666666}
"""


def binary_f1(labels: list[int], preds: list[int]) -> float:
    """F1 of the positive class (label 1), as sklearn's f1_score; 0 when undefined."""
    tp = sum(1 for y, p in zip(labels, preds, strict=True) if y == 1 and p == 1)
    fp = sum(1 for y, p in zip(labels, preds, strict=True) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, preds, strict=True) if y == 1 and p == 0)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def exact_match(question_ids: list[str], labels: list[int], preds: list[int]) -> float:
    """Share of questions with every answer option judged right."""
    per_question: dict[str, bool] = {}
    for question, label, pred in zip(question_ids, labels, preds, strict=True):
        per_question[question] = per_question.get(question, True) and label == pred
    return sum(per_question.values()) / len(per_question) if per_question else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Multirc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int32"),
                "references": datasets.Value("int32"),
                "question_ids": datasets.Value("string"),
            }),
            codebase_urls=["https://github.com/CogComp/multirc"],
            reference_urls=["https://super.gluebenchmark.com/tasks"],
        )

    def _compute(self, predictions, references, question_ids):
        return {"exact_match": exact_match(question_ids, references, predictions),
                "f1_a": binary_f1(references, predictions)}
