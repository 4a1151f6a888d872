"""The GPU check's stages, run by benchmarks/gpu_check.sh in one window of GPU time.

    python benchmarks/gpu_check.py preflight [--device cuda|cpu]
    python benchmarks/gpu_check.py run OUTPUT [--device cuda|cpu] [--budget-s 330]
    python benchmarks/gpu_check.py report OUTPUT [--device cuda|cpu]
    python benchmarks/gpu_check.py pack OUTPUT RETURN_DIR [LOG]

`preflight`: a few seconds; exit 2 with one line when transformers is older than pmbench
needs, pmbench, evaluate, the tokenizer or the SQuAD data cannot be loaded, or CUDA is
missing (with --device cuda).

`run`: two tiers, each cell the spec a `pmbench run` command line makes, in this process
with each model built once (`reuse_last_model`). The *smoke* tier first: one small random
architecture at N = 4, the four methods, the decoding step compiled off then on, a few
tokens (on CPU the smallest architecture, CPU-sized). Then, on CUDA, the *matrix*, in
order of what the window must not miss: random:qwen2.5-7b eager (sequential at N = 1,
batch, prefix and rope2d at N = 4 and 16), the same compiled, then random:qwen2.5-1.5b
eager. Run ids are fixed, so a rerun with the same OUTPUT skips finished cells and
resumes unfinished ones; no cell starts past --budget-s, and `report` lists those left.

`report`: every expected cell's record must be complete, on the device asked for, and on
CUDA hold GPU utilisation, memory, power and energy and no CUDA graph skipped; writes
OUTPUT/summary.md. Exit 1 otherwise.

`pack`: what comes back from the GPU machine (at most 8 files of 16 MiB, two folders
down): RETURN_DIR/gpu-check.tar.gz (the records; samples.jsonl left out when it would not
fit), summary.md and the log (its head and tail when too long).
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("sequential", "batch", "prefix", "rope2d")
# What run.json's telemetry must hold on a GPU (pmbench/measure/telemetry.py).
TELEMETRY = ("gpu_util_mean", "gpu_mem_peak_bytes", "power_w_mean", "energy_j", "j_per_token")
RETURN_FILE_BYTES = 16 * 2**20  # the device tool returns files of at most 16 MiB
LOG_BYTES = 4 * 2**20  # the log's head and tail kept in the returned copy


@dataclass(frozen=True)
class Cell:
    tier: str  # "smoke" or "matrix"
    model: str
    compile: str
    method: str
    branch: int
    limit: int
    new_tokens: int
    repeats: int
    device: str

    @property
    def run_id(self) -> str:
        return (f"gpu-{self.tier}-{self.model.removeprefix('random:')}-{self.compile}-"
                f"{self.method}-b{self.branch}")

    def options(self, out: Path) -> dict[str, Any]:
        """The `pmbench run` options of this cell."""
        return dict(method=self.method, suite="squad", branch=self.branch, model=self.model,
                    limit=self.limit, max_new_tokens=self.new_tokens, ignore_eos=True,
                    repeats=self.repeats, device=self.device, compile=self.compile,
                    dtype="bfloat16" if self.device == "cuda" else "float32",
                    output_dir=str(out), run_id=self.run_id)


def _grid(tier: str, model: str, compile: str, device: str, branches: tuple[int, ...],
          limit: int, new_tokens: int, repeats: int) -> list[Cell]:
    """Sequential at N = 1 (one question at a time, whatever N), the others at `branches`."""
    return [Cell(tier, model, compile, method, n, limit, new_tokens, repeats, device)
            for method in METHODS for n in ((1,) if method == "sequential" else branches)]


def smoke(device: str) -> list[Cell]:
    """One small architecture, N = 4, compile off then on, a few tokens."""
    model = "random:qwen2.5-0.5b" if device == "cuda" else "random:smollm2-135m"
    return [Cell("smoke", model, mode, method, 4, 4, 8, 1, device)
            for mode in ("off", "on") for method in METHODS]


def matrix(device: str) -> list[Cell]:
    """The GPU matrix, most needed first; nothing on a CPU (the rehearsal stops at smoke)."""
    if device != "cuda":
        return []
    big, small = "random:qwen2.5-7b", "random:qwen2.5-1.5b"
    return (_grid("matrix", big, "off", device, (4, 16), 16, 32, 2)
            + _grid("matrix", big, "on", device, (4, 16), 16, 32, 2)
            + _grid("matrix", small, "off", device, (4, 16), 16, 32, 2))


def cells(device: str = "cuda") -> list[Cell]:
    return smoke(device) + matrix(device)


def read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- preflight


def _check(what: str, fn) -> str | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any failure is the one line to print
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{what}: {type(exc).__name__}: {first}"
    return None


def _transformers_version() -> None:
    import tomllib

    import transformers
    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    need = next(Requirement(r) for r in project["project"]["dependencies"]
                if r.startswith("transformers"))
    if transformers.__version__ not in need.specifier:
        raise RuntimeError(f"transformers {transformers.__version__} is here, pmbench needs "
                           f"{need.specifier} (install benchmarks/device/carry.txt)")


def _cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"CUDA is not available to torch {torch.__version__} (CUDA build: "
                           f"{torch.version.cuda or 'none'})")


def preflight(device: str) -> int:
    """0 when everything the check needs is here, else 2 and one line naming what is not."""
    from importlib import import_module

    def squad() -> None:
        from pmbench.engine.models import load_tokenizer
        from pmbench.suites import load_suite

        load_suite("squad", load_tokenizer("random:qwen2.5-0.5b"), limit=4, branch=4)

    checks = [("transformers", _transformers_version),
              ("import pmbench", lambda: import_module("pmbench.jobs.run")),
              ("import evaluate", lambda: import_module("evaluate")),
              ("tokenizer", lambda: import_module("pmbench.engine.models").load_tokenizer(
                  "random:qwen2.5-0.5b")),
              ("SQuAD data and its metric", squad)]
    if device == "cuda":
        checks.insert(0, ("CUDA", _cuda))
    for what, fn in checks:
        if problem := _check(what, fn):
            print(f"gpu_check: preflight: {problem}", file=sys.stderr)
            return 2
    import torch
    import transformers

    print(f"gpu_check: preflight passed: torch {torch.__version__}, transformers "
          f"{transformers.__version__}, device {device}", flush=True)
    return 0


# ---------------------------------------------------------------------------- run


def _run_cell(cell: Cell, out: Path) -> dict[str, Any]:
    from pmbench.jobs.run import execute_run, prepare_run
    from pmbench.jobs.spec import from_options

    options = cell.options(out)
    if (out / cell.run_id / "run.json").exists():  # interrupted earlier: resume it
        options |= {"resume": options.pop("run_id")}
    return execute_run(prepare_run(from_options(**options)))


def run_cells(out: Path, device: str, budget_s: float) -> int:
    """Run every unfinished cell until the budget is spent; 1 if a cell failed."""
    import torch

    from pmbench.engine.models import reuse_last_model

    t0, failed = time.perf_counter(), 0
    todo = [c for c in cells(device)
            if (read(out / c.run_id / "run.json") or {}).get("status") != "complete"]
    with reuse_last_model():
        for k, cell in enumerate(todo):
            spent = time.perf_counter() - t0
            if spent > budget_s:
                print(f"gpu_check: budget of {budget_s:.0f} s spent: {len(todo) - k} cells "
                      "not started", flush=True)
                break
            t_cell = time.perf_counter()
            try:
                rec = _run_cell(cell, out)
            except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the check
                failed = 1
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                print(f"gpu_check: {cell.run_id} failed: {type(exc).__name__}: {first}",
                      flush=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            tok_s = (rec.get("throughput") or {}).get("output_tok_s")
            print(f"gpu_check: {cell.run_id}: {_g(tok_s, spec='.1f')} output tok/s "
                  f"({time.perf_counter() - t_cell:.1f} s, {spent:.0f} s in)", flush=True)
    return failed


# ------------------------------------------------------------------------- report


def _g(value: Any, scale: float = 1.0, spec: str = ".3g") -> str:
    if not isinstance(value, int | float):
        return "–"
    return format(round(value * scale) if spec == "d" else value * scale, spec)


def summary_row(cell: Cell, rec: dict[str, Any]) -> str:
    tp, lat = rec.get("throughput") or {}, rec.get("latency") or {}
    tel = rec.get("telemetry") or {}
    answer = (rec.get("question_latency") or {}).get("last_token_s") or {}
    return "| " + " | ".join([
        cell.tier, cell.model, str(rec.get("compile", cell.compile)), cell.method,
        str(cell.branch), _g(tp.get("output_tok_s"), spec=".1f"),
        _g(lat.get("ttft_s"), 1e3, ".1f"), _g(lat.get("tpot_s"), 1e3, ".2f"),
        _g(answer.get("p99"), 1e3, ".0f"), _g(tel.get("gpu_util_mean"), spec=".0f"),
        _g(tel.get("gpu_mem_peak_bytes"), 1e-9, ".1f"), _g(tel.get("power_w_mean"), spec=".0f"),
        _g(tel.get("energy_j"), spec=".0f"), _g(tel.get("j_per_token"), spec=".3f"),
        _g(rec.get("compile_s"), spec=".1f"), _g(rec.get("compile_s_timed"), spec=".2f"),
        _g(rec.get("load_s"), spec=".1f"),
        _g((rec.get("roofline") or {}).get("step_over_roof"), spec=".2f"),
        _g(rec.get("cuda_graph_recordings"), spec="d"),
        _g(rec.get("cuda_graph_recordings_timed"), spec="d"),
        _g(rec.get("cuda_graph_skips"), spec="d")]) + " |"


HEADER = ("| tier | model | compile | method | N | output tok/s | TTFT ms | TPOT ms "
          "| answer p99 ms | GPU util % | GPU mem GB | power W | energy J | J/token "
          "| compile s (warm-up) | compile s (timed) | load s | step / weight-streaming "
          "| CUDA graphs recorded | recorded while timed | CUDA graph skips |")
NOTES = ("SQuAD, --ignore-eos, random weights (bfloat16 on CUDA, float32 on CPU); smoke: "
         "4 questions x 8 tokens, 1 repeat; matrix: 16 questions x 32 tokens, 2 repeats. TTFT "
         "median; TPOT decode time per step; answer p99: each question's time from its "
         "group's start to its last token; telemetry over the timed groups (GPU board: "
         "memory includes the CUDA context). Per cell: compile s, seconds of calls that "
         "compiled a graph in its warm-up and (should be 0) in its timed groups; load s, the "
         "model's build (once per model); step / weight-streaming, the decoding step over "
         "the time to read the weights and KV once at the measured HBM bandwidth; CUDA "
         "graphs recorded in the cell, in its timed groups (should be 0: each bucket is "
         "recorded in a warm-up), and compiled graphs that ran without a CUDA graph (0: each "
         "compiled step was one graph launch).")


def problems(cell: Cell, rec: dict[str, Any] | None) -> list[str]:
    """Why a cell's record does not pass the check (none: it does)."""
    if rec is None:
        return [f"{cell.run_id}: no record"]
    if rec.get("status") != "complete":
        return [f"{cell.run_id}: status {rec.get('status')}"]
    if not str(rec.get("device", "")).startswith(cell.device):
        return [f"{cell.run_id}: ran on {rec.get('device')}, not {cell.device.upper()}"]
    if cell.device != "cuda":
        return []
    tel = rec.get("telemetry") or {}
    missing = [k for k in TELEMETRY if tel.get(k) is None]
    if missing:
        return [f"{cell.run_id}: telemetry {', '.join(missing)} null "
                f"(nvml_error: {tel.get('nvml_error')})"]
    if rec.get("cuda_graph_skips"):
        return [f"{cell.run_id}: {rec['cuda_graph_skips']} compiled graphs ran without CUDA "
                "graphs (TORCH_LOGS=perf_hints says why)"]
    return []


