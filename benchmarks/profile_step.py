"""Where a decoding step's time goes: torch.profiler over one group, per method.

    .venv/bin/python benchmarks/profile_step.py [--method rope2d] [--branch 8] [--tokens 16]
                                                [--compile off|static|on]
                                                [--context-len 4096]  (synthetic suite)

Loads the default model as `pmbench run` does (float32, prepacked linears), builds one
SQuAD group of #branch questions, runs it once untimed (warm-up; with --compile on, that
compiles), then once under the profiler, and prints the step time, the time reading the
weights takes at the measured peak bandwidth, and the operators that take the most self
CPU time. Python's own share is the step's wall time minus the operators' self time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from pmbench.engine.cpu_linear import prepack_linears
from pmbench.engine.models import eos_token_ids, load_model, load_tokenizer
from pmbench.engine.runners.base import RunnerOptions, get_runner
from pmbench.measure.roofline import machine_peaks, model_weights
from pmbench.suites import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="rope2d")
    parser.add_argument("--branch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16, help="decoding steps per question")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--context-len", type=int, default=None,
                        help="profile the synthetic suite with this shared context (16-token "
                             "questions) instead of SQuAD")
    parser.add_argument("--compile", default="off", choices=("off", "static", "on"),
                        help="the decoding step (pmbench run --compile)")
    args = parser.parse_args()

    tokenizer = load_tokenizer(None)
    loaded = load_model(None, "cpu", "float32")
    prepack_linears(loaded.model)
    if args.context_len is None:
        suite = load_suite("squad", tokenizer, branch=args.branch, limit=args.branch * 2)
    else:
        suite = load_suite("synthetic", tokenizer, branch=args.branch, limit=args.branch * 2,
                           context_len=args.context_len, answer_len=str(args.tokens))
    gen = suite.generation(args.tokens, True, eos_token_ids(loaded.model, tokenizer))
    runner = get_runner(args.method)(loaded.model, tokenizer,
                                     RunnerOptions(branch=args.branch, compile=args.compile))
    warm, group = suite.groups[0], suite.groups[1]
    runner.run_group(warm, gen)

    with profile(activities=[ProfilerActivity.CPU]) as prof, _marked_steps(runner):
        t0 = time.perf_counter()
        out = runner.run_group(group, gen)
        wall = time.perf_counter() - t0
    steps = max(out.decode_steps, 1)
    step_s = out.decode_s / steps
    _, weight_bytes = model_weights(loaded.model)
    peak = machine_peaks("cpu", "float32")["copy_bytes_s"]
    ops = prof.key_averages()
    self_total = sum(e.self_cpu_time_total for e in ops) / 1e6
    print(f"{args.method} N={args.branch}: {steps} decoding steps, step {1e3 * step_s:.1f} ms; "
          f"reading {weight_bytes / 1e6:.0f} MB of weights at the peak {peak / 1e9:.1f} GB/s "
          f"takes {1e3 * weight_bytes / peak:.1f} ms ({step_s * peak / weight_bytes:.2f}x)")
    print(f"group wall {wall:.2f} s (prefill {out.prefill_s:.2f} s); operators' self CPU "
          f"time {self_total:.2f} s over {torch.get_num_threads()} threads")
    print(ops.table(sort_by="self_cpu_time_total", row_limit=args.top))
    print(f"decoding steps only ({steps}), self CPU ms per step, summed over threads:")
    for name, ms in _step_ops(prof, steps)[: args.top]:
        print(f"  {ms:8.2f}  {name}")


STEP = "pmbench.decode_step"


@contextlib.contextmanager
def _marked_steps(runner):
    """Each decoding step of `runner` inside a profiler range named STEP: the runners
    call `decode_loop` by the name their module imported, so it is wrapped there."""
    module = sys.modules[type(runner).__module__]
    original = module.decode_loop

    def marked(prefill, step, *args, **kwargs):
        def timed_step(*a, **k):
            with record_function(STEP):
                return step(*a, **k)
        return original(prefill, timed_step, *args, **kwargs)

    module.decode_loop = marked
    try:
        yield
    finally:
        module.decode_loop = original


def _step_ops(prof, steps: int) -> list[tuple[str, float]]:
    """Self CPU time per operator inside the STEP ranges (the prefill left out), in ms
    per step, largest first."""
    events = list(prof.events())
    ranges = [(e.time_range.start, e.time_range.end) for e in events if e.name == STEP]
    totals: dict[str, float] = {}
    for e in events:
        if e.name == STEP or not any(a <= e.time_range.start < b for a, b in ranges):
            continue
        totals[e.name] = totals.get(e.name, 0.0) + e.self_cpu_time_total / 1e3 / steps
    return sorted(totals.items(), key=lambda kv: -kv[1])


if __name__ == "__main__":
    main()
