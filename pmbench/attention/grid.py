"""The (|Δt| bucket x key column) grid: where branch queries attend, reduced per layer and head.

When N branches share one sequence, each branch token (a query with b >= 1) spreads
its attention over the shared context, its own branch and, under the cross mask, the
other branches. This module is the pure maths of that reduction (`capture` feeds it
while the model runs): no hooks, no model.

The grid. A (query, key) pair falls in the cell (|Δt| bucket, key column):

- |Δt| = |t_query - t_key|, bucketed as 0, 1, 2, 3, 4-7, 8-15, ..., 256-511, 512+;
- key column: `ctx` (the key is shared context, b = 0), `own` (same branch as the
  query), or `Δb=d` (another branch at branch distance d = |b_key - b_query| >= 1).

For each layer and head, `mass[T, C]` is the attention mass a branch query puts in each
cell, averaged over all branch queries (prompt tokens and generated tokens alike); it
sums to 1 over the grid. `uniform[T, C]` is the same for uniform attention over each
query's visible keys: what the layout alone would give. Masses by target: context
mass = the `ctx` column, own-branch mass = `own`, other-branch mass = the `Δb` columns.

Scores (the README's definitions). Let H = mass and U = uniform as distributions over
the cells, H_T, U_T their marginals over the |Δt| buckets and H_B, U_B over the key
columns. KL(H || U) (nats) is how far the head is from attending uniformly. By the
chain rule KL(H || U) = KL(H_T || U_T) + E_T KL(H_B|T || U_B|T), and likewise with T
and B swapped, so

    time_focus   = KL(H_T || U_T) / KL(H || U)    in [0, 1]
    branch_focus = KL(H_B || U_B) / KL(H || U)    in [0, 1]

are the shares of the head's departure from uniform attention that |Δt| alone and the
key's branch alone account for. Time and branch are correlated in the layout (own-branch
keys are recent), so both can be high; the difference is what tells the heads apart:
1 - branch_focus is the share only time explains (the time preference within a key
column) and 1 - time_focus the share only the branch explains. Heads within
`MIN_KL` nats of uniform get both scores 0.

Labels, in order: `context` when at least `CONTEXT_SHARE` of the head's attention lands
on the shared context (the attention-sink token, reported as `first_token_mass`, is
part of it); `time` when time_focus - branch_focus >= `FOCUS_MARGIN`; `branch` when
branch_focus - time_focus >= `FOCUS_MARGIN`; otherwise `mixed` (near-uniform heads
included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pmbench.errors import BadInput

# |Δt| bucket lower edges: exact 0..3, then powers of two; the last bucket is open.
TIME_EDGES = (0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512)
CONTEXT_SHARE = 0.9
FOCUS_MARGIN = 0.1
MIN_KL = 0.05
LABELS = ("time", "branch", "mixed", "context")
PHASES = ("prefill", "decode")


def time_bucket_labels() -> list[str]:
    labels = []
    for lo, hi in zip(TIME_EDGES, (*TIME_EDGES[1:], None), strict=True):
        if hi is None:
            labels.append(f"{lo}+")
        elif hi - lo == 1:
            labels.append(str(lo))
        else:
            labels.append(f"{lo}-{hi - 1}")
    return labels


def branch_column_labels(n_branches: int) -> list[str]:
    return ["ctx", "own", *(f"Δb={d}" for d in range(1, n_branches))]


def grid_cells(
    tq: torch.Tensor, bq: torch.Tensor, tk: torch.Tensor, bk: torch.Tensor, n_branches: int
) -> torch.Tensor:
    """[Q, K] flat cell index (|Δt| bucket * n_columns + key column) of each query-key pair."""
    edges = torch.tensor(TIME_EDGES[1:], device=tq.device)
    bucket = torch.bucketize((tq[:, None] - tk[None, :]).abs(), edges, right=True)
    dist = (bk[None, :] - bq[:, None]).abs()
    column = torch.where(bk[None, :] == 0, 0, 1 + dist)
    if int(column.max()) > n_branches:
        raise ValueError(f"branch coordinate above {n_branches} branches")
    return bucket * (n_branches + 1) + column


@dataclass
class GridStats:
    """The reduced attention of one model: per-query means on the grid."""

    layers: list[int]
    heads: list[int]
    n_branches: int
    mass: torch.Tensor  # [L, H, T, C]: mean mass per branch query in each cell
    uniform: torch.Tensor  # [T, C]: the same for uniform attention over visible keys
    first_token: torch.Tensor  # [L, H]: mean mass on the key at (t, b) = (0, 0)
    n_queries: int


class GridAccumulator:
    """Running sums on the (|Δt| bucket x key column) grid for chosen layers and heads.

    `add` takes one forward pass's attention of one layer; everything it keeps is
    [layers, heads, phases, cells], whatever the sequence length.
    """

    def __init__(self, layers: Sequence[int], heads: Sequence[int], n_branches: int):
        self.layers, self.heads, self.n_branches = list(layers), list(heads), n_branches
        self._row = {layer: i for i, layer in enumerate(self.layers)}
        n_cells = len(TIME_EDGES) * (n_branches + 1)
        shape = (len(self.layers), len(self.heads), len(PHASES))
        self.mass = torch.zeros(*shape, n_cells, dtype=torch.float64)
        self.first_token = torch.zeros(*shape, dtype=torch.float64)
        self.uniform = torch.zeros(len(PHASES), n_cells, dtype=torch.float64)
        self.queries = torch.zeros(len(PHASES), dtype=torch.long)
        self.max_mass_error = 0.0  # max over queries of |sum of visible weights - 1|

    def pick_heads(self, weights: torch.Tensor) -> torch.Tensor:
        """The captured heads of weights [H_all, ...] (all of them: no copy)."""
        return weights if len(self.heads) == weights.shape[0] else weights[self.heads]

    def add_queries(self, cells: torch.Tensor, visible: torch.Tensor, phase: int) -> None:
        """Count a forward pass's branch queries once (not per layer): the uniform baseline."""
        n_vis = visible.sum(-1, keepdim=True).clamp(min=1)
        share = (visible / n_vis).double().flatten()
        self.uniform[phase].index_add_(0, cells.flatten().cpu(), share.cpu())
        self.queries[phase] += visible.shape[0]

    def add(
        self,
        layer: int,
        weights: torch.Tensor,
        cells: torch.Tensor,
        visible: torch.Tensor,
        first_key: torch.Tensor,
        phase: int,
    ) -> None:
        """weights [H_all, Q, K] (branch queries only), cells/visible [Q, K], first_key [K]."""
        # float64: sums over many keys and queries stay exact
        w = self.pick_heads(weights).double() * visible
        self.max_mass_error = max(self.max_mass_error, float((w.sum(-1) - 1).abs().max()))
        row = self._row[layer]
        summed = torch.zeros(w.shape[0], self.mass.shape[-1], dtype=w.dtype, device=w.device)
        summed.index_add_(1, cells.flatten(), w.flatten(1))
        self.mass[row, :, phase] += summed.cpu()
        self.first_token[row, :, phase] += w[..., first_key].sum((1, 2)).cpu()

    def stats(self, phase: str | None = None) -> GridStats:
        """Per-query means, over both phases (default) or one of `PHASES`."""
        sel = slice(None) if phase is None else slice(PHASES.index(phase), PHASES.index(phase) + 1)
        n = int(self.queries[sel].sum())
        if n == 0:
            raise BadInput("no branch tokens were captured (empty questions?)")
        t, c = len(TIME_EDGES), self.n_branches + 1
        return GridStats(
            layers=self.layers,
            heads=self.heads,
            n_branches=self.n_branches,
            mass=(self.mass[:, :, sel].sum(2) / n).view(len(self.layers), len(self.heads), t, c),
            uniform=(self.uniform[sel].sum(0) / n).view(t, c),
            first_token=self.first_token[:, :, sel].sum(2) / n,
            n_queries=n,
        )


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim; 0 log 0 = 0 (cells where q = 0 hold no keys)."""
    ratio = torch.where(p > 0, p / q.clamp(min=1e-300), torch.ones_like(p))
    return (p * ratio.log()).sum(-1)


def focus_scores(
    mass: torch.Tensor, uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(KL(H||U), time_focus, branch_focus) for mass [..., T, C] against uniform [T, C]."""
    mass = mass / mass.sum((-2, -1), keepdim=True)
    uniform = uniform / uniform.sum()
    full = _kl(mass.flatten(-2), uniform.flatten())
    time_kl = _kl(mass.sum(-1), uniform.sum(-1))
    branch_kl = _kl(mass.sum(-2), uniform.sum(-2))
    informative = full >= MIN_KL
    safe = full.clamp(min=MIN_KL)
    zero = torch.zeros_like(full)
    time_focus = torch.where(informative, (time_kl / safe).clamp(0, 1), zero)
    branch_focus = torch.where(informative, (branch_kl / safe).clamp(0, 1), zero)
    return full, time_focus, branch_focus