def report(out: Path, device: str = "cuda") -> int:
    """Write OUTPUT/summary.md; 1 if a cell is missing, unfinished or lacks telemetry."""
    rows, bad = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"], []
    expected = cells(device)
    for cell in expected:
        rec = read(out / cell.run_id / "run.json")
        bad += problems(cell, rec)
        if rec and rec.get("status") == "complete":
            rows.append(summary_row(cell, rec))
    text = "\n".join(["# GPU check", "", *rows, "", NOTES,
                      *(["", "Problems:", *(f"- {b}" for b in bad)] if bad else [])]) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    print(text, flush=True)
    if bad:
        print(f"gpu_check: {len(bad)} of {len(expected)} cells fail the check "
              f"(see {out / 'summary.md'})", file=sys.stderr)
        return 1
    print(f"gpu_check: {len(expected)} cells pass; table in {out / 'summary.md'}")
    return 0


# --------------------------------------------------------------------------- pack


def _tar(out: Path, dest: Path, skip: tuple[str, ...]) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(out.rglob("*")) if out.is_dir() else []:
            if path.is_file() and not path.is_symlink() and path.name not in skip:
                tar.add(path, arcname=str(Path(out.name) / path.relative_to(out)))


def _log_copy(log: Path, dest: Path) -> None:
    """The log, or its head and tail when it is longer than LOG_BYTES."""
    data = log.read_bytes()
    if len(data) > LOG_BYTES:
        half = LOG_BYTES // 2
        data = data[:half] + b"\n[... gpu_check: log cut here ...]\n" + data[-half:]
    dest.write_bytes(data)


