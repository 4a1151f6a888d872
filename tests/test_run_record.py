"""run.json as a type (issue 29): every committed record reads through RunRecord and
writes back as it was, key for key and in order; a fresh run writes exactly what its
RunRecord says, with the keys and order run.json had before the type; readers refuse
what the type refuses, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmbench.records.run_record import ABSENT, BadRunRecord, RunRecord, method_blocks
from pmbench.records.store import RunStore
from pmbench.report.results import load

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "results").rglob("run.json"))

# A fresh prefix run's run.json, as jobs/run.py wrote it before the type (schema 2).
FRESH_KEYS = [
    "run_id", "created", "method", "branch", "suite", "model", "model_path", "weights",
    "architecture", "limit", "max_new_tokens", "ignore_eos", "seed", "repeats", "dtype",
    "device", "status", "settings", "suite_info", "method_kind", "linear_kernel",
    "code_execution", "compile", "rope2d", "prefix_kv", "env", "load_s", "schema_version",
    "metrics", "throughput", "latency", "tokens", "question_latency", "telemetry", "memory",
    "roofline", "resumed", "timed_region_s", "compile_s", "compile_s_timed", "deterministic",
    "finished"]


def test_the_repository_commits_run_records():
    assert len(COMMITTED) >= 5


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_committed_record_reads_and_writes_back_unchanged(path):
    raw = json.loads(path.read_text())
    out = RunRecord.from_dict(raw, complete=True).to_dict()
    assert out == raw
    assert list(out) == list(raw)  # the order too: a rewrite changes nothing


def test_the_reports_read_every_committed_record_through_the_type():
    records = load(ROOT / "results", kinds=("run",), include_committed=True)
    assert records.skipped == []
    assert len(records.runs) == len(COMMITTED)


def test_a_fresh_run_writes_what_its_record_type_says(tiny_model_dir, tmp_path, monkeypatch):
    from pmbench.jobs.run import execute_run
    from pmbench.jobs.spec import RunSettings

    monkeypatch.setenv("PMBENCH_NO_ROOFLINE", "1")
    s = RunSettings(method="prefix", suite="squad", model=tiny_model_dir, limit=4, branch=2,
                    max_new_tokens=2, output_dir=str(tmp_path), run_id="fresh", warmup=False)
    returned = execute_run(s)
    disk = json.loads((tmp_path / "fresh" / "run.json").read_text())
    assert returned == disk and list(returned) == FRESH_KEYS == list(disk)
    record = RunStore(tmp_path, "fresh").read_run()
    assert record.to_dict() == disk and list(record.to_dict()) == FRESH_KEYS
    assert record.extras == {"rope2d": None, "prefix_kv": disk["prefix_kv"]}
    assert record.status == "complete" and record.schema_version == 2


def test_a_runner_adds_blocks_but_never_takes_a_field():
    assert method_blocks("m", {}) == {"rope2d": None}
    assert method_blocks("m", {"rope2d": {"ratio": 0.5}, "mine": 1}) == {
        "rope2d": {"ratio": 0.5}, "mine": 1}
    for taken in ("env", "load_s", "metrics", "schema_version", "status"):
        with pytest.raises(TypeError, match=f"may not overwrite run.json keys .*{taken}"):
            method_blocks("m", {taken: 1})


def test_an_older_record_keeps_what_it_lacks_absent():
    raw = {"run_id": "r", "status": "running", "settings": {}, "my_block": [1]}
    record = RunRecord.from_dict(raw)
    assert record.weights is ABSENT and not record.metrics  # an absent block reads empty
    assert record.extras == {"my_block": [1]}
    assert record.to_dict() == raw


GOOD = {"run_id": "r", "created": "2026-11-26T13:00:00+00:00", "method": "batch",
        "branch": 2, "suite": "squad", "model": "m", "status": "complete",
        "metrics": {"n": 4, "f1": 0.5}, "throughput": None}


@pytest.mark.parametrize(("change", "why"), [
    ({"status": "running"}, "incomplete run (status 'running')"),
    ({"metrics": ABSENT, "model": ABSENT}, "missing model, metrics"),
    ({"branch": "2"}, "field 'branch' has the wrong type (str)"),
    ({"branch": True}, "field 'branch' has the wrong type (bool)"),
    ({"ignore_eos": 1}, "field 'ignore_eos' has the wrong type (int)"),
    ({"created": "yesterday"}, "created 'yesterday' is not an ISO time"),
    ({"metrics": {"n": -1}}, "metrics.n -1 is not a count of questions"),
    ({"throughput": {"tok_s": "fast"}}, "throughput.tok_s 'fast' is not a number"),
])
def test_a_record_the_type_refuses_says_why_in_one_line(change, why):
    RunRecord.from_dict(GOOD, complete=True)
    bad = {k: v for k, v in {**GOOD, **change}.items() if v is not ABSENT}
    with pytest.raises(BadRunRecord) as info:
        RunRecord.from_dict(bad, complete=True)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_a_corrupt_record_is_refused_on_resume(tmp_path):
    from pmbench.errors import BadInput

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({"run_id": "r", "settings": [1]}))
    with pytest.raises(BadInput, match=r"corrupt run record: .*run.json \(field 'settings'"):
        RunStore(tmp_path, "r").read_run()


def test_a_sweep_reads_a_cell_run_through_the_type(tmp_path):
    """The sweep's view of a cell (done, partial) comes through RunRecord too: a run.json
    the type refuses is skipped with one warning, and the cell reads as partial."""
    from types import SimpleNamespace

    from pmbench.errors import PmbenchWarning
    from pmbench.sweep.supervise import cell_state, read_record

    cell = SimpleNamespace(id="cell-1", record_file="run.json")
    (tmp_path / "cell-1").mkdir()
    good = json.loads(COMMITTED[0].read_text())
    (tmp_path / "cell-1" / "run.json").write_text(json.dumps(good))
    assert read_record(tmp_path, cell) == good and cell_state(tmp_path, cell) == "done"
    (tmp_path / "cell-1" / "run.json").write_text(json.dumps({**good, "branch": "four"}))
    with pytest.warns(PmbenchWarning, match="branch"):
        assert read_record(tmp_path, cell) is None
    with pytest.warns(PmbenchWarning):
        assert cell_state(tmp_path, cell) == "partial"
