"""Plain data passed between suites, runners and records.

Suites produce `Group`s of pre-tokenized questions; runners turn them into
`GroupOutput`s. Keeping these dumb (no torch, no tokenizer) lets every method see
exactly the same token ids and lets tests build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class Question:
    """One question of a group: its own token ids, appended after the shared context."""

    doc_id: str
    prompt_ids: list[int]
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int | None = None  # its own answer length (synthetic); None: the run's


@dataclass
class Group:
    """`branch` questions that share one context (a passage, a few-shot prefix, or nothing).

    Sequential sees `context_ids + q.prompt_ids` one question at a time, batch sees them as
    one left-padded batch, rope2d prefills `context_ids` once and the questions as branches.
    """

    group_id: int
    context_ids: list[int]
    questions: list[Question]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationConfig:
    """How to decode: greedy by default, bounded, with EOS / stop strings unless `ignore_eos`.

    `score_token_ids` asks the runner for the first decoding step's logits of these
    token ids (multiple-choice scoring: the answer-letter tokens), for every method alike.
    """

    max_new_tokens: int
    ignore_eos: bool = False
    stop_strings: list[str] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)
    score_token_ids: list[int] | None = None
    temperature: float = 0.0  # 0 = greedy; > 0 samples (HumanEval pass@k with n samples)
    top_p: float = 1.0
    seed: int = 0
    # each stream's own token budget, in question order (None: max_new_tokens for all); a
    # group whose questions carry their own lengths sets it (for_group)
    budgets: tuple[int, ...] | None = None

    def for_group(self, group: Group) -> GenerationConfig:
        """This config for `group`: where its questions carry their own answer lengths
        (Question.max_new_tokens), each stream stops at its own, and max_new_tokens (what
        caches are sized for) is the longest."""
        own = [q.max_new_tokens for q in group.questions]
        if all(n is None for n in own):
            return self
        budgets = tuple(self.max_new_tokens if n is None else n for n in own)
        return replace(self, budgets=budgets, max_new_tokens=max(budgets))

    def for_stream(self, k: int) -> GenerationConfig:
        """This config for stream `k` decoded alone (a one-at-a-time method)."""
        if self.budgets is None:
            return self
        return replace(self, budgets=(self.budgets[k],), max_new_tokens=self.budgets[k])

    def budget(self, k: int) -> int:
        """Stream `k`'s token budget."""
        return self.max_new_tokens if self.budgets is None else self.budgets[k]


@dataclass
class QuestionOutput:
    """What a runner returns for one question."""

    output_ids: list[int]
    output_text: str
    ttft_s: float  # from the start of the group to this question's first token
    first_logits: list[float] | None = None  # logits of GenerationConfig.score_token_ids
    finish_reason: str = "length"  # "length" | "eos" | "stop"
    ttlt_s: float | None = None  # from the start of the group to its last token
    start_s: float = 0.0  # from the start of the group to its own prefill (its queueing)
    idle_steps: int = 0  # decoding steps its loop ran after it had finished (a straggler's)


@dataclass
class GroupOutput:
    """A group's outputs (in question order) and its timings.

    `prefill_s` is the time spent before the first token of each question summed over
    the prefills the method ran; `decode_s` the rest. `tokens_processed` counts every
    token position the model ran a forward pass over (for FLOP estimates); padding
    positions included, since the hardware computes them.
    """

    outputs: list[QuestionOutput]
    prefill_s: float
    decode_s: float
    kv_cache_bytes: int = 0
    tokens_processed: int = 0
    decode_steps: int = 0

    @property
    def wall_s(self) -> float:
        return self.prefill_s + self.decode_s
