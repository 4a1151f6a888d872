"""What a group's rows carry from one decoding step to the next (sequential, batch, prefix).

A runner hands `decode_loop` a prefill and a step; what they share is a `Rows`: which
stream each row decodes, the cache columns each row sees, each row's next position,
the cache, and the static step once it is built. Eagerly, finished rows leave (their
cache rows with them) and the mask grows one column a step; the static step
(`StaticRows`) keeps every row and every shape for the whole group instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pmbench.engine.compile import mark_dynamic, static_addresses, step_buffers, step_forward
from pmbench.engine.decoding import DecodeResult, cache_nbytes
from pmbench.engine.kvcache import end_static, make_static
from pmbench.rope2d.masks import additive


@dataclass
class Rows:
    """The decoding state of R rows, one token per row per step.

    `visible` [R, S] marks the cache columns each row sees (a 0/1 or boolean mask),
    `pos` [R] each row's next position. `cache` may be set later, by a prefill that
    builds it.
    """

    visible: torch.Tensor
    pos: torch.Tensor
    cache: Any = None
    streams: list[int] = field(init=False)  # the stream each row decodes
    static: StaticRows | None = field(default=None, init=False)
    kv_peak: int = field(default=0, init=False)  # the cache's bytes before rows left it

    def __post_init__(self) -> None:
        self.streams = list(range(self.visible.shape[0]))

    def next_mask(self, live: list[int]) -> torch.Tensor:
        """`visible` for an eager step: the rows of the `live` streams only, each seeing
        one more column (its token of this step)."""
        self._keep(live)
        self.visible = torch.cat([self.visible, self.visible.new_ones(len(live), 1)], dim=1)
        return self.visible

    def next_positions(self) -> torch.Tensor:
        """Each row's position for an eager step's token; the next step's follow them."""
        pos, self.pos = self.pos, self.pos + 1
        return pos

    def _keep(self, live: list[int]) -> None:
        """Only the rows of the `live` streams stay, in the cache and in every per-row
        tensor, so finished rows cost nothing more."""
        if live == self.streams:
            return
        self.kv_peak = max(self.kv_peak, cache_nbytes(self.cache))
        keep = torch.tensor([self.streams.index(i) for i in live], device=self.pos.device)
        self.cache.batch_select_indices(keep)
        self.visible, self.pos = self.visible[keep], self.pos[keep]
        self.streams = list(live)

    def static_step(self, model: Any, compiled: bool, pool: Any = None,
                    **extra: Any) -> StaticRows:
        """The static step over these rows, built at its first use: after the prefill,
        which has filled the cache, and before any eager step (all rows still there)."""
        if self.static is None:
            self.static = StaticRows(model, self.cache, self.visible.bool(), self.pos,
                                     compiled, pool, **extra)
        return self.static

    def finish(self) -> None:
        """Leave the cache an ordinary one, and count its bytes into `kv_peak`."""
        if self.static is not None:
            self.static.finish()
        self.kv_peak = max(self.kv_peak, cache_nbytes(self.cache))

    def tokens_fed(self, res: DecodeResult) -> int:
        """Tokens computed while decoding: every row at every static step, finished or
        not; eagerly, the live rows the decoding loop fed."""
        return self.static.fed if self.static is not None else res.step_tokens


class StaticRows:
    """Static decoding of R rows, one token per row per step (sequential, batch, prefix).

    `visible` [R, S] says which of the S filled cache columns each row sees; `pos` [R]
    is each row's next position. Row r is stream r, for the whole group. With a `pool`
    (the runner's kvcache.BufferPool, whose buffers the cache holds too) every tensor
    the step reads is reused per (rows, bucket), filled afresh, never reallocated.
    """

    def __init__(self, model: Any, cache: Any, visible: torch.Tensor, pos: torch.Tensor,
                 compiled: bool, pool: Any = None, **extra: Any):
        rows, filled = visible.shape
        device = visible.device
        self.cache, self.extra = cache, extra
        self.index = step_buffers(pool, {"index": ((1,), torch.long)}, device)["index"]
        capacity = make_static(cache, self.index.fill_(filled))
        buf = step_buffers(pool, {"mask": ((rows, 1, 1, capacity), model.dtype),
                                  "pos": ((rows, 1), torch.long),
                                  "tokens": ((rows, 1), torch.long)}, device)
        self.mask = buf["mask"].fill_(torch.finfo(model.dtype).min)
        self.mask[:, 0, 0, :filled] = additive(visible, model.dtype)
        self.pos = buf["pos"].copy_(pos.view(rows, 1))
        self.tokens = buf["tokens"].zero_()
        self.filled = filled
        self.fed = 0  # tokens computed: every row, finished or not, at every step
        self.forward = step_forward(model, compiled)
        mark_dynamic(self.mask, dims=(0, 3))
        mark_dynamic(self.pos, self.tokens, dims=(0,))
        static_addresses(self.mask, self.pos, self.tokens, self.index)
        for layer in cache.layers:
            mark_dynamic(layer._k, layer._v, dims=(0, 2))
            static_addresses(layer._k, layer._v)
            if hasattr(layer, "prefix_keys"):  # a shared prefix (prefix method)
                mark_dynamic(layer.prefix_keys, layer.prefix_values, dims=(2,))
                static_addresses(layer.prefix_keys, layer.prefix_values)

    def __call__(self, live: list[int], tokens: torch.Tensor) -> torch.Tensor:
        rows = torch.tensor(live, device=self.tokens.device)
        self.tokens[rows, 0] = tokens.to(self.tokens.device)
        self.mask[:, :, :, self.index] = 0.0  # each row sees its own new token
        logits = self.forward(input_ids=self.tokens, position_ids=self.pos,
                              attention_mask=self.mask, cache=self.cache, **self.extra)
        self.index += 1
        self.pos += 1
        self.filled += 1
        self.fed += self.tokens.shape[0]
        return logits[rows, -1]

    def finish(self) -> None:
        """Leave the cache an ordinary reserved cache (for its byte count)."""
        end_static(self.cache, self.filled)
