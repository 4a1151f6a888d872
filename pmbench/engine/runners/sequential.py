"""sequential: one question at a time, its own KV cache, greedy.

The baseline every other method is measured against: `context + question` is
prefilled, then decoded token by token, and the next question starts from scratch.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from pmbench.engine.compile import StaticRows, resolve, static_possible
from pmbench.engine.decoding import cache_nbytes, decode_loop
from pmbench.engine.kvcache import bucket, reserved_cache
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
        pool = self.static_pool(mode)
        outputs, prefill_s, decode_s = [], 0.0, 0.0
        kv_bytes = tokens = steps = 0
        for k, q in enumerate(group.questions):
            # each question gets its own sampling stream (identical seeds = identical samples)
            q_gen = dataclasses.replace(gen, seed=gen.seed + k) if gen.temperature > 0 else gen
            ids = torch.tensor([group.context_ids + q.prompt_ids], device=device)
            cache = reserved_cache(self.model.config, ids.shape[1] + gen.max_new_tokens,
                                   pool=pool)
            pos = ids.shape[1]
            static: list[StaticRows] = []

            def prefill(ids=ids, cache=cache) -> torch.Tensor:
                out = self.model(input_ids=ids, cache=cache, use_cache=True,
                                 logits_to_keep=1)
                return out.logits[:, -1, :]

            def step(live: list[int], last: torch.Tensor, cache=cache,
                     static=static) -> torch.Tensor:
                nonlocal pos
                if mode != "off" and static_possible(cache):
                    if not static:
                        visible = torch.ones((1, pos), dtype=torch.bool, device=device)
                        static.append(StaticRows(self.model, cache, visible,
                                                 torch.tensor([pos], device=device),
                                                 mode == "on", pool))
                    return static[0](live, last)
                out = self.model(
                    input_ids=last.view(1, 1).to(device),
                    cache=cache,
                    use_cache=True,
                    position_ids=torch.tensor([[pos]], device=device),
                )
                pos += 1
                return out.logits[:, -1, :]

            res = decode_loop(prefill, step, 1, q_gen, self.tokenizer, device, t0=t0)
            for s in static:
                s.finish()
            outputs.extend(res.outputs)
            prefill_s += res.prefill_s
            decode_s += res.decode_s
            kv_bytes = max(kv_bytes, cache_nbytes(cache))
            tokens += ids.shape[1] + res.step_tokens
            steps += res.steps
        return GroupOutput(outputs, prefill_s, decode_s, kv_bytes, tokens, steps)
