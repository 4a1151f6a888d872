"""MiniMind-style model sizes as transformers `LlamaConfig`s.

MiniMind (github jingyaogong/minimind) is a Llama-style decoder: RMSNorm, SwiGLU,
grouped-query attention, RoPE base 1e6, tied embeddings and a 6400-token BPE. Building
it as a plain `LlamaForCausalLM` means the 2D RoPE patch, every runner and the
attention analysis apply to it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pmbench.errors import BadInput


@dataclass(frozen=True)
class ModelSize:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    max_positions: int = 32768


SIZES: dict[str, ModelSize] = {
    # trains in minutes on two CPU cores; head_dim 32 = 16 rotary pairs, so ratios
    # 0.25 / 0.5 / 0.75 select 4 / 8 / 12 pairs exactly
    "cpu-tiny": ModelSize(layers=4, hidden=128, heads=4, kv_heads=2, max_positions=4096),
    "minimind2-small": ModelSize(layers=8, hidden=512, heads=8, kv_heads=2),  # ~26M
    "minimind2": ModelSize(layers=16, hidden=768, heads=8, kv_heads=2),  # ~104M
}


def intermediate_size(hidden: int) -> int:
    """MiniMind's SwiGLU width: 8/3 of the hidden size, rounded up to a multiple of 64."""
    return 64 * ((int(hidden * 8 / 3) + 63) // 64)


def minimind_config(size: str, vocab_size: int, bos_id: int, eos_id: int,
                    pad_id: int) -> LlamaConfig:
    if size not in SIZES:
        raise BadInput(f"unknown model size {size!r}; valid: {', '.join(SIZES)}")
    s = SIZES[size]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=s.hidden,
        intermediate_size=intermediate_size(s.hidden),
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=s.max_positions,
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_model(size: str, tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised MiniMind-size model for `tokenizer`'s vocabulary (float32)."""
    config = minimind_config(size, len(tokenizer), tokenizer.bos_token_id,
                             tokenizer.eos_token_id, tokenizer.pad_token_id)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
