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
    """benchmarks/gpu_check.py, shrunk to one small cell on the CPU."""
    spec = importlib.util.spec_from_file_location("gpu_check",
                                                  ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "DEVICE", "cpu")
    monkeypatch.setattr(module, "MODELS", ("random:smollm2-135m",))
    monkeypatch.setattr(module, "METHODS", ("batch",))
    monkeypatch.setattr(module, "BRANCHES", (2,))
    monkeypatch.setattr(module, "LIMIT", 2)
    monkeypatch.setattr(module, "NEW_TOKENS", 2)
    monkeypatch.setattr(module, "compile_modes", lambda: (None,))
    monkeypatch.setenv("PMBENCH_NO_ROOFLINE", "1")  # its CPU peaks take seconds to measure
    return module


def test_driver_runs_its_cells_and_the_report_flags_non_gpu_records(gpu_check, tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_check.main(["run", str(out)]) == 0
    (cell,) = gpu_check.cells()
    record = json.loads((out / cell.run_id / "run.json").read_text())
    assert record["status"] == "complete" and record["weights"] == "random"
    assert gpu_check.main(["run", str(out)]) == 0  # finished cells are skipped
    assert "gpu_check: " + cell.run_id not in capsys.readouterr().out.split("\n", 1)[1]

    assert gpu_check.main(["report", str(out)]) == 1  # a CPU record has no GPU telemetry
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| random:"))
    assert row.startswith("| random:smollm2-135m |") and "| batch | 2 |" in row
    assert f"{cell.run_id}: ran on cpu, not CUDA" in summary

    # the same record as a GPU would write it passes; one null telemetry field does not
    tel = dict.fromkeys(gpu_check.TELEMETRY, 1.0)
    record |= {"device": "cuda", "telemetry": tel}
    assert gpu_check.problems(cell, record) == []
    record["telemetry"] = tel | {"power_w_mean": None}
    assert gpu_check.problems(cell, record) == [
        f"{cell.run_id}: telemetry power_w_mean null (nvml_error: None)"]
    assert gpu_check.problems(cell, None) == [f"{cell.run_id}: no record"]
