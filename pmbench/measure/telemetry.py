"""What the hardware did during a timed region: GPU and CPU utilisation, memory, power, energy.

A background thread samples every `interval_s` (an `Event.wait` loop, like
optimum-benchmark's energy tracker) between `start()` and `stop()`; one sample is also
taken at each end, so even a region shorter than the interval has two.

- GPU (only for the device the run uses, through `pynvml` / nvidia-ml-py): utilisation,
  device memory used, power, the board's total-energy counter, temperature, SM clock.
- CPU: this process's CPU time and resident memory (psutil), and package energy from
  RAPL (/sys/class/powercap) where the kernel lets us read it (root only on most distros).

A quantity that cannot be measured (no NVIDIA driver, an NVML call the board does not
support, RAPL not readable) is None in the summary: never a crash, never a made-up zero.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from pmbench.measure.power import (
    NVML_ENERGY_WRAP,
    NvmlGpu,
    Rapl,
    counter_total,
    nvml_index,
    open_nvml,
)

RAPL_ROOT = Path("/sys/class/powercap")  # tests point this at a fake tree


def integrate(times: list[float], values: list[float | None]) -> float | None:
    """Trapezoidal integral of a sampled quantity (power in W -> energy in J)."""
    pts = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if len(pts) < 2:
        return None
    return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False))


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _max(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _ru_maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@dataclass
class _Sample:
    t: float
    rss: int | None
    gpu: dict[str, Any] | None
    rapl: list[int | None] | None


class TelemetrySampler:
    """Sample GPU/CPU telemetry in a background thread around a timed region.

        s = TelemetrySampler("cuda:0", interval_s=0.1)
        with s:            # or s.start() ... s.stop()
            run_the_group()
        s.summary(output_tokens=n)   # the run record's `telemetry` block

    `device` is the torch device the run uses ("cpu", "cuda", "cuda:N"); GPU telemetry
    is read only for that device. On CUDA, `start()` resets torch's peak-memory counter
    so `memory_peak_bytes` in the summary is the region's `max_memory_allocated`.
    """

    def __init__(self, device: str = "cpu", interval_s: float = 0.1):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.device = str(device)
        self.interval_s = interval_s
        self._is_cuda = self.device.startswith("cuda")
        self._samples: list[_Sample] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._t0 = self._t1 = None
        self._proc = psutil.Process()
        self._nvml: ModuleType | None = None
        self._gpu: NvmlGpu | None = None
        self._rapl: Rapl | None = None
        self.nvml_error: str | None = None
        self.rapl_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> TelemetrySampler:
        if self._thread is not None:
            raise RuntimeError("TelemetrySampler already started")
        if self._is_cuda:
            self._open_gpu()
            self._reset_torch_peak()
        else:
            self.nvml_error = f"device {self.device} is not a CUDA device"
        try:
            self._rapl = Rapl(RAPL_ROOT)
        except (OSError, ValueError) as e:
            self.rapl_error = f"{type(e).__name__}: {e}"
        self._maxrss0 = _ru_maxrss_bytes()
        self._cpu0 = self._proc.cpu_times()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="pmbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> TelemetrySampler:
        if self._thread is None:
            raise RuntimeError("TelemetrySampler.stop() before start()")
        if self._t1 is not None:
            return self
        self._stop.set()
        self._thread.join()
        self._sample()
        self._t1 = time.perf_counter()
        self._cpu1 = self._proc.cpu_times()
        self._maxrss1 = _ru_maxrss_bytes()
        self._torch_peak = self._read_torch_peak()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
        return self

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _open_gpu(self) -> None:
        try:
            nvml = open_nvml()
        except ImportError as e:
            self.nvml_error = f"pynvml not installed: {e}"
            return
        except Exception as e:  # pynvml.NVMLError_*: no driver, no library, ...
            self.nvml_error = f"{type(e).__name__}: {e}"
            return
        self._nvml = nvml
        try:
            self._gpu = NvmlGpu(nvml, nvml_index(self.device))
        except (nvml.NVMLError, ValueError) as e:
            self.nvml_error = f"{type(e).__name__}: {e}"

    def _reset_torch_peak(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        except (RuntimeError, AssertionError):
            pass

    def _read_torch_peak(self) -> int | None:
        if not self._is_cuda:
            return None
        try:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.max_memory_allocated(torch.device(self.device)))
        except (RuntimeError, AssertionError):
            pass
        return None

    def _sample(self) -> None:
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            rss = None
        gpu = self._gpu.read() if self._gpu is not None else None
        rapl = self._rapl.read() if self._rapl is not None else None
        self._samples.append(_Sample(time.perf_counter(), rss, gpu, rapl))

    # -- results ------------------------------------------------------------------------

    def _gpu_figures(self, times: list[float]) -> tuple[dict[str, Any], float | None,
                                                        str | None]:
        """The GPU's sampled figures (util, mem, power, temp, sm), its energy in joules and
        where that came from: the board's energy counter, else power integrated over the
        samples. Empty and None without a GPU."""
        if self._gpu is None:
            return {}, None, None
        reads = [s.gpu for s in self._samples]
        col = {k: [r[k] for r in reads] for k in reads[0]}
        mj = counter_total(col["energy_mj"], NVML_ENERGY_WRAP)
        if mj is not None:
            energy, source = mj / 1000.0, "nvml_energy_counter"
        else:
            energy = integrate(times, col["power_w"])
            source = "nvml_power_integral" if energy is not None else None
        gpu = {"util": _mean(col["util"]), "mem": _max(col["mem"]),
               "power": _mean(col["power_w"]), "temp": _max(col["temp_c"]),
               "sm": _mean(col["sm_mhz"])}
        return gpu, energy, source

    def summary(self, output_tokens: int) -> dict[str, Any]:
        """The `telemetry` block: DESIGN keys first, then extras. None = not measurable.

        - gpu_util_mean: mean NVML utilisation, percent (0-100) of the run's GPU.
        - gpu_mem_peak_bytes: peak device memory used per NVML (whole board: includes the
          CUDA context and any other process). `memory_peak_bytes` is torch's own
          max_memory_allocated on CUDA (the run record's memory.peak_bytes), else RSS.
        - power_w_mean / energy_j: the GPU's on a CUDA run (energy from the board's
          counter, else power integrated over the samples: see energy_source), the CPU
          packages' RAPL energy otherwise. cpu_energy_j is always RAPL's (whole sockets).
        - j_per_token: energy_j / output_tokens.
        - cpu_util_mean: cores busy, i.e. this process's CPU seconds / wall seconds
          (1.0 = one core fully busy; up to cpu_count). Includes this sampler's tiny cost.
        - rss_peak_bytes: peak resident memory: max of the samples and, when the process
          set a new lifetime high inside the region, ru_maxrss (catches peaks between samples).
        """
        if self._t1 is None:
            raise RuntimeError("call TelemetrySampler.stop() before summary()")
        wall = self._t1 - self._t0
        times = [s.t for s in self._samples]

        cpu_s = (self._cpu1.user + self._cpu1.system) - (self._cpu0.user + self._cpu0.system)
        cpu_util = cpu_s / wall if wall > 0 else None
        rss_peak = _max([s.rss for s in self._samples])
        if self._maxrss1 > self._maxrss0:
            rss_peak = max(rss_peak or 0, self._maxrss1)

        cpu_energy = None
        if self._rapl is not None:
            cpu_energy = self._rapl.energy_j([s.rapl for s in self._samples])

        gpu, gpu_energy, source = self._gpu_figures(times)
        if self._is_cuda:
            energy = gpu_energy
            power = gpu.get("power")
            if power is None and energy is not None and wall > 0:
                power = energy / wall
        else:
            energy, source = cpu_energy, ("rapl" if cpu_energy is not None else None)
            power = energy / wall if energy is not None and wall > 0 else None
        per_token = energy / output_tokens if energy is not None and output_tokens > 0 else None

        return {
            "device": self.device,
            "gpu_util_mean": gpu.get("util"),
            "gpu_mem_peak_bytes": gpu.get("mem"),
            "power_w_mean": power,
            "energy_j": energy,
            "j_per_token": per_token,
            "cpu_util_mean": cpu_util,
            "rss_peak_bytes": rss_peak,
            # extras
            "gpu_name": self._gpu.name if self._gpu is not None else None,
            "gpu_temp_c_max": gpu.get("temp"),
            "sm_clock_mhz_mean": gpu.get("sm"),
            "gpu_energy_j": gpu_energy,
            "cpu_energy_j": cpu_energy,
            "energy_source": source,
            "memory_peak_bytes": self._torch_peak if self._is_cuda else rss_peak,
            "cpu_count": psutil.cpu_count(),
            "wall_s": wall,
            "samples": len(self._samples),
            "interval_s": self.interval_s,
            "nvml_error": self.nvml_error,
            "rapl_error": self.rapl_error,
        }
