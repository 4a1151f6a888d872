"""A static decoding step, optionally compiled (gpt-fast's recipe), for every method alike.

Eager decoding drops finished rows and grows the cache view by one position a step, so
every step has new shapes. The static step keeps them fixed for a whole group: every
row decodes until the group ends (a finished row feeds its last token again and its
logits are dropped), the keys and values are written in place at `index` into the
reserved cache (`kvcache.make_static`), and attention covers the whole reservation under
an additive mask whose columns open as they are written. Positions, mask and index are
tensors advanced in place, so `torch.compile` traces one graph per model; the cache
length and the row count are marked dynamic so that later groups reuse it.

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

import time
import weakref
from collections.abc import Callable
from typing import Any

import torch

MODES = ("auto", "on", "static", "off")

_compiled: weakref.WeakKeyDictionary[Any, Callable[..., torch.Tensor]] = (
    weakref.WeakKeyDictionary())
_compile_s = [0.0]


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


def compile_seconds() -> float:
    """Wall seconds of every step call that compiled a graph, in this process."""
    return _compile_s[0]


def _forward(model: Any, **inputs: Any) -> torch.Tensor:
    return model(use_cache=True, **inputs).logits


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def cuda_graph_skips() -> int:
    """Compiled graphs inductor could not run as CUDA graphs, in this process (0 is the
    goal: a skipped graph launches its kernels one by one; the reason goes to its log)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


_recordings = [0, False]  # CUDA graphs recorded in this process; counting started


def _count_recordings() -> None:
    """Count each CUDA graph recording: dynamo runs its start callbacks, with trigger
    CUDAGRAPH_RECORDING, around every recording of a compiled step."""
    if _recordings[1]:
        return
    from torch._dynamo.callback import CallbackTrigger, callback_handler

    def on_start(args: Any) -> None:
        if args.callback_trigger == CallbackTrigger.CUDAGRAPH_RECORDING:
            _recordings[0] += 1

    callback_handler.register_start_callback(on_start)
    _recordings[1] = True


def cuda_graph_recordings() -> int:
    """CUDA graphs recorded in this process since the first compiled step (a static step
    records one per bucket of shapes and addresses; more means it was re-recorded)."""
    return _recordings[0]


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
    fn = _compiled.get(model)
    if fn is None:
        # Every model's step shares `_forward`'s code object, and dynamo caches graphs per
        # code object: past 8 (a process that runs many models, methods or shapes, as
        # gpu_check does) it would silently run the step eagerly under "compile on". Allow
        # more, and make running out an error rather than an eager step.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        if model.device.type == "cuda":
            _count_recordings()
            graph = torch.compile(_forward, mode="reduce-overhead")
        else:
            graph = torch.compile(_forward, options={"freezing": True})

        def fn(**inputs: Any) -> torch.Tensor:
            before, t0 = _graphs(), time.perf_counter()
            out = graph(model, **inputs)
            if _graphs() != before:
                _compile_s[0] += time.perf_counter() - t0
            return out

        _compiled[model] = fn
    return fn


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


class StaticRows:
    """Static decoding of R rows, one token per row per step (sequential, batch, prefix).

    `visible` [R, S] says which of the S filled cache columns each row sees; `pos` [R]
    is each row's next position. Row r is stream r, for the whole group. With a `pool`
    (the runner's kvcache.BufferPool, whose buffers the cache holds too) every tensor
    the step reads is reused per (rows, bucket), filled afresh, never reallocated.
    """

    def __init__(self, model: Any, cache: Any, visible: torch.Tensor, pos: torch.Tensor,
                 compiled: bool, pool: Any = None, **extra: Any):
        from pmbench.engine.kvcache import make_static
        from pmbench.rope2d.masks import additive

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
        from pmbench.engine.kvcache import end_static

        end_static(self.cache, self.filled)
