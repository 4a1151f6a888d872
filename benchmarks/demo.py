"""`make demo`: the paper's comparison on the default model, in a few minutes.

Sequential, batch, prefix and rope2d (groups of 8) answer the same real SQuAD questions
with SmolLM2-135M-Instruct, each twice: an *accuracy run* (24 questions, the suite's own
stopping: F1 and questions/s) and a *throughput run* (8 questions x 8 new tokens with
--ignore-eos: equal token volume, a warm-up and 3 timed repeats). All eight runs share one
process and one loaded model, so the few minutes go to decoding, not to start-up. Then it
prints what a reader needs: each method's tok/s and its ratio to sequential and to prefix
with 95% intervals over the repeats, and its F1 against sequential's on the same
questions with the paired interval and the non-inferiority verdict (1 point); and it
writes that summary, Table 5 and the throughput figure under one folder (results/demo).

`make demo-full` (`--full`) runs the larger grid suites/grids/demo.yaml instead (32
questions, 16 tokens, 3 repeats of both kinds of run; about 20 minutes on 2 cores).

The runs go one at a time, with OMP_WAIT_POLICY=ACTIVE (idle OpenMP threads spin), which
measured fastest for a single process (benchmarks/README.md, "Thread policy");
`--wait-policy passive` when other jobs share the cores. Finished runs are kept: running
the demo again redoes nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "suites" / "grids" / "demo.yaml"
METHODS = ("sequential", "batch", "prefix", "rope2d")
# three full groups of 8: enough to pair (report.paired.MIN_SHARED); no warm-up: their Q/s
# then includes the first group's first calls, the same for every method
ACCURACY = {"limit": 24, "no_warmup": True}
THROUGHPUT = {"limit": 8, "max_new_tokens": 8, "ignore_eos": True, "repeats": 3}


def _run(method: str, kind: str, options: dict, out: Path) -> dict:
    """One run of the demo, in this process (skipped when its record is complete)."""
    from pmbench.jobs.run import execute_run, prepare_run
    from pmbench.jobs.spec import from_options
    from pmbench.records.store import RunStore

    run_id = f"demo-{kind}-{method}"
    store = RunStore(out, run_id)
    if store.exists():
        record = store.read_run()
        if record.get("status") == "complete":
            return {**record, "_path": str(store.run_path)}
        options = {**options, "resume": run_id}
    else:
        options = {**options, "run_id": run_id}
    t0 = time.perf_counter()
    spec = from_options(method=method, suite="squad", branch=8, output_dir=str(out),
                        **options)
    record = execute_run(prepare_run(spec))
    print(f"  {run_id}: {time.perf_counter() - t0:.1f} s", flush=True)
    return {**record, "_path": str(store.run_path)}


def _ci(low: float | None, high: float | None, spec: str = ".2f") -> str:
    return "" if low is None else f" [{low:{spec}}, {high:{spec}}]"


def summary(acc: dict[str, dict], tput: dict[str, dict]) -> str:
    """The demo's table, in Markdown: speed with intervals, F1 with the paired verdict."""
    from pmbench.measure.stats import median_ratio_interval
    from pmbench.report.compare import repeats_of
    from pmbench.report.paired import MARGIN, pair_runs

    def ratio(a: str, b: str) -> str:
        if a == b:
            return "1"
        xa, xb = repeats_of(tput[a], "output_tok_s"), repeats_of(tput[b], "output_tok_s")
        value = tput[a]["throughput"]["output_tok_s"] / tput[b]["throughput"]["output_tok_s"]
        return f"{value:.2f}{_ci(*(median_ratio_interval([xa], [xb]) or (None, None)))}"

    lines = ["| method | tok/s [95% CI] | × sequential | × prefix | F1 (%) | Δ F1 vs "
             "sequential [95% CI] | verdict | Q/s | answer p50 (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        tp, ac = tput[method]["throughput"], acc[method]
        f1 = 100 * ac["metrics"]["f1"]
        pair = pair_runs(acc["sequential"], ac, MARGIN) if method != "sequential" else None
        m = next((x for x in pair.metrics if x.key == "f1"), None) if pair else None
        delta = f"{m.delta:+.1f}{_ci(m.low, m.high, '+.1f')}" if m else "(reference)"
        answer = ((ac.get("question_latency") or {}).get("last_token_s") or {}).get("p50")
        lines.append(
            f"| {method} | {tp['output_tok_s']:.1f}"
            f"{_ci(tp.get('output_tok_s_ci_low'), tp.get('output_tok_s_ci_high'), '.1f')} | "
            f"{ratio(method, 'sequential')} | {ratio(method, 'prefix')} | {f1:.1f} | {delta} | "
            f"{m.verdict if m else ''} | {ac['throughput']['q_s']:.2f} | "
            f"{'–' if answer is None else format(answer, '.2f')} |")
    return "\n".join(lines) + "\n"


def quick(out: Path) -> None:
    from pmbench.engine.models import reuse_last_model

    print("accuracy runs (24 SQuAD questions, real stopping) and throughput runs (8 "
          "questions x 8 tokens, --ignore-eos, 3 repeats), one process:", flush=True)
    with reuse_last_model():
        acc = {m: _run(m, "acc", ACCURACY, out) for m in METHODS}
        tput = {m: _run(m, "tp", THROUGHPUT, out) for m in METHODS}
    text = summary(acc, tput)
    notes = ("tok/s: output tokens per second of the throughput runs (median of 3 repeats, "
             "95% bootstrap interval over them; ratios likewise, both runs' repeats "
             "resampled). F1, Q/s, answer p50 (each question's time from its group's start "
             "to its last token): the accuracy runs (no warm-up: their Q/s includes the "
             "first calls, alike for every method). Δ F1: the paired bootstrap over the 24 "
             "questions both runs answered; verdict at a 1-point margin. rope2d here is "
             "ratio 0, isolated mask: the training-free construction, exactly sequential's "
             "answers on this model; what 2D RoPE adds needs a trained model (README).")
    (out / "summary.md").write_text(text + "\n" + notes + "\n")
    print("\n" + text + "\n" + notes, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wait-policy", default="active", choices=("active", "passive"),
                    help="OMP_WAIT_POLICY of the demo's process(es)")
    ap.add_argument("--full", action="store_true", help="the full-size grid (~20 minutes)")
    ap.add_argument("--out", type=Path, default=Path("results/demo"))
    args = ap.parse_args()
    os.environ["OMP_WAIT_POLICY"] = args.wait_policy.upper()  # before torch starts OpenMP
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = args.out.with_name(args.out.name + "-full") if args.full else args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.full:
        subprocess.run([sys.executable, "-m", "pmbench.cli", "sweep", str(GRID),
                        "--output-dir", str(out)], check=True)
    else:
        quick(out)
    from pmbench.report import plots, table_format, tables
    from pmbench.report.results import load

    records = load(out)
    (out / "table5.md").write_text(table_format.render(tables.build(5, records)))
    plots.save(plots.plot("throughput", records), out / "throughput.png")
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s; everything is in {out}/ "
          f"(summary.md, table5.md, throughput.png/.pdf, one folder per run). The full-size "
          "version: make demo-full.")


if __name__ == "__main__":
    main()
