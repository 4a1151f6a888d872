"""`pmbench run`: one method on one suite, and the names it takes (`methods`, `suites`).

The options build a run spec (`pmbench.jobs.spec`), the one form a sweep's cells and
run.json's `settings` take too; `pmbench.jobs.run` does the work.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pmbench.commands import options as cli_options
from pmbench.commands.common import _quiet_libraries, shown
from pmbench.errors import BadInput

err = Console(stderr=True)
out = Console()


def run(
    method: Annotated[str | None, typer.Option(
        help="Decoding method (see `pmbench methods`).")] = None,
    suite: Annotated[str | None, typer.Option(help="Task suite (see `pmbench suites`).")] = None,
    branch: Annotated[int, typer.Option(help="Group size: questions answered together.")] = 1,
    model: Annotated[str | None, typer.Option(help="HF folder, .gguf file or hub id.")] = None,
    limit: Annotated[int | None, typer.Option(
        help="Number of questions (documents for grouped suites) [default: all].")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens per answer.")] = None,
    ignore_eos: Annotated[bool, typer.Option(
        "--ignore-eos", help="Generate exactly --max-new-tokens (equal token volume).")] = False,
    repeats: Annotated[int | None, typer.Option(
        help="Timed repeats after one warm-up [default: 5 with --ignore-eos, else 1].")] = None,
    no_warmup: Annotated[bool, typer.Option("--no-warmup", help="Skip the warm-up.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N.")] = None,
    device_map: Annotated[str | None, typer.Option(
        help="'auto' spreads a large model over devices (accelerate).")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Benchmark data folder.")] = None,
    output_dir: Annotated[str, typer.Option(help="Where run records go.")] = "results",
    json_out: Annotated[bool, typer.Option("--json", help="Print run.json only.")] = False,
    resume: Annotated[str | None, typer.Option(help="Continue an interrupted run.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Use this run id (sweeps).")] = None,
    num_fewshot: Annotated[int | None, typer.Option(help="Few-shot examples.")] = None,
    split: Annotated[str | None, typer.Option(help="Data split (suite default if unset).")] = None,
    subjects: Annotated[str | None, typer.Option(help="Comma-separated subjects.")] = None,
    samples_per_task: Annotated[int, typer.Option(help="Samples per problem (pass@k).")] = 1,
    apply_chat_template: Annotated[bool, typer.Option(
        "--apply-chat-template", help="Wrap prompts in the model's chat template.")] = False,
    truncate_documents: Annotated[bool, typer.Option(
        "--truncate-documents", help="Cut a document longer than the model's context from its "
        "end to fit (run.json lists each cut); without it such a group is refused.")] = False,
    allow_code_execution: Annotated[bool, typer.Option(
        "--allow-code-execution", help="Run generated code (sandboxed).")] = False,
    allow_unisolated_code_execution: Annotated[bool, typer.Option(
        "--allow-unisolated-code-execution",
        help="Run generated code even where the sandbox cannot fully isolate it.")] = False,
    rope_2d_ratio: Annotated[float | None, cli_options.ROPE_2D_RATIO] = None,
    rope_2d_mode: Annotated[str | None, cli_options.ROPE_2D_MODE] = None,
    branch_freqs: Annotated[str | None, cli_options.BRANCH_FREQS] = None,
    mask: Annotated[str | None, cli_options.MASK] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    attn_implementation: Annotated[str, typer.Option(help="sdpa | eager.")] = "sdpa",
    cpu_prepack: Annotated[bool, typer.Option(
        help="CPU float32: prepack Linear weights for multi-row matmuls (every method).")] = True,
    prefix_kv: Annotated[str, typer.Option(
        help="prefix method: auto | shared (context KV by reference) | copy (into every row)."
    )] = "auto",
    compile: Annotated[str, typer.Option(
        help="decoding step: auto (on for CUDA) | on (static, torch.compile) | static | off."
    )] = "auto",
) -> None:
    """Run one method on one suite and write results/<run_id>/."""
    options = {k: v for k, v in locals().items() if k != "json_out"}  # the spec's options
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

    from pmbench.commands.progress import progress_bar
    from pmbench.jobs.run import execute_run, prepare_run
    from pmbench.jobs.spec import from_options

    _quiet_libraries()
    if resume is None and (method is None or suite is None):
        raise BadInput("--method and --suite are required (unless --resume RUN_ID)")
    settings = from_options(**options)
    prepared = prepare_run(settings)  # bad input fails here, before any progress bar
    bar = progress_bar(err, "[progress.description]{task.description}", BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), transient=json_out)
    with bar:
        label = f"{method or ''} {suite or ''} b{branch}" if not resume else f"resume {resume}"
        task = bar.add_task(label, total=None, unit="questions")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def log(msg: str) -> None:
            bar.update(task, description=f"{label}: {msg}")

        try:
            record = execute_run(prepared, progress=progress, log=log)
        except KeyboardInterrupt:
            store = prepared.store
            err.print(f"interrupted: run {store.run_id} keeps its finished groups (status "
                      f"interrupted); continue with: pmbench run --resume {store.run_id} "
                      f"--output-dir {prepared.settings.output_dir}", highlight=False,
                      markup=False, soft_wrap=True)
            raise typer.Exit(130) from None
    if json_out:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return
    _print_summary(record)


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _print_summary(record: dict[str, Any]) -> None:
    table = Table(title=f"run {record['run_id']}", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    tp, lat, mem = record.get("throughput") or {}, record.get("latency") or {}, record["memory"]
    for key, value in (record.get("metrics") or {}).items():
        if not isinstance(value, dict):
            table.add_row(shown(f"metric {key}"), _fmt(value, ".4g"))
    table.add_row(escape("output tok/s (median [min, max])"),
                  f"{_fmt(tp.get('output_tok_s'))} [{_fmt(tp.get('output_tok_s_min'))}, "
                  f"{_fmt(tp.get('output_tok_s_max'))}]")
    if tp.get("output_tok_s_ci_low") is not None:
        table.add_row("output tok/s, 95% CI of the median",
                      f"[{_fmt(tp['output_tok_s_ci_low'])}, {_fmt(tp['output_tok_s_ci_high'])}]")
    table.add_row("questions/s", _fmt(tp.get("q_s")))
    for key in ("ttft_s", "tpot_s", "prefill_s", "decode_s", "wall_s"):
        table.add_row(key, _fmt(lat.get(key)))
    answer = (record.get("question_latency") or {}).get("last_token_s")
    if answer:
        table.add_row("time to answer p50 / p99 (s)",
                      f"{_fmt(answer['p50'])} / {_fmt(answer['p99'])}")
    table.add_row("kv_cache_bytes", _fmt(mem.get("kv_cache_bytes")))
    table.add_row("peak_bytes", _fmt(mem.get("peak_bytes")))
    roof = record.get("roofline") or {}
    if roof.get("flops_fraction") is not None:
        table.add_row("FLOP/s achieved (of peak)",
                      f"{_fmt(roof.get('achieved_flops'))} ({roof['flops_fraction']:.1%})")
    if roof.get("bandwidth_fraction") is not None:
        table.add_row("bandwidth achieved (of peak)",
                      f"{_fmt(roof.get('achieved_bytes_s'))} B/s "
                      f"({roof['bandwidth_fraction']:.1%})")
    tel = record.get("telemetry") or {}
    for key in ("cpu_util_mean", "gpu_util_mean", "power_w_mean", "energy_j", "j_per_token"):
        if tel.get(key) is not None:
            table.add_row(key, _fmt(tel[key]))
    out.print(table)
    if roof:
        from pmbench.measure.roofline import format_roofline

        out.print(format_roofline(roof), highlight=False)
    if not record.get("ignore_eos"):
        out.print("An accuracy run: its tok/s is not Table 1's, which comes from throughput runs "
                  "(--ignore-eos, a fixed token budget); its Q/s is Table 5's.", highlight=False)
    out.print(f"record: {record['settings']['output_dir']}/{record['run_id']}/run.json")


def methods() -> None:
    """List the installed decoding methods (runner plugins)."""
    from pmbench.engine.runners.base import RunnerUnavailable, available_runners

    for name, cls in available_runners().items():
        note = ""
        try:
            cls.check_available()
        except RunnerUnavailable as exc:
            note = f"  [not installed: {exc}]"
        kind = " (validation)" if getattr(cls, "kind", "method") == "validation" else ""
        out.print(f"{name}{kind}: {cls.description}{note}", highlight=False, markup=False)


def suites() -> None:
    """List the task suites."""
    from pmbench.suites import available_suites

    for name, desc in available_suites().items():
        out.print(f"{name}: {desc}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(methods)
    app.command()(suites)
