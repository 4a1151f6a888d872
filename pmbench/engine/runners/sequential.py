"""sequential: one question at a time, its own decoding, greedy.

The baseline every other method is measured against, and by default the one a serving
engine with prefix caching gives (vLLM's automatic prefix caching, SGLang's radix
cache): the group's shared context is prefilled once into a KV cache, and each
question is prefilled on top of it and decoded alone. The context's last token is fed
again with every question (as `prefix` does, and vLLM recomputes a prompt's last
token), so a question that is empty still has a position to take logits from. After a
question the reserved cache is cropped back to the context (nothing is copied); a
sliding-window model's transformers cache, which cannot be cropped below its window,
is copied per question instead.

`--no-context-cache` is the earlier behaviour, kept for comparison and for the records
made with it (which lack the `context_cache` field and read as it): `context +
question` prefilled from scratch for every question. Both give the same greedy tokens
(tests/test_sequential_cache.py); only how often the context is computed differs.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pmbench.engine.compile import resolve, static_possible
from pmbench.engine.decoding import DecodeResult, decode_loop, device_sync
from pmbench.engine.kvcache import bucket, crop, reserved_cache
from pmbench.engine.rows import Rows
from pmbench.engine.runners.base import Runner
from pmbench.options import option
from pmbench.types import GenerationConfig, Group, GroupOutput


@dataclass(frozen=True)
class SequentialOptions:
    context_cache: bool = option(True, help=(
        "sequential method: prefill the group's shared context once and each question on "
        "top of it, as an engine with prefix caching does (--no-context-cache: context + "
        "question from scratch for every question)."))


def cached(value: Any) -> bool:
    """Whether a record's `context_cache` says the context was cached: only a true value
    does (a record made before the option has none, or NaN in a frame: no-cache)."""
    return isinstance(value, bool | np.bool_) and bool(value)


class SharedContext:
    """A group's context but its last token, prefilled once into a cache that every
    question continues (`fresh` hands it over holding the context only)."""

    def __init__(self, model: Any, context_ids: list[int], capacity: int, pool: Any):
        self.model = model
        self.ids = context_ids[:-1]
        self.cache = reserved_cache(model.config, capacity, pool=pool)
        self.reserved = static_possible(self.cache)
        self.seconds = 0.0

    def prefill(self) -> None:
        """Compute the context's keys and values, once per group (timed as prefill)."""
        if not self.ids:
            return
        start = time.perf_counter()
        ids = torch.tensor([self.ids], device=self.model.device)
        self.model(input_ids=ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        device_sync(self.model.device)
        self.seconds = time.perf_counter() - start

    def fresh(self) -> Any:
        """The cache holding the context only: the reserved one cropped back to it in
        place, or a copy of a sliding-window model's cache."""
        if self.reserved:
            crop(self.cache, len(self.ids))
            return self.cache
        return copy.deepcopy(self.cache)


class SequentialRunner(Runner):
    name = "sequential"
    step_reads = "one"  # see Runner.step_reads
    description = ("one question at a time with a KV cache, the shared context prefilled "
                   "once per group (baseline)")
    Options = SequentialOptions
    record_columns = ("context_cache",)
    order = 0
    color = "#000000"
    baseline = True  # what every other method's answers and speed are judged against

    def record_options(self) -> dict[str, Any]:
        return {"context_cache": self.own.context_cache}

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """"sequential" (the context cached, the default), or "sequential no-cache" for a
        run that prefilled it with every question, as every record made before the
        option did."""
        return cls.name if cached(values.get("context_cache")) else f"{cls.name} no-cache"

    def warmup_key(self, group: Group, gen: GenerationConfig) -> frozenset:
        """One row per question: with the context cached one bucket for the group (its
        cache holds the context and the longest question), else one per question."""
        context = len(group.context_ids)
        if self.own.context_cache:
            width = max(len(q.prompt_ids) for q in group.questions)
            return frozenset({(1, bucket(context + width + gen.max_new_tokens))})
        return frozenset((1, bucket(context + len(q.prompt_ids) + gen.max_new_tokens))
                         for q in group.questions)

    @torch.inference_mode()
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        mode = resolve(self.options.compile, self.model.device)
        t0 = time.perf_counter()
        context = self._context(group, gen, mode) if self.own.context_cache else None
        prefill_s = context.seconds if context else 0.0
        tokens = len(context.ids) if context else 0  # the shared context, once per group
        outputs, decode_s, kv_bytes, steps = [], 0.0, 0, 0
        for k, q in enumerate(group.questions):
            # each question gets its own sampling stream (identical seeds = identical samples)
            q_gen = dataclasses.replace(gen, seed=gen.seed + k) if gen.temperature > 0 else gen
            q_gen = q_gen.for_stream(k)  # its own answer length, where questions have one
            ids, offset, cache = self._question(group, q.prompt_ids, q_gen, mode, context)
            res, rows = self._decode(ids, q_gen, mode, t0, offset, cache)
            outputs.extend(res.outputs)
            prefill_s += res.prefill_s
            decode_s += res.decode_s
            kv_bytes = max(kv_bytes, rows.kv_peak)
            tokens += ids.shape[1] + rows.tokens_fed(res)
            steps += res.steps
        return GroupOutput(outputs, prefill_s, decode_s, kv_bytes, tokens, steps)

    def _context(self, group: Group, gen: GenerationConfig, mode: str) -> SharedContext:
        """The group's shared context, prefilled, in a cache room enough for it and the
        longest question's prompt and answer."""
        width = max(len(q.prompt_ids) for q in group.questions)
        capacity = len(group.context_ids) + width + gen.max_new_tokens
        context = SharedContext(self.model, group.context_ids, capacity, self.static_pool(mode))
        context.prefill()
        return context

    def _question(self, group: Group, prompt: list[int], gen: GenerationConfig, mode: str,
                  context: SharedContext | None) -> tuple[torch.Tensor, int, Callable[[], Any]]:
        """What one question's prefill feeds ([1, S] ids), the positions already in its
        cache, and how its prefill gets that cache: the context's, or one of its own."""
        device = self.model.device
        if context is not None:
            ids = torch.tensor([group.context_ids[-1:] + prompt], device=device)
            return ids, len(context.ids), context.fresh
        ids = torch.tensor([group.context_ids + prompt], device=device)
        size, pool = ids.shape[1] + gen.max_new_tokens, self.static_pool(mode)
        return ids, 0, lambda: reserved_cache(self.model.config, size, pool=pool)

    def _decode(self, ids: torch.Tensor, gen: GenerationConfig, mode: str, t0: float,
                offset: int, cache: Callable[[], Any]) -> tuple[DecodeResult, Rows]:
        """One question, its prompt `ids` [1, S] prefilled after the `offset` positions of
        the cache that `cache()` gives."""
        model, device, pool = self.model, self.model.device, self.static_pool(mode)
        filled = offset + ids.shape[1]
        rows = Rows(torch.ones((1, filled), dtype=torch.bool, device=device),
                    torch.tensor([filled], device=device))

        def prefill() -> torch.Tensor:
            rows.cache = cache()
            out = model(input_ids=ids, cache=rows.cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :]

        def step(live: list[int], last: torch.Tensor) -> torch.Tensor:
            if mode != "off" and static_possible(rows.cache):
                return rows.static_step(model, mode == "on", pool)(live, last)
            out = model(
                input_ids=last.view(1, 1).to(device),
                cache=rows.cache,
                use_cache=True,
                position_ids=rows.next_positions().view(1, 1),
            )
            return out.logits[:, -1, :]

        res = decode_loop(prefill, step, 1, gen, self.tokenizer, device, t0=t0)
        rows.finish()
        return res, rows
