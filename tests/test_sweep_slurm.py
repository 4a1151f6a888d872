"""`pmbench sweep --executor slurm` on a real one-node Slurm cluster started here.

The module's fixture starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge)
from a generated slurm.conf in a temporary folder, on free ports, with this machine as its
one node, and stops them afterwards, however the tests end. It skips, saying why, only
where those programs are missing (`.ci/run` installs them) or without root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.cli import app
from pmbench.sweep import claims, queue
from pmbench.sweep.grid import load_grid
from pmbench.sweep.status import sweep_status
from pmbench.sweep.supervise import run_sweep

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "srun", "sinfo")
START_TIMEOUT_S = 60
CLI = [sys.executable, "-c", "from pmbench.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(root: Path, node: str) -> str:
    return "\n".join([
        "ClusterName=pmbench-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root}/munge.sock",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",  # no cgroup plugin needed
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",  # no sacct: the sweep needs none
        "JobCompType=jobcomp/none",
        "ReturnToService=2",
        "SchedulerParameters=sched_interval=1",
        "MinJobAge=600",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=1000 "
        "State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ""])


def _tail(path: Path, n: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def slurm():
    """A running one-node cluster; SLURM_CONF points every Slurm command at it."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"Slurm is not installed here ({', '.join(missing)} not found): install "
                    "Debian's slurm-wlm and munge (.ci/run does where apt can)")
    if os.geteuid() != 0:
        pytest.skip("a one-node Slurm cluster needs root (slurmd runs jobs as their user)")
    root = Path(tempfile.mkdtemp(prefix="pmslurm-", dir="/tmp"))  # short: a socket path
    root.chmod(0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], log: str) -> None:
        with (root / log).open("w") as fh:
            procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))

    try:
        start(["munged", "--foreground", "--force", f"--key-file={key}",
               f"--socket={root}/munge.sock", f"--pid-file={root}/munged.pid",
               f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"],
              "munged.out")
        _wait(lambda: (root / "munge.sock").exists(), "munged", root / "munged.log", procs)
        start(["slurmctld", "-D", "-f", str(conf)], "slurmctld.out")
        start(["slurmd", "-D", "-f", str(conf)], "slurmd.out")
        _wait(lambda: _node_state(env) == "idle", "the node to be idle",
              root / "slurmd.log", procs)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(conf))
            mp.setenv("PMBENCH_NO_ROOFLINE", "1")  # the jobs take PMBENCH_* from here
            mp.setenv("TOKENIZERS_PARALLELISM", "false")
            yield env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        _wait(lambda: not _squeue(env), "jobs to end", root / "slurmd.log", procs,
              timeout=20, fail=False)
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _node_state(env) -> str:
    done = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env,
                          capture_output=True, text=True)
    return done.stdout.strip()


def _squeue(env) -> str:
    done = subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True)
    return done.stdout.strip()


def _wait(ready, what: str, log: Path, procs, timeout: float = START_TIMEOUT_S,
          fail: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if time.monotonic() > deadline or (dead and fail):
            if not fail:
                return
            pytest.fail(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else ''}"
                        f" (timeout {timeout} s); {log.name}:\n{_tail(log)}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("slurm-grids")
    make_tiny_model("llama", len(tokenizer)).save_pretrained(folder / "tiny")
    tokenizer.save_pretrained(folder / "tiny")
    return folder


def _grid(folder: Path, name: str, models: list[str], methods: list[str]) -> Path:
    """A cpu-smoke grid in miniature: SQuAD, 2 questions in a group of 2, 2 tokens."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "models": models, "methods": methods, "branches": [2],
        "suites": ["squad"], "slurm": {"time": 10},
        "options": {"limit": 2, "max_new_tokens": 2, "no_warmup": True, "threads": 1}}))
    return path


def sweep(*args: str):
    """`pmbench sweep` in this process (wide output: table rows stay on one line)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "400")
        return CliRunner().invoke(app, ["sweep", *map(str, args)])


def _keys(value, prefix: str = "") -> set[str]:
    """Every key path of a record (its form, not its values)."""
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {f"{prefix}{k}"} | _keys(v, f"{prefix}{k}.")}
    return set()


