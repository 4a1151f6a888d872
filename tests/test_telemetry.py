"""Telemetry sampler: real CPU numbers here, and GPU / RAPL aggregation against fakes."""

from __future__ import annotations

import mmap
import os
import sys
import time
import types
from collections import Counter

import pytest

from pmbench.measure import telemetry
from pmbench.measure.power import counter_total, nvml_index
from pmbench.measure.telemetry import TelemetrySampler, integrate

DESIGN_KEYS = {
    "device",
    "gpu_util_mean",
    "gpu_mem_peak_bytes",
    "power_w_mean",
    "energy_j",
    "j_per_token",
    "cpu_util_mean",
    "rss_peak_bytes",
}
GPU_KEYS = [
    "gpu_util_mean",
    "gpu_mem_peak_bytes",
    "gpu_name",
    "gpu_temp_c_max",
    "sm_clock_mhz_mean",
    "gpu_energy_j",
]


@pytest.fixture(autouse=True)
def no_rapl(tmp_path, monkeypatch):
    """Point RAPL at an empty tree, so CPU energy never depends on the CI host."""
    empty = tmp_path / "no-powercap"
    empty.mkdir()
    monkeypatch.setattr(telemetry, "RAPL_ROOT", empty)


def busy(seconds: float) -> int:
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


# -- pure helpers ----------------------------------------------------------------------


def test_counter_total_handles_wrap_and_missing_reads():
    assert counter_total([10, 25, None, 40], 100) == 30
    assert counter_total([90, 5, 20], 100) == 30  # wrapped between the first two reads
    assert counter_total([None, 7], 100) is None  # one read is no measurement


def test_integrate_trapezoid():
    assert integrate([0.0, 1.0, 3.0], [100.0, 200.0, 200.0]) == pytest.approx(150 + 400)
    assert integrate([0.0, 1.0, 2.0], [100.0, None, 100.0]) == pytest.approx(200)
    assert integrate([0.0], [5.0]) is None


def test_nvml_index_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index("cuda:1") == 1
    assert nvml_index("cuda") == 0  # CUDA not initialised: the default device
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert nvml_index("cuda:1") == 5
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa, GPU-bbbb")
    assert nvml_index("cuda:1") == "GPU-bbbb"
    with pytest.raises(ValueError):
        nvml_index("cuda:2")


# -- this machine ------------------------------------------------------------------------


def test_cpu_run_measures_cpu_and_leaves_gpu_null():
    cpu0, t0 = time.process_time(), time.perf_counter()
    with TelemetrySampler("cpu", interval_s=0.02) as s:
        busy(0.3)
    cores_busy = (time.process_time() - cpu0) / (time.perf_counter() - t0)
    out = s.summary(output_tokens=10)
    assert DESIGN_KEYS <= out.keys()
    assert out["device"] == "cpu"
    assert all(out[k] is None for k in GPU_KEYS)
    # one thread spinning: about one core busy (less when the CI host is loaded)
    assert 0.05 < out["cpu_util_mean"] < 1.5
    assert out["cpu_util_mean"] == pytest.approx(cores_busy, rel=0.2, abs=0.05)
    assert out["rss_peak_bytes"] > 10 * 2**20
    assert out["memory_peak_bytes"] == out["rss_peak_bytes"]
    assert out["samples"] >= 5
    assert out["wall_s"] == pytest.approx(0.3, abs=0.2)
    # no RAPL: energy is unknown, not zero
    assert out["energy_j"] is None and out["j_per_token"] is None and out["power_w_mean"] is None
    assert out["rapl_error"]


def test_idle_region_is_not_busy():
    with TelemetrySampler("cpu", interval_s=0.05) as s:
        time.sleep(0.3)
    assert s.summary(1)["cpu_util_mean"] < 0.2


