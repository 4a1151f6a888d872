"""`pmbench sweep GRID.yaml`: run a grid of `pmbench run` cells (see pmbench.sweep.grid
for the format, pmbench.sweep.supervise for how they run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pmbench.commands.common import shown
from pmbench.commands.progress import progress_bar
from pmbench.errors import one_line
from pmbench.limits import MAX_CELLS

err = Console(stderr=True)
out = Console()


def _headline(record: dict[str, Any] | None) -> tuple[str, str]:
    """(output tok/s, main metric) of a record, for the summary table."""
    if not record:
        return "–", "–"
    tok_s = (record.get("throughput") or {}).get("output_tok_s")
    metrics = record.get("metrics") or {}
    if "heldout_loss" in record:  # a training record
        metrics = {f"loss@b{k}": v for k, v in (record.get("heldout_loss") or {}).items()}
    figures = [f"{k}={v:.3g}" for k, v in metrics.items()
               if k != "n" and isinstance(v, int | float) and not isinstance(v, bool)][:2]
    return ((f"{tok_s:.1f}" if isinstance(tok_s, int | float) else "–"),
            shown(", ".join(figures) or "–"))


def _plan_table(cells, output_dir: str) -> Table:
    from pmbench.sweep.supervise import cell_state

    table = Table(title=f"{len(cells)} cells", show_header=True)
    table.add_column("#", justify="right")
    table.add_column("cell id", overflow="fold")
    table.add_column("cell")
    table.add_column("state")
    staged = any(c.stage for c in cells)
    if staged:
        table.add_column("stage")
    for k, cell in enumerate(cells, 1):
        row = [str(k), cell.id, shown(cell.label()), cell_state(output_dir, cell)]
        table.add_row(*row, *([cell.stage] if staged else []))
    return table


def _summary_table(results) -> Table:
    table = Table(title="sweep", show_header=True)
    table.add_column("cell")
    table.add_column("status")
    table.add_column("out tok/s", justify="right")
    table.add_column("metrics")
    table.add_column("wall s", justify="right")
    table.add_column("record", overflow="fold")
    for r in results:
        tok_s, metric = _headline(r.record)
        table.add_row(shown(r.cell.label()), r.status, tok_s, metric,
                      f"{r.wall_s:.1f}" if r.wall_s else "–", r.cell.id)
    return table


# Each option of `pmbench sweep` as a type of its own, so that the command's signature
# reads as the list of its options.
Grid = Annotated[str, typer.Argument(help="Grid file (YAML), e.g. suites/grids/table1.yaml.")]
Shard = Annotated[str | None, typer.Option(
    help="Run only the I-th of N disjoint slices, e.g. 2/4 (1-based).")]
OutputDir = Annotated[str | None, typer.Option(
    help="Where run records go (default: the grid's output_dir, else results).")]
Stage = Annotated[str | None, typer.Option(
    help="Run only this stage of a staged grid (cells of earlier stages it needs must be "
         "done or running in another process).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="List the cells and their state; run "
                                                         "nothing.")]
SetOptions = Annotated[list[str] | None, typer.Option(
    "--set", help="Override an option in every cell, accuracy and throughput runs alike: "
                  "KEY=VALUE (repeatable), e.g. --set device=cuda.")]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed cell.")]
MaxCells = Annotated[int, typer.Option(
    "--max-cells", min=1, help="Refuse a grid of more cells than this (counted before any "
                               "cell is made): a larger grid is a mistake more often than "
                               "not.")]
Executor = Annotated[str, typer.Option(
    help="local: each cell a process here, one after another. slurm: each cell a Slurm job "
         "(submitit; a job array), records in the same output folder.", case_sensitive=False)]
Status = Annotated[bool, typer.Option(
    "--status", help="Show every cell as done / running / queued / failed / missing, with "
                     "its job and last error line; run nothing.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Slurm: also re-submit failed cells (without it only missing ones go "
                     "in). Local cells always resume.")]
Cancel = Annotated[bool, typer.Option(
    "--cancel", help="Cancel this grid's queued and running cells (scancel its Slurm jobs, "
                     "stop its local sweeps on this host).")]
Wait = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Slurm: follow the jobs until they end (Ctrl-C cancels them), "
                             "or submit and return.")]
Partition = Annotated[str | None, typer.Option(
    help="Slurm partition of the cells' jobs (default: the grid's slurm block, else the "
         "cluster's default).", rich_help_panel="Slurm")]
Gpus = Annotated[int | None, typer.Option(help="GPUs per cell's job (default 0).",
                                          rich_help_panel="Slurm")]
Cpus = Annotated[int | None, typer.Option(help="CPUs per cell's job.", rich_help_panel="Slurm")]
Mem = Annotated[str | None, typer.Option(help="Memory per cell's job, e.g. 64G.",
                                         rich_help_panel="Slurm")]
Time = Annotated[str | None, typer.Option(
    "--time", help="Time limit per cell's job: minutes or [D-]HH:MM:SS (default 1 day); a "
                   "job near its limit is requeued and resumes.", rich_help_panel="Slurm")]
SlurmOptions = Annotated[list[str] | None, typer.Option(
    "--slurm-option", help="Any other sbatch option, KEY=VALUE (repeatable), e.g. "
                           "account=myproj, constraint=a100; a bare KEY is a flag.",
    rich_help_panel="Slurm")]
Poll = Annotated[float, typer.Option(help="Slurm: seconds between status checks while "
                                          "waiting.", min=0.1, rich_help_panel="Slurm")]


def sweep(grid: Grid, shard: Shard = None, output_dir: OutputDir = None, stage: Stage = None,
          dry_run: DryRun = False, set_: SetOptions = None, fail_fast: FailFast = False,
          max_cells: MaxCells = MAX_CELLS, executor: Executor = "local",
          status: Status = False, resume: Resume = False, cancel: Cancel = False,
          wait: Wait = True, partition: Partition = None, gpus_per_cell: Gpus = None,
          cpus_per_cell: Cpus = None, mem: Mem = None, time: Time = None,
          slurm_option: SlurmOptions = None, poll: Poll = 10.0) -> None:
    """Run a grid of cells (models x methods x branches x suites x rope2d), each in its own
    process here or as a Slurm job, skipping cells whose record is complete; rerun the same
    command to resume. With a `throughput:` block each cell is an accuracy run and a
    throughput run."""
    from pmbench.commands import sweep_cluster
    from pmbench.sweep.grid import (
        expand_grid,
        grid_output_dir,
        grid_slurm,
        parse_shard,
        pick_stage,
        read_grid,
    )
    from pmbench.sweep.grid import shard as pick_shard
    from pmbench.sweep.options import parse_set
    from pmbench.sweep.slurm import slurm_resources

    executor = executor.lower()
    slurm_given = [name for name, value in (
        ("--partition", partition), ("--gpus-per-cell", gpus_per_cell),
        ("--cpus-per-cell", cpus_per_cell), ("--mem", mem), ("--time", time),
        ("--slurm-option", slurm_option), ("--no-wait", None if wait else True))
        if value is not None]
    _check_modes(executor, slurm_given, fail_fast, status, cancel, dry_run)
    which = parse_shard(shard)
    raw = read_grid(grid)
    output_dir = output_dir or grid_output_dir(raw) or "results"
    every = expand_grid(raw, Path(grid).stem, parse_set(set_ or []), max_cells)
    cells = pick_shard(pick_stage(every, stage), which)
    resources = slurm_resources(grid_slurm(raw), partition=partition,
                                gpus_per_cell=gpus_per_cell, cpus_per_cell=cpus_per_cell,
                                mem=mem, time=time, options=slurm_option)
    if dry_run:
        out.print(_plan_table(cells, output_dir))
    elif not cells:
        err.print("this shard has no cells")
    elif status:
        sweep_cluster.show_status(cells, output_dir)
    elif cancel:
        sweep_cluster.cancel(cells, output_dir)
    elif executor == "slurm":
        sweep_cluster.run_on_slurm(grid, cells, every, output_dir, resources, resume, wait,
                                   poll)
    else:
        _run_here(cells, every, output_dir, fail_fast)


def _check_modes(executor: str, slurm_given: list[str], fail_fast: bool, *modes: bool) -> None:
    """BadInput for options that do not go together (`modes`: --status, --cancel,
    --dry-run)."""
    from pmbench.errors import BadInput

    if executor not in ("local", "slurm"):
        raise BadInput(f"--executor: local or slurm, got {executor!r}")
    if sum(modes) > 1:
        raise BadInput("--status, --cancel and --dry-run go one at a time")
    if executor == "local" and slurm_given:
        raise BadInput(f"{', '.join(slurm_given)}: for --executor slurm")
    if executor == "slurm" and fail_fast:
        raise BadInput("--fail-fast: for --executor local (Slurm runs the cells at once; "
                       "--cancel stops them)")


def _run_here(cells, every, output_dir: str, fail_fast: bool) -> None:
    """Run the cells one after another in processes of this machine, with a progress bar;
    exit 130 on Ctrl-C (finished cells kept), 1 when a cell failed."""
    from pmbench.sweep.supervise import env_for_cells, run_sweep, sigterm_as_interrupt

    progress = progress_bar(err, TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with progress, sigterm_as_interrupt():
            results = run_sweep(cells, output_dir, _on_event(progress, len(cells)),
                                env_for_cells(), fail_fast, grid_cells=every)
    except KeyboardInterrupt:
        err.print("interrupted: finished cells are saved; run the same command to continue")
        raise typer.Exit(130) from None
    out.print(_summary_table(results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        err.print(f"failed {r.cell.id}: {one_line(r.message)}", highlight=False, markup=False,
                  soft_wrap=True)
    if failed:
        err.print(f"{len(failed)} of {len(results)} cells failed (see their sweep.log)")
        raise typer.Exit(1)


def _on_event(progress, n_cells: int):
    """The sweep's event callback: the overall bar, the current cell's bar, and a line for
    each busy or failed cell."""
    overall = progress.add_task("cells", total=n_cells, unit="cells")
    current = progress.add_task("", total=None, visible=False, lines=False)

    def on_event(event, cell, result, done, total) -> None:
        if event == "start":
            progress.update(current, description=f"  {shown(cell.label())}", completed=0,
                            total=total, visible=True)
        elif event == "progress":
            progress.update(current, completed=done, total=total)
        elif event == "waiting":
            progress.update(current, description=f"  {shown(cell.label())}: waiting for its "
                                                 "checkpoint (another process is training it)")
        elif event == "end":
            progress.advance(overall)
            if result.status in ("busy", "failed"):
                color = "yellow" if result.status == "busy" else "red"
                progress.console.print(f"[{color}]{result.status}[/{color}] {cell.id}: "
                                       f"{shown(result.message)}", highlight=False)

    return on_event


def register(app: typer.Typer) -> None:
    app.command(name="sweep")(sweep)
