"""What Slurm says about jobs: `squeue` for their state, `scancel` to stop them.

Only the two client commands every Slurm login node has; no accounting database
(`sacct`) is needed: a job that left the queue is judged by its cell's record and its
submitit log (pmbench.sweep.status).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from typing import NamedTuple

from pmbench.errors import BadInput

QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESV_DEL_HOLD", "SUSPENDED", "STOPPED", "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}
TIMEOUT_S = 60.0


class JobState(NamedTuple):
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, ...
    reason: str  # why it waits or ended, e.g. "Resources", "Dependency", "None"


def available() -> bool:
    """Whether Slurm's client commands are installed here."""
    return shutil.which("squeue") is not None


def activity(state: JobState | None) -> str | None:
    """'queued' or 'running' while Slurm still holds the job, else None (it ended)."""
    if state is None:
        return None
    if state.state in RUNNING:
        return "running"
    if state.state in QUEUED:
        return "queued"
    return None


def queue_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The state of each job (`812` or array task `812_3`) that Slurm still knows.

    A job purged from the controller's memory (MinJobAge after it ended) is absent.
    """
    wanted = {str(j) for j in job_ids if j}
    bases = sorted({j.split("_")[0] for j in wanted})
    if not bases:
        return {}
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r",
           "--jobs=" + ",".join(bases)]
    done = _run(cmd)
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():  # every one of them is gone
            return {}
        raise BadInput(f"squeue failed: {_last_line(done)}")
    out: dict[str, JobState] = {}
    for line in done.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id in wanted:
            out[job_id] = JobState(state.strip(), reason.strip())
    return out


def cancel(job_ids: Iterable[str]) -> None:
    """`scancel` the jobs (array tasks by their own id); ended ones are ignored."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return
    done = _run(["scancel", *ids])
    if done.returncode != 0 and "invalid job id" not in done.stderr.lower():
        raise BadInput(f"scancel failed: {_last_line(done)}")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise BadInput(f"{cmd[0]} not found: run this on a machine of the Slurm cluster "
                       "(its login node), or use --executor local")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BadInput(f"{cmd[0]} did not answer in {TIMEOUT_S:.0f} s: is slurmctld "
                       "reachable?") from None


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [x.strip() for x in (done.stderr + done.stdout).splitlines() if x.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"
