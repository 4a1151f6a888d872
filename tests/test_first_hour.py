"""A new user's first hour (issue 27): flags that do what they say, progress that can be
followed in a log, and data found where a checkout keeps it."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from pmbench.cli import app

PROGRESS = re.compile(r"\[\s*\d+\.\d s\] ")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def run_args(model: str, out, *extra: str) -> list[str]:
    return ["run", "--model", model, "--suite", "squad", "--limit", "4", "--branch", "2",
            "--max-new-tokens", "2", "--output-dir", str(out), *extra]


def test_resuming_a_complete_run_says_so_and_leaves_it_alone(tiny_model_dir, tmp_path):
    assert invoke(*run_args(tiny_model_dir, tmp_path, "--method", "batch",
                            "--run-id", "done")).exit_code == 0
    assert not (tmp_path / "done" / ".lock").exists()  # a finished run leaves no lock behind
    before = {p.name: p.read_bytes() for p in (tmp_path / "done").iterdir()}
    res = invoke("run", "--resume", "done", "--output-dir", tmp_path)
    assert res.exit_code == 2
    assert "run done is already complete (4 questions): nothing to resume" in res.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "done").iterdir()} == before


@pytest.mark.parametrize(("extra", "needle"), [
    (["--method", "rope2d"], "--method 'rope2d' conflicts with the run being resumed"),
    (["--limit", "2"], "--limit 2 conflicts with the run being resumed (4 in"),
])
def test_options_given_with_resume_must_agree_with_the_run(tiny_model_dir, tmp_path, extra,
                                                          needle):
    from pmbench.engine.runners.batch import BatchRunner

    def interrupted(self, group, gen):
        raise KeyboardInterrupt

    args = run_args(tiny_model_dir, tmp_path, "--method", "batch", "--run-id", "half",
                    "--no-warmup")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BatchRunner, "run_group", interrupted)
        stopped = invoke(*args)
    # Ctrl-C: the record says so, the message names the run and how to go on, no stale lock
    assert stopped.exit_code == 130
    assert json.loads((tmp_path / "half" / "run.json").read_text())["status"] == "interrupted"
    assert "interrupted: run half keeps its finished groups" in stopped.stderr
    assert f"pmbench run --resume half --output-dir {tmp_path}" in stopped.stderr
    assert not (tmp_path / "half" / ".lock").exists()
    res = invoke("run", "--resume", "half", "--output-dir", tmp_path, *extra)
    assert res.exit_code == 2 and needle in res.stderr, res.stderr
    same = invoke("run", "--resume", "half", "--output-dir", tmp_path, "--method", "batch")
    assert same.exit_code == 0, same.output  # the run's own value is not a conflict


@pytest.mark.parametrize(("extra", "needle"), [
    (["--method", "batch", "--rope-2d-ratio", "0.5"],
     "--rope-2d-ratio applies to --method rope2d only, not batch"),
    (["--method", "sequential", "--mask", "cross"], "--mask applies to --method rope2d only"),
    (["--method", "rope2d", "--prefix-kv", "copy"], "--prefix-kv applies to --method prefix"),
])
def test_an_option_of_another_method_is_refused(tmp_path, extra, needle):
    res = invoke("run", "--suite", "squad", "--limit", "2", "--output-dir", tmp_path, *extra)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and needle in res.stderr


def test_missing_data_fails_before_the_tokenizer_loads(tmp_path, monkeypatch):
    import pmbench.engine.models as models

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded before the data was checked")

    monkeypatch.setattr(models, "load_tokenizer", no_tokenizer)
    monkeypatch.setenv("PMBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = invoke("run", "--method", "batch", "--suite", "mmlu", "--limit", "2")
    assert res.exit_code == 2 and "no data for suite mmlu" in res.stderr


def test_without_a_terminal_a_run_prints_a_line_per_group(tiny_model_dir, tmp_path):
    res = invoke(*run_args(tiny_model_dir, tmp_path, "--method", "rope2d", "--ignore-eos",
                           "--repeats", "2"))
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if PROGRESS.match(ln)]
    assert any(ln.endswith("rope2d squad b2: loading model") for ln in lines)
    assert any("warm-up (1 group, untimed)" in ln for ln in lines)
    assert any(ln.endswith("timed, repeat 2/2") for ln in lines)
    done = [ln.split("] ", 1)[1] for ln in lines if "questions done" in ln]
    assert done == ["rope2d squad b2: 2/4 questions done", "rope2d squad b2: 4/4 questions done"]
    # brackets in the summary print verbatim, not swallowed as markup
    assert "output tok/s (median [min, max])" in res.stdout


def test_an_accuracy_run_says_its_tok_s_is_not_table_1s(tiny_model_dir, tmp_path):
    res = invoke(*run_args(tiny_model_dir, tmp_path, "--method", "batch"))
    assert res.exit_code == 0
    assert "An accuracy run: its tok/s is not Table 1's" in res.stdout
    tput = invoke(*run_args(tiny_model_dir, tmp_path, "--method", "batch", "--ignore-eos"))
    assert "An accuracy run" not in tput.stdout


def test_data_is_found_beside_the_checkout_without_any_variable(monkeypatch):
    from pmbench.suites import data, locate_data

    monkeypatch.delenv("PMBENCH_DATA", raising=False)
    assert data.SHARED_DATA.is_dir()  # ../shared/data, as CI and sessions have it
    assert locate_data("squad") == data.SHARED_DATA
    assert data.local_roots()[0] == data.SHARED_DATA


def test_the_model_cache_is_keyed_by_content_and_can_be_cleaned(tmp_path, monkeypatch):
    import shutil

    from pmbench.engine import models

    gguf = models.default_gguf()
    copy = tmp_path / "elsewhere" / gguf.name
    copy.parent.mkdir()
    shutil.copy(gguf, copy)
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path / "cache"))
    assert models._gguf_cache_folder(copy) == models._gguf_cache_folder(gguf)  # one per model
    (tmp_path / "cache" / "models" / "x").mkdir(parents=True)
    (tmp_path / "cache" / "models" / "x" / "weights").write_bytes(b"0" * 2**20)
    res = invoke("cache", "status")
    assert res.exit_code == 0 and "models: 1.0 MiB" in res.stdout
    res = invoke("cache", "clean", "models")
    assert res.exit_code == 0 and not (tmp_path / "cache" / "models").exists()
    assert invoke("cache", "clean", "weights").exit_code == 2