def head_label(context_mass: float, time_focus: float, branch_focus: float) -> str:
    """The head's specialisation (see the module docstring for the rule)."""
    if context_mass >= CONTEXT_SHARE:
        return "context"
    if time_focus - branch_focus >= FOCUS_MARGIN:
        return "time"
    if branch_focus - time_focus >= FOCUS_MARGIN:
        return "branch"
    return "mixed"


def _targets(mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(context, own, other) mass from a [..., T, C] grid."""
    by_column = mass.sum(-2)
    return by_column[..., 0], by_column[..., 1], by_column[..., 2:].sum(-1)


def rounded(x: float | torch.Tensor, digits: int = 6) -> float:
    """A record's number: short, and the same on every machine that computes it."""
    return round(float(x), digits)


def _masses(ctx: torch.Tensor, own: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Context, own- and other-branch mass, averaged over the heads (and layers) given."""
    return {"context_mass": rounded(ctx.mean()), "own_branch_mass": rounded(own.mean()),
            "other_branch_mass": rounded(other.mean())}


def summarize(stats: GridStats) -> dict[str, Any]:
    """The record's `summary`, `per_layer` and `grid` blocks for one model."""
    ctx, own, other = _targets(stats.mass)
    kl, tf, bf = focus_scores(stats.mass, stats.uniform)
    first = stats.first_token
    per_layer = []
    labels: list[str] = []
    for i, layer in enumerate(stats.layers):
        heads = []
        for j, head in enumerate(stats.heads):
            label = head_label(float(ctx[i, j]), float(tf[i, j]), float(bf[i, j]))
            labels.append(label)
            heads.append({
                "head": head, "label": label, **_masses(ctx[i, j], own[i, j], other[i, j]),
                "first_token_mass": rounded(first[i, j]),
                "time_focus": rounded(tf[i, j]), "branch_focus": rounded(bf[i, j]),
                "kl": rounded(kl[i, j]),
            })
        per_layer.append({
            "layer": layer, **_masses(ctx[i], own[i], other[i]),
            "first_token_mass": rounded(first[i].mean()),
            "time_focus_mean": rounded(tf[i].mean()), "branch_focus_mean": rounded(bf[i].mean()),
            "heads": heads,
        })
    summary = {
        **_masses(ctx, own, other), "first_token_mass": rounded(first.mean()),
        "time_focus_mean": rounded(tf.mean()), "branch_focus_mean": rounded(bf.mean()),
        "heads": {name: labels.count(name) for name in LABELS},
        "n_queries": stats.n_queries,
    }
    grid = {
        "time_buckets": time_bucket_labels(),
        "branch_columns": branch_column_labels(stats.n_branches),
        "layers": stats.layers, "heads": stats.heads,
        "mass": [[[[rounded(v, 7) for v in row] for row in h] for h in layer]
                 for layer in stats.mass.tolist()],
        "uniform": [[rounded(v, 7) for v in row] for row in stats.uniform.tolist()],
    }
    return {"summary": summary, "per_layer": per_layer, "grid": grid}


def phase_masses(acc: GridAccumulator) -> dict[str, Any]:
    """Context / own / other mass and query count for the prompt and decoding phases."""
    out = {}
    for phase in PHASES:
        if int(acc.queries[PHASES.index(phase)]) == 0:
            continue
        s = acc.stats(phase)
        out[phase] = {"n_queries": s.n_queries, **_masses(*_targets(s.mass))}
    return out
