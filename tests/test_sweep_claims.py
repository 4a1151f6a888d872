"""Sweep claims, status and Slurm resources without a cluster (the real one-node Slurm
cluster runs in test_sweep_slurm.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.errors import BadInput
from pmbench.sweep import claims
from pmbench.sweep.grid import load_grid
from pmbench.sweep.slurm import parse_mem, parse_time, slurm_resources
from pmbench.sweep.status import sweep_status
from pmbench.sweep.supervise import LOG_FILE, last_error, run_sweep


@pytest.fixture
def grid(tmp_path):
    """Two cells that never run here (their state comes from files the test writes)."""
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({
        "name": "g", "methods": ["sequential", "batch"], "branches": [2], "suites": ["squad"],
        "options": {"limit": 2, "max_new_tokens": 2},
        "slurm": {"partition": "gpu", "gpus_per_cell": 1, "time": "2:00:00",
                  "options": {"account": "proj"}}}))
    return path


@pytest.mark.parametrize("text, minutes", [
    (None, 1440), (90, 90), ("90", 90), ("5:30", 6), ("2:00:00", 120), ("1-2", 1560),
    ("1-0:30", 1470), ("0-00:00:30", 1)])
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1h", "0", "0:0", "-5", True])
def test_bad_time(text):
    with pytest.raises(BadInput, match="--time"):
        parse_time(text)


def test_parse_mem():
    assert parse_mem("64G") == "64G" and parse_mem("64gb") == "64G"
    assert parse_mem(500) == "500M" and parse_mem(None) is None
    for bad in ("0", "1.5G", "lots", "64X"):
        with pytest.raises(BadInput, match="--mem"):
            parse_mem(bad)


def test_resources_merge_the_grid_block_and_the_command_line(grid):
    block = yaml.safe_load(grid.read_text())["slurm"]
    res = slurm_resources(block, cpus_per_cell=4, time="30",
                          options=["account=other", "exclusive", "qos=high"])
    assert res.partition == "gpu" and res.gpus_per_cell == 1 and res.cpus_per_cell == 4
    assert res.time_min == 30 and res.options == {"account": "other", "exclusive": True,
                                                  "qos": "high"}
    params = res.parameters("pmbench-g", ["12", "13_1"])
    assert params["gpus_per_node"] == 1 and params["dependency"] == "afterany:12:13_1"
    from submitit.slurm.slurm import _make_sbatch_string  # the sbatch file submitit writes

    text = _make_sbatch_string(command="x", folder="/f/%j", **params)
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--time=30",
                 "--account=other", "#SBATCH --exclusive", "--qos=high"):
        assert line in text, text


@pytest.mark.parametrize("kwargs, needle", [
    ({"block": {"partitions": "x"}}, "unknown key"),
    ({"block": ["gpu"]}, "a mapping"),
    ({"partition": "a b"}, "--partition"),
    ({"gpus_per_cell": -1}, "--gpus-per-cell"),
    ({"cpus_per_cell": 0}, "--cpus-per-cell"),
    ({"options": ["output=/tmp/x"]}, "set by the sweep"),
    ({"options": ["bad key=1"]}, "not an sbatch option"),
    ({"options": ["account="]}, "KEY=VALUE"),
])
def test_bad_resources(kwargs, needle):
    block = kwargs.pop("block", None)
    with pytest.raises(BadInput, match=needle):
        slurm_resources(block, **kwargs)


def test_status_of_cells_from_records_logs_and_claims(grid, tmp_path):
    out = tmp_path / "out"
    first, second = load_grid(grid)
    assert [s.state for s in sweep_status([first, second], out)] == ["missing", "missing"]
    # a local sweep that died after starting the first cell: failed, with its error line
    (out / first.id).mkdir(parents=True)
    (out / first.id / LOG_FILE).write_text("# 2026-01-01 run ...\nerror: an old one\n"
                                           "# 2026-01-02 run ...\nLoading\nerror: boom\n")
    dead = {**claims.local_claim(started=True), "pid": 2 ** 22 + 7}
    claims.write_claim(out, first.id, dead)
    # this process holds the second one, not started yet: queued
    claims.write_claim(out, second.id, claims.local_claim())
    statuses = sweep_status([first, second], out)
    assert [(s.state, s.detail) for s in statuses] == [("failed", "error: boom"), ("queued", "")]
    assert statuses[1].job == f"local pid {os.getpid()}@{claims.host()}"
    (out / second.id / "run.json").write_text(json.dumps({"status": "complete"}))
    assert sweep_status([second], out)[0].state == "done"


def test_last_error_reads_the_last_attempt_only(tmp_path):
    log = tmp_path / LOG_FILE
    log.write_text("# a\nerror: first attempt\n# b\nSegmentation fault\n")
    assert last_error(log) == "Segmentation fault"
    assert last_error(tmp_path / "none.log") == ""


def test_a_cell_another_live_owner_holds_is_left_alone(grid, tmp_path):
    """A cell is never run twice at once: a live claim of another process makes it busy."""
    out = tmp_path / "out"
    first, second = load_grid(grid)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claims.write_claim(out, first.id, {**claims.local_claim(started=True),
                                           "pid": other.pid,
                                           "pid_start": claims._process_start(other.pid)})
        claims.write_claim(out, second.id, {**claims.local_claim(started=True),
                                            "pid": other.pid, "pid_start": 1.0})  # pid reused
        assert claims.claim_local(out, [first.id, second.id]).keys() == {first.id}
        assert claims.is_mine(claims.read_claim(out, second.id))
        results = run_sweep([first], out)
        assert results[0].status == "busy" and f"pid {other.pid}" in results[0].message
        assert not (out / first.id / LOG_FILE).exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("args, needle", [
    (["--partition", "gpu"], "for --executor slurm"),
    (["--executor", "pbs"], "--executor: local or slurm"),
    (["--status", "--cancel"], "one at a time"),
    (["--executor", "slurm", "--mem", "lots"], "--mem"),
    (["--executor", "slurm", "--fail-fast"], "--fail-fast")])
def test_bad_slurm_options_are_one_line_of_bad_input(grid, tmp_path, args, needle):
    done = CliRunner().invoke(app, ["sweep", str(grid), "--output-dir", str(tmp_path), *args])
    assert done.exit_code == 2, (args, done.output)
    assert needle in done.output and "Traceback" not in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1, done.output


def test_status_of_a_local_grid_from_the_command_line(grid, tmp_path):
    done = CliRunner().invoke(app, ["sweep", str(grid), "--output-dir", str(tmp_path),
                                    "--status"])
    assert done.exit_code == 0, done.output
    assert "2 missing (records in" in done.output and done.output.count("missing") == 3


def test_a_staged_grid_goes_in_stage_by_stage_each_after_the_last(tmp_path, monkeypatch):
    """One job array per stage; a later stage's array waits (afterany) for the jobs of the
    stages before it, and an evaluation job carries the training run it needs."""
    from pmbench.sweep import cluster
    from pmbench.sweep.grid import expand_grid
    from pmbench.sweep.slurm import SlurmResources

    staged = {"name": "st", "stages": [
        {"stage": "train", "kind": "train", "options": {"steps": 2},
         "runs": [{"id": "p-a", "command": "pretrain", "size": "cpu-tiny"}]},
        {"stage": "eval", "models": [str(tmp_path / "p-a" / "checkpoint")],
         "methods": ["sequential", "batch"], "branches": [2], "suites": ["squad"]}]}
    cells = expand_grid(staged, "st")
    calls = []

    def fake_submit(batch, output_dir, resources, env, trainings, dependency):
        calls.append(([c.id for c in batch], dict(trainings), list(dependency)))
        base = str(100 + len(calls))
        return {c.id: (f"{base}_{k}", f"/f/{base}_{k}") for k, c in enumerate(batch)}

    monkeypatch.setattr(cluster, "submit_cells", fake_submit)
    monkeypatch.setenv("PMBENCH_DATA", "/data")
    sub = cluster.submit_pending(cells, cells, tmp_path, SlurmResources(), resume=False)
    assert [ids for ids, _, _ in calls] == [[cells[0].id], [cells[1].id, cells[2].id]]
    assert [deps for _, _, deps in calls] == [[], ["101"]]
    assert calls[1][1] == {cells[1].id: cells[0], cells[2].id: cells[0]}
    assert sub.submitted == {cells[0].id: "101_0", cells[1].id: "102_0", cells[2].id: "102_1"}
    claim = claims.read_claim(tmp_path, cells[2].id)
    assert claim["executor"] == "slurm" and claim["job_id"] == "102_1"
