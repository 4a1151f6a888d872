"""The command line: bad input exits 2 with one line, --json, records, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pmbench.cli import app

DESIGN_KEYS = {
    "run_id", "created", "method", "branch", "suite", "model", "limit", "max_new_tokens",
    "ignore_eos", "seed", "rope2d", "metrics", "throughput", "latency", "memory", "telemetry",
    "env",
}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def run_args(model: str, out, *extra: str) -> list[str]:
    return ["run", "--model", model, "--suite", "squad", "--limit", "4", "--branch", "2",
            "--max-new-tokens", "3", "--output-dir", str(out), *extra]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--method", "nope", "--suite", "squad"], "unknown method"),
        (["run", "--method", "batch", "--suite", "nope"], "unknown suite"),
        (["run", "--method", "batch", "--suite", "squad", "--branch", "0"], "--branch"),
        (["run", "--method", "batch", "--suite", "squad", "--limit", "0"], "--limit"),
        (["run", "--method", "rope2d", "--suite", "squad", "--rope-2d-ratio", "1.5"], "ratio"),
        (["run", "--method", "rope2d", "--suite", "squad", "--mask", "weird"], "mask"),
        (["run", "--method", "prefix", "--suite", "squad", "--prefix-kv", "all"], "prefix-kv"),
        (["run", "--method", "batch", "--suite", "squad", "--model", "/no/such/dir"], "model"),
        (["run", "--method", "batch", "--suite", "squad", "--data-dir", "/no/such"], "data"),
        # issue 14: checked before the tokenizer (a missing model would be reported first)
        (["run", "--method", "batch", "--suite", "squad", "--model", "/no/such", "--threads",
          "-1"], "--threads must be >= 1"),
        (["run", "--method", "batch", "--suite", "squad", "--model", "/no/such", "--threads",
          "0"], "--threads must be >= 1"),
        (["run", "--method", "batch", "--suite", "squad", "--model", "/no/such", "--device",
          "foo"], "unknown --device 'foo'"),
        (["run", "--method", "batch", "--suite", "squad", "--model", "/no/such", "--device",
          "meta"], "not a device to run a model on"),
        (["run", "--method", "batch", "--suite", "squad", "--model", "/no/such", "--dtype",
          "f8"], "unknown --dtype"),
        *[(["run", "--method", "batch", "--suite", "squad", "--model", "/no/such", option, bad],
           f"{option} {bad!r} is not a valid run id")
          for option in ("--run-id", "--resume") for bad in ("../x", "/abs", "a/b", "..", "")],
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle):
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0].lower(), res.stderr
    assert "Traceback" not in res.output + res.stderr


def test_humaneval_refuses_without_opt_in(monkeypatch):
    monkeypatch.delenv("PMBENCH_ALLOW_CODE_EXECUTION", raising=False)
    res = invoke("run", "--method", "batch", "--suite", "humaneval", "--model", "/no/such")
    assert res.exit_code == 2
    assert "--allow-code-execution" in res.stderr or "model" in res.stderr


def test_listing_commands():
    assert invoke("--version").exit_code == 0
    methods = invoke("methods").stdout
    for name in ("sequential", "batch", "prefix", "rope2d", "oracle"):
        assert name in methods
    suites = invoke("suites").stdout
    for name in ("squad", "gsm8k", "mmlu", "ceval", "humaneval"):
        assert name in suites


def test_json_record_has_design_keys(tiny_model_dir, tmp_path):
    res = invoke(*run_args(tiny_model_dir, tmp_path, "--method", "batch", "--json",
                           "--repeats", "2", "--ignore-eos"))
    assert res.exit_code == 0, res.stderr
    record = json.loads(res.stdout)  # stdout holds run.json and nothing else
    assert DESIGN_KEYS <= record.keys()
    assert record["status"] == "complete"
    assert len(record["throughput"]["repeats"]["output_tok_s"]) == 2
    assert record["metrics"]["n"] == 4
    run_dir = tmp_path / record["run_id"]
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == record["run_id"]
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4
    for s in samples:
        assert {"doc_id", "branch", "prompt_ids", "output_ids", "output_text", "target",
                "score"} <= s.keys()
        assert len(s["output_ids"]) == 3


def test_interrupted_run_resumes_without_redoing(tiny_model_dir, tmp_path, monkeypatch):
    from pmbench.engine.runners.sequential import SequentialRunner

    calls = {"n": 0}
    original = SequentialRunner.run_group

    def flaky(self, group, gen):
        calls["n"] += 1
        if calls["n"] == 3:  # warm-up, group 0, then Ctrl-C during group 1
            raise KeyboardInterrupt
        return original(self, group, gen)

    monkeypatch.setattr(SequentialRunner, "run_group", flaky)
    res = invoke(*run_args(tiny_model_dir, tmp_path, "--method", "sequential",
                           "--run-id", "r1"))
    assert res.exit_code == 130
    assert len((tmp_path / "r1" / "samples.jsonl").read_text().splitlines()) == 2

    seen = []

    def counting(self, group, gen):
        seen.append(group.group_id)
        return original(self, group, gen)

    monkeypatch.setattr(SequentialRunner, "run_group", counting)
    res = invoke("run", "--method", "sequential", "--suite", "squad", "--resume", "r1",
                 "--output-dir", str(tmp_path), "--json")
    assert res.exit_code == 0, res.stderr
    assert seen == [1, 1]  # warm-up on the pending group, then only group 1
    record = json.loads(res.stdout)
    assert record["metrics"]["n"] == 4 and record["resumed"]
    assert len((tmp_path / "r1" / "samples.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(("device", "available", "count", "needle"), [
    ("cuda", False, 0, "--device cuda: cuda is not available on this machine"),
    ("cuda:0", False, 0, "--device cuda:0: cuda is not available on this machine"),
    ("cuda:2", True, 1, "--device cuda:2: this machine has 1 cuda device(s)"),
])
def test_device_is_checked_before_the_model_loads(monkeypatch, device, available, count,
                                                  needle):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    res = invoke("run", "--method", "batch", "--suite", "squad", "--model", "/no/such",
                 "--device", device)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0].lower(), res.stderr


def _hold_lock(folder) -> subprocess.Popen:
    """Another process writing run `folder` (it holds the run folder's lock)."""
    code = ("import sys, time; from pmbench.records.store import RunStore; "
            "s = RunStore(sys.argv[1], sys.argv[2]); s.lock(); print('locked', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder.parent), folder.name],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_being_written_is_refused_to_a_second_writer(tiny_model_dir, tmp_path):
    args = run_args(tiny_model_dir, tmp_path, "--method", "batch", "--max-new-tokens", "1")
    assert invoke(*args, "--run-id", "r1").exit_code == 0
    holder = _hold_lock(tmp_path / "r1")
    try:
        for extra in (["--run-id", "r1"], ["--resume", "r1"], ["--run-id", "r1", "--json"]):
            res = invoke(*args, *extra)
            assert res.exit_code == 2, res.output
            assert res.stderr.strip() == (f"error: run r1 is being written by another process "
                                          f"(pid {holder.pid})"), res.stderr
    finally:
        holder.kill()
        holder.wait()
    res = invoke(*args, "--run-id", "r1")  # not being written: the run exists, say so
    assert res.exit_code == 2 and "already exists" in res.stderr and "--resume r1" in res.stderr


def _stored_run(folder, **settings) -> None:
    from dataclasses import asdict

    from pmbench.jobs.spec import RunSettings

    folder.mkdir(parents=True)
    record = {"run_id": folder.name, "status": "running",
              "settings": {**asdict(RunSettings(method="batch", suite="squad")), **settings}}
    (folder / "run.json").write_text(json.dumps(record))


def test_resume_asks_for_the_code_execution_opt_in_again(tiny_model_dir, tmp_path,
                                                         monkeypatch):
    monkeypatch.delenv("PMBENCH_ALLOW_CODE_EXECUTION", raising=False)
    _stored_run(tmp_path / "he", suite="humaneval", model=tiny_model_dir, limit=2,
                allow_code_execution=True, allow_unisolated_code_execution=True)
    res = invoke("run", "--resume", "he", "--output-dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert "--allow-code-execution" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_resumed_settings_take_the_opt_ins_from_the_command_line():
    from dataclasses import asdict

    from pmbench.jobs.spec import RunSettings, resumed_settings

    stored = asdict(RunSettings(method="batch", suite="humaneval", branch=4,
                                allow_code_execution=True,
                                allow_unisolated_code_execution=True))
    now = RunSettings(method=None, suite=None, resume="r1", output_dir="elsewhere")
    s = resumed_settings({"settings": stored}, now, "run.json")
    assert (s.method, s.suite, s.branch, s.resume, s.output_dir) == (
        "batch", "humaneval", 4, "r1", "elsewhere")
    assert not s.allow_code_execution and not s.allow_unisolated_code_execution
    given = RunSettings(method=None, suite=None, resume="r1", allow_code_execution=True)
    assert resumed_settings({"settings": stored}, given, "run.json").allow_code_execution


@pytest.mark.parametrize(("settings", "needle"), [
    ({"branch": "4"}, "settings.branch = '4'"),
    ({"threads": True}, "settings.threads = True"),
    ({"subjects": ["a", 1]}, "settings.subjects"),
    ({"no_such_option": 1}, "unknown settings: no_such_option"),
    ({"method": None}, "settings.method is missing"),
    ({"branch": 0}, "--branch must be >= 1"),
])
def test_a_corrupt_stored_record_is_one_line(tmp_path, settings, needle):
    _stored_run(tmp_path / "bad", **settings)
    res = invoke("run", "--resume", "bad", "--output-dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize("record", ['{"run_id": "x"}', "[1, 2]", '{"settings": [1]}', "{"])
def test_a_record_without_usable_settings_is_one_line(tmp_path, record):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text(record)
    res = invoke("run", "--resume", "bad", "--output-dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: corrupt run record") and res.stderr.count("\n") == 1


def test_to_argv_is_the_command_line_of_its_spec(monkeypatch):
    """Every field of a run spec survives `to_argv` and `pmbench run`'s own parser (a sweep
    runs its cells through it); a spec of defaults is its naming fields only."""
    from dataclasses import MISSING, fields

    from pmbench.errors import BadInput
    from pmbench.jobs import run as jobs_run
    from pmbench.jobs.spec import RunSettings, to_argv

    spec = RunSettings(
        method="batch", suite="mmlu", branch=4, model="m", limit=3, max_new_tokens=5,
        ignore_eos=True, repeats=2, warmup=False, seed=7, dtype="float32", device="cpu",
        device_map="auto", data_dir="d", output_dir="o", num_fewshot=2, split="test",
        subjects=["a", "b"], samples_per_task=2, apply_chat_template=True, truncate_documents=True,
        context_len=64, question_len=8, answer_len="4-9",
        allow_code_execution=True, allow_unisolated_code_execution=True,
        rope2d={"ratio": 0.5, "mode": "additive", "branch_freqs": "high", "mask": "cross"},
        threads=2, attn_implementation="eager", cpu_prepack=False,
        method_options={"prefix_kv": "copy"},
        compile="static", run_id="r1", resume="r0")
    for f in fields(spec):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        assert getattr(spec, f.name) != default, f"{f.name}: give it a value of its own"
    seen = []

    def stop(settings):
        seen.append(settings)
        raise BadInput("stop")

    monkeypatch.setattr(jobs_run, "prepare_run", stop)
    res = invoke("run", *to_argv(spec))
    assert res.exit_code == 2 and "stop" in res.stderr, res.output
    assert seen == [spec]
    assert to_argv(RunSettings(method="batch", suite="squad")) == [
        "--method", "batch", "--suite", "squad", "--branch", "1"]
