"""The synthetic shared-context workload (suites/synthetic.yaml): token ids, no text.

Real suites fix the four lengths that decide which method wins (context, #questions,
question, answer); this one makes them options, so a grid can cross them. Ids are drawn
from the tokenizer's vocabulary without its special tokens, so no id ends or marks a
turn; answers are cut at their drawn length only (EOS and stop strings are ignored).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.safe_io import read_jsonl
from pmbench.suites.base import Suite
from pmbench.types import GenerationConfig, Group, Question, QuestionOutput

LENGTHS = ("context_len", "question_len", "answer_len")
RUN_PREFIX = "run:"


def parse_answer_len(spec: str) -> tuple[str, Any]:
    """("fixed", n), ("uniform", (a, b)) or ("run", folder) from an --answer-len value."""
    text = str(spec).strip()
    if text.startswith(RUN_PREFIX):
        return "run", Path(text[len(RUN_PREFIX):])
    low, sep, high = text.partition("-")
    try:
        a, b = int(low), int(high) if sep else int(low)
    except ValueError:
        raise BadInput(f"--answer-len {spec!r}: give N, A-B (uniform) or run:FOLDER") from None
    if a < 1 or b < a:
        raise BadInput(f"--answer-len {spec!r}: lengths are integers >= 1, A <= B")
    return ("fixed", a) if a == b else ("uniform", (a, b))


def check_lengths(context_len: int | None, question_len: int | None,
                  answer_len: str | None) -> None:
    """Cheap checks of the three options (no model, no files)."""
    for name, value in (("--context-len", context_len), ("--question-len", question_len)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise BadInput(f"{name} must be an integer >= 0, got {value!r}")
    if question_len == 0:
        raise BadInput("--question-len must be >= 1: each question's first token is what "
                       "its branch decodes from (and context 0 with empty questions is "
                       "nothing to answer)")
    if answer_len is not None:
        parse_answer_len(answer_len)


def run_lengths(folder: Path) -> list[int]:
    """The output lengths (tokens) of every question of a finished run's samples.jsonl."""
    path = folder / "samples.jsonl"
    if not path.is_file():
        raise BadInput(f"--answer-len run:{folder}: no samples.jsonl there")
    rows = read_jsonl(path, lenient=True)  # a hostile or torn line is skipped, bounded
    lengths = [len(ids) for row in rows if isinstance(row, dict)
               and isinstance(ids := row.get("output_ids"), list) and ids]
    if not lengths:
        raise BadInput(f"--answer-len run:{folder}: no output lengths in its samples.jsonl")
    return lengths


class SyntheticSuite(Suite):
    """Groups of random ids; each question carries its answer length (Question.max_new_tokens)."""

    keeps_prompt_ids = False  # drawn from --seed: the run makes them again; lengths only

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        check_lengths(options.get("context_len"), options.get("question_len"),
                      options.get("answer_len"))

    def __init__(self, config: dict[str, Any], tokenizer: Any, *, context_len: int | None = None,
                 question_len: int | None = None, answer_len: str | None = None,
                 **options: Any):
        defaults = config.get("options", {})
        given = {"context_len": context_len, "question_len": question_len,
                 "answer_len": answer_len}
        self.lengths = {k: defaults[k] if v is None else v for k, v in given.items()}
        check_lengths(**self.lengths)
        self.answers = parse_answer_len(self.lengths["answer_len"])
        if self.answers[0] == "run":
            self.answers = ("run", run_lengths(self.answers[1]))
        options["max_new_tokens"] = self._longest_answer()
        super().__init__(config, tokenizer, **options)

    def resolve_data(self, data_dir: str | Path | None) -> Path | None:
        return None

    def _longest_answer(self) -> int:
        kind, value = self.answers
        return {"fixed": lambda: value, "uniform": lambda: value[1],
                "run": lambda: max(value)}[kind]()

    def _draw_answer(self, rng: random.Random) -> int:
        kind, value = self.answers
        if kind == "fixed":
            return value
        return rng.randint(*value) if kind == "uniform" else rng.choice(value)

    def _vocabulary(self) -> list[int]:
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        return [i for i in range(len(self.tokenizer)) if i not in special]

    def _build_groups(self) -> list[Group]:
        context_len, question_len = self.lengths["context_len"], self.lengths["question_len"]
        need = context_len + question_len + self.max_new_tokens
        if self.context_window is not None and need > self.context_window:
            raise BadInput(f"suite synthetic: a group needs {need} positions (context "
                           f"{context_len} + question {question_len} + answer "
                           f"{self.max_new_tokens}) but the model reads {self.context_window}")
        vocab = self._vocabulary()
        n_questions = self.limit or self.branch
        groups = []
        for g, start in enumerate(range(0, n_questions, self.branch)):
            rng = random.Random(f"synthetic:{self.seed}:{g}")  # str seeds: stable everywhere
            context = rng.choices(vocab, k=context_len)
            questions = [
                Question(f"g{g}q{k}", rng.choices(vocab, k=question_len), None,
                         max_new_tokens=self._draw_answer(rng))
                for k in range(min(self.branch, n_questions - start))
            ]
            groups.append(Group(g, context, questions, {"synthetic": dict(self.lengths)}))
        return groups

    def generation(self, max_new_tokens: int | None = None, ignore_eos: bool = False,
                   eos_token_ids: Sequence[int] = ()) -> GenerationConfig:
        """Exact answer lengths: EOS and stop strings never end an answer."""
        gen = super().generation(max_new_tokens or self.max_new_tokens, True, eos_token_ids)
        gen.stop_strings = []
        return gen

    def score(self, question: Question, output: QuestionOutput, *,
              allow_code_execution: bool = False,
              eos_token_ids: Sequence[int] | None = None) -> dict[str, Any]:
        return {"target": None, "score": None, "answer_len": question.max_new_tokens}

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"n": len(samples)}

    def record_info(self) -> dict[str, Any]:
        info = super().record_info()
        info["synthetic"] = {**self.lengths, "answer_lengths": "drawn per question",
                             "vocabulary": "tokenizer ids without special tokens"}
        return info
