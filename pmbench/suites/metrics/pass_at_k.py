"""pass@k with the unbiased estimator of Chen et al. (2021), for `evaluate`.

A self-contained `evaluate.Metric` script, loadable offline by path. Unlike the hub's
`code_eval` it runs nothing: pmbench executes completions in its own sandbox
(pmbench.sandbox) and hands this metric the outcome, whether each sample passed.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@misc{chen2021codex,
    title = {Evaluating Large Language Models Trained on Code},
    author = {Mark Chen and Jerry Tworek and Heewoo Jun and Qiming Yuan and others},
    year = {2021},
    eprint = {2107.03374},
    archivePrefix = {arXiv},
    primaryClass = {cs.LG}
}
"""

_DESCRIPTION = """\
pass@k: the probability that at least one of k samples drawn from a task's n samples passes
its tests, estimated without bias from the c of n that passed as 1 - C(n-c, k) / C(n, k)
(computed as a product, as in the paper's numerically stable form), averaged over tasks.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of bool): per task, whether each of its samples passed.
    k (list of int, optional): the k of pass@k to report; default [1]. Every task needs at
        least k samples (a ValueError otherwise).
    per_item (bool, optional): return a list per task instead of means.
Returns:
    pass@k for each k: the mean over tasks (with per_item=True, one value per task).
Examples:
    >>> pass_at_k = evaluate.load("pmbench/suites/metrics/pass_at_k.py")
    >>> pass_at_k.compute(predictions=[[True, False], [False, False]], k=[1, 2])
    {'pass@1': 0.25, 'pass@2': 0.5}
"""


def estimate(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn from n passes | c of n passed) = 1 - C(n-c,k)/C(n,k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("bool"))}),
            codebase_urls=["https://github.com/openai/human-eval"],
            reference_urls=["https://arxiv.org/abs/2107.03374"],
        )

    def _compute(self, predictions, k=(1,), per_item=False):
        out = {}
        for kk in k:
            values = [estimate(len(passed), sum(passed), kk) for passed in predictions]
            out[f"pass@{kk}"] = values if per_item else _mean(values)
        return out
