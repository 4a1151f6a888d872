"""Cells as Slurm jobs through submitit: the resources a grid or the command line names,
and the job itself, which runs exactly what the local executor runs.

A job is `run_cell` (pmbench.sweep.supervise) on a node of the cluster: the cell's own
`pmbench run` / `pmbench train` process, its sweep.log, its record in the shared results
folder, just as `--executor local` writes them. A grid's pending cells go in as one job
array (submitit's `executor.batch()`); each array task gets the resources of one cell.
The job is checkpointable: when Slurm preempts it or its time limit nears, submitit
requeues it and the requeued job continues the cell's record (`--resume`).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from pmbench.errors import BadInput
from pmbench.sweep.claims import SLURM_DIR
from pmbench.sweep.grid import AnyCell
from pmbench.sweep.supervise import env_for_cells, run_cell, wait_for_training
from pmbench.sweep.train_cells import TrainCell

BLOCK_KEYS = {"partition", "gpus_per_cell", "cpus_per_cell", "mem", "time", "options"}
DEFAULT_TIME_MIN = 24 * 60  # submitit's own default is 5 minutes: too short for any cell
# sbatch options the sweep sets itself (where logs go, the array)
RESERVED = {"output", "error", "array", "open-mode", "wrap", "signal"}
# what the job takes from the submitting shell, over the node's own environment
PASSED_ENV = ("PMBENCH_", "HF_", "OMP_", "TOKENIZERS_", "TRANSFORMERS_")
SIGNAL_DELAY_S = 90  # USR2 this long before the time limit: the cell saves and requeues


class CellFailed(RuntimeError):
    """A cell's run failed on its node (the message is its error line)."""


@dataclass(frozen=True)
class SlurmResources:
    """What each cell's job asks Slurm for (one node, one task)."""

    partition: str | None = None
    gpus_per_cell: int = 0
    cpus_per_cell: int | None = None
    mem: str | None = None
    time_min: int = DEFAULT_TIME_MIN
    options: dict[str, Any] = field(default_factory=dict)  # any other sbatch option

    def parameters(self, job_name: str, dependency: list[str]) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters for these resources."""
        params: dict[str, Any] = {"job_name": job_name, "time": self.time_min, "nodes": 1,
                                  "signal_delay_s": SIGNAL_DELAY_S}
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_cell:
            params["gpus_per_node"] = self.gpus_per_cell
        if self.cpus_per_cell:
            params["cpus_per_task"] = self.cpus_per_cell
            # srun does not take it from sbatch on every Slurm release (22.05 did not)
            params["srun_args"] = [f"--cpus-per-task={self.cpus_per_cell}"]
        if self.mem:
            params["mem"] = self.mem
        if dependency:
            params["dependency"] = "afterany:" + ":".join(dependency)
        if self.options:
            params["additional_parameters"] = dict(self.options)
        return params


def slurm_resources(block: Any = None, *, partition: str | None = None,
                    gpus_per_cell: int | None = None, cpus_per_cell: int | None = None,
                    mem: str | None = None, time: str | None = None,
                    options: list[str] | None = None) -> SlurmResources:
    """The grid's `slurm:` block, overridden by the command line's options (bad input when
    either names something Slurm would refuse to parse)."""
    block = {} if block is None else block
    if not isinstance(block, Mapping):
        raise BadInput("grid slurm: a mapping of partition, gpus_per_cell, cpus_per_cell, "
                       "mem, time, options")
    block = {str(k).replace("-", "_"): v for k, v in block.items()}
    unknown = set(block) - BLOCK_KEYS
    if unknown:
        raise BadInput(f"grid slurm: unknown key(s) {sorted(unknown)}; valid: "
                       f"{', '.join(sorted(BLOCK_KEYS))}")
    extra = block.get("options") or {}
    if not isinstance(extra, Mapping):
        raise BadInput("grid slurm options: a mapping of sbatch options, e.g. {account: abc}")
    given = {**{str(k): v for k, v in extra.items()}, **_cli_options(options or [])}
    part = partition if partition is not None else block.get("partition")
    gpus = gpus_per_cell if gpus_per_cell is not None else block.get("gpus_per_cell", 0)
    cpus = cpus_per_cell if cpus_per_cell is not None else block.get("cpus_per_cell")
    return SlurmResources(
        partition=_name(part, "partition"),
        gpus_per_cell=_count(gpus, "gpus per cell", 0) or 0,
        cpus_per_cell=_count(cpus, "cpus per cell", 1),
        mem=parse_mem(mem if mem is not None else block.get("mem")),
        time_min=parse_time(time if time is not None else block.get("time")),
        options={_option_key(k): _option_value(k, v) for k, v in given.items()})


def _name(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[\w.,-]+", value):
        raise BadInput(f"--{what}: expected a Slurm name, got {value!r}")
    return value


def _count(value: Any, what: str, least: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise BadInput(f"--{what.replace(' ', '-')}: expected an integer >= {least}, "
                       f"got {value!r}")
    return value


def parse_mem(value: Any) -> str | None:
    """Memory per cell as Slurm writes it: 64G, 500M, 1T (a bare number: megabytes)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not match or int(match[1]) == 0:
        raise BadInput(f"--mem: expected a size like 64G or 500M, got {value!r}")
    return f"{match[1]}{match[2].upper() or 'M'}"


