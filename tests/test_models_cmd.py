"""`pmbench models`: the default and cached models as before, then the known models with
their size, GPU memory and availability, as plain text."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.engine.models import DEFAULT_MODEL, KNOWN_MODELS, KnownModel


@pytest.fixture
def listing(monkeypatch, tmp_path):
    """`pmbench models` with a cache holding one converted model (brackets in its name)
    and the HF cache holding Qwen2.5-1.5B only."""
    import huggingface_hub

    (tmp_path / "models" / "odd[1]").mkdir(parents=True)
    (tmp_path / "models" / "odd[1]" / "config.json").write_text("{}")
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: "/hf/config.json"
                        if repo == "Qwen/Qwen2.5-1.5B-Instruct" else None)
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    return res.stdout.splitlines()


def test_default_and_cached_models_come_first(listing, tmp_path):
    assert listing[0].startswith(f"{DEFAULT_MODEL} (default): ")
    assert listing[1] == f"cached: {tmp_path / 'models' / 'odd[1]'}"  # markup kept verbatim


def test_known_models_with_size_memory_and_availability(listing):
    known = listing[listing.index("known models (pass the id to --model):"):]
    known = known[:next(k for k, line in enumerate(known) if line.startswith("GPU bf16 = "))]
    rows = {line.split()[0]: line for line in known if line.startswith("  ")}
    assert set(rows) == {"model", *(m.id for m in KNOWN_MODELS)}
    assert {"smollm2-135m-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
            "meta-llama/Meta-Llama-3-8B-Instruct"} <= set(rows)
    seven = rows["Qwen/Qwen2.5-7B-Instruct"].split()
    assert seven[1:6] == ["7.62B", "15.2", "GB", "21.2", "GB"]
    assert "135M" in rows[DEFAULT_MODEL] and "here: offline" in rows[DEFAULT_MODEL]
    assert "in the HF cache" in rows["Qwen/Qwen2.5-1.5B-Instruct"]
    llama = rows["meta-llama/Meta-Llama-3-8B-Instruct"]
    assert "--model /path/to/folder" in llama and "gated" in llama
    assert any(line.startswith("GPU bf16 = ") and "KV cache" in line for line in listing)


def test_gpu_memory_rule():
    m = KnownModel("x/y", 1_000_000_000, layers=10, kv_heads=2, head_dim=64)
    assert m.weight_bytes == 2_000_000_000
    assert m.kv_bytes(1) == 2 * 10 * 2 * 64 * 2  # K and V, per layer and KV head, bf16
    assert m.gpu_bytes() == int(1.2 * m.weight_bytes) + m.kv_bytes(16 * 2048) + 2**30


def test_random_models_are_listed(listing):
    from pmbench.engine.random_models import CHOICES

    start = next(k for k, line in enumerate(listing) if line.startswith("random weights"))
    assert "--ignore-eos" in listing[start]
    rows = {line.split()[0]: line for line in listing[start + 1:]}
    assert list(rows) == list(CHOICES)
    assert "7.62B params, 28 layers, vocab 152064" in rows["random:qwen2.5-7b"]
