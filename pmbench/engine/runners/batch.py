"""batch: the group's questions as one left-padded batch, greedy.

Equivalent to `model.generate(..., do_sample=False)` on a left-padded batch (a test
checks it token for token), but driven by the shared decoding loop so that batch,
sequential and rope2d differ only in their forward passes. Unlike `generate`,
finished rows leave the batch, which makes this a slightly stronger baseline.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pmbench.engine.compile import StaticRows, resolve, static_possible
from pmbench.engine.decoding import cache_nbytes, decode_loop
from pmbench.engine.kvcache import reserved_cache
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


def drop_finished_rows(state: dict[str, Any], live: list[int], cache: Any,
                       device: torch.device | str) -> int:
    """Keep only the rows of the `live` streams, in `cache` and in every per-row tensor of
    `state` (`state["rows"]` holds each row's stream index), so finished rows leave the
    batch. Returns the cache's bytes before the drop (its peak so far)."""
    before = cache_nbytes(cache)
    keep = torch.tensor([state["rows"].index(i) for i in live], device=device)
    cache.batch_select_indices(keep)
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            state[key] = value[keep]
    state["rows"] = list(live)
    return before


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
        rows = [group.context_ids + q.prompt_ids for q in group.questions]
        ids, mask = left_pad(rows, pad_token_id(self.tokenizer, gen))
        ids, mask = ids.to(device), mask.to(device)
        pool = self.static_pool(mode)
        cache = reserved_cache(self.model.config, ids.shape[1] + gen.max_new_tokens, pool=pool)
        state = {
            "rows": list(range(len(rows))),  # stream index of each row still in the batch
            "mask": mask,
            "pos": mask.sum(dim=1) - 1,  # position of each row's last token
        }
        kv_peak = 0
        static: list[StaticRows] = []

        def prefill() -> torch.Tensor:
            position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                             cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :]

        def step(live: list[int], last: torch.Tensor) -> torch.Tensor:
            nonlocal kv_peak
            if mode != "off" and static_possible(cache):  # all rows stay, in fixed shapes
                if not static:
                    static.append(StaticRows(self.model, cache, mask.bool(), state["pos"] + 1,
                                             mode == "on", pool))
                return static[0](live, last)
            if live != state["rows"]:  # some rows finished
                kv_peak = max(kv_peak, drop_finished_rows(state, live, cache, device))
            state["mask"] = torch.cat(
                [state["mask"], state["mask"].new_ones((len(live), 1))], dim=1)
            state["pos"] = state["pos"] + 1
            out = self.model(
                input_ids=last.view(-1, 1).to(device),
                attention_mask=state["mask"],
                position_ids=state["pos"].view(-1, 1),
                cache=cache,
                use_cache=True,
            )
            return out.logits[:, -1, :]

        res = decode_loop(prefill, step, len(rows), gen, self.tokenizer, device, t0=t0)
        for s in static:
            s.finish()
        kv_peak = max(kv_peak, cache_nbytes(cache))
        return GroupOutput(
            res.outputs,
            res.prefill_s,
            res.decode_s,
            kv_cache_bytes=kv_peak,
            tokens_processed=ids.numel() + (static[0].fed if static else res.step_tokens),
            decode_steps=res.steps,
        )
