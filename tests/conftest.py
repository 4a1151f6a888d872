"""Shared fixtures: the real SmolLM2 tokenizer and model, and tiny random models.

Tiny models use the real tokenizer's vocabulary so decoding, stop strings and
suites behave as with the real model, while a forward pass costs microseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
if "PMBENCH_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["PMBENCH_DATA"] = str(SHARED_DATA)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["PMBENCH_DATA"])
    assert path.is_dir(), f"benchmark data not found at {path}"
    return path


@pytest.fixture(scope="session")
def squad_titles(data_dir: Path) -> dict[str, str]:
    """SQuAD dev question id -> the title of its article (held-out checks of reference runs)."""
    return {q["id"]: a["title"] for a in json.loads(
        (data_dir / "squad" / "dev-v1.1.json").read_text())["data"]
        for p in a["paragraphs"] for q in p["qas"]}


@pytest.fixture(scope="session")
def tokenizer():
    from pmbench.engine.models import load_tokenizer

    tok = load_tokenizer()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def make_tiny_model(arch: str, vocab_size: int, seed: int = 0, **overrides):
    """A 2-layer random model of `arch` ("llama" or "qwen2"), fp32, eval mode.

    initializer_range is raised from 0.02 so logits are far from flat: greedy
    argmax is then stable against float reordering, as with a trained model.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    common.update(overrides)
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model


def make_family_model(family: str, vocab_size: int, **extra):
    """A 2-layer random model of another Llama-family architecture ("qwen3", "mistral")."""
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen3Config

    config_cls = {"qwen3": Qwen3Config, "mistral": MistralConfig}[family]
    config = config_cls(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=16, initializer_range=0.2, eos_token_id=2, pad_token_id=2,
                        **extra)
    config._attn_implementation = "sdpa"
    torch.manual_seed(3)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def random_group(n: int, seed: int, context_len: int | None = None):
    """A group of `n` questions of random ids (1-13 tokens) after a random context."""
    import random

    from pmbench.types import Group, Question

    rng = random.Random(seed)
    p = rng.randrange(5, 40) if context_len is None else context_len
    ctx = [rng.randrange(300, 30000) for _ in range(p)]
    qs = [Question(str(i), [rng.randrange(300, 30000) for _ in range(rng.randrange(1, 14))])
          for i in range(n)]
    return Group(0, ctx, qs)


def real_squad_group(data_dir: Path, tokenizer, article: int = 0, n: int = 8):
    """`n` real SQuAD v1.1 questions of one article, grouped as the squad suite does (the
    passage grows by paragraphs until it has `n` questions), in the suite's prompt."""
    from pmbench.types import Group, Question

    squad = json.loads((data_dir / "squad" / "dev-v1.1.json").read_text())
    context, qas = "", []
    for para in squad["data"][article]["paragraphs"]:
        context += ("\n" if context else "") + para["context"]
        qas += para["qas"]
        if len(qas) >= n:
            break

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return Group(0, encode("Context: " + context), [
        Question(q["id"], encode("\nQuestion: " + q["question"] + "\nAnswer:")) for q in qas[:n]])


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    return make_tiny_model("llama", len(tokenizer))


@pytest.fixture(scope="session")
def tiny_qwen2(tokenizer):
    return make_tiny_model("qwen2", len(tokenizer), seed=1)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny model saved as an HF folder, for tests that load a model by path."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama", len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (integration tests)."""
    from pmbench.engine.models import load_model

    return load_model(device="cpu", dtype="float32")


def assert_same_tokens(ref, out) -> None:
    """Two GroupOutputs answered every question with the same tokens and stop reason."""
    for i, (a, b) in enumerate(zip(ref.outputs, out.outputs, strict=True)):
        assert a.output_ids == b.output_ids, f"question {i}"
        assert a.finish_reason == b.finish_reason, f"question {i}"
