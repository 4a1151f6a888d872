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
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from pmbench.engine.decoding import device_sync
from pmbench.engine.models import DTYPES, cache_dir
from pmbench.errors import BadInput
from pmbench.safe_io import atomic_write_text

# Micro-benchmark sizes per device type: big enough to leave caches and hit the roof,
# small enough for about a second in all.
MATMUL_N = {"cpu": (1024,), "cuda": (8192,)}
STREAM_BYTES = {"cpu": (512 * 2**20,), "cuda": (2 * 2**30,)}  # x3 buffers, far past LLC
BUSY_PERCENT = 30.0  # other work on the CPUs above this: the peak is not cached
BUSY_RETRIES = 3


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
    n = n or MATMUL_N.get(dev.type, MATMUL_N["cpu"])[0]
    a, b = (torch.randn(n, n, device=dev).to(dt) for _ in range(2))
    clock = time.process_time if per_cpu_second else time.perf_counter
    return _best_rate(lambda: torch.mm(a, b), 2.0 * n**3, dev, budget_s, clock)


def _prepacked_rate(dtype: str, budget_s: float) -> float:
    """FLOP/s of the oneDNN-prepacked linear the CPU models use (engine/cpu_linear.py) at a
    prefill-like shape: it can beat torch.mm, and a roof must cover every kernel a run uses."""
    from pmbench.engine.cpu_linear import PrepackedLinear

    if dtype != "float32" or not torch.backends.mkldnn.is_available():
        return 0.0
    rows, width = 512, 2048
    layer = PrepackedLinear(torch.nn.Linear(width, width, bias=False))
    x = torch.randn(rows, width)
    with torch.inference_mode():
        return _best_rate(lambda: layer(x), 2.0 * rows * width * width, torch.device("cpu"),
                          budget_s)


def stream_rates(device: str, dtype: str, nbytes: int, budget_s: float) -> dict[str, float]:
    """Bytes/s of STREAM's copy (a = b) and triad (a = b + s*c), counted as STREAM does
    (2 and 3 buffers moved), and of the two reads a decoding step does: a sum over a
    buffer and a matrix-vector product (every weight read once), over buffers far larger
    than the last-level cache."""
    dev, dt = torch.device(device), _dtype(dtype)
    numel = nbytes // dt.itemsize
    a, b, c = (torch.ones(numel, dtype=dt, device=dev) for _ in range(3))
    size = numel * dt.itemsize
    side = int(numel**0.5)
    matrix, vector = b[: side * side].view(side, side), c[:side]
    return {
        "copy": _best_rate(lambda: a.copy_(b), 2.0 * size, dev, budget_s),
        "triad": _best_rate(lambda: torch.add(b, c, alpha=3.0, out=a), 3.0 * size, dev,
                            budget_s),
        "read": _best_rate(lambda: b.sum(), float(size), dev, budget_s),
        "gemv": _best_rate(lambda: torch.mv(matrix, vector), float(side * side * dt.itemsize),
                           dev, budget_s),
    }


def busy_percent() -> float:
    """CPU time spent by everything else over a short window (0 to 100)."""
    import psutil

    return psutil.cpu_percent(interval=0.2)


def measure_peaks(
    device: str,
    dtype: str,
    *,
    matmul_n: int | None = None,
    copy_bytes: int | None = None,
    budget_s: float = 0.15,
) -> dict[str, Any]:
    """The roofs: best matmul FLOP/s (torch.mm at a few sizes, and the prepacked linear the
    CPU models use) and best memory bandwidth (STREAM copy and triad, a plain read and a
    matrix-vector product, at two buffer sizes), all threads the run uses. A peak is the
    best of its kernels: whatever a run achieves is at most that."""
    dev = torch.device(device)
    sizes = (matmul_n,) if matmul_n else MATMUL_N.get(dev.type, MATMUL_N["cpu"])
    flops = {f"mm{n}": matmul_rate(device, dtype, n, budget_s) for n in sizes}
    if dev.type == "cpu" and not matmul_n:
        flops["prepacked_linear"] = _prepacked_rate(dtype, budget_s)
    streams: dict[str, float] = {}
    for nbytes in (copy_bytes,) if copy_bytes else STREAM_BYTES.get(dev.type,
                                                                     STREAM_BYTES["cpu"]):
        for name, rate in stream_rates(device, dtype, nbytes, budget_s).items():
            streams[name] = max(streams.get(name, 0.0), rate)
    return {
        "matmul_flops": max(flops.values()),
        "copy_bytes_s": max(streams.values()),
        "matmul_kernels": flops,
        "bandwidth_kernels": streams,
        "matmul_n": sizes[0],
        "copy_bytes": copy_bytes or STREAM_BYTES.get(dev.type, STREAM_BYTES["cpu"])[0],
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
        "torch_build": getattr(torch.version, "git_version", None),
    }


def _boot_time() -> float:
    import psutil

    return psutil.boot_time()