def test_a_two_cell_grid_runs_on_slurm_like_locally(slurm, tiny, tmp_path):
    grid = _grid(tiny, "cpu-smoke-slurm", [str(tiny / "tiny")], ["sequential", "batch"])
    out = tmp_path / "results"
    done = sweep(grid, "--executor", "slurm", "--output-dir", out, "--poll", "0.5")
    assert done.exit_code == 0, done.output
    assert "submitted 2 cells to Slurm as job" in done.output
    cells = load_grid(grid)
    statuses = sweep_status(cells, out)
    assert [s.state for s in statuses] == ["done", "done"], statuses
    assert all(s.job.startswith("slurm ") for s in statuses)
    records = {c.method: json.loads((out / c.id / "run.json").read_text()) for c in cells}
    assert {r["status"] for r in records.values()} == {"complete"}
    assert all(r["metrics"]["n"] == 2 for r in records.values())

    local = tmp_path / "local"  # the same cell by the local executor: the same form
    [result] = run_sweep([cells[0]], local, env={**os.environ})
    assert result.status == "ran", result.message
    local_record = json.loads((local / cells[0].id / "run.json").read_text())
    assert _keys(records["sequential"]) == _keys(local_record)

    shown = sweep(grid, "--output-dir", out, "--status")
    assert shown.exit_code == 0 and "2 done" in shown.output, shown.output
    assert all(s.job in shown.output for s in statuses)
    table = CliRunner().invoke(app, ["table", "5", "--results", str(out)])
    assert table.exit_code == 0, table.output
    assert "sequential" in table.output and "batch" in table.output, table.output


def test_a_failed_cell_shows_its_error_and_resume_resubmits_it(slurm, tiny, tmp_path):
    model = tmp_path / "not-yet"
    grid = _grid(tmp_path, "bad", [str(model)], ["sequential"])
    out = tmp_path / "results"
    [cell] = load_grid(grid)
    done = sweep(grid, "--executor", "slurm", "--output-dir", out, "--poll", "0.5")
    assert done.exit_code == 1 and "model not found" in done.output, done.output
    first_job = claims.read_claim(out, cell.id)["job_id"]
    shown = sweep(grid, "--output-dir", out, "--status")
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if cell.id in line)
    assert "failed" in row and f"slurm {first_job}" in row and "model not found" in row, row

    again = sweep(grid, "--executor", "slurm", "--output-dir", out, "--no-wait")
    assert again.exit_code == 0 and "1 failed cells not re-submitted" in again.output
    assert claims.read_claim(out, cell.id)["job_id"] == first_job  # not re-submitted

    shutil.copytree(tiny / "tiny", model)  # the cause fixed
    resumed = sweep(grid, "--executor", "slurm", "--output-dir", out, "--resume",
                    "--poll", "0.5")
    assert resumed.exit_code == 0, resumed.output
    [status] = sweep_status([cell], out)
    assert status.state == "done" and status.job != f"slurm {first_job}", status


def test_cancel_and_ctrl_c_cancel_the_submitted_jobs(slurm, tiny, tmp_path):
    """Held jobs stay queued, so nothing runs: --cancel, then Ctrl-C on a waiting sweep."""
    grid = _grid(tiny, "cpu-smoke-slurm", [str(tiny / "tiny")], ["sequential", "batch"])
    cells = load_grid(grid)
    out = tmp_path / "cancel"
    done = sweep(grid, "--executor", "slurm", "--output-dir", out, "--slurm-option", "hold",
                 "--no-wait")
    assert done.exit_code == 0, done.output
    statuses = sweep_status(cells, out)
    assert [(s.state, s.detail) for s in statuses] == [("queued", "JobHeldUser")] * 2
    cancelled = sweep(grid, "--output-dir", out, "--cancel")
    assert "cancelled 2 queued or running cells" in cancelled.output, cancelled.output
    statuses = sweep_status(cells, out)
    assert [s.state for s in statuses] == ["failed", "failed"]
    assert all(s.detail.startswith("cancelled") for s in statuses), statuses

    out = tmp_path / "ctrl-c"
    proc = subprocess.Popen(
        [*CLI, "sweep", str(grid), "--executor", "slurm", "--output-dir", str(out),
         "--slurm-option", "hold", "--poll", "0.5"], env={**os.environ},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not all(claims.read_claim(out, c.id) for c in cells):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep did not submit"
        time.sleep(0.2)
    jobs = [claims.read_claim(out, c.id)["job_id"] for c in cells]
    time.sleep(1.0)  # into its waiting loop
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "cancelled 2 submitted jobs" in err, err
    states = queue.queue_states(jobs)  # an array cancelled while pending shows as one job
    assert not any(queue.activity(states.get(j)) for j in jobs), states
    shown = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i %T",
                            "--jobs=" + jobs[0].split("_")[0]], capture_output=True, text=True)
    assert "CANCELLED" in shown.stdout and "PENDING" not in shown.stdout, shown.stdout
