"""Running a sweep: each cell in its own `pmbench` process, one after another.

A cell whose record is complete is skipped, one left "running" is resumed, and every
cell's output goes to `<output-dir>/<id>/sweep.log`. A cell that evaluates the
checkpoint of one of the grid's training runs waits while another process (another
shard) trains it. Ctrl-C or SIGTERM stops the cell in flight the way Ctrl-C stops
`pmbench run`, so running the same sweep again continues where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.limits import MAX_LOG_TAIL_BYTES
from pmbench.records import store
from pmbench.records.run_record import BadRunRecord, RunRecord
from pmbench.records.train import CHECKPOINT_DIR, CHECKPOINTS_DIR
from pmbench.safe_io import make_folder, open_regular, read_regular, skip
from pmbench.sweep import claims
from pmbench.sweep.grid import AnyCell
from pmbench.sweep.train_cells import TrainCell

COMPLETE_STATUS = "complete"
LOG_FILE = "sweep.log"


def cell_state(output_dir: str | Path, cell: AnyCell) -> str:
    """'done' (complete record), 'partial' (interrupted: resume it) or 'new'."""
    if not os.path.lexists(Path(output_dir) / cell.id / cell.record_file):
        return "new"
    record = read_record(output_dir, cell)  # unreadable: `--resume` reports it precisely
    return "done" if record and record.get("status") == COMPLETE_STATUS else "partial"


def cell_command(cell: AnyCell, output_dir: str | Path, state: str) -> list[str]:
    """The subprocess command line for a cell: a fresh run, or `--resume` of its record."""
    base = [sys.executable, "-c", "from pmbench.cli import main; main()"]
    return base + cell.command_args(state) + ["--output-dir", str(output_dir)]


@dataclass
class CellResult:
    cell: AnyCell
    status: str  # "skipped" (already done), "ran", "resumed", "failed", "busy" (see claims)
    wall_s: float = 0.0
    message: str = ""
    record: dict[str, Any] | None = None


# (event, cell, result-or-None, questions done, questions total)
EventFn = Callable[[str, AnyCell, CellResult | None, int, int | None], None]


def _count_lines(path: Path) -> int:
    """Lines of a cell's samples.jsonl so far (for its progress bar; 0 when unreadable)."""
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:  # missing, or UnsafeFile: its run refuses it in one line
        return 0


def read_log_tail(log: Path) -> list[str]:
    """The stripped lines of the end of a log (MAX_LOG_TAIL_BYTES), [] without one; a log
    that is a link, a FIFO or a device is skipped with a warning, never read."""
    try:
        data = read_regular(log, MAX_LOG_TAIL_BYTES, tail=True)
    except BadInput as exc:
        skip(log, getattr(exc, "reason", str(exc)))
        return []
    except OSError:
        return []
    return [x.strip() for x in (data or b"").decode("utf-8", "replace").splitlines()]


