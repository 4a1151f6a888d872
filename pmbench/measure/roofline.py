"""Distance to the hardware roof: achieved FLOP/s and memory bandwidth vs measured peaks.

As gpt-fast prints "bandwidth achieved", a run reports how much compute and memory
traffic it sustained, each against this machine's own peak, measured once by a short
matmul and copy micro-benchmark and cached (a datasheet peak is never reached on a
CPU, and a measured one is comparable across the methods of one machine).

Decoding one token reads every weight once, so decode is bandwidth-bound: its roof is
(weight bytes x steps + KV bytes read) / decode time. Prefill and batched decode do
2 x parameters FLOPs per token processed, so their roof is matmul FLOP/s.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import torch

from pmbench.engine.decoding import device_sync
from pmbench.engine.models import DTYPES, cache_dir
from pmbench.errors import BadInput

# Micro-benchmark sizes per device type: big enough to leave caches and hit the roof,
# small enough for a fraction of a second.
MATMUL_N = {"cpu": 1024, "cuda": 8192}
COPY_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


def _best_rate(fn, work: float, device: torch.device, budget_s: float,
               clock=time.perf_counter) -> float:
    """Best work/second over 3 to 50 timed calls of fn (after one warm-up), within budget_s
    of wall time; `clock` times each call (time.process_time: per CPU-second)."""
    fn()
    device_sync(device)
    best = 0.0
    deadline = time.perf_counter() + budget_s
    for rep in range(50):
        t0 = clock()
        fn()
        device_sync(device)
        best = max(best, work / max(clock() - t0, 1e-9))
        if rep >= 2 and time.perf_counter() > deadline:
            break
    return best


def matmul_rate(device: str = "cpu", dtype: str = "float32", n: int | None = None,
                budget_s: float = 0.25, per_cpu_second: bool = False) -> float:
    """Best FLOP/s of an n x n x n torch.mm (2n^3 FLOPs): the compute roof. Per CPU-second
    holds on a shared machine too, if what it is compared with is converted the same way."""
    dev = torch.device(device)
    dt = _dtype(dtype)
    n = n or MATMUL_N.get(dev.type, 1024)
    a, b = (torch.randn(n, n, device=dev).to(dt) for _ in range(2))
    clock = time.process_time if per_cpu_second else time.perf_counter
    return _best_rate(lambda: torch.mm(a, b), 2.0 * n**3, dev, budget_s, clock)


def measure_peaks(
    device: str,
    dtype: str,
    *,
    matmul_n: int | None = None,
    copy_bytes: int | None = None,
    budget_s: float = 0.25,
) -> dict[str, Any]:
    """Measure matmul FLOP/s (n x n x n, 2n^3 FLOPs) and copy bandwidth (read + write bytes)."""
    dev = torch.device(device)
    dt = _dtype(dtype)
    n = matmul_n or MATMUL_N.get(dev.type, 1024)
    flops = matmul_rate(device, dtype, n, budget_s)

    numel = (copy_bytes or COPY_BYTES.get(dev.type, COPY_BYTES["cpu"])) // dt.itemsize
    src = torch.ones(numel, dtype=dt, device=dev)
    dst = torch.empty_like(src)
    nbytes = numel * dt.itemsize
    bw = _best_rate(lambda: dst.copy_(src), 2.0 * nbytes, dev, budget_s)  # read + write
    return {
        "matmul_flops": flops,
        "copy_bytes_s": bw,
        "matmul_n": n,
        "copy_bytes": nbytes,
        "threads": torch.get_num_threads(),
        # a peak measured on a busy host is too low: refresh=True once it is quiet
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _machine_key(device: str, dtype: str) -> dict[str, Any]:
    from pmbench.measure.envinfo import cpu_model, gpu_name

    dev = torch.device(device)
    return {
        "cpu": cpu_model(),
        "gpu": gpu_name(device) if dev.type == "cuda" else None,
        "device": str(dev),
        "dtype": dtype,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "torch": torch.__version__,
    }


def machine_peaks(device: str, dtype: str, *, refresh: bool = False, **measure: Any) -> dict:
    """Peak {"matmul_flops", "copy_bytes_s", ...} of this machine, device and dtype.

    Measured once (about a second) and cached as JSON in $PMBENCH_CACHE/peaks/ (default
    ~/.cache/pmbench), keyed by CPU model, GPU name, device, dtype, torch threads and
    torch version; `refresh=True` measures again. `measure` goes to `measure_peaks`.
    """
    _dtype(dtype)
    key = _machine_key(device, dtype)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "peaks" / f"{digest}.json"
    if path.exists() and not refresh:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable cache: measure again
    peaks = {
        **measure_peaks(device, dtype, **measure),
        "key": key,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(peaks, f, indent=1)
    os.replace(tmp, path)
    return peaks


def attention_flops(
    *, n_layers: int, n_heads: int, head_dim: int, query_tokens: int, key_tokens: float
) -> float:
    """FLOPs of attention scores and weighted sum: 2 matmuls x 2 FLOPs per multiply-add.

    `key_tokens` is the mean number of keys each query attends to (its visible context).
    """
    return 4.0 * n_layers * n_heads * head_dim * query_tokens * key_tokens


def model_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, bytes) of a model, tied weights counted once (model.parameters dedups)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def roofline(
    *,
    n_params: int,
    tokens_processed: int,
    decode_steps: int,
    weight_bytes: int,
    kv_bytes_read: int,
    wall_s: float,
    decode_s: float,
    peaks: dict,
    attention_flops: float = 0.0,
) -> dict[str, Any]:
    """The run record's `roofline` block.

    achieved_flops = (2 x n_params x tokens_processed + attention_flops) / wall_s;
    achieved_bytes_s = (weight_bytes x decode_steps + kv_bytes_read) / decode_s, the
    traffic every decoding step must at least move. Each is also a fraction of `peaks`
    (from `machine_peaks`). A rate whose time is zero, or a missing peak, is None.
    """
    flops = 2.0 * n_params * tokens_processed + attention_flops
    bytes_read = float(weight_bytes) * decode_steps + kv_bytes_read
    achieved_flops = _ratio(flops, wall_s)
    achieved_bw = _ratio(bytes_read, decode_s) if decode_steps else None
    peak_flops = peaks.get("matmul_flops")
    peak_bw = peaks.get("copy_bytes_s")
    return {
        "achieved_flops": achieved_flops,
        "peak_flops": peak_flops,
        "flops_fraction": _ratio(achieved_flops, peak_flops),
        "achieved_bytes_s": achieved_bw,
        "peak_bytes_s": peak_bw,
        "bandwidth_fraction": _ratio(achieved_bw, peak_bw),
        "flops": flops,
        "decode_bytes_read": bytes_read,
        "decode_steps_s": _ratio(decode_steps, decode_s) if decode_steps else None,
    }


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "n/a"


def format_roofline(r: dict[str, Any]) -> str:
    """One line for the run summary: achieved vs peak bandwidth and FLOP/s."""

    def g(x: float | None, unit: str, scale: float) -> str:
        return f"{x / scale:.2f} {unit}" if x is not None else "n/a"

    return (
        f"bandwidth achieved {g(r['achieved_bytes_s'], 'GB/s', 1e9)} "
        f"({_pct(r['bandwidth_fraction'])} of {g(r['peak_bytes_s'], 'GB/s', 1e9)}), "
        f"compute {g(r['achieved_flops'], 'GFLOP/s', 1e9)} "
        f"({_pct(r['flops_fraction'])} of {g(r['peak_flops'], 'GFLOP/s', 1e9)})"
    )
