"""Multiple choice scored from the first decoding step, the same way in every method.

The prediction is the argmax over the logits of the choice tokens at the answer
position (`GenerationConfig.score_token_ids`, returned as `QuestionOutput.first_logits`).
For single-token choices this is exactly lm-evaluation-harness's `multiple_choice`
(argmax of the log-likelihood of target_delimiter + choice: the softmax normalizer is
shared). The choice tokens are those of " A", " B", ... (target_delimiter " ", as
lm-eval), or "A", "B", ... under --apply-chat-template, where lm-eval drops the
delimiter because the answer starts the assistant turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pmbench.errors import BadInput
from pmbench.suites.base import Suite
from pmbench.suites.metrics import argmax, mean
from pmbench.types import Question, QuestionOutput


class ChoiceSuite(Suite):
    """Questions carry meta["gold_index"]; YAML `choices` lists the answer strings."""

    _score_ids: list[int] | None = None

    @property
    def choices(self) -> list[str]:
        return list(self.config["choices"])

    @property
    def delimiter(self) -> str:
        """What precedes the answer: the YAML target_delimiter, "" in chat mode."""
        return "" if self.apply_chat_template else self.target_delimiter

    def breakdown(self, samples: list[dict[str, Any]]) -> dict[str, float | None]:
        """acc_<value> for each value of the YAML `breakdown: {field, values}` (MMLU's
        categories, RACE's levels): the accuracy over the questions whose `field` has that
        value, None where none has; {} for a suite without a breakdown."""
        spec = self.config.get("breakdown")
        if not spec:
            return {}
        by_value: dict[Any, list[float]] = defaultdict(list)
        for s in samples:
            by_value[s[spec["field"]]].append(s["acc"])
        return {f"acc_{v}": mean(by_value[v]) if by_value.get(v) else None
                for v in spec["values"]}

    def score_token_ids(self) -> list[int]:
        """The first token each choice gets right after a real prompt of this suite."""
        if self._score_ids is None:
            prompt = self.groups[0].questions[0].meta["prompt_text"]
            base = self.encode(prompt)
            ids = []
            for choice in self.choices:
                full = self.encode(prompt + self.delimiter + choice)
                if full[: len(base)] != base or len(full) == len(base):
                    raise BadInput(f"suite {self.name}: choice {choice!r} merges with the prompt")
                ids.append(full[len(base)])
            if len(set(ids)) != len(ids):
                raise BadInput(f"suite {self.name}: choices {self.choices} share a first token")
            self._score_ids = ids
        return self._score_ids

    def predict(self, output: QuestionOutput, eos_token_ids: Sequence[int] | None = None) -> int:
        """Choice index from the first-step logits, else from the text (-1: no choice found)."""
        if output.first_logits is not None:
            return argmax(output.first_logits)
        text = self.answer_text(output, eos_token_ids).strip()
        return next((i for i, c in enumerate(self.choices) if text.startswith(c)), -1)

    def score(
        self, question: Question, output: QuestionOutput, *, allow_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        pred = self.predict(output, eos_token_ids)
        acc = float(pred == question.meta["gold_index"])
        return {
            "target": question.target,
            "prediction": self.choices[pred] if pred >= 0 else None,
            "choice_logits": output.first_logits,
            "acc": acc,
            "score": acc,
        }

    def record_info(self) -> dict[str, Any]:
        info = super().record_info()
        ids = self.score_token_ids()
        info["score_tokens"] = {
            c: self.tokenizer.decode([i]) for c, i in zip(self.choices, ids, strict=True)
        }
        return info
