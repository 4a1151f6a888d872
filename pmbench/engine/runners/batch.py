"""batch: the group's questions as one left-padded batch, greedy.

Equivalent to `model.generate(..., do_sample=False)` on a left-padded batch (a test
checks it token for token), but driven by the shared decoding loop so that batch,
sequential and rope2d differ only in their forward passes. Unlike `generate`,
finished rows leave the batch, which makes this a slightly stronger baseline.
"""

from __future__ import annotations

import time

import torch

from pmbench.engine.compile import resolve, static_possible
from pmbench.engine.decoding import decode_loop
from pmbench.engine.kvcache import reserved_cache
from pmbench.engine.rows import Rows
from pmbench.engine.runners.base import Runner
from pmbench.types import GenerationConfig, Group, GroupOutput


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows; return (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def pad_token_id(tokenizer, gen: GenerationConfig) -> int:
    """The tokenizer's pad id, else the first EOS id, else 0 (padding is masked anyway)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return gen.eos_token_ids[0] if gen.eos_token_ids else 0


class BatchRunner(Runner):
    name = "batch"
    description = "all questions of a group as one left-padded batch"
    order = 1
    color = "#E69F00"
    ratios_over = ("sequential",)

    @torch.inference_mode()
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        device = self.model.device
        mode = resolve(self.options.compile, device)
        t0 = time.perf_counter()
        prompts = [group.context_ids + q.prompt_ids for q in group.questions]
        ids, mask = left_pad(prompts, pad_token_id(self.tokenizer, gen))
        ids, mask = ids.to(device), mask.to(device)
        pool = self.static_pool(mode)
        cache = reserved_cache(self.model.config, ids.shape[1] + gen.max_new_tokens, pool=pool)
        rows = Rows(mask, mask.sum(dim=1), cache)

        def prefill() -> torch.Tensor:
            position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                             cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :]

        def step(live: list[int], last: torch.Tensor) -> torch.Tensor:
            if mode != "off" and static_possible(cache):  # all rows stay, in fixed shapes
                return rows.static_step(self.model, mode == "on", pool)(live, last)
            out = self.model(
                input_ids=last.view(-1, 1).to(device),
                attention_mask=rows.next_mask(live),
                position_ids=rows.next_positions().view(-1, 1),
                cache=cache,
                use_cache=True,
            )
            return out.logits[:, -1, :]

        res = decode_loop(prefill, step, len(ids), gen, self.tokenizer, device, t0=t0)
        rows.finish()
        return GroupOutput(
            res.outputs,
            res.prefill_s,
            res.decode_s,
            kv_cache_bytes=rows.kv_peak,
            tokens_processed=ids.numel() + rows.tokens_fed(res),
            decode_steps=res.steps,
        )
