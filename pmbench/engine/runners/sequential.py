"""sequential: one question at a time, its own KV cache, greedy.

The baseline every other method is measured against: `context + question` is
prefilled, then decoded token by token, and the next question starts from scratch.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from pmbench.engine.compile import resolve, static_possible
from pmbench.engine.decoding import DecodeResult, decode_loop
from pmbench.engine.kvcache import bucket, reserved_cache
from pmbench.engine.rows import Rows
from pmbench.engine.runners.base import Runner
from pmbench.types import GenerationConfig, Group, GroupOutput


class SequentialRunner(Runner):
    name = "sequential"
    description = "one question at a time with a KV cache (baseline)"
    order = 0
    color = "#000000"
    baseline = True  # what every other method's answers and speed are judged against

    def warmup_key(self, group: Group, gen: GenerationConfig) -> frozenset:
        """One row per question, each question its own bucket."""
        return frozenset((1, bucket(len(group.context_ids) + len(q.prompt_ids)
                                    + gen.max_new_tokens)) for q in group.questions)

    @torch.inference_mode()
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        device = self.model.device
        mode = resolve(self.options.compile, device)
        t0 = time.perf_counter()
        outputs, prefill_s, decode_s = [], 0.0, 0.0
        kv_bytes = tokens = steps = 0
        for k, q in enumerate(group.questions):
            # each question gets its own sampling stream (identical seeds = identical samples)
            q_gen = dataclasses.replace(gen, seed=gen.seed + k) if gen.temperature > 0 else gen
            ids = torch.tensor([group.context_ids + q.prompt_ids], device=device)
            res, rows = self._decode(ids, q_gen, mode, t0)
            outputs.extend(res.outputs)
            prefill_s += res.prefill_s
            decode_s += res.decode_s
            kv_bytes = max(kv_bytes, rows.kv_peak)
            tokens += ids.shape[1] + rows.tokens_fed(res)
            steps += res.steps
        return GroupOutput(outputs, prefill_s, decode_s, kv_bytes, tokens, steps)

    def _decode(self, ids: torch.Tensor, gen: GenerationConfig, mode: str,
                t0: float) -> tuple[DecodeResult, Rows]:
        """One question, its prompt `ids` [1, S] in a cache of its own."""
        model, device, pool = self.model, self.model.device, self.static_pool(mode)
        filled = ids.shape[1]
        cache = reserved_cache(model.config, filled + gen.max_new_tokens, pool=pool)
        rows = Rows(torch.ones((1, filled), dtype=torch.bool, device=device),
                    torch.tensor([filled], device=device), cache)

        def prefill() -> torch.Tensor:
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :]

        def step(live: list[int], last: torch.Tensor) -> torch.Tensor:
            if mode != "off" and static_possible(cache):
                return rows.static_step(model, mode == "on", pool)(live, last)
            out = model(
                input_ids=last.view(1, 1).to(device),
                cache=cache,
                use_cache=True,
                position_ids=rows.next_positions().view(1, 1),
            )
            return out.logits[:, -1, :]

        res = decode_loop(prefill, step, 1, gen, self.tokenizer, device, t0=t0)
        rows.finish()
        return res, rows
