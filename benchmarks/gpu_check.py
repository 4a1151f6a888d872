"""The GPU check's cells in one process, then their telemetry and a summary table.

    python benchmarks/gpu_check.py run OUTPUT [--budget-s 480]
    python benchmarks/gpu_check.py report OUTPUT

`run`: sequential, batch, prefix and rope2d at N = 1, 4, 8, 16 on random:qwen2.5-1.5b and
random:qwen2.5-7b in bfloat16 on CUDA (SQuAD, 16 questions, 32 new tokens each with
--ignore-eos), with the decoding step compiled off and on where `pmbench run` has
--compile. Each cell is the spec a `pmbench run` command line makes, run in this process
with each model built once (`reuse_last_model`): 32 to 64 fresh processes would spend the
slot importing torch. Run ids are fixed (gpu-<model>-<compile>-<method>-b<N>), so a rerun
with the same OUTPUT skips finished cells and resumes unfinished ones. No cell starts past
--budget-s; `report` lists the ones left.

`report`: every expected cell's record must be complete, on CUDA, with GPU utilisation,
memory, power and energy measured (not null); writes OUTPUT/summary.md. Exit 1 otherwise.

Sized without a GPU at hand (estimates: an eager 7B step ~25 ms, launch-bound; the
longest cell, sequential at N=16, ~32 x 16 x 2 steps with its warm-up group).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEVICE = "cuda"
MODELS = ("random:qwen2.5-1.5b", "random:qwen2.5-7b")
METHODS = ("sequential", "batch", "prefix", "rope2d")
BRANCHES = (1, 4, 8, 16)
LIMIT, NEW_TOKENS = 16, 32  # 16 questions: one group at N=16, sixteen at N=1
# What run.json's telemetry must hold on a GPU (pmbench/measure/telemetry.py).
TELEMETRY = ("gpu_util_mean", "gpu_mem_peak_bytes", "power_w_mean", "energy_j", "j_per_token")


@dataclass(frozen=True)
class Cell:
    model: str
    compile: str | None  # None: this pmbench has no --compile
    method: str
    branch: int

    @property
    def run_id(self) -> str:
        mode = self.compile or "default"
        return f"gpu-{self.model.removeprefix('random:')}-{mode}-{self.method}-b{self.branch}"

    def options(self, out: Path) -> dict[str, Any]:
        """The `pmbench run` options of this cell."""
        given = dict(method=self.method, suite="squad", branch=self.branch, model=self.model,
                     limit=LIMIT, max_new_tokens=NEW_TOKENS, ignore_eos=True, device=DEVICE,
                     dtype="bfloat16", output_dir=str(out), run_id=self.run_id)
        return given | ({"compile": self.compile} if self.compile else {})


def compile_modes() -> tuple[str | None, ...]:
    """("off", "on") where `pmbench run` has --compile (a RunSettings field), else (None,)."""
    from pmbench.jobs.spec import RunSettings

    return ("off", "on") if "compile" in {f.name for f in fields(RunSettings)} else (None,)


def cells() -> list[Cell]:
    """Every cell, eager ones first, so a short slot still measures them all."""
    return [Cell(m, c, method, n) for c in compile_modes() for m in MODELS
            for method in METHODS for n in BRANCHES]


def read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_cells(out: Path, budget_s: float) -> int:
    """Run every unfinished cell until the budget is spent; 1 if a cell failed."""
    import torch

    from pmbench.engine.models import reuse_last_model
    from pmbench.jobs.run import execute_run, prepare_run
    from pmbench.jobs.spec import from_options

    t0, failed = time.perf_counter(), 0
    todo = [c for c in cells()
            if (read(out / c.run_id / "run.json") or {}).get("status") != "complete"]
    with reuse_last_model():
        for k, cell in enumerate(todo):
            spent = time.perf_counter() - t0
            if spent > budget_s:
                print(f"gpu_check: budget of {budget_s:.0f} s spent: {len(todo) - k} cells "
                      "not started", flush=True)
                break
            options = cell.options(out)
            if (out / cell.run_id / "run.json").exists():  # interrupted earlier: resume it
                options |= {"resume": options.pop("run_id")}
            t_cell = time.perf_counter()
            try:
                rec = execute_run(prepare_run(from_options(**options)))
            except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the check
                failed = 1
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                print(f"gpu_check: {cell.run_id} failed: {type(exc).__name__}: {first}",
                      flush=True)
                torch.cuda.empty_cache()
                continue
            tok_s = (rec.get("throughput") or {}).get("output_tok_s")
            print(f"gpu_check: {cell.run_id}: {_g(tok_s, spec='.1f')} output tok/s "
                  f"({time.perf_counter() - t_cell:.1f} s, {spent:.0f} s in)", flush=True)
    return failed


def _g(value: Any, scale: float = 1.0, spec: str = ".3g") -> str:
    return "–" if not isinstance(value, int | float) else format(value * scale, spec)


def summary_row(cell: Cell, rec: dict[str, Any]) -> str:
    tp, lat = rec.get("throughput") or {}, rec.get("latency") or {}
    tel = rec.get("telemetry") or {}
    return "| " + " | ".join([
        cell.model, str(rec.get("compile", cell.compile or "–")), cell.method, str(cell.branch),
        _g(tp.get("output_tok_s"), spec=".1f"), _g(lat.get("ttft_s"), 1e3, ".1f"),
        _g(lat.get("tpot_s"), 1e3, ".2f"), _g(tel.get("gpu_util_mean"), spec=".0f"),
        _g(tel.get("gpu_mem_peak_bytes"), 1e-9, ".1f"), _g(tel.get("power_w_mean"), spec=".0f"),
        _g(tel.get("energy_j"), spec=".0f"), _g(tel.get("j_per_token"), spec=".3f"),
        _g(rec.get("compile_s"), spec=".1f"), _g(rec.get("load_s"), spec=".1f"),
        _g((rec.get("roofline") or {}).get("step_over_roof"), spec=".2f"),
        _g(rec.get("cuda_graph_skips"), spec="d")]) + " |"


HEADER = ("| model | compile | method | N | output tok/s | TTFT ms | TPOT ms | GPU util % "
          "| GPU mem GB | power W | energy J | J/token | compile s so far | load s "
          "| step / weight-streaming | CUDA graph skips |")


def problems(cell: Cell, rec: dict[str, Any] | None) -> list[str]:
    """Why a cell's record does not pass the check (none: it does)."""
    if rec is None:
        return [f"{cell.run_id}: no record"]
    if rec.get("status") != "complete":
        return [f"{cell.run_id}: status {rec.get('status')}"]
    if not str(rec.get("device", "")).startswith("cuda"):
        return [f"{cell.run_id}: ran on {rec.get('device')}, not CUDA"]
    tel = rec.get("telemetry") or {}
    missing = [k for k in TELEMETRY if tel.get(k) is None]
    if missing:
        return [f"{cell.run_id}: telemetry {', '.join(missing)} null "
                f"(nvml_error: {tel.get('nvml_error')})"]
    if rec.get("cuda_graph_skips"):
        return [f"{cell.run_id}: {rec['cuda_graph_skips']} compiled graphs ran without CUDA "
                "graphs (TORCH_LOGS=perf_hints says why)"]
    return []