def parse_time(value: Any) -> int:
    """A time limit in minutes, from minutes (90) or Slurm's forms: MM:SS, HH:MM:SS,
    D-HH, D-HH:MM, D-HH:MM:SS (default: one day)."""
    if value is None:
        return DEFAULT_TIME_MIN
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match or isinstance(value, bool):
        raise BadInput(f"--time: expected minutes or [D-]HH:MM:SS, got {value!r}")
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        minutes = days * 1440 + a * 60 + (b or 0) + ((c or 0) + 59) // 60
    elif c is not None:  # HH:MM:SS
        minutes = a * 60 + b + (c + 59) // 60
    elif b is not None:  # MM:SS
        minutes = a + (b + 59) // 60
    else:
        minutes = a
    if minutes < 1:
        raise BadInput(f"--time: a cell needs at least one minute, got {value!r}")
    return minutes


def _cli_options(items: list[str]) -> dict[str, Any]:
    """`--slurm-option KEY=VALUE` (or a bare KEY: a flag such as `exclusive`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        out[key] = value if sep else True
    return out


def _option_key(key: str) -> str:
    name = key.strip().replace("_", "-").lstrip("-")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise BadInput(f"--slurm-option: {key!r} is not an sbatch option name")
    if name in RESERVED:
        raise BadInput(f"--slurm-option: {name} is set by the sweep itself")
    return name


def _option_value(key: str, value: Any) -> Any:
    if value is None or value is True:
        return True  # a flag: --slurm-option exclusive
    if isinstance(value, bool | list | dict) or str(value).strip() == "":
        raise BadInput(f"--slurm-option {key}: expected KEY=VALUE, got {value!r}")
    return str(value)


def passed_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a job takes from the submitting shell (data folder, offline hub,
    thread policy), whatever the cluster's sbatch exports."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.startswith(PASSED_ENV)}


class CellJob(Checkpointable):
    """One cell on a node: the local executor's `run_cell`, raising when the cell fails so
    that Slurm and submitit see the job fail too."""

    def __call__(self, cell: AnyCell, output_dir: str, env: dict[str, str],
                 training: TrainCell | None = None) -> str:
        if training is not None:  # its stage's jobs have ended (afterany), or another runs it
            missing = wait_for_training(training, output_dir, False, None, cell, 30.0)
            if missing:
                raise CellFailed(missing)
        result = run_cell(cell, output_dir, env={**env_for_cells(), **env})
        if result.status == "failed":
            raise CellFailed(result.message)
        return result.status


def submit_cells(cells: list[AnyCell], output_dir: str | Path, resources: SlurmResources,
                 env: dict[str, str], trainings: Mapping[str, TrainCell | None],
                 dependency: list[str]) -> dict[str, tuple[str, str]]:
    """Submit the cells as one job array; cell id -> (Slurm job id, submitit job folder)."""
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    out = Path(output_dir).resolve()
    folder = out / SLURM_DIR / "%j"
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    except RuntimeError as exc:
        raise BadInput(f"cannot submit to Slurm here: {exc}") from None
    executor.update_parameters(**resources.parameters(f"pmbench-{cells[0].grid}", dependency))
    try:
        with executor.batch():
            jobs = [executor.submit(CellJob(), cell, str(out), env, trainings.get(cell.id))
                    for cell in cells]
    except (FailedJobError, FailedSubmissionError, subprocess.SubprocessError,
            OSError) as exc:
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        raise BadInput(f"sbatch refused the jobs: {lines[-1] if lines else exc}") from None
    return {cell.id: (str(job.job_id), str(out / SLURM_DIR / str(job.job_id)))
            for cell, job in zip(cells, jobs, strict=True)}
