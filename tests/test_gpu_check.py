"""benchmarks/gpu_check.sh: without a GPU it stops at once with one clear line; its driver
(benchmarks/gpu_check.py) runs cells in one process and its report flags every record
that is not a complete CUDA run with GPU telemetry. The GPU path itself needs a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
no_gpu = pytest.mark.skipif(bool(shutil.which("nvidia-smi")) or torch.cuda.is_available(),
                            reason="the no-GPU path: this machine has a GPU")


def run_script(tmp_path: Path, path: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=10, env={**os.environ, "PATH": path})
    return res, time.perf_counter() - t0


@no_gpu
def test_without_nvidia_smi_it_fails_at_once_in_one_line(tmp_path):
    res, wall = run_script(tmp_path, "/usr/bin:/bin")
    assert res.returncode == 2 and wall < 10
    assert res.stdout == "" and res.stderr.count("\n") == 1
    assert res.stderr.startswith("gpu_check: no nvidia-smi here")
    assert not (tmp_path / "out").exists()


@no_gpu
def test_without_cuda_in_torch_it_fails_fast_in_one_line(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: fake'\n")
    (fake / "nvidia-smi").chmod(0o755)
    res, wall = run_script(tmp_path, f"{fake}:/usr/bin:/bin")
    assert res.returncode == 2 and wall < 10
    assert res.stderr.strip().count("\n") == 0
    assert "gpu_check: CUDA is not available to torch" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture
def gpu_check(monkeypatch):
    """benchmarks/gpu_check.py, its smoke tier shrunk to one small cell."""
    spec = importlib.util.spec_from_file_location("gpu_check",
                                                  ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "smoke", lambda device: [
        module.Cell("smoke", "random:smollm2-135m", "off", "batch", 2, 2, 2, 1, device)])
    monkeypatch.setenv("PMBENCH_NO_ROOFLINE", "1")  # its CPU peaks take seconds to measure
    return module


def test_driver_runs_its_cells_and_the_report_flags_non_gpu_records(gpu_check, tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_check.main(["run", str(out), "--device", "cpu"]) == 0
    (cell,) = gpu_check.cells("cpu")
    record = json.loads((out / cell.run_id / "run.json").read_text())
    assert record["status"] == "complete" and record["weights"] == "random"
    assert record["repeats"] == 1 and record["compile"] == "off"
    assert gpu_check.main(["run", str(out), "--device", "cpu"]) == 0  # finished: skipped
    assert "gpu_check: " + cell.run_id not in capsys.readouterr().out.split("\n", 1)[1]
    assert gpu_check.main(["report", str(out), "--device", "cpu"]) == 0  # a CPU rehearsal

    assert gpu_check.main(["report", str(out)]) == 1  # a CPU record has no GPU telemetry
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| smoke |"))
    assert "| random:smollm2-135m | off | batch | 2 |" in row
    assert f"{cell.run_id}: ran on cpu, not CUDA" in summary

    # the same record as a GPU would write it passes; one null telemetry field does not
    gpu_cell = gpu_check.cells("cuda")[0]
    tel = dict.fromkeys(gpu_check.TELEMETRY, 1.0)
    record |= {"device": "cuda", "telemetry": tel}
    assert gpu_check.problems(gpu_cell, record) == []
    record["telemetry"] = tel | {"power_w_mean": None}
    assert gpu_check.problems(gpu_cell, record) == [
        f"{gpu_cell.run_id}: telemetry power_w_mean null (nvml_error: None)"]
    assert gpu_check.problems(gpu_cell, None) == [f"{gpu_cell.run_id}: no record"]


def test_the_tiers_put_smoke_first_and_size_the_matrix(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check_full",
                                                  ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check_full", module)
    spec.loader.exec_module(module)
    cuda = module.cells("cuda")
    smoke = [c for c in cuda if c.tier == "smoke"]
    assert cuda[:len(smoke)] == smoke and len(smoke) == 8
    assert [c.compile for c in smoke] == ["off"] * 4 + ["on"] * 4
    assert {c.branch for c in smoke} == {4} and {c.new_tokens for c in smoke} == {8}
    matrix = cuda[len(smoke):]
    assert matrix[0].model == "random:qwen2.5-7b" and matrix[0].compile == "off"
    compiled = [c for c in matrix if c.compile == "on"]
    assert {c.model for c in compiled} == {"random:qwen2.5-7b"}
    assert {c.branch for c in compiled if c.method != "sequential"} == {4, 16}
    assert len({c.run_id for c in cuda}) == len(cuda)
    assert module.matrix("cpu") == [] and len(module.cells("cpu")) == 8


def test_pack_returns_at_most_three_files_within_the_tools_limits(gpu_check, tmp_path):
    import re
    import tarfile

    out = tmp_path / "records"
    run = out / "gpu-smoke-x-off-batch-b2"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"status": "complete"}')
    (run / "groups.jsonl").write_text("{}\n")
    (run / "samples.jsonl").write_bytes(os.urandom(17 * 2**20))  # incompressible, > 16 MiB
    (run / ".lock").write_text("123")
    (out / "summary.md").write_text("# GPU check\n")
    log = out / "gpu-check.log"
    log.write_bytes(b"x" * (5 * 2**20))
    back = tmp_path / "back"
    assert gpu_check.main(["pack", str(out), str(back), str(log)]) == 0
    files = sorted(back.iterdir())
    assert [f.name for f in files] == ["gpu-check.log", "gpu-check.tar.gz", "summary.md"]
    assert all(f.stat().st_size <= 16 * 2**20 and re.fullmatch(r"[A-Za-z0-9._-]+", f.name)
               for f in files)
    assert (back / "gpu-check.log").stat().st_size < 5 * 2**20  # head and tail kept
    with tarfile.open(back / "gpu-check.tar.gz") as tar:
        names = tar.getnames()
    assert "records/gpu-smoke-x-off-batch-b2/run.json" in names
    assert not any(n.endswith(("samples.jsonl", ".lock")) for n in names)
    assert "records/gpu-smoke-x-off-batch-b2/groups.jsonl" in names  # it fits: kept
    # and the script here unpacks it for committing
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_unpack.sh"), str(back),
                          str(tmp_path / "dest")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dest" / "records" / "gpu-smoke-x-off-batch-b2" / "run.json").is_file()
    assert (tmp_path / "dest" / "records" / "summary.md").is_file()


@pytest.mark.parametrize(("env", "needle"), [
    ({"PMBENCH_DATA": "EMPTY"}, "preflight: SQuAD data and its metric:"),
    ({"PMBENCH_TOKENIZER": "EMPTY"}, "preflight: tokenizer: BadInput: $PMBENCH_TOKENIZER"),
])
def test_preflight_names_what_is_missing_in_one_line(tmp_path, env, needle):
    (tmp_path / "empty").mkdir()
    env = {k: str(tmp_path / "empty") if v == "EMPTY" else v for k, v in env.items()}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                          "preflight", "--device", "cpu"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                         cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("gpu_check: preflight: ")
    assert needle in res.stderr, res.stderr


def test_preflight_passes_here(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                          "preflight", "--device", "cpu"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("gpu_check: preflight passed: ")