def machine_peaks(device: str, dtype: str, *, refresh: bool = False, **measure: Any) -> dict:
    """Peak {"matmul_flops", "copy_bytes_s", ...} of this machine, device and dtype.

    Measured (a few seconds) and cached as JSON in $PMBENCH_CACHE/peaks/ (default
    ~/.cache/pmbench), keyed by CPU model, GPU name, device, dtype, torch threads and
    torch build; a cache from before the machine's last boot is measured again, and a
    peak measured while other work kept the CPUs busy (after a few retries) is used but
    never cached. `refresh=True` measures again. `measure` goes to `measure_peaks`.
    """
    _dtype(dtype)
    key = _machine_key(device, dtype)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "peaks" / f"{digest}.json"
    if path.exists() and not refresh:
        try:
            cached = json.loads(path.read_text())
            if cached.get("measured_at", 0) > _boot_time():
                return cached
        except (OSError, ValueError, TypeError):
            pass  # unreadable, or from before this boot: measure again
    busy = busy_percent()
    for _ in range(BUSY_RETRIES - 1):
        if busy <= BUSY_PERCENT:
            break
        time.sleep(1.0)
        busy = busy_percent()
    measured = measure_peaks(device, dtype, **measure)
    busy = max(busy, busy_percent())  # busy before or after: either lowers the peak
    peaks = {
        **measured,
        "key": key,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "measured_at": time.time(),
        "busy_percent": busy,
    }
    if busy > BUSY_PERCENT:  # too low a peak: use it for this run, never cache it
        return peaks
    atomic_write_text(path, json.dumps(peaks, indent=1))
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
        # one decoding step: its time, the bytes it must read (weights + KV), the time
        # reading them takes at the peak, and how many times that the step took
        "step_s": _ratio(decode_s, decode_steps),
        "bytes_per_step": _ratio(bytes_read, decode_steps),
        "step_roof_s": _ratio(_ratio(bytes_read, decode_steps), peak_bw),
        "step_over_roof": _ratio(_ratio(decode_s, decode_steps),
                                 _ratio(_ratio(bytes_read, decode_steps), peak_bw)),
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
        + (f"; decoding step {1e3 * r['step_s']:.1f} ms = {r['step_over_roof']:.2f}x "
           f"reading its {r['bytes_per_step'] / 1e6:.0f} MB at the peak"
           if r.get("step_over_roof") else "")
    )


# --------------------------------------------------------- the decoding step's own roof

STEP_READS = ("rows", "shared", "one")  # Runner.step_reads


@dataclass(frozen=True)
class StepShape:
    """What one decoding step costs per row and per key, from a model's config."""

    weight_bytes: int
    n_params: int
    kv_bytes_per_token: int  # keys and values of one position, every layer
    flops_per_key: float  # attention FLOPs per (row, visible key), every layer


def step_shape(model: torch.nn.Module) -> StepShape:
    """The StepShape of `model` (its config's layers, heads and head size, its dtype)."""
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    layers = cfg.num_hidden_layers
    n_params, weight_bytes = model_weights(model)
    itemsize = next(model.parameters()).element_size()
    return StepShape(weight_bytes, n_params, 2 * layers * kv_heads * head_dim * itemsize,
                     attention_flops(n_layers=layers, n_heads=heads, head_dim=head_dim,
                                     query_tokens=1, key_tokens=1))


def _steps(questions: list[tuple[int, int, int]], reads: str):
    """Per decoding step of one group: (rows, context positions read, own positions read).

    `questions`: (context, question, answer) tokens of each. Its first answer token comes
    from the prefill; at step t a live row attends to the context, its question and the t
    answer tokens fed so far. "rows" reads the context once per live row, "shared" once
    for all, "one" decodes the questions one after another."""
    if reads == "one":
        for ctx, q, a in questions:
            for t in range(1, a):
                yield 1, ctx, q + t
        return
    ctx = questions[0][0] if questions else 0
    for t in range(1, max((a for _, _, a in questions), default=0)):
        live = [q + t for _, q, a in questions if a > t]
        yield len(live), ctx if reads == "shared" else ctx * len(live), sum(live)


def step_roof(groups: list[list[tuple[int, int, int]]], reads: str, shape: StepShape,
              peaks: dict) -> dict[str, Any]:
    """The roof of a run's decoding steps, counting the context: each step must stream the
    weights and the KV it reads (the shared context once for "shared", once per row
    otherwise) and compute 2 x params FLOPs per row plus attention's per visible key
    (the same for every method). A step's roof is max(bytes / peak bandwidth, FLOPs /
    peak FLOP/s); `roof_s` sums them. Means are per step."""
    if reads not in STEP_READS:
        raise ValueError(f"step_reads {reads!r} is not one of {STEP_READS}")
    bw, peak = peaks.get("copy_bytes_s"), peaks.get("matmul_flops")
    steps, total = 0, dict.fromkeys(("bytes", "kv_bytes", "context_kv_bytes", "flops",
                                     "attention_flops", "roof_s"), 0.0)
    for questions in groups:
        for rows, context, own in _steps(questions, reads):
            kv = shape.kv_bytes_per_token * (context + own)
            visible = rows * questions[0][0] + own
            step = {"bytes": shape.weight_bytes + kv, "kv_bytes": kv,
                    "context_kv_bytes": shape.kv_bytes_per_token * context,
                    "flops": 2.0 * shape.n_params * rows + shape.flops_per_key * visible,
                    "attention_flops": shape.flops_per_key * visible}
            step["roof_s"] = max(step["bytes"] / bw if bw else 0.0,
                                 step["flops"] / peak if peak else 0.0)
            for key, value in step.items():
                total[key] += value
            steps += 1
    mean = {f"{k}_per_step": (v / steps if steps else None) for k, v in total.items()}
    return {"reads": reads, "steps": steps, **mean, "roof_s": total["roof_s"],
            "attention_share_bytes": _ratio(total["kv_bytes"], total["bytes"]),
            "attention_share_flops": _ratio(total["attention_flops"], total["flops"])}
