"""The `pmbench` command line (Typer + rich).

`run`, `methods` and `suites` live here; every module in `pmbench.commands`
adds its own commands through `register(app)`. Expected failures (`PmbenchError`)
become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pmbench import __version__
from pmbench.commands import options as cli_options
from pmbench.errors import BadInput, PmbenchError

app = typer.Typer(
    name="pmbench",
    help="Benchmark parallel inference in LLMs: sequential vs batch vs 2D-RoPE branches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _version(value: bool) -> None:
    if value:
        out.print(f"pmbench {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """pmbench: honest, reproducible numbers for parallel decoding."""


@app.command()
def run(
    method: Annotated[str | None, typer.Option(
        help="Decoding method (see `pmbench methods`).")] = None,
    suite: Annotated[str | None, typer.Option(help="Task suite (see `pmbench suites`).")] = None,
    branch: Annotated[int, typer.Option(help="Group size: questions answered together.")] = 1,
    model: Annotated[str | None, typer.Option(help="HF folder, .gguf file or hub id.")] = None,
    limit: Annotated[int | None, typer.Option(help="Number of questions.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens per answer.")] = None,
    ignore_eos: Annotated[bool, typer.Option(
        "--ignore-eos", help="Generate exactly --max-new-tokens (equal token volume).")] = False,
    repeats: Annotated[int, typer.Option(help="Timed repeats after one warm-up.")] = 1,
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
) -> None:
    """Run one method on one suite and write results/<run_id>/."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pmbench.jobs.run import RunSettings, execute_run, prepare_run

    _quiet_libraries()
    if resume is None and (method is None or suite is None):
        raise BadInput("--method and --suite are required (unless --resume RUN_ID)")
    settings = RunSettings(
        method=method, suite=suite, branch=branch, model=model, limit=limit,
        max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, repeats=repeats,
        warmup=not no_warmup, seed=seed, dtype=dtype, device=device, device_map=device_map,
        data_dir=data_dir, output_dir=output_dir, num_fewshot=num_fewshot, split=split,
        subjects=[x.strip() for x in subjects.split(",") if x.strip()] if subjects else None,
        samples_per_task=samples_per_task, apply_chat_template=apply_chat_template,
        allow_code_execution=allow_code_execution,
        allow_unisolated_code_execution=allow_unisolated_code_execution,
        rope2d={"ratio": rope_2d_ratio, "mode": rope_2d_mode, "branch_freqs": branch_freqs,
                "mask": mask},
        threads=threads, attn_implementation=attn_implementation, cpu_prepack=cpu_prepack,
        prefix_kv=prefix_kv,
        run_id=run_id, resume=resume,
    )
    prepared = prepare_run(settings)  # bad input fails here, before any progress bar
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=json_out) as bar:
        label = f"{method or ''} {suite or ''} b{branch}" if not resume else f"resume {resume}"
        task = bar.add_task(label, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def log(msg: str) -> None:
            bar.update(task, description=f"{label}: {msg}")

        record = execute_run(prepared, progress=progress, log=log)
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
            table.add_row(f"metric {key}", _fmt(value, ".4g"))
    table.add_row("output tok/s (median [min, max])",
                  f"{_fmt(tp.get('output_tok_s'))} [{_fmt(tp.get('output_tok_s_min'))}, "
                  f"{_fmt(tp.get('output_tok_s_max'))}]")
    table.add_row("questions/s", _fmt(tp.get("q_s")))
    for key in ("ttft_s", "tpot_s", "prefill_s", "decode_s", "wall_s"):
        table.add_row(key, _fmt(lat.get(key)))
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
    out.print(f"record: {record['settings']['output_dir']}/{record['run_id']}/run.json")


@app.command()
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


@app.command()
def suites() -> None:
    """List the task suites."""
    from pmbench.suites import available_suites

    for name, desc in available_suites().items():
        out.print(f"{name}: {desc}", highlight=False, markup=False)


def _last_resort(exc: BaseException) -> str | None:
    """One line for a file-system or file-format failure that no command turned into a
    PmbenchError (commands give more specific messages where they can), else None."""
    import yaml

    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not valid UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, yaml.YAMLError):
        return f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc}"
    return None


def _guard(fn):
    """Turn expected failures into one line and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PmbenchError as exc:
            err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # a last line of defence; anything unexpected re-raises
            message = _last_resort(exc)
            if message is None:
                raise
            err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished groups are saved; continue with --resume RUN_ID")
            raise typer.Exit(130) from None

    return wrapper


def _guard_all(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_pm_guarded", False):
            info.callback = _guard(info.callback)
            info.callback._pm_guarded = True
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _guard_all(group.typer_instance)


def _register_commands() -> None:
    import pmbench.commands as commands

    for mod in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"pmbench.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    _guard_all(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
