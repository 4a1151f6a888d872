"""Environment fingerprint: versions, hardware, and the git state of the source tree."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import types

import pytest
import torch

import pmbench
from pmbench.measure import envinfo
from pmbench.measure.envinfo import env_fingerprint

DESIGN_KEYS = {
    "git_commit",
    "pmbench_version",
    "torch",
    "transformers",
    "python",
    "cpu",
    "gpu",
    "threads",
}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def test_fingerprint_on_cpu():
    env = env_fingerprint("cpu", "float32", "sdpa")
    assert DESIGN_KEYS <= env.keys()
    assert env["pmbench_version"] == pmbench.__version__
    assert env["torch"] == torch.__version__
    assert env["transformers"] and env["transformers"][0].isdigit()
    assert env["python"] == platform.python_version()
    assert env["threads"] == torch.get_num_threads()
    assert env["gpu"] is None and env["gpu_driver"] is None
    assert (env["dtype"], env["attn_implementation"], env["device"]) == ("float32", "sdpa", "cpu")
    if sys.platform == "linux":
        assert env["cpu"]
    assert "hostname" not in env


def git(cwd, *args):
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(cwd), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


@needs_git
def test_git_commit_of_this_checkout():
    commit = envinfo.git_commit()
    if commit is None:
        pytest.skip("pmbench does not run from a git checkout here")
    assert commit.removesuffix("-dirty") == git(envinfo.PACKAGE_DIR, "rev-parse", "HEAD")


@needs_git
def test_git_commit_clean_dirty_and_not_a_checkout(tmp_path, monkeypatch):
    pkg = tmp_path / "repo" / "pmbench"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(envinfo, "PACKAGE_DIR", pkg)
    assert envinfo.git_commit() is None  # not in a repository

    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", ".")
    git(tmp_path / "repo", "commit", "-q", "-m", "init")
    head = git(tmp_path / "repo", "rev-parse", "HEAD")
    (tmp_path / "repo" / "results.json").write_text("{}")  # untracked: still clean
    assert envinfo.git_commit() == head
    (pkg / "__init__.py").write_text("x = 2\n")
    assert envinfo.git_commit() == head + "-dirty"

    # an installed copy that merely sits inside some other repository is not that commit
    other = tmp_path / "repo" / ".venv" / "site-packages" / "pmbench"
    other.mkdir(parents=True)
    monkeypatch.setattr(envinfo, "PACKAGE_DIR", other)
    assert envinfo.git_commit() is None


def test_driver_version_through_nvml(monkeypatch):
    fake = types.ModuleType("pynvml")
    fake.NVMLError = type("NVMLError", (Exception,), {})
    state = {"open": 0}
    fake.nvmlInit = lambda: state.__setitem__("open", state["open"] + 1)
    fake.nvmlShutdown = lambda: state.__setitem__("open", state["open"] - 1)
    fake.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert envinfo._nvml_driver() == "550.54.15"
    assert state["open"] == 0

    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert envinfo._nvml_driver() is None


def test_fingerprint_records_thread_settings(monkeypatch):
    """The OpenMP policy and thread counts in effect: they moved tok/s by 1.4x (issue 16)."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    for var in ("KMP_BLOCKTIME", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    env = env_fingerprint("cpu", "float32", "sdpa")
    assert env["omp_wait_policy"] == "ACTIVE"
    assert env["omp_num_threads"] == "2"
    assert env["gomp_spincount"] == "10000"
    assert env["kmp_blocktime"] is None and env["mkl_num_threads"] is None  # unset
    assert env["threads"] == torch.get_num_threads()
    assert env["interop_threads"] == torch.get_num_interop_threads()
    if hasattr(os, "sched_getaffinity"):
        assert env["cpu_affinity"] == len(os.sched_getaffinity(0)) >= 1


def test_fingerprint_only_adds_keys():
    """Records are compared across versions (tables, compare): earlier keys stay as they were."""
    earlier = DESIGN_KEYS | {
        "device", "dtype", "attn_implementation", "gpu_driver", "gpu_capability", "cuda",
        "cudnn", "cpu_count", "cpu_affinity", "platform", "numpy", "llama_cpp_python",
    }
    env = env_fingerprint("cpu", "float32", None)
    assert earlier <= env.keys()
    assert list(env)[: len(DESIGN_KEYS)] == [
        "git_commit", "pmbench_version", "torch", "transformers", "python", "cpu", "gpu",
        "threads",
    ]
