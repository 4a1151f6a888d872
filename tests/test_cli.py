"""The command line: bad input exits 2 with one line, --json, records, resume."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.cli import app

DESIGN_KEYS = {
    "run_id", "created", "method", "branch", "suite", "model", "limit", "max_new_tokens",
    "ignore_eos", "seed", "rope2d", "metrics", "throughput", "latency", "memory", "telemetry",
    "env",
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama", len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


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
    from pmbench.runners.sequential import SequentialRunner

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
