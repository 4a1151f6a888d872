"""A static decoding step, optionally compiled (gpt-fast's recipe), for every method alike.

Eager decoding drops finished rows and grows the cache view by one position a step, so
every step has new shapes. The static step keeps them fixed for a whole group: every
row decodes until the group ends (a finished row feeds its last token again and its
logits are dropped), the keys and values are written in place at `index` into the
reserved cache (`kvcache.make_static`), and attention covers the whole reservation under
an additive mask whose columns open as they are written. Positions, mask and index are
tensors advanced in place, so `torch.compile` traces one graph per model; the cache
length and the row count are marked dynamic so that later groups reuse it. The steps
themselves are `engine.rows.StaticRows` (sequential, batch, prefix) and rope2d's
`StaticBranches`; this module holds what they share.

`--compile` (RunSettings.compile):
    off     the eager step (the reference: rows leave, shapes change)
    static  the static step, eager (what the fixed shapes alone change)
    on      the static step, compiled with `torch.compile` (inductor; weights frozen on CPU;
            on CUDA mode="reduce-overhead": the step replays as one CUDA graph, its buffers
            -- cache, mask, positions, tokens -- at static addresses, as in gpt-fast)
    auto    on for CUDA; off on CPU, where the compiled step gains a little tok/s and
            costs far more seconds of compilation per process than a short run wins
            back (benchmarks/README.md, "The compiled step"); "on" everywhere or
            nowhere keeps the methods alike

The static step's tensors (the cache's buffers, the mask, positions, tokens and write
index) come from the runner's `kvcache.BufferPool`, one set per (rows, reservation bucket
of 64 positions), filled afresh for each group and never reallocated: a CUDA graph replays
only on the shapes and addresses it recorded, so each bucket is recorded once.

Compilation and recording happen at the first call of a new shape, which a run's untimed
warm-up makes: one group of each bucket (`runners.base.warmup_groups`). `compile_counters()`
gives the process's compile seconds, CUDA graph skips and recordings, and run.json records
each run's own share, before and within its timed groups (`jobs.run._compile_record`).
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch

MODES = ("auto", "on", "static", "off")


def resolve(mode: str, device: torch.device | str) -> str:
    """`mode` with auto decided for `device`: "on", "static" or "off"."""
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "auto":
        return "on" if torch.device(device).type == "cuda" else "off"
    return mode


def static_possible(cache: Any) -> bool:
    """Whether `cache` can decode in fixed shapes: reserved layers only (a sliding-window
    model's DynamicCache cannot; it decodes eagerly)."""
    from pmbench.engine.kvcache import ReservedLayer

    return all(isinstance(layer, ReservedLayer) for layer in cache.layers)


def _forward(model: Any, **inputs: Any) -> torch.Tensor:
    return model(use_cache=True, **inputs).logits


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class Compiler:
    """Each model's compiled step, and the seconds and CUDA graph recordings they cost.

    One per process (`compiler()`), because what it keeps track of is: dynamo caches
    graphs per code object, which every model's step shares (`_forward`'s), its counters
    are the process's, and a recording is announced to callbacks registered once per
    process. Runs that share a process (benchmarks/gpu_check.py) reuse a model's
    compiled step and record their own share of the counts as a difference.
    """

    def __init__(self) -> None:
        self.steps: weakref.WeakKeyDictionary[Any, Callable[..., torch.Tensor]] = (
            weakref.WeakKeyDictionary())
        self.seconds = 0.0  # wall seconds of every step call that compiled a graph
        self.recordings = 0  # CUDA graphs recorded since the first compiled CUDA step
        self._counting = False

    def step(self, model: Any) -> Callable[..., torch.Tensor]:
        """`forward(**inputs) -> logits` of `model`, compiled at its first request."""
        fn = self.steps.get(model)
        if fn is None:
            fn = self.steps[model] = self._compile(model)
        return fn

    def _compile(self, model: Any) -> Callable[..., torch.Tensor]:
        # Every model's step shares `_forward`'s code object, and dynamo caches graphs per
        # code object: past 8 (a process that runs many models, methods or shapes, as
        # gpu_check does) it would silently run the step eagerly under "compile on". Allow
        # more, and make running out an error rather than an eager step.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        if model.device.type == "cuda":
            self._count_recordings()
            graph = torch.compile(_forward, mode="reduce-overhead")
        else:
            graph = torch.compile(_forward, options={"freezing": True})

        def fn(**inputs: Any) -> torch.Tensor:
            before, t0 = _graphs(), time.perf_counter()
            out = graph(model, **inputs)
            if _graphs() != before:
                self.seconds += time.perf_counter() - t0
            return out

        return fn

    def _count_recordings(self) -> None:
        """Count each CUDA graph recording: dynamo runs its start callbacks, with trigger
        CUDAGRAPH_RECORDING, around every recording of a compiled step."""
        if self._counting:
            return
        from torch._dynamo.callback import CallbackTrigger, callback_handler

        def on_start(args: Any) -> None:
            if args.callback_trigger == CallbackTrigger.CUDAGRAPH_RECORDING:
                self.recordings += 1

        callback_handler.register_start_callback(on_start)
        self._counting = True


@functools.cache
def compiler() -> Compiler:
    """The process's `Compiler`."""
    return Compiler()


def compile_seconds() -> float:
    """Wall seconds of every step call that compiled a graph, in this process."""
    return compiler().seconds


def cuda_graph_skips() -> int:
    """Compiled graphs inductor could not run as CUDA graphs, in this process (0 is the
    goal: a skipped graph launches its kernels one by one; the reason goes to its log)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


def cuda_graph_recordings() -> int:
    """CUDA graphs recorded in this process since the first compiled step (a static step
    records one per bucket of shapes and addresses; more means it was re-recorded)."""
    return compiler().recordings


def compile_counters() -> tuple[float, int, int]:
    """(compile seconds, CUDA graph skips, CUDA graph recordings) so far in this process:
    process-wide totals, so a run records the difference over its own warm-up and timed
    groups (several runs share one process in benchmarks/gpu_check.py)."""
    return compile_seconds(), cuda_graph_skips(), cuda_graph_recordings()


def static_addresses(*tensors: torch.Tensor) -> None:
    """Tell a CUDA-graph step these buffers keep their address across calls (they are
    updated in place), so the graph reads and writes them directly instead of copying
    them in, and in-place writes to them (the KV cache) do not disable the graph."""
    for t in tensors:
        if t.device.type == "cuda":
            torch._dynamo.mark_static_address(t)


def step_forward(model: Any, compiled: bool) -> Callable[..., torch.Tensor]:
    """`forward(**inputs) -> logits`, compiled once per model when `compiled`."""
    if not compiled:
        return lambda **inputs: _forward(model, **inputs)
    return compiler().step(model)


def mark_dynamic(*tensors: torch.Tensor, dims: tuple[int, ...]) -> None:
    """Let the compiled graph take these tensors at other sizes along `dims` (the cache
    length, the rows), so a new group does not recompile."""
    for t in tensors:
        for d in dims:
            if t.shape[d] > 1:
                torch._dynamo.maybe_mark_dynamic(t, d)


def step_buffers(pool: Any, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
                 device: torch.device | str) -> dict[str, torch.Tensor]:
    """A static step's own tensors (mask, positions, tokens, write index) by name: from
    `pool` (a kvcache.BufferPool), so a group of a bucket seen before reuses the addresses
    a CUDA graph recorded, else new."""
    return {name: (pool.take(("step", name), shape, dtype, device) if pool is not None
                   else torch.empty(shape, dtype=dtype, device=device))
            for name, (shape, dtype) in shapes.items()}
