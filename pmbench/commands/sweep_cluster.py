"""The parts of `pmbench sweep` beyond running cells here: `--status`, `--cancel` and
`--executor slurm` (submit, wait, Ctrl-C cancels). See pmbench.sweep.cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pmbench.commands.common import shown
from pmbench.errors import one_line

err = Console(stderr=True)
out = Console()
COLORS = {"done": "green", "running": "cyan", "queued": "blue", "failed": "red",
          "missing": "yellow"}


def status_table(statuses, title: str) -> Table:
    """Every cell with its state, job and last error line (or why it waits)."""
    table = Table(title=title, show_header=True)
    table.add_column("#", justify="right")
    table.add_column("cell id", overflow="fold")
    table.add_column("cell")
    table.add_column("state")
    table.add_column("job")
    table.add_column("detail", overflow="fold")
    for k, s in enumerate(statuses, 1):
        color = COLORS.get(s.state, "white")
        table.add_row(str(k), s.cell.id, shown(s.cell.label()),
                      f"[{color}]{s.state}[/{color}]", shown(s.job or "–"), shown(s.detail))
    return table


def show_status(cells, output_dir: str) -> None:
    from pmbench.sweep.status import counts, sweep_status

    statuses = sweep_status(cells, output_dir)
    out.print(status_table(statuses, f"{len(cells)} cells"))
    out.print(f"{counts(statuses)} (records in {output_dir})", highlight=False, markup=False,
              soft_wrap=True)


def cancel(cells, output_dir: str) -> None:
    from pmbench.sweep.cluster import cancel_cells

    cancelled = cancel_cells(cells, output_dir)
    for s in cancelled:
        err.print(f"cancelled {s.cell.id} ({one_line(s.job)})", highlight=False, markup=False)
    err.print(f"cancelled {len(cancelled)} queued or running cells" if cancelled
              else "no cell of this grid is queued or running")


def run_on_slurm(grid: str, cells, every, output_dir: str, resources, resume: bool,
                 wait: bool, poll_s: float) -> None:
    """Submit the pending cells, then (unless --no-wait) follow them until they end."""
    from pmbench.sweep.cluster import cancel_cells, submit_pending, wait_for
    from pmbench.sweep.status import counts
    from pmbench.sweep.supervise import sigterm_as_interrupt

    sub = submit_pending(cells, every, output_dir, resources, resume)
    jobs = sorted({j.split("_")[0] for j in sub.submitted.values()}, key=int)
    if sub.submitted:
        err.print(f"submitted {len(sub.submitted)} cells to Slurm as job"
                  f"{'s' if len(jobs) > 1 else ''} {', '.join(jobs)} "
                  f"(logs: {Path(output_dir) / '.slurm'})", highlight=False)
    active = [s for s in sub.statuses if s.state in ("queued", "running")]
    if active:
        err.print(f"{len(active)} cells already queued or running: left alone")
    if sub.skipped_failed:
        err.print(f"[yellow]{len(sub.skipped_failed)} failed cells not re-submitted[/yellow]: "
                  "--resume re-submits them (--status shows their errors)")
    if not (sub.submitted or active):
        err.print("nothing to submit: " + counts(sub.statuses))
        return
    if not wait:
        err.print(f"follow them with: pmbench sweep {grid} --status"
                  + (f" --output-dir {output_dir}" if output_dir != "results" else ""),
                  highlight=False, markup=False)
        return

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err)
    task = progress.add_task("cells", total=len(cells))

    def on_tick(statuses) -> None:
        ended = sum(s.state in ("done", "failed") for s in statuses)
        progress.update(task, completed=ended, description=f"cells ({counts(statuses)})")

    try:
        with progress, sigterm_as_interrupt():
            statuses = wait_for(cells, output_dir, on_tick, poll_s)
    except KeyboardInterrupt:
        cancelled = cancel_cells(cells, output_dir, only=set(sub.submitted))
        err.print(f"interrupted: cancelled {len(cancelled)} submitted jobs; finished cells are "
                  "saved, --resume re-submits the rest")
        raise typer.Exit(130) from None
    out.print(status_table(statuses, f"{len(cells)} cells"))
    out.print(counts(statuses), highlight=False, markup=False)
    failed = [s for s in statuses if s.state == "failed"]
    for s in failed:
        err.print(f"failed {s.cell.id}: {one_line(s.detail)}", highlight=False, markup=False,
                  soft_wrap=True)
    if failed:
        err.print(f"{len(failed)} of {len(cells)} cells failed: fix the cause, then --resume")
        raise typer.Exit(1)