def report(out: Path) -> int:
    """Write OUTPUT/summary.md; 1 if a cell is missing, unfinished or lacks telemetry."""
    rows, bad = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"], []
    for cell in cells():
        rec = read(out / cell.run_id / "run.json")
        bad += problems(cell, rec)
        if rec and rec.get("status") == "complete":
            rows.append(summary_row(cell, rec))
    notes = [f"SQuAD, {LIMIT} questions, {NEW_TOKENS} new tokens each (--ignore-eos), "
             "bfloat16, random weights; TTFT median, TPOT decode time per step; telemetry "
             "over the timed groups (GPU board: memory includes the CUDA context); compile s "
             "counts every compile in the process up to that cell; load s is the model's "
             "build, once per model; step / weight-streaming is the decoding step over the "
             "time to read the weights and KV once at the measured HBM bandwidth; CUDA "
             "graph skips counts, in the process so far, compiled graphs not run as CUDA "
             "graphs (0: every compiled step was one graph launch)."]
    text = "\n".join(["# GPU check", "", *rows, "", *notes,
                      *(["", "Problems:", *(f"- {b}" for b in bad)] if bad else [])]) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    print(text, flush=True)
    if bad:
        print(f"gpu_check: {len(bad)} of {len(cells())} cells fail the check "
              f"(see {out / 'summary.md'})", file=sys.stderr)
        return 1
    print(f"gpu_check: {len(cells())} cells with GPU telemetry; table in {out / 'summary.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("run", "report"))
    parser.add_argument("output", type=Path)
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="start no cell after this many seconds (run)")
    args = parser.parse_args(argv)
    if args.stage == "run":
        return run_cells(args.output, args.budget_s)
    return report(args.output)


if __name__ == "__main__":
    sys.exit(main())