def resident_block(size: int) -> mmap.mmap:
    """`size` bytes of new resident memory: an anonymous mapping written page by page.

    Not `b"x" * size`: malloc may hand back memory an earlier test freed but the allocator
    kept resident, and then RSS does not grow at all (seen after 1300 tests at 2.9 GB RSS).
    """
    block = mmap.mmap(-1, size)
    chunk = b"\x01" * 2**20
    for _ in range(size // len(chunk)):
        block.write(chunk)
    return block


def test_rss_peak_sees_a_transient_allocation():
    size = 256 * 2**20
    with TelemetrySampler("cpu", interval_s=0.01) as s:
        before = s._proc.memory_info().rss
        block = resident_block(size)
        time.sleep(0.3)  # 30 sampling intervals
        block.close()
    assert s.summary(1)["rss_peak_bytes"] >= before + 0.9 * size


def test_rss_peak_between_samples_comes_from_ru_maxrss():
    """A peak shorter than the interval is missed by sampling; ru_maxrss still sees it."""
    rss = telemetry.psutil.Process().memory_info().rss
    size = max(0, telemetry._ru_maxrss_bytes() - rss) + 128 * 2**20  # a new lifetime high
    if size > 2**30:
        pytest.skip("process peak already far above current RSS")
    with TelemetrySampler("cpu", interval_s=60) as s:  # samples only at start and stop
        resident_block(size).close()
    assert s.summary(1)["samples"] == 2
    assert s.summary(1)["rss_peak_bytes"] >= rss + size - 16 * 2**20


def test_cuda_run_without_nvml_is_null_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with TelemetrySampler("cuda:0", interval_s=0.02) as s:
        time.sleep(0.05)
    out = s.summary(5)
    assert all(out[k] is None for k in GPU_KEYS)
    assert out["energy_j"] is None and out["j_per_token"] is None
    assert out["cpu_util_mean"] is not None and out["rss_peak_bytes"] > 0
    assert "pynvml" in out["nvml_error"]


def test_summary_before_stop_and_double_start_are_errors():
    s = TelemetrySampler("cpu")
    with pytest.raises(RuntimeError):
        s.stop()
    s.start()
    with pytest.raises(RuntimeError):
        s.summary(1)
    with pytest.raises(RuntimeError):
        s.start()
    s.stop()
    s.stop()  # idempotent
    assert s.summary(1)["samples"] >= 2


# -- fake NVML ---------------------------------------------------------------------------


class FakeNvml(types.ModuleType):
    """A pynvml stand-in: each field is f(i) for its i-th read (may raise)."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, init_error: str | None = None, **series):
        super().__init__("pynvml")

        class NVMLError(Exception):
            pass

        class NVMLError_NotSupported(NVMLError):
            pass

        self.NVMLError = NVMLError
        self.NVMLError_NotSupported = NVMLError_NotSupported
        self.init_error = init_error
        self.series = {
            "util": lambda i: 50,
            "mem": lambda i: 2**30,
            "power": lambda i: 100_000,
            "energy": lambda i: 1000 * i,
            "temp": lambda i: 60,
            "sm": lambda i: 1500,
            **series,
        }
        self.calls: Counter[str] = Counter()
        self.inits = self.shutdowns = 0
        self.opened = None

    def _next(self, field):
        i = self.calls[field]
        self.calls[field] += 1
        return self.series[field](i)

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        self.opened = index
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.opened = uuid
        return ("handle", uuid)

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetUtilizationRates(self, h):
        return types.SimpleNamespace(gpu=self._next("util"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=self._next("mem"), total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h):
        return self._next("power")

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return self._next("energy")

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._next("temp")

    def nvmlDeviceGetClockInfo(self, h, clock):
        assert clock == self.NVML_CLOCK_SM
        return self._next("sm")


def run_fake(monkeypatch, fake, device="cuda:0", seconds=0.2, tokens=100):
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with TelemetrySampler(device, interval_s=0.02) as s:
        time.sleep(seconds)
    out = s.summary(tokens)
    assert out["samples"] >= 4, "sampler thread did not run"
    return out


def raise_(exc):
    raise exc


def test_fake_nvml_means_peaks_and_counter_energy_with_wraparound(monkeypatch):
    start = 2**64 - 100  # the 64-bit mJ counter wraps right after the first read
    fake = FakeNvml(
        util=lambda i: 10 * (i % 10),
        mem=lambda i: 5 * 2**30 if i == 1 else 2 * 2**30,
        power=lambda i: 1000 * (200 + i),  # mW
        energy=lambda i: (start + 300 * i) % 2**64,
        temp=lambda i: 50 + i,
        sm=lambda i: 1000 + 10 * i,
    )
    out = run_fake(monkeypatch, fake)
    k = out["samples"]
    assert all(fake.calls[f] == k for f in fake.series)  # one read of each field per sample
    assert out["gpu_name"] == "Fake H100"
    assert out["gpu_util_mean"] == pytest.approx(sum(10 * (i % 10) for i in range(k)) / k)
    assert out["gpu_mem_peak_bytes"] == 5 * 2**30
    assert out["power_w_mean"] == pytest.approx(200 + (k - 1) / 2)
    assert out["gpu_temp_c_max"] == 50 + k - 1
    assert out["sm_clock_mhz_mean"] == pytest.approx(1000 + 10 * (k - 1) / 2)
    assert out["energy_source"] == "nvml_energy_counter"
    assert out["energy_j"] == pytest.approx(0.3 * (k - 1))
    assert out["gpu_energy_j"] == out["energy_j"]
    assert out["j_per_token"] == pytest.approx(out["energy_j"] / 100)
    assert fake.inits == 1 and fake.shutdowns == 1


def test_fake_nvml_counter_not_supported_integrates_power(monkeypatch):
    fake = FakeNvml(
        energy=lambda i: raise_(fake.NVMLError_NotSupported()),
        util=lambda i: raise_(fake.NVMLError_NotSupported()),
        power=lambda i: 250_000,  # 250 W, constant
    )
    out = run_fake(monkeypatch, fake)
    assert fake.calls["energy"] == 1 and fake.calls["util"] == 1  # not asked again
    assert out["gpu_util_mean"] is None
    assert out["energy_source"] == "nvml_power_integral"
    assert out["energy_j"] == pytest.approx(250 * out["wall_s"], rel=0.02)
    assert out["power_w_mean"] == pytest.approx(250)
    assert out["gpu_mem_peak_bytes"] == 2**30 and out["gpu_temp_c_max"] == 60


def test_fake_nvml_transient_error_loses_no_energy(monkeypatch):
    fake = FakeNvml()
    fake.series["energy"] = lambda i: raise_(fake.NVMLError("busy")) if i == 1 else 1000 * i
    out = run_fake(monkeypatch, fake)
    k = out["samples"]
    assert fake.calls["energy"] == k  # a transient error does not disable the field
    assert out["energy_j"] == pytest.approx(k - 1)  # 1000 mJ per read, cumulative counter


def test_fake_nvml_nothing_supported_is_null(monkeypatch):
    def unsupported(i):
        raise fake.NVMLError_NotSupported()

    fake = FakeNvml(**dict.fromkeys(["util", "mem", "power", "energy", "temp", "sm"], unsupported))
    out = run_fake(monkeypatch, fake)
    assert out["gpu_name"] == "Fake H100"
    assert all(out[k] is None for k in GPU_KEYS if k != "gpu_name")
    assert out["energy_j"] is None and out["power_w_mean"] is None
    assert out["j_per_token"] is None and out["energy_source"] is None


def test_fake_nvml_init_failure_is_null(monkeypatch):
    fake = FakeNvml(init_error="Driver Not Loaded")
    out = run_fake(monkeypatch, fake)
    assert all(out[k] is None for k in GPU_KEYS)
    assert "Driver Not Loaded" in out["nvml_error"]


def test_fake_nvml_opens_the_visible_device(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    fake = FakeNvml()
    run_fake(monkeypatch, fake, device="cuda:1")
    assert fake.opened == 7


def test_cpu_device_never_touches_nvml(monkeypatch):
    fake = FakeNvml()
    run_fake(monkeypatch, fake, device="cpu")
    assert fake.inits == 0 and not fake.calls


# -- fake RAPL ---------------------------------------------------------------------------


def write_zone(path, name, energy, max_range=999):
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    set_energy(path, energy)


def set_energy(zone, value):
    tmp = zone / "energy_uj.tmp"
    tmp.write_text(f"{value}\n")
    os.replace(tmp, zone / "energy_uj")  # atomic, as a sysfs read is


def test_rapl_package_energy_with_wraparound(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    pkg0, pkg1 = root / "intel-rapl:0", root / "intel-rapl:1"
    write_zone(pkg0, "package-0", 900)
    write_zone(pkg1, "package-1", 100)
    core, psys = root / "intel-rapl:0:0", root / "intel-rapl:2"
    write_zone(core, "core", 0)  # inside package-0: not added again
    write_zone(psys, "psys", 0)  # overlaps the packages: not added
    monkeypatch.setattr(telemetry, "RAPL_ROOT", root)

    with TelemetrySampler("cpu", interval_s=0.01) as s:
        time.sleep(0.03)
        set_energy(pkg0, 980)
        set_energy(pkg1, 300)
        set_energy(core, 70)
        set_energy(psys, 500)
        time.sleep(0.03)
        set_energy(pkg0, 50)  # wrapped past max_energy_range_uj = 999
        set_energy(pkg1, 400)
        time.sleep(0.03)
    out = s.summary(output_tokens=3)
    # package-0: 900 -> 980 -> (wrap) 50 = 150 uJ; package-1: 100 -> 400 = 300 uJ
    assert out["cpu_energy_j"] == pytest.approx(450e-6)
    assert out["energy_j"] == out["cpu_energy_j"] and out["energy_source"] == "rapl"
    assert out["j_per_token"] == pytest.approx(150e-6)
    assert out["power_w_mean"] == pytest.approx(450e-6 / out["wall_s"])
    assert out["rapl_error"] is None


def test_rapl_unreadable_is_null(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    zone = root / "intel-rapl:0"
    write_zone(zone, "package-0", 5)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # reading it fails, as a root-only file does for a user
    monkeypatch.setattr(telemetry, "RAPL_ROOT", root)
    with TelemetrySampler("cpu", interval_s=0.02) as s:
        time.sleep(0.03)
    out = s.summary(1)
    assert out["cpu_energy_j"] is None and out["energy_j"] is None
    assert out["rapl_error"]
