"""llama.cpp's own decoding step, with no harness around it: the yardstick for the
`llamacpp` runner.

Replays a `llamacpp` run's groups (its groups.jsonl: context length, question tokens,
decoding steps) on the same GGUF and threads: the context as sequence 0, copied to the
N sequences, the questions, then every decoding step as one `llama_batch` of N tokens.
The batch is filled before the clock starts and nothing is read after it stops, so the
time is `llama_decode` alone. `bench_methods.py --peers` compares it with the runner's
own step (pmbench's loop: filling the batch, copying logits, picking tokens) and fails
its check when the runner is more than 10% slower.

    python benchmarks/llamacpp_decode.py RUN_DIR [--threads T]     # prints JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from pmbench.engine.runners.llamacpp import N_BATCH, LlamaCppEngine


def replay(engine: LlamaCppEngine, context: int, question: int, n: int, steps: int,
           repeats: int) -> list[float]:
    """Seconds of each timed `llama_decode` step (all N sequences live), every repeat."""
    lc, token = engine.lc, 1000  # the ids do not change the work
    engine.reserve(context + n * (question + steps + 1), n)
    times = []
    for _ in range(repeats):
        engine.clear()
        for start in range(0, context, N_BATCH):
            engine.decode([(token, t, 0, False)
                           for t in range(start, min(context, start + N_BATCH))])
        for k in range(1, n):
            engine.seq_cp(0, k, 0, context)
        engine.decode([(token, context + j, k, j == question - 1)
                       for k in range(n) for j in range(question)])
        pos = context + question
        for _ in range(steps):
            engine.fill([(token, pos, k, True) for k in range(n)])
            t0 = time.perf_counter()
            if lc.llama_decode(engine.ctx, engine.batch) != 0:
                raise RuntimeError("llama_decode failed")
            times.append(time.perf_counter() - t0)
            pos += 1
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a `pmbench run --method llamacpp` folder")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    record = json.loads((args.run_dir / "run.json").read_text())
    groups = [json.loads(line) for line in (args.run_dir / "groups.jsonl").open()]
    threads = args.threads or record["llamacpp"]["n_threads"]
    torch.set_num_threads(threads)
    engine = LlamaCppEngine(Path(record["llamacpp"]["gguf"]), 4096, record["branch"], threads)
    raw, runner = [], []
    replay(engine, 64, 4, record["branch"], 2, 1)  # warm-up (thread pool, buffers, pages)
    for g in groups:
        n, steps = g["n_questions"], g["decode_steps"]
        if not steps:
            continue
        # prompt_tokens counts the context once per question (jobs/run.py)
        question = max(1, round(g["prompt_tokens"] / n - g["context_tokens"]))
        times = replay(engine, g["context_tokens"], question, n, steps, len(g["decode_s"]))
        raw.append(statistics.median(times) * steps)
        runner.append(statistics.median(g["decode_s"]))
    steps = sum(g["decode_steps"] for g in groups)
    engine.close()
    print(json.dumps({
        "steps": steps,
        "raw_step_s": sum(raw) / steps,
        "runner_step_s": sum(runner) / steps,
        "runner_over_raw": sum(runner) / sum(raw),
        "threads": threads,
    }))


if __name__ == "__main__":
    main()
