"""Where power and energy readings come from: NVML for the GPU, RAPL for the CPU package.

Each reader returns None for what it cannot read (no driver, an unsupported call, an
unreadable counter), never a made-up zero; pmbench.measure.telemetry samples them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

NVML_ENERGY_WRAP = 2**64  # nvmlDeviceGetTotalEnergyConsumption is an unsigned 64-bit mJ count


def open_nvml() -> ModuleType:
    """Import and initialise NVML; raises ImportError or pynvml.NVMLError when unavailable.

    NVML reference-counts nvmlInit, so every successful call needs one nvmlShutdown.
    """
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def nvml_index(device: str) -> int | str:
    """The NVML index (or UUID) of a torch CUDA device string: "cuda" / "cuda:N".

    CUDA numbers only the devices in CUDA_VISIBLE_DEVICES (integers or GPU-/MIG- UUIDs);
    NVML numbers every board. We follow that mapping; NVML orders boards by PCI bus, so set
    CUDA_DEVICE_ORDER=PCI_BUS_ID on machines with mixed GPU models for the two to agree.
    """
    _, _, tail = device.partition(":")
    if tail:
        idx = int(tail)
    else:
        import torch

        idx = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return idx
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if idx >= len(entries):
        raise ValueError(f"{device} is not in CUDA_VISIBLE_DEVICES={visible}")
    entry = entries[idx]
    return int(entry) if entry.isdigit() else entry


def counter_total(reads: list[int | None], modulus: int) -> int | None:
    """Sum of increments of a wrapping counter over successive reads (None reads skipped).

    Each increment is taken modulo the counter's range, so a wrap between two reads
    still counts the true increment (as long as it wraps at most once per interval).
    """
    vals = [v for v in reads if v is not None]
    if len(vals) < 2:
        return None
    return sum((b - a) % modulus for a, b in zip(vals, vals[1:], strict=False))


class NvmlGpu:
    """One GPU read through NVML. A field the board does not support reads None from then on."""

    def __init__(self, nvml: ModuleType, index: int | str):
        self.nvml = nvml
        if isinstance(index, int):
            self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        else:
            self.handle = nvml.nvmlDeviceGetHandleByUUID(index)
        self.index = index
        name = nvml.nvmlDeviceGetName(self.handle)
        self.name = name.decode() if isinstance(name, bytes) else name
        self._unsupported: set[str] = set()
        self._not_supported = getattr(nvml, "NVMLError_NotSupported", ())

    def _get(self, field: str, fn) -> Any:
        if field in self._unsupported:
            return None
        try:
            return fn()
        except self._not_supported:
            self._unsupported.add(field)
            return None
        except self.nvml.NVMLError:  # transient (e.g. busy): this sample only
            return None

    def read(self) -> dict[str, Any]:
        n, h = self.nvml, self.handle
        return {
            "util": self._get("util", lambda: n.nvmlDeviceGetUtilizationRates(h).gpu),
            "mem": self._get("mem", lambda: n.nvmlDeviceGetMemoryInfo(h).used),
            "power_w": self._get("power", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "energy_mj": self._get("energy", lambda: n.nvmlDeviceGetTotalEnergyConsumption(h)),
            "temp_c": self._get(
                "temp", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)
            ),
            "sm_mhz": self._get("sm", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
        }


class Rapl:
    """CPU package energy counters (top-level intel-rapl:N zones named package-*).

    Sub-zones (core, uncore, dram) are parts of or beside a package and `psys` overlaps
    them, so only packages are summed. RAPL measures whole sockets, not this process.
    """

    def __init__(self, root: Path):
        zones = []
        for zone in sorted(root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:
                continue
            name_file = zone / "name"
            if name_file.exists() and not name_file.read_text().strip().startswith("package"):
                continue
            zones.append(zone)
        if not zones:
            raise OSError(f"no RAPL package zones under {root}")
        self.zones = zones
        self.moduli = [int((z / "max_energy_range_uj").read_text()) + 1 for z in zones]
        for zone in zones:  # PermissionError where energy_uj is root-only (most distros)
            int((zone / "energy_uj").read_text())

    def read(self) -> list[int | None]:
        out: list[int | None] = []
        for zone in self.zones:
            try:
                out.append(int((zone / "energy_uj").read_text()))
            except (OSError, ValueError):  # a read racing the kernel's update: skip it
                out.append(None)
        return out

    def energy_j(self, reads: list[list[int | None]]) -> float | None:
        totals = [counter_total([r[i] for r in reads], m) for i, m in enumerate(self.moduli)]
        if any(t is None for t in totals):
            return None
        return sum(totals) / 1e6
