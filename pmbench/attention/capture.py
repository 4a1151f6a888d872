"""Capture attention while the rope2d runner decodes, without touching the runner.

`AttentionRecorder` puts a pre-hook on the decoder, which reads each forward pass's
`position_ids` ([2, 1, L] = (t, b), from `pmbench.rope2d.positions`) and the cache length:
the keys of the cache are the earlier passes' tokens in the order they were fed, so their
(t, b) are the positions seen so far. A hook on each chosen layer's attention reads the
weights returned by eager attention ([1, H, Q, K]) and the 4D mask it was given, and adds
them to the grid (`grid.GridAccumulator`) at once: no attention matrix outlives its
forward pass. Context tokens (b = 0) are not queries of interest and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from pmbench.attention.grid import PHASES, GridAccumulator, grid_cells
from pmbench.attention.tb import TB_STEP, TBStep, last_of_each_branch
from pmbench.errors import BadInput


def _decoder(model: Any) -> Any:
    return getattr(model, "model", model)


def _visibility(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Bool [Q, K] from the 4D mask [1, 1, Q, >= K] the attention got (bool, or additive)."""
    m = mask[0, 0, :, :k]
    return m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2


@dataclass
class _Pass:
    """What all layers of one forward pass share."""

    tq: torch.Tensor
    bq: torch.Tensor
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
        pos = kwargs.get("position_ids")
        if pos is None or pos.ndim != 3 or pos.shape[:2] != (2, 1):
            raise BadInput("attention capture expects one packed sequence per forward pass, "
                           "with (t, b) position_ids [2, 1, L] (the rope2d runner's)")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        if past == 0:  # a new sequence: forget the previous group's keys
            self._kt = self._kt[:0]
            self._kb = self._kb[:0]
            self._branch_passes = 0
            self._group += 1
        if past != self._kt.numel():
            raise RuntimeError(f"capture lost track of the cache ({past} vs {self._kt.numel()})")
        tq, bq = pos[0, 0].cpu(), pos[1, 0].cpu()
        self._kt = torch.cat([self._kt, tq])
        self._kb = torch.cat([self._kb, bq])
        rows = (bq > 0).nonzero().flatten()
        step = self._branch_passes
        self._pass = _Pass(tq, bq, step, rows)
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
            visible = _visibility(kwargs["attention_mask"], k).cpu()
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

