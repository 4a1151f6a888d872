"""Environment fingerprint of a run: which code, libraries and hardware produced a number.

Two records are comparable only when these agree (or differ on purpose), so every run
stores them. No host name or user name: records are meant to be shared.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import pmbench

PACKAGE_DIR = Path(pmbench.__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str | None:
    """HEAD of the git checkout holding this pmbench source, "-dirty" if tracked files changed.

    None when pmbench does not run from a checkout (an installed wheel, even one that
    sits inside some other repository's virtual environment).
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "pmbench" != PACKAGE_DIR:
        return None
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit + ("-dirty" if status else "")


@cache
def cpu_model() -> str | None:
    """CPU model name ("Intel(R) Xeon(R) ..."), from /proc/cpuinfo or the platform."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_name(device: str) -> str | None:
    """Name of the CUDA device a run uses, None for other devices or without CUDA."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.device(device))


def _nvml_driver() -> str | None:
    from pmbench.measure.power import open_nvml

    try:
        nvml = open_nvml()
    except Exception:  # ImportError, pynvml.NVMLError_*: no driver here
        return None
    try:
        version = nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except nvml.NVMLError:
        return None
    finally:
        nvml.nvmlShutdown()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# Environment variables that decide how the CPU threads behave, recorded as set (None =
# unset, the runtime's default). OMP_WAIT_POLICY alone moves a 2-thread run's tok/s by
# a large factor (benchmarks/README.md, "Thread policy"): records differing here are not
# comparable.
THREAD_ENV = {
    "omp_wait_policy": "OMP_WAIT_POLICY",
    "gomp_spincount": "GOMP_SPINCOUNT",
    "kmp_blocktime": "KMP_BLOCKTIME",
    "omp_num_threads": "OMP_NUM_THREADS",
    "mkl_num_threads": "MKL_NUM_THREADS",
}


def thread_settings() -> dict[str, Any]:
    """The OpenMP policy and thread counts in effect in this process.

    The variables are read from this process's environment: OpenMP read the same values
    when it started, since nothing in pmbench sets them.
    """
    return {
        **{key: os.environ.get(var) for key, var in THREAD_ENV.items()},
        "interop_threads": torch.get_num_interop_threads(),
    }


def env_fingerprint(device: str, dtype: str, attn_implementation: str | None) -> dict[str, Any]:
    """The run record's `env` block (DESIGN keys first, then extras; None = not known)."""
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "git_commit": git_commit(),
        "pmbench_version": pmbench.__version__,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "gpu": gpu_name(device),
        "threads": torch.get_num_threads(),  # intra-op, the one --threads sets
        # extras
        "device": str(device),
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "gpu_driver": _nvml_driver() if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability(device)))
        if cuda
        else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,  # cores this process may run on
        **thread_settings(),
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "llama_cpp_python": _version("llama-cpp-python"),
    }
