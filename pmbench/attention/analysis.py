"""Where branch tokens attend: attention on the (time, branch) grid, per layer and head.

When N branches share one sequence, each branch token (a query with b >= 1) spreads
its attention over the shared context, its own branch and, under the cross mask, the
other branches. This module captures that attention while the rope2d runner decodes,
without touching the runner, and reduces it to a small grid per layer and head.

Capture. `AttentionRecorder` puts a pre-hook on the decoder, which reads each forward
pass's `position_ids` ([2, 1, L] = (t, b), or plain [1, L] = (t, 0)) and the cache
length, so it knows the (t, b) of every cached key (keys are the earlier queries, in
the order they were fed). A hook on each chosen layer's attention reads the weights
returned by eager attention ([1, H, Q, K]) and the 4D mask it was given, and adds them
to the grid at once: no attention matrix outlives its forward pass. Context tokens
(b = 0) are not queries of interest and are skipped.

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

The (t, b) view. The grid above folds time into |Δt| buckets and pools all steps. For the
branch queries of one decoding step (`TB_STEP` by default: step 0 is the packed prefill,
whose query per branch is its last prompt token, step k the k-th decoding forward pass),
the recorder also keeps each query's attention to every cached key, of the first group
that reaches that step: laid out at the key's (t, b), it shows whether a branch looks at
its own row, the context (row b = 0) or, under the cross mask, its neighbours' rows.
`tb_summary` stores it per key (the keys' (t, b) once, then the mass of each query branch
averaged over heads, and on request of each head averaged over query branches), with
null where the key is not visible to the query: a few hundred numbers per layer and
query branch, the keys that exist at that step and no more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pmbench.errors import BadInput, require_positive

# |Δt| bucket lower edges: exact 0..3, then powers of two; the last bucket is open.
TIME_EDGES = (0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512)
CONTEXT_SHARE = 0.9
FOCUS_MARGIN = 0.1
MIN_KL = 0.05
LABELS = ("time", "branch", "mixed", "context")
PHASES = ("prefill", "decode")
TB_STEP = 1  # default step of the (t, b) view: the first decoding step after the prefill


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


def _r(x: float | torch.Tensor, digits: int = 6) -> float:
    return round(float(x), digits)


def summarize(stats: GridStats) -> dict[str, Any]:
    """The record's `summary`, `per_layer` and `grid` blocks for one model."""
    ctx, own, other = _targets(stats.mass)
    kl, tf, bf = focus_scores(stats.mass, stats.uniform)
    per_layer = []
    labels: list[str] = []
    for i, layer in enumerate(stats.layers):
        heads = []
        for j, head in enumerate(stats.heads):
            label = head_label(float(ctx[i, j]), float(tf[i, j]), float(bf[i, j]))
            labels.append(label)
            heads.append({
                "head": head, "label": label,
                "context_mass": _r(ctx[i, j]), "own_branch_mass": _r(own[i, j]),
                "other_branch_mass": _r(other[i, j]),
                "first_token_mass": _r(stats.first_token[i, j]),
                "time_focus": _r(tf[i, j]), "branch_focus": _r(bf[i, j]), "kl": _r(kl[i, j]),
            })
        per_layer.append({
            "layer": layer,
            "context_mass": _r(ctx[i].mean()), "own_branch_mass": _r(own[i].mean()),
            "other_branch_mass": _r(other[i].mean()),
            "first_token_mass": _r(stats.first_token[i].mean()),
            "time_focus_mean": _r(tf[i].mean()), "branch_focus_mean": _r(bf[i].mean()),
            "heads": heads,
        })
    summary = {
        "context_mass": _r(ctx.mean()), "own_branch_mass": _r(own.mean()),
        "other_branch_mass": _r(other.mean()),
        "first_token_mass": _r(stats.first_token.mean()),
        "time_focus_mean": _r(tf.mean()), "branch_focus_mean": _r(bf.mean()),
        "heads": {name: labels.count(name) for name in LABELS},
        "n_queries": stats.n_queries,
    }
    grid = {
        "time_buckets": time_bucket_labels(),
        "branch_columns": branch_column_labels(stats.n_branches),
        "layers": stats.layers, "heads": stats.heads,
        "mass": [[[[_r(v, 7) for v in row] for row in h] for h in layer]
                 for layer in stats.mass.tolist()],
        "uniform": [[_r(v, 7) for v in row] for row in stats.uniform.tolist()],
    }
    return {"summary": summary, "per_layer": per_layer, "grid": grid}


