"""`pmbench run`: one method on one suite, and the names it takes (`methods`, `suites`).

The options build a run spec (`pmbench.jobs.spec`), the one form a sweep's cells and
run.json's `settings` take too; `pmbench.jobs.run` does the work.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pmbench.commands.common import _quiet_libraries, shown
from pmbench.commands.options import declared_command, lazy_command
from pmbench.errors import BadInput

err = Console(stderr=True)
out = Console()


JSON_OUT = inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
                             annotation=Annotated[bool, typer.Option(
                                 "--json", help="Print run.json only.")])


def run(options: dict[str, Any]) -> None:
    """Run one method on one suite and write results/<run_id>/."""
    options = dict(options)
    json_out = options.pop("json_out")
    method, suite, branch, resume = (options[k] for k in ("method", "suite", "branch", "resume"))
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


def _make_run():
    from pmbench.jobs.spec import run_options

    return declared_command(run, run_options(), [JSON_OUT], name="run", doc=run.__doc__ or "")


def register(app: typer.Typer) -> None:
    lazy_command(app, "run", _make_run, run.__doc__ or "")
    app.command()(methods)
    app.command()(suites)
