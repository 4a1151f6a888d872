"""Roofline arithmetic on hand values, and the cached peak micro-benchmark."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pmbench.errors import BadInput
from pmbench.measure import roofline as rl
from pmbench.measure.roofline import (
    attention_flops,
    format_roofline,
    machine_peaks,
    model_weights,
    roofline,
)

PEAKS = {"matmul_flops": 3000.0, "copy_bytes_s": 8000.0}
TINY = {"matmul_n": 64, "copy_bytes": 2**20, "budget_s": 0.01}


def test_roofline_hand_values():
    r = roofline(
        n_params=100,
        tokens_processed=10,
        attention_flops=1000.0,
        decode_steps=5,
        weight_bytes=200,
        kv_bytes_read=1000,
        wall_s=2.0,
        decode_s=0.5,
        peaks=PEAKS,
    )
    assert r["flops"] == 3000  # 2 * 100 * 10 + 1000
    assert r["achieved_flops"] == pytest.approx(1500)
    assert r["flops_fraction"] == pytest.approx(0.5)
    assert r["decode_bytes_read"] == 2000  # 200 * 5 + 1000
    assert r["achieved_bytes_s"] == pytest.approx(4000)
    assert r["bandwidth_fraction"] == pytest.approx(0.5)
    assert r["peak_flops"] == 3000 and r["peak_bytes_s"] == 8000
    assert r["decode_steps_s"] == pytest.approx(10)


def test_roofline_is_null_safe():
    r = roofline(
        n_params=100,
        tokens_processed=10,
        decode_steps=0,
        weight_bytes=200,
        kv_bytes_read=0,
        wall_s=0.0,
        decode_s=0.0,
        peaks={},
    )
    for key in (
        "achieved_flops",
        "flops_fraction",
        "achieved_bytes_s",
        "bandwidth_fraction",
        "peak_flops",
        "peak_bytes_s",
        "decode_steps_s",
    ):
        assert r[key] is None, key
    assert "n/a" in format_roofline(r)


def test_format_roofline():
    r = roofline(
        n_params=100,
        tokens_processed=10,
        decode_steps=5,
        weight_bytes=200,
        kv_bytes_read=1000,
        wall_s=2.0,
        decode_s=0.5,
        peaks={"matmul_flops": 3e12, "copy_bytes_s": 8e9},
    )
    line = format_roofline(r)
    assert "bandwidth achieved 0.00 GB/s" in line and "of 8.00 GB/s" in line
    assert "of 3000.00 GFLOP/s" in line


def test_attention_flops():
    # 2 layers, 3 heads, head_dim 4, 5 queries over 7 keys: 2 matmuls x 2 FLOPs x 2*3*4*5*7
    assert (
        attention_flops(n_layers=2, n_heads=3, head_dim=4, query_tokens=5, key_tokens=7)
        == 4 * 2 * 3 * 4 * 5 * 7
    )


def test_model_weights_counts_tied_weights_once():
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head, "norm": torch.nn.LayerNorm(4)})
    assert model_weights(model) == (40 + 8, (40 + 8) * 4)
    assert model_weights(model.to(torch.bfloat16)) == (48, 96)


def test_measure_peaks_gives_positive_finite_rates():
    p = rl.measure_peaks("cpu", "float32", **TINY)
    for key in ("matmul_flops", "copy_bytes_s"):
        assert math.isfinite(p[key]) and p[key] > 1e6, key
    assert p["matmul_n"] == 64 and p["copy_bytes"] == 2**20


@pytest.fixture
def quiet(monkeypatch):
    """The machine counts as idle, so measured peaks are cached."""
    monkeypatch.setattr(rl, "busy_percent", lambda: 0.0)


def test_measure_peaks_keeps_the_best_kernel():
    p = rl.measure_peaks("cpu", "float32", **TINY)
    assert set(p["bandwidth_kernels"]) == {"copy", "triad", "read", "gemv"}
    assert p["copy_bytes_s"] == max(p["bandwidth_kernels"].values())
    assert p["matmul_flops"] == max(p["matmul_kernels"].values())


def test_peaks_of_a_busy_machine_are_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(rl, "busy_percent", lambda: 95.0)
    monkeypatch.setattr(rl.time, "sleep", lambda s: None)
    peaks = machine_peaks("cpu", "float32", **TINY)
    assert peaks["busy_percent"] == 95.0 and peaks["matmul_flops"] > 0
    assert not (tmp_path / "peaks").exists()


def test_peaks_cached_before_the_last_boot_are_measured_again(tmp_path, monkeypatch, quiet):
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path))
    first = machine_peaks("cpu", "float32", **TINY)
    assert machine_peaks("cpu", "float32", **TINY) == first  # cached
    monkeypatch.setattr(rl, "_boot_time", lambda: first["measured_at"] + 1)  # rebooted
    assert machine_peaks("cpu", "float32", **TINY)["measured_at"] > first["measured_at"]


@pytest.mark.slow
def test_roof_fractions_are_at_most_one_on_a_real_run(tmp_path):
    """A fraction above 1 means the roof was measured wrong: never on a real run."""
    from typer.testing import CliRunner

    from pmbench.cli import app

    for method, branch, limit in (("sequential", 1, 2), ("rope2d", 4, 4)):
        res = CliRunner().invoke(app, [
            "run", "--method", method, "--suite", "squad", "--branch", str(branch),
            "--limit", str(limit), "--max-new-tokens", "8", "--ignore-eos", "--json",
            "--output-dir", str(tmp_path / method)])
        assert res.exit_code == 0, res.output
        roof = json.loads(res.stdout)["roofline"]
        for key in ("bandwidth_fraction", "flops_fraction"):
            assert 0 < roof[key] <= 1, (method, key, roof)


def test_machine_peaks_cached_per_dtype(tmp_path, monkeypatch, quiet):
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path))
    first = machine_peaks("cpu", "float32", **TINY)
    files = list((tmp_path / "peaks").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    assert first["key"]["dtype"] == "float32" and first["key"]["device"] == "cpu"

    calls = []
    real = rl.measure_peaks

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(rl, "measure_peaks", counting)
    assert machine_peaks("cpu", "float32", **TINY) == first  # from the cache
    assert calls == []
    machine_peaks("cpu", "bfloat16", **TINY)  # another dtype: measured, own file
    machine_peaks("cpu", "float32", refresh=True, **TINY)  # asked to measure again
    assert calls == [("cpu", "bfloat16"), ("cpu", "float32")]
    assert len(list((tmp_path / "peaks").glob("*.json"))) == 2

    files[0].write_text("{not json")  # a corrupt cache is measured again, not an error
    assert machine_peaks("cpu", "float32", **TINY)["matmul_flops"] > 0
    assert len(calls) == 3


def test_machine_peaks_bad_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path))
    with pytest.raises(BadInput):
        machine_peaks("cpu", "float8")


def test_a_run_that_beats_the_cached_peak_measures_it_again(monkeypatch):
    """A fraction above 1 means the cached peak was measured too low (say under load):
    the run measures the peak again instead of reporting more than 100%."""
    from pmbench.jobs import run as jobs_run

    calls = []

    def peaks(device, dtype, refresh=False):
        calls.append(refresh)
        return {"matmul_flops": 1e15, "copy_bytes_s": 1e12 if refresh else 1.0}

    monkeypatch.setattr(jobs_run, "machine_peaks", peaks)
    model = torch.nn.Linear(100, 100, bias=False)  # 40 kB of weights
    groups = [{"decode_steps": 10, "tokens_processed": 20, "kv_cache_bytes": 0}]
    summary = {"latency": {"wall_s": 1.0, "decode_s": 0.5}}
    roof = jobs_run._roofline(model, groups, "cpu", "float32", summary)
    assert calls == [False, True]
    assert 0 < roof["bandwidth_fraction"] <= 1
