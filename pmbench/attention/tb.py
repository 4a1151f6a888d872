"""The (t, b) view: one decoding step's branch queries and their attention to every cached key.

The grid (`grid`) folds time into |Δt| buckets and pools all steps. For the branch queries
of one decoding step (`TB_STEP` by default: step 0 is the packed prefill, whose query per
branch is its last prompt token, step k the k-th decoding forward pass), the recorder also
keeps each query's attention to every cached key, of the first group that reaches that
step: laid out at the key's (t, b), it shows whether a branch looks at its own row, the
context (row b = 0) or, under the cross mask, its neighbours' rows. `tb_summary` stores it
per key (the keys' (t, b) once, then the mass of each query branch averaged over heads, and
on request of each head averaged over query branches), with null where the key is not
visible to the query: a few hundred numbers per layer and query branch, the keys that exist
at that step and no more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pmbench.attention.grid import rounded
from pmbench.errors import BadInput

TB_STEP = 1  # default step of the (t, b) view: the first decoding step after the prefill


@dataclass
class TBStep:
    """One step's branch queries and their attention to every cached key, by the key's (t, b)."""

    group: int  # the group it was taken from (counted from 0 by forward passes on an empty cache)
    step: int  # 0 = the packed prefill, k = the k-th decoding forward pass
    layers: list[int]
    heads: list[int]
    query_t: torch.Tensor  # [Q]: one query per branch fed at this step (its last token)
    query_b: torch.Tensor  # [Q]
    key_t: torch.Tensor  # [K]: every key in the cache, the step's own tokens included
    key_b: torch.Tensor  # [K]
    visible: torch.Tensor  # bool [Q, K]
    mass: torch.Tensor  # [L, H, Q, K] float64, exactly 0 where not visible


def last_of_each_branch(tq: torch.Tensor, bq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Of a pass's branch `rows`, the one with each branch's latest t, in branch order: the
    query a step adds per branch (in the packed prefill, the token that predicts the answer)."""
    last: dict[int, int] = {}
    for r in rows.tolist():
        b = int(bq[r])
        if b not in last or tq[r] > tq[last[b]]:
            last[b] = r
    return torch.tensor([last[b] for b in sorted(last)], dtype=torch.long)


def tb_figure_layer(layer: int | None, layers: Sequence[int]) -> int:
    """The layer the per-branch (t, b) figures show: `layer` if captured, else the middle one."""
    if layer is None:
        return layers[len(layers) // 2]
    if layer not in layers:
        raise BadInput(f"--tb-layer {layer} is not among the captured layers {list(layers)}")
    return layer


def tb_summary(tb: TBStep, per_head: bool = False, layer: int | None = None) -> dict[str, Any]:
    """The record's `tb` block: the keys' (t, b) once, then a mass per key (null where the
    key is hidden from the query), so a figure can lay it out on the (t, b) plane.

    `mass` [layer][query branch][key] is averaged over heads; with `per_head`, `head_mass`
    [layer][head][key] is averaged over query branches (null where no query sees the key).
    `layer` (default: the middle captured one) is the layer the per-branch figures show.
    """
    def per_key(values: torch.Tensor, visible: torch.Tensor) -> list[float | None]:
        return [rounded(v, 6) if seen else None
                for v, seen in zip(values.tolist(), visible.tolist(), strict=True)]

    out: dict[str, Any] = {
        "group": tb.group, "step": tb.step, "layers": tb.layers, "heads": tb.heads,
        "figure_layer": tb_figure_layer(layer, tb.layers),
        "queries": {"t": tb.query_t.tolist(), "b": tb.query_b.tolist()},
        "keys": {"t": tb.key_t.tolist(), "b": tb.key_b.tolist()},
        "mass": [[per_key(q, seen) for q, seen in zip(by_layer, tb.visible, strict=True)]
                 for by_layer in tb.mass.mean(1)],
    }
    if per_head:
        seen_by_any = tb.visible.any(0)
        out["head_mass"] = [[per_key(h, seen_by_any) for h in by_layer]
                            for by_layer in tb.mass.mean(2)]
    return out