def pack(out: Path, back: Path, log: Path | None = None) -> int:
    """The records, summary and log as at most three files the device tool returns."""
    back.mkdir(parents=True, exist_ok=True)
    tarball = back / "gpu-check.tar.gz"
    left_out = ((".lock",), (".lock", "samples.jsonl"),
                (".lock", "samples.jsonl", "groups.jsonl"))
    for skip in left_out:  # the whole records if they fit, else without the largest files
        _tar(out, tarball, skip)
        if tarball.stat().st_size <= RETURN_FILE_BYTES:
            break
    if tarball.stat().st_size > RETURN_FILE_BYTES:
        tarball.unlink()
        print("gpu_check: pack: even the run.json files are over 16 MiB; no tarball",
              file=sys.stderr)
    if (out / "summary.md").is_file() and out.resolve() != back.resolve():
        (back / "summary.md").write_bytes((out / "summary.md").read_bytes())
    if log is not None and log.is_file():
        _log_copy(log, back / "gpu-check.log")
    names = sorted(p.name for p in back.iterdir())
    print(f"gpu_check: returned in {back}: {', '.join(names)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("preflight", "run", "report", "pack"))
    parser.add_argument("paths", type=Path, nargs="*")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="start no cell after this many seconds (run)")
    args = parser.parse_args(argv)
    need = {"preflight": 0, "run": 1, "report": 1, "pack": 2}[args.stage]
    if len(args.paths) < need:
        parser.error(f"{args.stage} takes {need} path(s)")
    if args.stage == "preflight":
        return preflight(args.device)
    if args.stage == "run":
        return run_cells(args.paths[0], args.device, args.budget_s)
    if args.stage == "report":
        return report(args.paths[0], args.device)
    return pack(args.paths[0], args.paths[1], args.paths[2] if len(args.paths) > 2 else None)


if __name__ == "__main__":
    sys.exit(main())
