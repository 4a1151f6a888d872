"""`pmbench train pretrain | finetune`: train with 2D RoPE, write a checkpoint and train.json.

Both commands share one loop (`pmbench.train.loop`) and one record format; they
differ in where the model and the examples come from (see `pmbench.train.job`).
Several GPUs or machines: `accelerate launch -m pmbench.cli train ...`.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pmbench.commands.options import declared_command
from pmbench.train.settings import train_options

train_app = typer.Typer(help="Train with 2D RoPE: pretrain a MiniMind-size model or fine-tune "
                        "an HF model.", no_args_is_help=True)

# options of the command that are no setting (every other comes from TrainSettings)
EXTRA = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False,
                           annotation=Annotated[bool, typer.Option(flag, help=help)])
         for name, flag, help in (("json_out", "--json", "Print train.json only."),
                                  ("quiet", "--quiet", "No progress bar."))]
DOCS = {"pretrain": "Pretrain a MiniMind-style model from scratch with 2D RoPE.",
        "finetune": "Fine-tune an HF model (LoRA or full) on shared-context QA with 2D RoPE."}


def _check(settings) -> None:
    """Options torch or the file system would reject with a traceback, or silently
    ignore, checked before any data or model loads."""
    from pmbench.errors import require_positive
    from pmbench.measure.devices import check_device
    from pmbench.records.store import check_run_id

    require_positive(threads=settings.threads)
    check_device(settings.device)
    if settings.run_id is not None:
        check_run_id(settings.run_id, "--run-id")
    if settings.resume is not None:
        check_run_id(settings.resume, "--resume")


def _execute(settings, json_out: bool, quiet: bool) -> None:
    from pmbench.commands.common import _quiet_libraries
    from pmbench.train.job import run_training

    _check(settings)
    _quiet_libraries()
    record = run_training(settings, show_progress=not (quiet or json_out))
    if record.get("status") != "complete":
        return  # not the main process
    if json_out:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return
    table = Table(title=f"training run {record['run_id']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("steps", str(record["completed_steps"]))
    table.add_row("train loss (last 10 steps)", f"{record['train_loss']:.4f}")
    for n, loss in record["heldout_loss"].items():
        table.add_row(f"held-out loss, #branch {n}", f"{loss:.4f}")
    table.add_row("tokens/s", f"{record['tokens_per_s']:,.0f}")
    table.add_row("wall_s", f"{record['wall_s']:.1f}")
    Console().print(table)
    Console().print(f"checkpoint: {record['checkpoint']}", highlight=False)
    Console().print(f"record: {settings.output_dir}/{record['run_id']}/train.json",
                    highlight=False)


def _command(kind: str):
    """`pmbench train <kind>`: its options are TrainSettings' for that kind."""

    def body(options: dict[str, Any]) -> None:
        from pmbench.train.settings import from_options

        json_out, quiet = options.pop("json_out"), options.pop("quiet")
        _execute(from_options(kind, options), json_out, quiet)

    return declared_command(body, train_options(kind), EXTRA, name=kind, doc=DOCS[kind])


for _kind in DOCS:
    train_app.command()(_command(_kind))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
