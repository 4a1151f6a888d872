"""Sequential vs batch vs rope2d, back to back on the same machine state.

Each cell is one `pmbench run` (its own process, one warm-up, then --repeats timed
repeats), all with the same suite, questions and token volume (--ignore-eos), so the
ratios are taken on one machine state. Prints a Markdown table of output tok/s
(median [min, max] over the repeats), the ratios the rope2d goals are stated in, the
KV cache size, and how far rope2d's decoding step is from the compute roof
(2 x parameters x N FLOP per step at the matmul rate measured here).

    python benchmarks/bench_methods.py                      # float32, the issue's workload
    python benchmarks/bench_methods.py --dtype bfloat16
    python benchmarks/bench_methods.py --cells rope2d:8,batch:8 --limit 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_CELLS = "sequential:8,batch:8,rope2d:8,rope2d:16"


def pmbench_command() -> list[str]:
    """The `pmbench` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("pmbench")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pmbench")
    if found is None:
        sys.exit("pmbench is not installed in this environment (pip install -e .)")
    return [found]


def run_cell(method: str, branch: int, args: argparse.Namespace, out_dir: Path) -> dict:
    cmd = pmbench_command() + [
        "run", "--method", method, "--suite", args.suite, "--branch", str(branch),
        "--limit", str(args.limit), "--max-new-tokens", str(args.max_new_tokens),
        "--ignore-eos", "--repeats", str(args.repeats), "--json",
        "--output-dir", str(out_dir), "--dtype", args.dtype,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", args.model]
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{method} N={branch} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def matmul_rate(dtype: torch.dtype, threads: int | None, n: int = 1024) -> float:
    """Best FLOP/s of an n x n x n torch.matmul over ~1 s (the compute roof)."""
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best, deadline = 0.0, time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def count_parameters(model: str | None, dtype: str) -> int:
    from pmbench.models import load_model

    loaded = load_model(model, device="cpu", dtype=dtype)
    return sum(p.numel() for p in loaded.model.parameters())  # tied weights count once


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:.2f}x" if base else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=DEFAULT_CELLS, help="method:branch,... in run order")
    ap.add_argument("--suite", default="squad")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    ap.add_argument("--model", default=None)
    ap.add_argument("--output-dir", default=None, help="where the run records go (temp dir)")
    args = ap.parse_args()
    cells = [(m, int(n)) for m, n in (c.split(":") for c in args.cells.split(","))]

    out_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="pmbench-bench-"))
    records = {(m, n): run_cell(m, n, args, out_dir) for m, n in cells}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def tok_s(cell):
        return records[cell]["throughput"]["output_tok_s"] if cell in records else None

    def kv(cell):
        return records[cell]["memory"]["kv_cache_bytes"] if cell in records else None

    print(f"\n{args.suite}, {args.limit} questions, {args.max_new_tokens} new tokens "
          f"(--ignore-eos), {args.dtype}, {args.repeats} repeats after a warm-up; "
          f"threads {records[cells[0]]['env'].get('threads')}; load average {load:.1f}\n")
    print("| method | N | output tok/s median [min, max] | vs batch N=8 | vs sequential "
          "| KV cache MiB | KV vs batch N=8 |")
    print("|---|---|---|---|---|---|---|")
    base_b, base_s = tok_s(("batch", 8)), tok_s(("sequential", 8))
    for cell in cells:
        t = records[cell]["throughput"]
        kv_ratio = f"{kv(cell) / kv(('batch', 8)):.2f}" if kv(("batch", 8)) else "–"
        print(f"| {cell[0]} | {cell[1]} | {t['output_tok_s']:.1f} [{t['output_tok_s_min']:.1f}, "
              f"{t['output_tok_s_max']:.1f}] | {ratio(t['output_tok_s'], base_b)} | "
              f"{ratio(t['output_tok_s'], base_s)} | "
              f"{kv(cell) / 2**20:.1f} | {kv_ratio} |")

    if ("rope2d", 16) in records and ("rope2d", 8) in records:
        print(f"\nrope2d N=16 / N=8: {tok_s(('rope2d', 16)) / tok_s(('rope2d', 8)):.2f}x")
    if ("rope2d", 8) in records:
        dtype = getattr(torch, args.dtype)
        rate = matmul_rate(dtype, args.threads)
        params = count_parameters(args.model, args.dtype)
        step_s = records[("rope2d", 8)]["latency"]["tpot_s"]
        roof_s = 2 * params * 8 / rate
        print(f"compute roof, rope2d N=8: matmul {rate / 1e9:.0f} GFLOP/s ({args.dtype}), "
              f"{params / 1e6:.1f}M parameters -> {roof_s * 1e3:.1f} ms per 8-token step; "
              f"measured {step_s * 1e3:.1f} ms ({roof_s / step_s:.0%} of the roof)")
    summary = {f"{m}:{n}": {"run_id": r["run_id"], "throughput": r["throughput"],
                            "memory": r["memory"], "latency": r["latency"]}
               for (m, n), r in records.items()}
    (out_dir / "bench_methods.json").write_text(json.dumps(summary, indent=1))
    print(f"\nrecords: {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
