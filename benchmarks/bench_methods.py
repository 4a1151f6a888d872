"""Sequential vs batch vs prefix vs rope2d, back to back on the same machine state.

Each cell is one `pmbench run` (its own process, one warm-up, then --repeats timed
repeats), all with the same suite, questions and token volume (--ignore-eos), so the
ratios are taken on one machine state. Every ratio compares methods at the same N: the
group size decides the shared context (SQuAD joins paragraphs until a group holds N
questions), so sequential is run at each N too. Prints a Markdown table of output tok/s
(median [min, max] over the repeats), prefill and decode time, the ratios to prefix,
batch and sequential, the KV cache size, and how far rope2d's decoding step is from the
compute roof (2 x parameters x N FLOP per step at the matmul rate measured here).

prefix is what a serving engine already gives (the shared context prefilled once, N
rows reading its KV): rope2d / prefix is what 2D positions and one packed sequence add.

On a shared machine, other jobs take a share of the cores that drifts from one run to
the next, and wall-clock ratios between runs made minutes apart drift with it. The
table therefore also gives output tokens per CPU-second of the run's own process
(tok/s divided by `telemetry.cpu_util_mean`): with `--threads 1` that is the rate of
one busy core whatever the others do, and the ratios on it are the robust ones.

    python benchmarks/bench_methods.py                      # float32, the issue's workload
    python benchmarks/bench_methods.py --dtype bfloat16
    python benchmarks/bench_methods.py --cells rope2d:8,prefix:8 --limit 16
    python benchmarks/bench_methods.py --cells rope2d:8 --wait-policy both

`--peers` adds llama.cpp beside them, at each N the cells use: the `llamacpp` runner on the
shipped GGUF (Q4_1, what a CPU user runs) and on a float32 copy of it (`gguf_f32.py`: the
same bytes per step as the torch methods), both in llama.cpp's shared-prefix parallel
mode (the context once, copied to N sequences of one unified KV cache, N tokens per
step). Then `llamacpp_decode.py` replays each llama.cpp run's groups with nothing but
`llama_decode` in the clock, and the script checks that the runner's step is within 10%
of it (exit status 1 when not), so the peer is never handicapped by pmbench's harness.

    python benchmarks/bench_methods.py --cells rope2d:8 --limit 8 --peers

OpenMP's wait policy is set for each `pmbench run` process (OMP_WAIT_POLICY): ACTIVE by
default, where idle OpenMP threads spin between parallel regions, which measured fastest
for one process at a time (benchmarks/README.md, "Thread policy"); PASSIVE (sleep) is
what several processes at once need, as in `make test`. `--wait-policy both` runs every
cell under each policy, in alternating order, and puts them side by side.

`--compile off,on` does the same for the decoding step (`pmbench run --compile`): the
eager step and the static compiled one, every cell in both, side by side; a variant is
then named POLICY/MODE (ACTIVE/on). llama.cpp cells run once per policy (no torch step).

    python benchmarks/bench_methods.py --cells sequential:8,rope2d:8 --compile off,on --peers
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pmbench.measure.roofline import matmul_rate

METHODS = ("sequential", "batch", "prefix", "rope2d")
PEERS = ("llamacpp", "llamacpp-f32")  # the shipped GGUF, and its float32 copy
HARNESS_LIMIT = 1.10  # the llamacpp runner's step / llama_decode's own, at most
DEFAULT_CELLS = ",".join(f"{m}:{n}" for n in (4, 8, 16) for m in METHODS)
WAIT_POLICIES = {"active": ("ACTIVE",), "passive": ("PASSIVE",), "both": ("PASSIVE", "ACTIVE")}
DEFAULT_WAIT_POLICY = "active"


def pmbench_command() -> list[str]:
    """The `pmbench` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("pmbench")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pmbench")
    if found is None:
        sys.exit("pmbench is not installed in this environment (pip install -e .)")
    return [found]


def f32_gguf(model: str | None) -> Path:
    """The float32 copy of the GGUF the llama.cpp peer runs (made once, then cached)."""
    from gguf_f32 import dequantize_gguf

    from pmbench.engine.models import default_gguf

    src = Path(model) if model and model.endswith(".gguf") else default_gguf()
    cache = Path(os.environ.get("PMBENCH_CACHE") or Path.home() / ".cache" / "pmbench")
    dst = cache / "peers" / f"{src.stem}-f32.gguf"
    if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
        dst.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {dst} (float32 copy of {src.name})", file=sys.stderr)
        dequantize_gguf(src, dst)
    return dst


