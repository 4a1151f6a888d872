"""Pack a shared context and N branches into one sequence with 2D positions.

Coordinates (DESIGN): context tokens are (t, 0) with t = 0..P-1; branch k = 1..N
holds its tokens at (P + j, k), j = 0.., so every branch starts at the same time P.
The packed order is context, then branch 1, branch 2, ...; the mask (see `masks`),
not the order, decides who sees whom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedLayout:
    """Token ids and (t, b) of a packed `context + branch_1 + ... + branch_N` sequence.

    `last[k]` indexes branch k+1's last token in the packed sequence: the position
    whose logits predict that branch's first new token. A branch with no tokens of its
    own continues straight from the context, so its `last` is the context's last token.
    """

    input_ids: torch.Tensor  # [L] long
    t: torch.Tensor  # [L] long
    b: torch.Tensor  # [L] long, 0 = context, k = branch k
    last: torch.Tensor  # [N] long
    context_len: int
    branch_lens: tuple[int, ...]

    @property
    def n_branches(self) -> int:
        return len(self.branch_lens)

    def __len__(self) -> int:
        return self.input_ids.numel()

    def next_t(self) -> torch.Tensor:
        """[N] time coordinate of each branch's first generated token."""
        return self.context_len + torch.tensor(self.branch_lens, dtype=torch.long)

    def branch_ids(self) -> torch.Tensor:
        """[N] branch coordinate b of each branch (1..N)."""
        return torch.arange(1, self.n_branches + 1)


def pack(context_ids: Sequence[int], branches: Sequence[Sequence[int]]) -> PackedLayout:
    """Lay out `context_ids` (may be empty) followed by each branch's ids."""
    if not branches:
        raise ValueError("at least one branch is needed")
    p = len(context_ids)
    lens = tuple(len(ids) for ids in branches)
    if p == 0 and min(lens) == 0:
        raise ValueError("a branch with no tokens needs a non-empty shared context")
    ids = [int(i) for i in context_ids]
    t = list(range(p))
    b = [0] * p
    last = []
    for k, branch in enumerate(branches, start=1):
        ids.extend(int(i) for i in branch)
        t.extend(range(p, p + len(branch)))
        b.extend([k] * len(branch))
        last.append(len(ids) - 1 if branch else p - 1)
    ids_t, t_t, b_t, last_t = (torch.tensor(x, dtype=torch.long) for x in (ids, t, b, last))
    return PackedLayout(ids_t, t_t, b_t, last_t, p, lens)
