"""Claims: which process or Slurm job has taken a cell, so that no cell runs twice at once.

A sweep claims a cell before it runs or submits it, in `<output-dir>/<cell id>/claim.json`:

    {"executor": "local", "host": "node1", "pid": 4242, "pid_start": 1.7e9, "claimed": ..,
     "started": ..}                 # a local sweep process (started: the cell's run began)
    {"executor": "slurm", "job_id": "812_3", "folder": "<output-dir>/.slurm/812_3", ..}

Claims are read and written under one `flock` per results folder (`<output-dir>/.sweep.lock`),
so two sweeps deciding at once see each other's claims. A claim is only a claim while its
owner lives: a local one while its process runs (checked on its host: pid and start time),
a Slurm one while the job is in the queue (pmbench.sweep.slurm); a finished owner's claim
stays as the history `--status` reads (which job, its log).

A claim.json may have been planted: it is read through pmbench.records.safe_io (no link,
no FIFO, at most MAX_RECORD_BYTES), a claim whose job id is not a Slurm job id (digits,
`812` or `812_3`) or whose pid is not a number is no claim, and `--cancel` acts only on
claims written by this user (the file's owner).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from pmbench.errors import BadInput
from pmbench.limits import MAX_RECORD_BYTES
from pmbench.records.store import now_iso
from pmbench.safe_io import (
    atomic_write_text,
    make_folder,
    open_regular,
    parse_json,
    read_regular,
    skip,
)
from pmbench.sweep import queue
from pmbench.sweep.queue import JobState

CLAIM_FILE = "claim.json"
LOCK_FILE = ".sweep.lock"
SLURM_DIR = ".slurm"  # submitit's job folders, one per job: <output-dir>/.slurm/<job id>
JOB_ID = re.compile(r"[0-9]{1,20}(_[0-9]{1,20})?")  # a Slurm job or array task id


def host() -> str:
    """This machine's short host name (as claims name it)."""
    return socket.gethostname().split(".")[0]


def claim_path(output_dir: str | Path, cell_id: str) -> Path:
    return Path(output_dir) / cell_id / CLAIM_FILE


def read_claim(output_dir: str | Path, cell_id: str,
               mine_only: bool = False) -> dict[str, Any] | None:
    """The cell's claim, or None (none, or unreadable or malformed: treated as none, with a
    warning where the file is unsafe). `mine_only`: None unless this user wrote the file."""
    path = claim_path(output_dir, cell_id)
    try:
        data = read_regular(path, MAX_RECORD_BYTES)
        claim = parse_json(data, path) if data is not None else None
        if mine_only and claim is not None and os.lstat(path).st_uid != os.getuid():
            return None
    except BadInput as exc:
        skip(path, getattr(exc, "reason", str(exc)))
        return None
    except (OSError, ValueError):
        return None
    return claim if _well_formed(claim) else None


def _well_formed(claim: Any) -> bool:
    """Whether `claim` is shaped as pmbench writes claims: its job id and pid go to
    `squeue`, `scancel` and `kill`, so nothing else may pass for them."""
    if not isinstance(claim, dict):
        return False
    if claim.get("executor") == "slurm":
        return isinstance(claim.get("job_id"), str) and bool(JOB_ID.fullmatch(claim["job_id"]))
    pid = claim.get("pid")
    return claim.get("executor") == "local" and isinstance(pid, int) and pid > 0


def write_claim(output_dir: str | Path, cell_id: str, claim: dict[str, Any]) -> None:
    """Replace the cell's claim atomically (call under `claims_lock`)."""
    path = claim_path(output_dir, cell_id)
    make_folder(path.parent)  # a cell folder planted as a link is refused
    atomic_write_text(path, json.dumps(claim, indent=2) + "\n")


@contextlib.contextmanager
def claims_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold the results folder's claim lock (blocking: deciding and claiming takes
    milliseconds, submitting a job array seconds)."""
    path = Path(output_dir) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_regular(path, os.O_RDWR, create=True)  # no link, FIFO or device
    except OSError as exc:
        raise BadInput(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def local_claim(started: bool = False) -> dict[str, Any]:
    """A claim by this process."""
    pid = os.getpid()
    return {"executor": "local", "host": host(), "pid": pid, "pid_start": _process_start(pid),
            "claimed": now_iso(), "started": now_iso() if started else None}


def is_mine(claim: dict[str, Any] | None) -> bool:
    """Whether this very process made `claim`."""
    return bool(claim and claim.get("executor") == "local" and claim.get("host") == host()
                and claim.get("pid") == os.getpid())


def local_alive(claim: dict[str, Any]) -> bool:
    """Whether a local claim's process still runs. One of another host cannot be checked
    from here and counts as alive (remove its claim.json once that host is known dead)."""
    if claim.get("host") != host():
        return True
    pid = claim.get("pid")
    if not isinstance(pid, int):
        return False
    start = _process_start(pid)
    if start is None:
        return False
    recorded = claim.get("pid_start")
    return not isinstance(recorded, int | float) or abs(start - recorded) < 1.0


def mark_started(output_dir: str | Path, cell_id: str) -> None:
    """Record in this process's claim that the cell's run has begun (running, not queued)."""
    with claims_lock(output_dir):
        claim = read_claim(output_dir, cell_id)
        if is_mine(claim):
            write_claim(output_dir, cell_id, {**claim, "started": now_iso()})


def owner(claim: dict[str, Any]) -> str:
    """Who holds a claim, in words (for messages)."""
    if claim.get("executor") == "slurm":
        return f"Slurm job {claim.get('job_id')}"
    return f"pmbench sweep pid {claim.get('pid')} on {claim.get('host')}"


def slurm_jobs(claims: Iterable[dict[str, Any] | None]) -> dict[str, JobState]:
    """Slurm's state of the jobs that `claims` name ({} without Slurm claims, or where Slurm
    is not installed: no job of this folder can then be checked, or running, from here)."""
    ids = [c.get("job_id") for c in claims if c and c.get("executor") == "slurm"]
    if not ids or not queue.available():
        return {}
    return queue.queue_states(ids)


def activity(claim: dict[str, Any] | None, jobs: Mapping[str, JobState]) -> str | None:
    """'running' or 'queued' while the claim's owner holds the cell, else None."""
    if not claim:
        return None
    if claim.get("executor") == "slurm":
        return queue.activity(jobs.get(str(claim.get("job_id"))))
    if not local_alive(claim):
        return None
    return "running" if claim.get("started") else "queued"


def claim_local(output_dir: str | Path, cell_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Claim the cells for this process; returns those another live owner holds
    (cell id -> its claim), which this process must leave alone."""
    busy: dict[str, dict[str, Any]] = {}
    with claims_lock(output_dir):
        claims = {i: read_claim(output_dir, i) for i in cell_ids}
        jobs = slurm_jobs(claims.values())
        mine = local_claim()
        for cell_id, claim in claims.items():
            if claim and not is_mine(claim) and activity(claim, jobs):
                busy[cell_id] = claim
            elif not is_mine(claim):
                write_claim(output_dir, cell_id, mine)
    return busy