def phase_masses(acc: GridAccumulator) -> dict[str, Any]:
    """Context / own / other mass and query count for the prompt and decoding phases."""
    out = {}
    for phase in PHASES:
        if int(acc.queries[PHASES.index(phase)]) == 0:
            continue
        s = acc.stats(phase)
        ctx, own, other = _targets(s.mass)
        out[phase] = {"n_queries": s.n_queries, "context_mass": _r(ctx.mean()),
                      "own_branch_mass": _r(own.mean()), "other_branch_mass": _r(other.mean())}
    return out


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
        return [_r(v, 6) if seen else None
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


# --- capture ------------------------------------------------------------------------------


def _decoder(model: Any) -> Any:
    return getattr(model, "model", model)


def _visibility(mask: torch.Tensor | None, q: int, k: int, past: int) -> torch.Tensor:
    """Bool [Q, K] from the 4D mask the attention got (bool, or additive float)."""
    if mask is None:  # no mask: plain causal in cache order
        order = torch.arange(k)
        return order[None, :] <= (past + torch.arange(q))[:, None]
    m = mask[0, 0, :, :k] if mask.ndim == 4 else mask[..., :k]
    if m.dtype == torch.bool:
        return m
    return m > torch.finfo(m.dtype).min / 2


def last_of_each_branch(tq: torch.Tensor, bq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Of a pass's branch `rows`, the one with each branch's latest t, in branch order: the
    query a step adds per branch (in the packed prefill, the token that predicts the answer)."""
    last: dict[int, int] = {}
    for r in rows.tolist():
        b = int(bq[r])
        if b not in last or tq[r] > tq[last[b]]:
            last[b] = r
    return torch.tensor([last[b] for b in sorted(last)], dtype=torch.long)


@dataclass
class _Pass:
    """What all layers of one forward pass share."""

    tq: torch.Tensor
    bq: torch.Tensor
    past: int
    step: int  # 0: the packed prefill, k: the k-th decoding step (in branch passes)
    branch_rows: torch.Tensor
    tb_rows: torch.Tensor | None = None  # the queries of the (t, b) view, in this pass
    cells: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    first_key: torch.Tensor | None = None

    @property
    def phase(self) -> int:
        return PHASES.index("prefill" if self.step == 0 else "decode")


@dataclass
class AttentionRecorder:
    """Hooks that feed a `GridAccumulator` while a model runs rope2d groups.

    Use `with recorder.attach(model): runner.run_group(...)`. The model must run eager
    attention (the only kind that returns its weights). `tb` ends up holding step `tb_step`
    of the first group that reaches it (None: keep no (t, b) view).
    """

    layers: Sequence[int]
    heads: Sequence[int]
    n_branches: int
    tb_step: int | None = TB_STEP
    acc: GridAccumulator = field(init=False)
    tb: TBStep | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.acc = GridAccumulator(self.layers, self.heads, self.n_branches)
        self._kt = torch.zeros(0, dtype=torch.long)
        self._kb = torch.zeros(0, dtype=torch.long)
        self._pass: _Pass | None = None
        self._branch_passes = 0
        self._group = -1

    def _before(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        n, width = ids.shape[0], ids.shape[1]
        if n != 1:
            raise BadInput("attention capture expects one packed sequence per forward pass")
        pos = kwargs.get("position_ids")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        if past == 0:  # a new sequence: forget the previous group's keys
            self._kt = self._kt[:0]
            self._kb = self._kb[:0]
            self._branch_passes = 0
            self._group += 1
        if past != self._kt.numel():
            raise RuntimeError(f"capture lost track of the cache ({past} vs {self._kt.numel()})")
        if pos is None:
            tq = torch.arange(past, past + width)
            bq = torch.zeros_like(tq)
        elif pos.ndim == 3:
            tq, bq = pos[0, 0].cpu(), pos[1, 0].cpu()
        else:
            tq = pos[0].cpu()
            bq = torch.zeros_like(tq)
        self._kt = torch.cat([self._kt, tq])
        self._kb = torch.cat([self._kb, bq])
        rows = (bq > 0).nonzero().flatten()
        step = self._branch_passes
        self._pass = _Pass(tq, bq, past, step, rows)
        if rows.numel():
            self._branch_passes += 1
            if self.tb is None and step == self.tb_step:
                self._pass.tb_rows = last_of_each_branch(tq, bq, rows)

    def _after(self, layer: int, module, args, kwargs, output) -> None:
        p = self._pass
        if p is None or p.branch_rows.numel() == 0:
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise BadInput("attention capture needs eager attention "
                           "(load the model with attn_implementation='eager')")
        k = self._kt.numel()
        if p.cells is None:  # first captured layer of this pass: shared geometry
            visible = _visibility(kwargs.get("attention_mask"), p.tq.numel(), k, p.past).cpu()
            rows = p.branch_rows
            p.visible = visible[rows].to(weights.device)
            p.cells = grid_cells(p.tq[rows], p.bq[rows], self._kt, self._kb,
                                 self.n_branches).to(weights.device)
            p.first_key = ((self._kt == 0) & (self._kb == 0)).to(weights.device)
            self.acc.add_queries(p.cells, p.visible, p.phase)
            if p.tb_rows is not None:
                self.tb = self._new_tb(p, visible[p.tb_rows])
        w = weights[0, :, :, :k]
        if p.tb_rows is not None:
            seen = self.tb.visible.to(weights.device)
            picked = self.acc.pick_heads(w)[:, p.tb_rows.to(weights.device)]
            self.tb.mass[self.layers.index(layer)] = (picked.double() * seen).cpu()
        if p.branch_rows.numel() < w.shape[1]:  # a pass mixing context and branch queries
            w = w[:, p.branch_rows.to(weights.device)]
        self.acc.add(layer, w, p.cells, p.visible, p.first_key, p.phase)

    def _new_tb(self, p: _Pass, visible: torch.Tensor) -> TBStep:
        shape = (len(self.layers), len(self.heads), *visible.shape)
        return TBStep(self._group, p.step, list(self.layers), list(self.heads),
                      p.tq[p.tb_rows], p.bq[p.tb_rows], self._kt.clone(), self._kb.clone(),
                      visible, torch.zeros(shape, dtype=torch.float64))

    @contextmanager
    def attach(self, model: Any) -> Iterator[AttentionRecorder]:
        decoder = _decoder(model)
        handles = [decoder.register_forward_pre_hook(self._before, with_kwargs=True)]
        for layer in self.layers:
            attn = decoder.layers[layer].self_attn
            handles.append(attn.register_forward_hook(
                lambda m, a, kw, out, layer=layer: self._after(layer, m, a, kw, out),
                with_kwargs=True))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._pass = None


# --- one analysis run ----------------------------------------------------------------------


def parse_indices(spec: str | None, n: int, what: str) -> list[int]:
    """'0,3,8-11' (or None / 'all') -> sorted indices below n."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n))
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            lo, _, hi = part.partition("-")
            chosen.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise BadInput(f"--{what}: expected numbers like 0,3,8-11, got {spec!r}") from None
    bad = sorted(i for i in chosen if not 0 <= i < n)
    if bad or not chosen:
        raise BadInput(f"--{what}: {bad or spec} out of range 0..{n - 1}")
    return sorted(chosen)


@dataclass
class AttnSettings:
    """What `pmbench attn` was asked to do (recorded in attention.json)."""

    suite: str
    branch: int = 4
    model: str | None = None
    compare: str | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    ignore_eos: bool = False
    rope2d: dict[str, Any] = field(default_factory=dict)
    layers: str | None = None
    heads: str | None = None
    tb_step: int = TB_STEP
    tb_layer: int | None = None
    tb_heads: bool = False
    data_dir: str | None = None
    output_dir: str = "results"
    device: str | None = None
    dtype: str | None = None
    run_id: str | None = None

    def validate(self) -> None:
        require_positive(branch=self.branch, limit=self.limit,
                         max_new_tokens=self.max_new_tokens)
        if self.tb_step < 0:
            raise BadInput(f"--tb-step must be 0 (the packed prefill) or more, got {self.tb_step}")

    @property
    def questions(self) -> int:
        """--limit, or four groups of --branch questions."""
        return self.limit if self.limit is not None else 4 * self.branch


def analyze_model(s: AttnSettings, model_id: str | None, log=lambda msg: None) -> dict[str, Any]:
    """Run the suite's groups through rope2d on one model and reduce its attention."""
    from pmbench.engine.models import eos_token_ids, load_model, load_tokenizer
    from pmbench.engine.runners.base import RunnerOptions
    from pmbench.engine.runners.rope2d import Rope2DRunner
    from pmbench.suites import load_suite

    tokenizer = load_tokenizer(model_id)
    suite = load_suite(s.suite, tokenizer, data_dir=s.data_dir, branch=s.branch,
                       limit=s.questions)
    log(f"loading {model_id or 'default model'}")
    loaded = load_model(model_id, s.device, s.dtype, attn_implementation="eager")
    config = loaded.model.config
    layers = parse_indices(s.layers, config.num_hidden_layers, "layers")
    heads = parse_indices(s.heads, config.num_attention_heads, "heads")
    tb_layer = tb_figure_layer(s.tb_layer, layers)  # checked before the run, not after
    runner = Rope2DRunner(loaded.model, loaded.tokenizer,
                          RunnerOptions(branch=s.branch, rope2d=dict(s.rope2d)))
    gen = suite.generation(s.max_new_tokens, s.ignore_eos,
                           eos_token_ids(loaded.model, loaded.tokenizer))
    if s.tb_step >= gen.max_new_tokens:  # answers of n tokens take n - 1 decoding steps
        raise BadInput(f"--tb-step {s.tb_step}: with {gen.max_new_tokens} new tokens per answer "
                       f"the last decoding step is {gen.max_new_tokens - 1}")
    recorder = AttentionRecorder(layers, heads, s.branch, tb_step=s.tb_step)
    t0 = time.perf_counter()
    with recorder.attach(loaded.model):
        for i, group in enumerate(suite.groups):
            log(f"{loaded.name}: group {i + 1}/{len(suite.groups)}")
            runner.run_group(group, gen)
    result = summarize(recorder.acc.stats())
    result.update({
        "model": loaded.name,
        "model_path": loaded.path,
        "rope2d": runner.settings.as_dict(),
        "dtype": loaded.dtype,
        "device": loaded.device,
        "n_groups": len(suite.groups),
        "n_questions": sum(len(g.questions) for g in suite.groups),
        "max_new_tokens": gen.max_new_tokens,
        "phases": phase_masses(recorder.acc),
        # null when every branch stopped before --tb-step
        "tb": tb_summary(recorder.tb, s.tb_heads, tb_layer) if recorder.tb else None,
        "max_mass_error": _r(recorder.acc.max_mass_error, 9),
        "wall_s": _r(time.perf_counter() - t0, 3),
    })
    return result


def _record(s: AttnSettings, run_id: str, created: str, analysis: dict[str, Any],
            figures: list[str]) -> dict[str, Any]:
    return {
        "run_id": run_id, "created": created, "kind": "attention", "status": "complete",
        "model": analysis["model"], "suite": s.suite, "branch": s.branch,
        "limit": s.questions, **{k: v for k, v in analysis.items() if k != "model"},
        "definitions": {
            "context_share": CONTEXT_SHARE, "focus_margin": FOCUS_MARGIN, "min_kl": MIN_KL,
            "time_edges": list(TIME_EDGES),
            "scores": "time_focus = KL(H_T||U_T)/KL(H||U), branch_focus = KL(H_B||U_B)/KL(H||U)"
                      " (pmbench.attention.analysis)",
        },
        "figures": figures,
        "settings": asdict(s),
    }


def run_attention(s: AttnSettings, log=lambda msg: None) -> dict[str, Any]:
    """`pmbench attn`: analyse one model (and --compare a second), write records and figures.

    Writes `<output_dir>/<run_id>/attention.json` with the figures beside it; with
    `--compare`, the second model's own record goes to `<run_id>/compare/attention.json`
    (so Table 4 shows it as a row) and the main record holds its summary under `compare`.
    """
    import json

    from pmbench.attention import plots as attention_plots
    from pmbench.records.store import atomic_write_text, new_run_id, now_iso

    s.validate()
    run_id = s.run_id or new_run_id("attn", s.suite, s.branch)
    folder = Path(s.output_dir) / run_id
    if (folder / "attention.json").exists():
        raise BadInput(f"attention run {run_id} already exists in {s.output_dir}")
    created = now_iso()
    analyses = [analyze_model(s, s.model, log)]
    if s.compare:
        analyses.append(analyze_model(s, s.compare, log))
    log("drawing figures")
    figures = attention_plots.write_figures(analyses, folder)
    record = _record(s, run_id, created, analyses[0], figures)
    try:
        from pmbench.measure.envinfo import env_fingerprint

        record["env"] = env_fingerprint(analyses[0]["device"], analyses[0]["dtype"], "eager")
    except ImportError:
        record["env"] = {"threads": torch.get_num_threads()}
    if s.compare:
        other = _record(s, f"{run_id}-compare", created, analyses[1],
                        [f"../{f}" for f in figures])
        other["env"] = record["env"]
        other["compared_with"] = run_id
        atomic_write_text(folder / "compare" / "attention.json",
                          json.dumps(other, indent=1, ensure_ascii=False) + "\n")
        record["compare"] = {"run_id": other["run_id"], "model": other["model"],
                             "rope2d": other["rope2d"], "summary": other["summary"],
                             "record": "compare/attention.json"}
    atomic_write_text(folder / "attention.json",
                      json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record
