"""A sweep on Slurm: submit the pending cells, wait for them, cancel them.

Deciding what to submit and claiming it happen under the results folder's claim lock
(pmbench.sweep.claims), so two sweeps of one grid never submit a cell twice; a cell that
a live sweep or a queued or running job holds is left alone. A staged grid goes in stage
by stage, each stage's array waiting for the jobs of the stages before it (`afterany`:
an evaluation job whose training failed then fails at once with that reason).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pmbench.records.store import now_iso
from pmbench.sweep import claims, queue
from pmbench.sweep.grid import AnyCell, stage_names
from pmbench.sweep.slurm import SlurmResources, passed_env, submit_cells
from pmbench.sweep.status import CellStatus, sweep_status
from pmbench.sweep.supervise import needed_training

ACTIVE = ("running", "queued")


@dataclass
class Submission:
    submitted: dict[str, str] = field(default_factory=dict)  # cell id -> Slurm job id
    skipped_failed: list[CellStatus] = field(default_factory=list)  # left for --resume
    statuses: list[CellStatus] = field(default_factory=list)  # before submitting


def submit_pending(cells: list[AnyCell], every: list[AnyCell], output_dir: str | Path,
                   resources: SlurmResources, resume: bool) -> Submission:
    """Submit the missing cells (and with `resume` the failed ones) as Slurm jobs and claim
    them; done, queued and running cells are left as they are."""
    trainings = {c.id: c for c in every if c.kind == "train"}
    env = passed_env()
    result = Submission()
    with claims.claims_lock(output_dir):
        result.statuses = sweep_status(cells, output_dir)
        wanted = {"missing", "failed"} if resume else {"missing"}
        pick = [s.cell for s in result.statuses if s.state in wanted]
        result.skipped_failed = [s for s in result.statuses if s.state == "failed" and not resume]
        earlier: list[str] = []  # jobs of the stages before: queued, running or just submitted
        for stage in stage_names(cells) or [""]:
            in_stage = [c for c in pick if c.stage == stage]
            if in_stage:
                needs = {c.id: trainings.get(needed_training(c, trainings) or "")
                         for c in in_stage}
                jobs = submit_cells(in_stage, output_dir, resources, env, needs, earlier)
                for cell_id, (job_id, folder) in jobs.items():
                    claims.write_claim(output_dir, cell_id, {
                        "executor": "slurm", "job_id": job_id, "folder": folder,
                        "host": claims.host(), "pid": os.getpid(), "claimed": now_iso()})
                    result.submitted[cell_id] = job_id
                earlier += sorted({j.split("_")[0] for j, _ in jobs.values()})
            earlier += [s.job.split(" ", 1)[1] for s in result.statuses
                        if s.cell.stage == stage and s.state in ACTIVE
                        and s.job.startswith("slurm ")]
    return result


def wait_for(cells: list[AnyCell], output_dir: str | Path,
             on_tick: Callable[[list[CellStatus]], None] | None = None,
             poll_s: float = 10.0) -> list[CellStatus]:
    """Poll the cells' status until none is queued or running; the last status."""
    while True:
        statuses = sweep_status(cells, output_dir)
        if on_tick:
            on_tick(statuses)
        if not any(s.state in ACTIVE for s in statuses):
            return statuses
        time.sleep(poll_s)


def cancel_cells(cells: list[AnyCell], output_dir: str | Path,
                 only: set[str] | None = None) -> list[CellStatus]:
    """Cancel the queued and running cells (`only`: just these cell ids): `scancel` their
    Slurm jobs, SIGTERM the local sweeps on this host that hold them (which stop like
    Ctrl-C). Returns the cells it cancelled."""
    cancelled: list[CellStatus] = []
    job_ids: list[str] = []
    pids: set[int] = set()
    with claims.claims_lock(output_dir):
        for status in sweep_status(cells, output_dir):
            if status.state not in ACTIVE or (only is not None and status.cell.id not in only):
                continue
            # only what this user claimed: a planted claim could name anyone's process or job
            claim = claims.read_claim(output_dir, status.cell.id, mine_only=True) or {}
            if claim.get("executor") == "slurm":
                job_ids.append(str(claim.get("job_id")))
                claims.write_claim(output_dir, status.cell.id, {**claim, "cancelled": now_iso()})
            elif claim.get("host") == claims.host() and isinstance(claim.get("pid"), int):
                if claims.is_mine(claim):
                    continue
                pids.add(claim["pid"])
            else:
                continue  # a local sweep on another host: stop it there
            cancelled.append(status)
        if job_ids:
            queue.cancel(job_ids)
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass  # it ended meanwhile
    return cancelled