def last_error(log: Path) -> str:
    """The error line of the cell's last attempt in its sweep.log (each attempt starts with
    a `# date command` line), else that attempt's last line; '' without a log."""
    lines = read_log_tail(log)
    starts = [k for k, x in enumerate(lines) if x.startswith("# ")]
    lines = lines[starts[-1] + 1:] if starts else lines
    errors = [x for x in lines if x.startswith("error:")]
    tail = errors[-1] if errors else next((x for x in reversed(lines) if x), "")
    return tail[:300]


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop a cell like Ctrl-C does (it saves its finished groups), then insist.

    A Ctrl-C in a terminal reaches the cell too (same process group): give it a moment
    to finish on its own before sending SIGINT, so its clean-up is not interrupted twice.
    """
    for sig, wait_s in ((None, 2.0), (signal.SIGINT, grace_s), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_cell(cell: AnyCell, output_dir: str | Path, on_event: EventFn | None = None,
             env: Mapping[str, str] | None = None, poll_s: float = 0.5,
             grace_s: float = 30.0) -> CellResult:
    """Run one cell in its own process, unless its record is complete already."""
    output_dir = Path(output_dir)
    state = cell_state(output_dir, cell)
    if state == "done":
        return CellResult(cell, "skipped", record=read_record(output_dir, cell))
    folder = output_dir / cell.id
    log = folder / LOG_FILE
    cmd = cell_command(cell, output_dir, state)
    total = cell.total
    t0 = time.perf_counter()
    fh = None
    make_folder(folder)  # a cell folder planted as a link is refused
    try:
        fh = os.fdopen(open_regular(log, os.O_WRONLY | os.O_APPEND, create=True), "a",
                       encoding="utf-8")
        fh.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[3:])}\n")
        fh.flush()
    except OSError as exc:
        with contextlib.suppress(OSError):
            if fh is not None:
                fh.close()
        raise BadInput(f"cannot write {log}: {exc.strerror or exc}; finished cells are "
                       "saved, free space and run the same command again") from None
    with fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None)
        try:
            while True:
                try:
                    proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    if on_event:
                        on_event("progress", cell, None,
                                 _count_lines(folder / "samples.jsonl"), total)
        except BaseException:
            _stop(proc, grace_s)
            raise
    wall = time.perf_counter() - t0
    if proc.returncode == 0 and cell_state(output_dir, cell) == "done":
        status = "resumed" if state == "partial" else "ran"
        return CellResult(cell, status, wall, record=read_record(output_dir, cell))
    msg = last_error(log) or f"exit code {proc.returncode}"
    return CellResult(cell, "failed", wall, f"{msg} (log: {log})")


def read_record(output_dir: str | Path, cell: AnyCell) -> dict[str, Any] | None:
    """The cell's record, or None when it is missing or unreadable (a warning says why:
    a link, a FIFO, a corrupt or oversized file; `--resume` refuses it in one line)."""
    path = Path(output_dir) / cell.id / cell.record_file
    try:
        record = store.read_record(path)
        if cell.record_file == store.RUN_FILE:  # a run's record, read as every run's is
            record = RunRecord.from_dict(record).to_dict()
        return record
    except BadRunRecord as exc:
        skip(path, str(exc))
    except BadInput as exc:
        if os.path.lexists(path):
            skip(path, getattr(exc, "reason", None) or str(exc))
    return None


def needed_training(cell: AnyCell, trainings: Mapping[str, TrainCell]) -> str | None:
    """The id of the grid's training run whose checkpoint `cell` evaluates, if any: its
    model is `<folder>/<train id>/checkpoint` or `<folder>/<train id>/checkpoints/step-N`
    (waited for until the training completes, as the final one)."""
    if cell.kind != "run" or not cell.model:
        return None
    parts = Path(cell.model).parts
    if len(parts) >= 2 and parts[-1] == CHECKPOINT_DIR and parts[-2] in trainings:
        return parts[-2]
    if len(parts) >= 3 and parts[-2] == CHECKPOINTS_DIR and parts[-3] in trainings:
        return parts[-3]
    return None


def wait_for_training(training: TrainCell, output_dir: str | Path, ran_here: bool,
                      on_event: EventFn | None, cell: AnyCell, wait_s: float) -> str:
    """'' once `training` is complete; an error message when it cannot become so.

    A training run of this process that is not complete has failed; one that another
    process (another shard) has started is waited for; one nobody has started is missing.
    """
    while (state := cell_state(output_dir, training)) != "done":
        if ran_here or state == "new":
            why = "did not complete" if ran_here else "has not been started (run its stage first)"
            return f"needs the checkpoint of training run {training.id}, which {why}"
        if on_event:
            on_event("waiting", cell, None, 0, None)
        time.sleep(wait_s)
    return ""


def run_sweep(cells: list[AnyCell], output_dir: str | Path, on_event: EventFn | None = None,
              env: Mapping[str, str] | None = None, fail_fast: bool = False,
              grid_cells: list[AnyCell] | None = None, wait_s: float = 10.0) -> list[CellResult]:
    """Run `cells` one after another, each in its own process; finished cells are skipped.

    A cell that evaluates the checkpoint of one of the grid's training runs
    (`grid_cells`: the whole grid, when `cells` is a shard or a stage of it) waits while
    another process trains it, and fails at once when that training failed here or was
    never started.

    Ctrl-C (KeyboardInterrupt) or SIGTERM stops the cell in flight the way Ctrl-C stops
    `pmbench run` (its finished groups are kept) and propagates; running the same sweep
    again resumes that cell and skips every complete one.

    The cells are claimed first (pmbench.sweep.claims): one that another live sweep or a
    queued or running Slurm job holds is left alone ("busy").
    """
    trainings = {c.id: c for c in (grid_cells or cells) if c.kind == "train"}
    mine = {c.id for c in cells}
    busy = claims.claim_local(output_dir, [c.id for c in cells
                                           if cell_state(output_dir, c) != "done"])
    results: list[CellResult] = []
    for cell in cells:
        if on_event:
            on_event("start", cell, None, 0, cell.total)
        if cell.id in busy:  # another sweep or a Slurm job has it: never run a cell twice
            results.append(CellResult(cell, "busy", message=f"{claims.owner(busy[cell.id])} "
                                                            "has it; left alone"))
            if on_event:
                on_event("end", cell, results[-1], 0, None)
            continue
        claims.mark_started(output_dir, cell.id)
        needed = needed_training(cell, trainings)
        missing = needed and wait_for_training(trainings[needed], output_dir, needed in mine,
                                                on_event, cell, wait_s)
        if missing:
            result = CellResult(cell, "failed", message=missing)
        else:
            result = run_cell(cell, output_dir, on_event, env)
        results.append(result)
        if on_event:
            on_event("end", cell, result, 0, None)
        if fail_fast and result.status == "failed":
            break
    return results


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (Slurm's cancel, `kill`) raises KeyboardInterrupt, so it stops a sweep
    the way Ctrl-C does (main thread only; elsewhere a no-op)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def env_for_cells() -> dict[str, str]:
    """The environment of the cell processes: this one, with quiet tokenizers."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
