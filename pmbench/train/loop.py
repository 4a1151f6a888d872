"""The one training loop, shared by pretraining and fine-tuning (accelerate).

It knows nothing about where batches come from: `batch_fn(step, micro)` returns a
collated batch (see `data.collate`), and every batch is a function of its step, so a
resumed run replays exactly the batches an uninterrupted one would have seen. The
loop owns the optimizer (AdamW), the schedule (linear warm-up, cosine decay to 10%),
gradient accumulation and clipping, and the resumable state: `accelerator.save_state`
(model, optimizer, scheduler, RNG) plus `progress.json` (step, loss curve, tokens,
time), written to a fresh folder and swapped in, so an interruption at any moment
leaves the last complete state.

Runs on CPU as is, and on several GPUs or machines under `accelerate launch`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pmbench.errors import BadInput
from pmbench.records.store import read_record
from pmbench.records.train import remove_path
from pmbench.safe_io import atomic_write_text
from pmbench.train.data import (
    IGNORE,
    PackedExample,
    branch_loss,
    collate,
    shared_context_groups,
    shared_context_loss,
)

PROGRESS_FILE = "progress.json"
Batch = dict[str, torch.Tensor]


@dataclass
class LoopConfig:
    steps: int
    lr: float
    grad_accum: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    min_lr_ratio: float = 0.1
    eval_every: int = 0  # 0: no held-out loss during training
    save_every: int = 0  # 0: save the resumable state only at the end


@dataclass
class TrainState:
    """What the loop has done so far; saved with the resumable state."""

    step: int = 0
    loss_curve: list[list[float]] = field(default_factory=list)  # [[step, loss], ...]
    heldout_curve: list[list[float]] = field(default_factory=list)
    tokens: int = 0  # tokens fed, padding excluded (all processes)
    wall_s: float = 0.0  # training time over every session

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.wall_s if self.wall_s > 0 else None

    @property
    def final_loss(self) -> float | None:
        """Mean training loss of the last 10 steps (one step's loss is noisy)."""
        tail = [loss for _, loss in self.loss_curve[-10:]]
        return sum(tail) / len(tail) if tail else None


def cosine_with_warmup(cfg: LoopConfig) -> Callable[[int], float]:
    """LR multiplier for optimizer step s (0-based): linear warm-up, cosine to min_lr_ratio."""

    def factor(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (s - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def example_losses(model: Any, packed: list[PackedExample], device: torch.device,
                   pad_id: int = 0, batch_size: int = 8) -> list[list[float]]:
    """[summed cross-entropy, target count] of each of `packed`, in its order (eval mode,
    restored after): what a paired bootstrap over held-out examples resamples.

    Examples that share a context (the same questions at a small #branch come from few
    paragraphs) compute it once (`shared_context_loss`); the others go through in batches.
    """
    was_training = model.training
    model.eval()
    index = {id(p): i for i, p in enumerate(packed)}
    out: list[list[float]] = [[0.0, 0]] * len(packed)
    groups, rest = shared_context_groups(packed)
    for group in groups:
        for p, loss in zip(group, shared_context_loss(model, group), strict=True):
            out[index[id(p)]] = loss
    for i in range(0, len(rest), batch_size):
        chunk = rest[i:i + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        per_row = branch_loss(model, batch, reduction="none").view(len(chunk), -1).sum(-1)
        counts = (batch["targets"] != IGNORE).sum(-1)
        for p, loss, n in zip(chunk, per_row.tolist(), counts.tolist(), strict=True):
            out[index[id(p)]] = [loss, n]
    model.train(was_training)
    return out


def mean_loss(losses: list[list[float]]) -> float:
    """Token-weighted mean cross-entropy of `example_losses`."""
    return sum(loss for loss, _ in losses) / max(sum(n for _, n in losses), 1)


def evaluate_loss(model: Any, packed: list[PackedExample], device: torch.device,
                  pad_id: int = 0, batch_size: int = 8) -> float:
    """Token-weighted mean cross-entropy of `packed` examples."""
    return mean_loss(example_losses(model, packed, device, pad_id, batch_size))


def _save(accelerator: Any, state_dir: Path, state: TrainState) -> None:
    """Write the state to a fresh folder, then swap it in (the old one survives a crash)."""
    fresh = state_dir.with_name(state_dir.name + ".new")
    if accelerator.is_main_process:  # a link planted there goes, its target untouched
        remove_path(fresh)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(fresh))
    if accelerator.is_main_process:
        atomic_write_text(fresh / PROGRESS_FILE, json.dumps(asdict(state)) + "\n")
        old = state_dir.with_name(state_dir.name + ".old")
        remove_path(old)
        if os.path.lexists(state_dir):
            state_dir.rename(old)
        fresh.rename(state_dir)
        remove_path(old)
    accelerator.wait_for_everyone()


def load_progress(state_dir: Path) -> TrainState | None:
    """The saved progress of a run being resumed (None before its first save); read as any
    record of a run folder is (no link, no FIFO, capped), BadInput when it is unusable."""
    path = state_dir / PROGRESS_FILE
    if not os.path.lexists(path):
        return None
    record = read_record(path, "training progress")
    record.pop("schema_version", None)
    try:
        return TrainState(**record)
    except TypeError:
        raise BadInput(f"corrupt training progress: {path}") from None


def train_loop(
    accelerator: Any,
    model: Any,
    batch_fn: Callable[[int, int], Batch],
    cfg: LoopConfig,
    state_dir: Path,
    *,
    resume: bool = False,
    heldout_fn: Callable[[Any], float] | None = None,
    on_save: Callable[[TrainState, Any], None] | None = None,
    show_progress: bool = True,
) -> tuple[Any, TrainState]:
    """Train `model` for `cfg.steps` optimizer steps; return (prepared model, state).

    `batch_fn(step, micro)` gives micro-batch `micro` of step `step` (1-based) for this
    process. With `resume`, the state in `state_dir` is loaded and training continues
    after its step. `heldout_fn(model)` is recorded before the first step and every
    `cfg.eval_every` steps. `on_save(state, model)` runs on the main process after every
    save, and again on the state a run resumes from (what it writes there, it writes once:
    a run cut between its save and `on_save` finishes that step's work on resuming).
    """
    optimizer, scheduler = _optimizer(model, cfg)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = TrainState()
    if resume and load_progress(state_dir) is not None:
        accelerator.load_state(str(state_dir))
        state = load_progress(state_dir)
        if on_save and accelerator.is_main_process:
            on_save(state, model)
    if state.step == 0 and heldout_fn:  # where training starts from
        state.heldout_curve.append([0, heldout_fn(model)])
    model.train()

    console = Console(stderr=True)
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=console, disable=not (show_progress and accelerator.is_main_process))
    session_start = time.perf_counter()
    wall_before = state.wall_s
    with bar:
        task = bar.add_task("training", total=cfg.steps, completed=state.step)
        while state.step < cfg.steps:
            step = state.step + 1
            step_loss, tokens = _optimizer_step(accelerator, model, batch_fn, step, cfg,
                                                optimizer, scheduler)
            state.tokens += tokens
            state.step = step
            state.loss_curve.append([step, float(step_loss)])
            state.wall_s = wall_before + time.perf_counter() - session_start
            if heldout_fn and cfg.eval_every and step % cfg.eval_every == 0:
                state.heldout_curve.append([step, heldout_fn(model)])
            tok_s = state.tokens_per_s or 0.0
            bar.update(task, completed=step,
                       description=f"step {step} loss {float(step_loss):.4f} {tok_s:,.0f} tok/s")
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
                _save(accelerator, state_dir, state)
                if on_save and accelerator.is_main_process:
                    on_save(state, model)
    return model, state


def _optimizer(model: Any, cfg: LoopConfig) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) and its cosine schedule with warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), foreach=True,  # one kernel per group, not per tensor
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(cfg))


def _optimizer_step(accelerator: Any, model: Any, batch_fn: Callable[[int, int], Batch],
                    step: int, cfg: LoopConfig, optimizer: Any,
                    scheduler: Any) -> tuple[torch.Tensor, int]:
    """One optimizer step over `cfg.grad_accum` micro-batches (gradients synchronised on
    the last only); its mean loss and tokens, reduced over processes."""
    losses, tokens = [], 0
    for micro in range(cfg.grad_accum):
        batch = {k: v.to(accelerator.device) for k, v in batch_fn(step, micro).items()}
        tokens += int(batch["lengths"].sum())
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            loss = branch_loss(model, batch)
        accelerator.backward(loss / cfg.grad_accum)
        losses.append(loss.detach())
    if cfg.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    step_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean")
    total = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum")
    return step_loss, int(total)
