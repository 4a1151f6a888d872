"""`pmbench sweep GRID --status`: every cell as done, running, queued, failed or missing,
for the local and the Slurm executor alike.

Read from what is on disk and in the queue, not from a process that may be gone: the
cell's record (done), its claim (pmbench.sweep.claims: which sweep process or Slurm job
has it, and whether that owner still lives), its sweep.log (the last attempt's error
line), submitit's job folder (the job's own error, or Slurm's, e.g. a time limit) and
`squeue` (queued or running, and why it waits).

All of it may have been planted: nothing here is unpickled (submitit's result pickle is
never read; the job's error comes from the end of its stderr log), logs are read through
pmbench.records.safe_io (no link followed, no FIFO opened, only their tail), and a claim
cannot send a read elsewhere: the job folder is `<output-dir>/.slurm/<job id>`, whatever
the claim's `folder` says, and a job id is digits (pmbench.sweep.claims).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmbench.sweep import claims
from pmbench.sweep.grid import AnyCell
from pmbench.sweep.queue import JobState
from pmbench.sweep.supervise import LOG_FILE, cell_state, last_error, read_log_tail

STATES = ("done", "running", "queued", "failed", "missing")


@dataclass
class CellStatus:
    cell: AnyCell
    state: str  # one of STATES
    job: str = ""  # "slurm 812_3", "local pid 4242@node1", or ""
    detail: str = ""  # the error line of a failed cell; why a queued one waits


def job_label(claim: dict[str, Any] | None) -> str:
    if not claim:
        return ""
    if claim.get("executor") == "slurm":
        return f"slurm {claim.get('job_id')}"
    return f"local pid {claim.get('pid')}@{claim.get('host')}"


def sweep_status(cells: list[AnyCell], output_dir: str | Path) -> list[CellStatus]:
    """The state of every cell (one `squeue` call for all of them)."""
    held = {c.id: claims.read_claim(output_dir, c.id) for c in cells}
    states = {c.id: cell_state(output_dir, c) for c in cells}
    jobs = claims.slurm_jobs(held[c.id] for c in cells if states[c.id] != "done")
    return [_status(c, output_dir, states[c.id], held[c.id], jobs) for c in cells]


def _status(cell: AnyCell, output_dir: str | Path, state: str, claim: dict[str, Any] | None,
            jobs: dict[str, JobState]) -> CellStatus:
    job = job_label(claim)
    if state == "done":
        return CellStatus(cell, "done", job)
    active = claims.activity(claim, jobs)
    slurm = claim is not None and claim.get("executor") == "slurm"
    if active:
        queued = jobs.get(str(claim.get("job_id"))) if slurm else None
        why = queued.reason if queued and active == "queued" and queued.reason != "None" else ""
        return CellStatus(cell, active, job, why)
    log = Path(output_dir) / cell.id / LOG_FILE
    if slurm:
        return CellStatus(cell, "failed", job, _slurm_error(claim, jobs, output_dir, log))
    started = (state == "partial" or os.path.lexists(log)
               or bool(claim and claim.get("started")))
    if not started:  # never claimed, or claimed by a sweep that ended before reaching it
        return CellStatus(cell, "missing")
    return CellStatus(cell, "failed", job, last_error(log) or "interrupted (no error line)")


def _slurm_error(claim: dict[str, Any], jobs: dict[str, JobState], output_dir: str | Path,
                 log: Path) -> str:
    """Why a Slurm job ended without a complete record, in one line."""
    if claim.get("cancelled"):
        return f"cancelled {claim['cancelled']}"
    job_id = str(claim.get("job_id"))
    stderr = read_log_tail(job_folder(output_dir, job_id) / f"{job_id}_0_log.err")
    error = _job_error(stderr)
    if error:
        return error
    slurm_line = _slurm_line(stderr)
    ended = jobs.get(job_id)
    if slurm_line or ended:
        return slurm_line or f"Slurm: {ended.state} ({ended.reason})"
    started = os.path.lexists(log) and log.lstat().st_mtime >= _claimed_at(claim)
    return (last_error(log) if started else "") or "the job ended without a record"


def job_folder(output_dir: str | Path, job_id: str) -> Path:
    """submitit's folder of a job: where pmbench.sweep.slurm put it, never where a claim
    says (a claim is a file anyone may have written)."""
    return Path(output_dir) / claims.SLURM_DIR / job_id


# the last line of the traceback submitit prints when the job's function raised
_RAISED = re.compile(r"^(?:[\w.]+\.)?(?:CellFailed|\w*Error): (.+)$")


def _job_error(stderr: list[str]) -> str:
    """The job's own error: the message of the exception its traceback ends with."""
    for line in reversed(stderr):
        if match := _RAISED.match(line):
            return re.sub(r" \(log: [^()]*\)$", "", match[1])[:300]  # the cell's sweep.log
    return ""


def _slurm_line(stderr: list[str]) -> str:
    """Slurm's own word in the job's stderr (time limit, memory, cancel), if any."""
    said = [x for x in stderr if "slurmstepd" in x or "oom-kill" in x.lower()]
    return said[-1][:300] if said else ""


def _claimed_at(claim: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(claim.get("claimed"))).timestamp()
    except ValueError:
        return 0.0


def counts(statuses: list[CellStatus]) -> str:
    """'3 done, 1 running, ...' (states in a fixed order, zeros left out)."""
    seen = Counter(s.state for s in statuses)
    return ", ".join(f"{seen[s]} {s}" for s in STATES if seen[s]) or "no cells"
