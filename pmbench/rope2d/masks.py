"""Who sees whom: the isolated and cross branch masks.

The rule, for tokens i (query) and j (key) with branch coordinates b and steps s
(step 0 = context and prompts, step k = the k-th decoding forward pass):

- a context token (b = 0) sees earlier context tokens (causal);
- a branch token sees the whole context and the earlier tokens of its own branch;
- `cross` only: it also sees other branches' tokens of strictly earlier steps
  (never the same step: those are being computed in the same forward pass).

`dense_mask` states the rule over a whole packed sequence (training, analysis,
tests). While decoding, `BranchMask` keeps one row of column visibility per branch
and appends each step's columns to it, so a step costs O(N x L) to gather the live
rows, not O(L^2) to rebuild a dense mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pmbench.rope2d.layout import PackedLayout
from pmbench.rope2d.settings import MASKS


def _check_kind(kind: str) -> None:
    if kind not in MASKS:
        raise ValueError(f"unknown mask {kind!r}; valid: {', '.join(MASKS)}")


def dense_mask(b: torch.Tensor, step: torch.Tensor | None = None, kind: str = "isolated"):
    """Bool [L, L], True where query i may attend to key j, for tokens in packed order.

    `b` [L] are branch coordinates; `step` [L] the step each token was fed at (zeros if
    None: a packed prompt, in which no branch sees another under either mask). Tokens
    of one branch must appear in time order, and the context before every branch token.
    """
    _check_kind(kind)
    n = b.numel()
    order = torch.arange(n, device=b.device)
    causal = order[None, :] <= order[:, None]
    bq, bk = b[:, None], b[None, :]
    visible = causal & ((bq == bk) | (bk == 0))
    if kind == "cross":
        step = torch.zeros_like(b) if step is None else step
        other = (bq != 0) & (bk != 0) & (bq != bk)
        visible |= other & (step[None, :] < step[:, None])
    return visible


def additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask -> additive float mask (0 where visible, dtype's minimum elsewhere)."""
    out = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return out.masked_fill_(~visible, torch.finfo(dtype).min)


class BranchMask:
    """Attention masks for a packed prefill and the decoding steps after it.

    Keeps `rows[k, c]` = "branch k+1 may see cache column c" in a preallocated buffer
    in the attention's own representation (bool, or an additive float mask in the
    model's dtype, so nothing is converted per layer). Columns are cache positions in
    the order tokens were fed: the layout's tokens, then each step's live branches.
    `out`, an [N, capacity] tensor of that dtype, is filled and used as that buffer (a
    static decoding step reuses one from group to group: the same address each time).
    """

    def __init__(
        self,
        layout: PackedLayout,
        kind: str = "isolated",
        capacity: int | None = None,
        dtype: torch.dtype = torch.bool,
        device: torch.device | str | None = None,
        out: torch.Tensor | None = None,
    ):
        _check_kind(kind)
        self.layout = layout
        self.kind = kind
        self.dtype = dtype
        self.device = device
        n = layout.n_branches
        self.length = len(layout)
        capacity = max(capacity or 0, self.length)
        if dtype == torch.bool:
            self._on, self._off = True, False
        else:
            self._on, self._off = 0.0, torch.finfo(dtype).min
        if out is not None and (out.shape != (n, capacity) or out.dtype != dtype):
            raise ValueError(f"out is {tuple(out.shape)} {out.dtype}, not "
                             f"{(n, capacity)} {dtype}")
        self.rows = (out.fill_(self._off) if out is not None else
                     torch.full((n, capacity), self._off, dtype=dtype, device=device))
        p = layout.context_len
        self.rows[:, :p] = self._on
        prompt_b = layout.b[p:].to(device)
        self.rows[:, p : self.length] = self._value(
            prompt_b[None, :] == layout.branch_ids().to(device)[:, None]
        )
        self._pending = (p, self.length)  # columns that others may see from the next step on

    def _value(self, visible: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.bool:
            return visible
        return additive(visible, self.dtype)

    def prefill(self) -> torch.Tensor:
        """[L, L] mask of the packed prompt: the context (causal) and every branch."""
        return self._value(dense_mask(self.layout.b.to(self.device), None, self.kind))

    def _grow(self, needed: int) -> None:
        if needed <= self.rows.shape[1]:
            return
        extra = torch.full(
            (self.rows.shape[0], max(needed, 2 * self.rows.shape[1]) - self.rows.shape[1]),
            self._off, dtype=self.dtype, device=self.device,
        )
        self.rows = torch.cat([self.rows, extra], dim=1)

    def step(self, live: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """[n_live, L + n_live] mask for one token per live branch (0-based branch indices).

        Appends the step's columns (live branch j's token at column L + j) and returns
        the live branches' rows over every column so far.
        """
        live = torch.as_tensor(live, dtype=torch.long, device=self.device)
        n = live.numel()
        start = self.length
        self._grow(start + n)
        if self.kind == "cross":
            lo, hi = self._pending
            self.rows[:, lo:hi] = self._on
        self.rows[live, torch.arange(start, start + n, device=self.device)] = self._on
        self._pending = (start, start + n)
        self.length = start + n
        return self.rows[:, : self.length].index_select(0, live)
