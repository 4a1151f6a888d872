"""A decoding step's attention alone, per method, as the shared context grows.

    .venv/bin/python benchmarks/step_attention.py [--rows 16] [--contexts 256,1024,4096]

The crossover map (results/reference/crossover-cpu) shows how each method's decoding
step grows with the shared context; this times the attention part of that growth on its
own, with the default model's shapes (30 layers, 9 query and 3 key/value heads of 64,
float32) and the kernels the runners call, one decoding step of N rows over a context
of C tokens and 16 + 8 own tokens per row:

- prefix: shared_prefix_attention (the context read once for all rows, cascade merge);
- rope2d: gqa_sdpa over one packed cache of C + N x 24 keys with a boolean mask;
- batch: transformers' sdpa with a padding mask over N copies (keys and values copied
  per query head by repeat_kv, as transformers does with a mask), and gqa_sdpa on the
  same inputs (no copy);
- sequential: one row, no mask (transformers then matches heads inside the kernel);
- the prefix part of prefix's attention alone: all rows' queries of a key/value head
  against the context, by torch's fused CPU kernel (what the runner calls) and by two
  batched matmuls;
- each of those two matmuls alone (scores = Q K^T, then P V; each half the attention's
  FLOPs): the bound on any attention built from torch's matmuls at these shapes (a head
  dimension of 64 and N x 3 query rows per key/value head), whatever fuses them.

Each line: milliseconds per step (all layers, best of the repeats), the step's attention
roof max(KV bytes / peak bandwidth, attention FLOPs / peak matmul) at the machine's
measured peaks (pmbench.measure.roofline.machine_peaks), and their ratio.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from pmbench.engine.attention_kernels import (
    attention_with_lse,
    gqa_sdpa,
    shared_prefix_attention,
)
from pmbench.measure.roofline import machine_peaks

LAYERS, HEADS, KV_HEADS, DIM, OWN = 30, 9, 3, 64, 24


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times) * LAYERS


def matmul_lse(q, k, v, scale: float):
    """The prefix part as two batched matmuls and a log-sum-exp (no fused kernel)."""
    scores = (q @ k.transpose(-1, -2)) * scale
    lse = torch.logsumexp(scores, dim=-1)
    return torch.exp(scores - lse[..., None]) @ v, lse


def kernels(rows: int, ctx: int) -> dict[str, tuple]:
    """name -> (callable, KV positions it must read[, share of the attention's FLOPs])."""
    r = torch.randn
    q = r(rows, HEADS, 1, DIM)
    own_k, own_v = r(rows, KV_HEADS, OWN, DIM), r(rows, KV_HEADS, OWN, DIM)
    layer = SimpleNamespace(prefix_keys=r(1, KV_HEADS, ctx, DIM),
                            prefix_values=r(1, KV_HEADS, ctx, DIM))
    cache = SimpleNamespace(layers=[layer])
    module = SimpleNamespace(layer_idx=0, is_causal=False, num_key_value_groups=3)
    q_all = r(1, KV_HEADS, rows * HEADS // KV_HEADS, DIM)  # prefix's queries per kv head
    packed = ctx + rows * OWN
    pk, pv = r(1, KV_HEADS, packed, DIM), r(1, KV_HEADS, packed, DIM)
    pmask = torch.rand(1, 1, rows, packed) > 0.5
    pmask[..., :ctx] = True
    scores = torch.empty(1, KV_HEADS, q_all.shape[2], ctx)
    bk, bv = r(rows, KV_HEADS, ctx + OWN, DIM), r(rows, KV_HEADS, ctx + OWN, DIM)
    bmask = torch.zeros(rows, 1, 1, ctx + OWN)
    sk, sv = r(1, KV_HEADS, ctx + OWN, DIM), r(1, KV_HEADS, ctx + OWN, DIM)
    return {
        "prefix": (lambda: shared_prefix_attention(module, q, own_k, own_v, None,
                                                   shared_prefix=cache),
                   ctx + rows * OWN),
        "prefix part, fused": (lambda: attention_with_lse(
            q_all, layer.prefix_keys, layer.prefix_values, None, DIM**-0.5), ctx),
        "prefix part, bmm": (lambda: matmul_lse(
            q_all, layer.prefix_keys, layer.prefix_values, DIM**-0.5), ctx),
        "prefix part, QK^T": (lambda: torch.matmul(q_all, layer.prefix_keys.transpose(-1, -2),
                                                   out=scores), ctx / 2, 0.5),
        "prefix part, PV": (lambda: scores @ layer.prefix_values, ctx / 2, 0.5),
        "rope2d": (lambda: gqa_sdpa(module, q.transpose(0, 2), pk, pv, pmask), packed),
        "batch (repeat_kv)": (lambda: sdpa_attention_forward(module, q, bk, bv, bmask),
                              rows * (ctx + OWN)),
        "batch (gqa)": (lambda: gqa_sdpa(module, q, bk, bv, bmask), rows * (ctx + OWN)),
        "sequential": (lambda: sdpa_attention_forward(module, q[:1], sk, sv, None),
                       ctx + OWN),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--contexts", default="256,1024,4096")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    peaks = machine_peaks("cpu", "float32")
    bw, flops = peaks["copy_bytes_s"], peaks["matmul_flops"]
    print(f"peaks: {bw / 1e9:.1f} GB/s, {flops / 1e9:.1f} GFLOP/s; {torch.get_num_threads()} "
          f"threads; ms per decoding step, all {LAYERS} layers")
    with torch.inference_mode():
        for ctx in map(int, args.contexts.split(",")):
            for name, (fn, positions, *share) in kernels(args.rows, ctx).items():
                rows = 1 if name == "sequential" else args.rows
                keys = ctx if name.startswith("prefix part") else ctx + OWN
                kv_bytes = positions * KV_HEADS * DIM * 4 * 2 * LAYERS
                attn_flops = 4.0 * LAYERS * HEADS * DIM * rows * keys * (share or [1])[0]
                roof = 1e3 * max(kv_bytes / bw, attn_flops / flops)
                ms = best_ms(fn, args.repeats)
                print(f"context {ctx:5d}  {name:18s} {ms:7.2f} ms  roof {roof:6.2f} ms  "
                      f"x{ms / roof:5.1f}")


if __name__ == "__main__":
    main()