def cell_label(record: dict) -> str:
    """A record's method as the table names it (llamacpp-f32 for the float32 GGUF)."""
    gguf = (record.get("llamacpp") or {}).get("gguf", "")
    return "llamacpp-f32" if gguf.endswith("-f32.gguf") else record["method"]


def split_variant(variant: str) -> tuple[str, str | None]:
    """"ACTIVE/on" -> ("ACTIVE", "on"); "ACTIVE" -> ("ACTIVE", None)."""
    policy, _, mode = variant.partition("/")
    return policy, mode or None


def run_cell(method: str, branch: int, variant: str, args: argparse.Namespace,
             out_dir: Path) -> dict:
    """One `pmbench run` in its own process, under the variant's OMP_WAIT_POLICY (and
    --compile mode); its run.json."""
    policy, compile_mode = split_variant(variant)
    model = args.model
    if method == "llamacpp-f32":
        method, model = "llamacpp", str(f32_gguf(args.model))
    cmd = pmbench_command() + [
        "run", "--method", method, "--suite", args.suite, "--branch", str(branch),
        "--limit", str(args.limit), "--max-new-tokens", str(args.max_new_tokens),
        "--ignore-eos", "--repeats", str(args.repeats), "--json",
        "--output-dir", str(out_dir), "--dtype", args.dtype,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if model:
        cmd += ["--model", model]
    if args.no_cpu_prepack:
        cmd += ["--no-cpu-prepack"]
    if method == "prefix":
        cmd += ["--prefix-kv", args.prefix_kv]
    if compile_mode and method != "llamacpp":
        cmd += ["--compile", compile_mode]
    print(f"$ OMP_WAIT_POLICY={policy} {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, OMP_WAIT_POLICY=policy)  # read once, when OpenMP starts
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{method} N={branch} {policy} failed:\n{done.stderr.strip()[-2000:]}")
    record = json.loads(done.stdout)
    print(f"  {record['throughput']['output_tok_s']:.1f} tok/s; load average "
          f"{os.getloadavg()[0]:.1f} (other jobs slow ACTIVE runs most)", file=sys.stderr)
    return record


def count_parameters(model: str | None, dtype: str) -> int:
    from pmbench.engine.models import load_model

    loaded = load_model(model, device="cpu", dtype=dtype)
    return sum(p.numel() for p in loaded.model.parameters())  # tied weights count once


def cpu_util(record: dict) -> float:
    """Cores this run kept busy (its CPU seconds / wall seconds over the timed region)."""
    return record["telemetry"]["cpu_util_mean"]


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:.2f}x" if base else "–"


def wait_policy(record: dict, with_compile: bool = False) -> str:
    """The OMP_WAIT_POLICY a run had ("unset" for records from before it was recorded),
    and its compile mode after a slash when `with_compile`."""
    policy = (record["env"].get("omp_wait_policy") or "unset").upper()
    return f"{policy}/{record.get('compile', 'off')}" if with_compile else policy


def run_all(cells: list[tuple[str, int]], policies: tuple[str, ...],
            args: argparse.Namespace, out_dir: Path) -> dict[tuple[str, int, str], dict]:
    """Every cell under every variant, their order flipped from one cell to the next
    (A B, B A, ...) so that a drift of the machine favours neither. A llama.cpp cell
    runs once per wait policy: the compile mode does not touch it."""
    records = {}
    for i, (method, n) in enumerate(cells):
        for variant in policies[::-1] if i % 2 else policies:
            again = [v for v in policies if (method, n, v) in records
                     and split_variant(v)[0] == split_variant(variant)[0]]
            if method in PEERS and again:
                records[method, n, variant] = records[method, n, again[0]]
                continue
            records[method, n, variant] = run_cell(method, n, variant, args, out_dir)
    return records


def print_policy_table(records: dict, cells: list, policies: tuple[str, ...]) -> None:
    """Each cell's tok/s and step time under each policy, and the ratio of the last to the first."""
    print("\n| method | N " + "".join(f"| {p} tok/s median [min, max] | {p} ms per step "
                                     for p in policies)
          + f"| {policies[-1]} / {policies[0]} |")
    print("|---" * (3 + 2 * len(policies)) + "|")
    for method, n in cells:
        row = f"| {method} | {n} "
        for p in policies:
            t, lat = records[method, n, p]["throughput"], records[method, n, p]["latency"]
            step = f"{1e3 * lat['tpot_s']:.1f}" if lat["tpot_s"] else "–"
            row += (f"| {t['output_tok_s']:.1f} [{t['output_tok_s_min']:.1f}, "
                    f"{t['output_tok_s_max']:.1f}] | {step} ")
        first, last = (records[method, n, p]["throughput"]["output_tok_s"]
                       for p in (policies[0], policies[-1]))
        print(row + f"| {ratio(last, first)} |")


def harness_check(records: dict, out_dir: Path) -> bool:
    """Each llama.cpp cell's step against `llama_decode` alone on the same groups (run
    under the cell's wait policy); prints a table, returns whether every one is within
    HARNESS_LIMIT."""
    runs = {records[c]["run_id"]: c for c in records if c[0] in PEERS}  # once per run
    cells = list(runs.values())
    if not cells:
        return True
    print("\n| peer | N | policy | runner ms per step | llama_decode ms per step "
          "| runner / llama_decode | check |")
    print("|---" * 7 + "|")
    ok = True
    script = Path(__file__).with_name("llamacpp_decode.py")
    for cell in cells:
        run_dir = out_dir / records[cell]["run_id"]
        env = dict(os.environ, OMP_WAIT_POLICY=split_variant(cell[2])[0])
        done = subprocess.run([sys.executable, str(script), str(run_dir)], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"llamacpp_decode.py {run_dir} failed:\n{done.stderr.strip()[-2000:]}")
        got = json.loads(done.stdout)
        within = got["runner_over_raw"] <= HARNESS_LIMIT
        ok &= within
        print(f"| {cell[0]} | {cell[1]} | {cell[2]} | {1e3 * got['runner_step_s']:.1f} "
              f"| {1e3 * got['raw_step_s']:.1f} | {got['runner_over_raw']:.2f} "
              f"| {'ok' if within else f'FAIL (> {HARNESS_LIMIT:.2f})'} |")
    return ok


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
    ap.add_argument("--no-cpu-prepack", action="store_true",
                    help="plain torch Linear kernels (see pmbench/engine/cpu_linear.py)")
    ap.add_argument("--prefix-kv", default="auto", choices=("auto", "shared", "copy"),
                    help="prefix: the context's KV shared by reference or copied per row")
    ap.add_argument("--wait-policy", default=DEFAULT_WAIT_POLICY, choices=tuple(WAIT_POLICIES),
                    help="OMP_WAIT_POLICY of the runs; both: every cell under each, side by side")
    ap.add_argument("--compile", default=None,
                    help="comma-separated --compile modes of the runs (off,on: side by side)")
    ap.add_argument("--peers", action="store_true",
                    help="add llama.cpp (shipped GGUF and float32) at each N, and check "
                         "the llamacpp runner against llama_decode alone")
    ap.add_argument("--output-dir", default=None, help="where the run records go (temp dir)")
    ap.add_argument("--records", default=None,
                    help="only print the table from the run records already in this folder")
    args = ap.parse_args()
    cells = [(m, int(n)) for m, n in (c.split(":") for c in args.cells.split(","))]
    if args.peers:
        cells += [(peer, n) for n in dict.fromkeys(n for _, n in cells) for peer in PEERS
                  if (peer, n) not in cells]

    if args.records:
        out_dir = Path(args.records)
        found = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/run.json"))]
        modes = {r.get("compile") for r in found if r["method"] != "llamacpp"}
        records = {(cell_label(r), r["branch"], wait_policy(r, len(modes) > 1)): r
                   for r in found}
        if len(modes) > 1:  # a llama.cpp record stands in every compile mode of its policy
            records |= {(m, n, f"{p}/{mode}"): r for (m, n, p), r in list(records.items())
                        if m in PEERS for mode in modes}
        policies = tuple(sorted({p for *_, p in records}, reverse=True))  # PASSIVE first
        cells = [c for c in cells if all((*c, p) in records for p in policies)]
        if not cells:
            sys.exit(f"no run records for {args.cells} in {out_dir}")
    else:
        out_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="pmbench-bench-"))
        policies = WAIT_POLICIES[args.wait_policy]
        if args.compile:
            policies = tuple(f"{p}/{m}" for p in policies for m in args.compile.split(","))
        records = run_all(cells, policies, args, out_dir)
    load = "" if args.records else f"; load average {os.getloadavg()[0]:.1f}"
    first = records[(*cells[0], policies[0])]
    dtype_name, threads = first["dtype"], first["env"].get("threads")

    def tok_s(cell, per_cpu=False):
        if cell not in records:
            return None
        rate = records[cell]["throughput"]["output_tok_s"]
        return rate / cpu_util(records[cell]) if per_cpu else rate

    print(f"\n{first['suite']}, {first['limit']} questions, {first['max_new_tokens']} new "
          f"tokens (--ignore-eos), {dtype_name}, {first['repeats']} repeats after a warm-up; "
          f"threads {threads}, OMP_WAIT_POLICY {' and '.join(policies)}{load}\n")
    refs = ("prefix", "batch", "sequential") + tuple(
        p for p in PEERS if any(m == p for m, _ in cells))
    print("| method | N | policy | output tok/s median [min, max] | prefill s | decode s "
          "| ms per step "
          + "".join(f"| vs {r} " for r in refs) + "| tok per CPU-s "
          + "".join(f"| vs {r} " for r in refs) + "| KV cache MiB | KV vs batch |")
    print("|---" * (10 + 2 * len(refs)) + "|")
    for cell in [(*c, p) for c in cells for p in policies]:
        rec, (method, n, policy) = records[cell], cell
        t, lat = rec["throughput"], rec["latency"]
        step_ms = f"{1e3 * lat['tpot_s']:.1f}" if lat["tpot_s"] else "–"
        kv, kv_batch = rec["memory"]["kv_cache_bytes"], records.get(("batch", n, policy))
        kv_ratio = f"{kv / kv_batch['memory']['kv_cache_bytes']:.2f}" if kv_batch else "–"
        per_cpu = tok_s(cell, per_cpu=True)
        print(f"| {method} | {n} | {policy} | {t['output_tok_s']:.1f} "
              f"[{t['output_tok_s_min']:.1f}, {t['output_tok_s_max']:.1f}] | "
              f"{lat['prefill_s']:.2f} | {lat['decode_s']:.2f} | "
              f"{step_ms} "
              + "".join(f"| {ratio(t['output_tok_s'], tok_s((r, n, policy)))} " for r in refs)
              + f"| {per_cpu:.1f} "
              + "".join(f"| {ratio(per_cpu, tok_s((r, n, policy), True))} " for r in refs)
              + f"| {kv / 2**20:.1f} | {kv_ratio} |")
    if len(policies) > 1:
        print_policy_table(records, cells, policies)

    rope = sorted(n for m, n in cells if m == "rope2d")
    for policy in policies:
        for small, big in zip(rope, rope[1:], strict=False):
            a, b = ("rope2d", big, policy), ("rope2d", small, policy)
            print(f"\nrope2d N={big} / N={small}, {policy}: {tok_s(a) / tok_s(b):.2f}x "
                  f"(per CPU-second {tok_s(a, True) / tok_s(b, True):.2f}x)")
    if rope:
        n = 8 if 8 in rope else rope[-1]
        if threads:
            torch.set_num_threads(threads)
        rate = matmul_rate("cpu", dtype_name, budget_s=1.0, per_cpu_second=True)
        params = count_parameters(args.model, dtype_name)
        rec = records[("rope2d", n, policies[0])]
        step_s = rec["latency"]["tpot_s"] * cpu_util(rec)  # CPU-seconds per decoding step
        roof_s = 2 * params * n / rate
        print(f"compute roof, rope2d N={n}: matmul {rate / 1e9:.0f} GFLOP per CPU-s "
              f"({dtype_name}), {params / 1e6:.1f}M parameters -> {roof_s * 1e3:.1f} CPU-ms "
              f"per {n}-token step; measured {step_s * 1e3:.1f} CPU-ms ({policies[0]}) "
              f"({roof_s / step_s:.0%} of the roof)")
    summary = {f"{m}:{n}:{p}": {"run_id": r["run_id"], "throughput": r["throughput"],
                                "memory": r["memory"], "latency": r["latency"]}
               for (m, n, p), r in records.items()}
    (out_dir / "bench_methods.json").write_text(json.dumps(summary, indent=1))
    print(f"\nrecords: {out_dir}", file=sys.stderr)
    if not harness_check(records, out_dir):
        sys.exit(f"the llamacpp runner's step is more than {HARNESS_LIMIT:.2f}x llama_decode's")


if __name__ == "__main__":
    main()
