"""Make an HF Llama-family model take 2D positions.

Llama, Qwen2, Qwen3, Mistral (and the like) compute cos/sin once per forward pass in
`model.model.rotary_emb(x, position_ids)` and hand them to every decoder layer as
`position_embeddings`. Swapping that one module is the whole patch: the replacement
reads `position_ids` of shape [2, B, L] as (t, b) (the same convention as Qwen2-VL's
3D M-RoPE positions) and plain [B, L] positions as (t, 0). Everything else (attention
kernels, caches, `generate`, training) is the model's own code. Pass a 4D
`attention_mask` (see `masks`) so branches see what they should.

    settings = resolve_settings(model.config, {"ratio": 0.5})
    with rope2d_positions(model, settings):
        out = model(input_ids=ids, position_ids=positions(t, b), attention_mask=mask4d)

`patch_model` installs it for good (training), `rope2d_positions` only for a block,
so a model shared with other methods is left as it was.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pmbench.errors import BadInput
from pmbench.rope2d.rotary import Rotary2D
from pmbench.rope2d.settings import Rope2DSettings, resolve_settings

# rope types whose frequencies change with the sequence length: not a fixed table.
_UNSUPPORTED_ROPE_TYPES = {"dynamic", "longrope"}


class Rope2DRotaryEmbedding(nn.Module):
    """Drop-in replacement for a Llama-family `rotary_emb` that understands (t, b)."""

    def __init__(self, original: nn.Module, settings: Rope2DSettings):
        super().__init__()
        self.original = original
        self.settings = settings
        self.rotary = Rotary2D(
            original.inv_freq, settings, float(getattr(original, "attention_scaling", 1.0))
        )

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        if position_ids.ndim == 3:  # [2, B, L]: (t, b)
            t, b = position_ids[0], position_ids[1]
        else:  # [B, L]: plain positions, branch 0
            t, b = position_ids, torch.zeros_like(position_ids)
        return self.rotary(t, b, dtype=x.dtype)


def positions(t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[2, 1, L] position_ids for one packed sequence from t [L] and b [L]."""
    return torch.stack([t, b])[:, None, :]


def _decoder(model: Any) -> Any:
    return getattr(model, "model", model)


def check_supported(model: Any) -> None:
    """Raise BadInput unless `model` is a Llama-family model this patch can drive."""
    decoder = _decoder(model)
    name = type(model).__name__
    rotary = getattr(decoder, "rotary_emb", None)
    if isinstance(rotary, Rope2DRotaryEmbedding):
        rotary = rotary.original
    layers = getattr(decoder, "layers", None)
    if rotary is None or not hasattr(rotary, "inv_freq") or not layers:
        raise BadInput(
            f"rope2d supports Llama-family models (Llama, Qwen2, Qwen3, Mistral) whose layers "
            f"take precomputed position_embeddings; {name} has no shared rotary_emb"
        )
    if "position_embeddings" not in inspect.signature(layers[0].forward).parameters:
        raise BadInput(f"rope2d: {name}'s decoder layers do not take position_embeddings")
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type in _UNSUPPORTED_ROPE_TYPES:
        raise BadInput(f"rope2d: rope type {rope_type!r} (length-dependent) is not supported")
    if "sliding_attention" in (getattr(model.config, "layer_types", None) or []):
        raise BadInput("rope2d: sliding-window attention layers are not supported")
    # The layout check: at ratio 0 our cos/sin must be the model's own (rotate_half
    # layout, full head dim); interleaved or partial rotary layouts fail here.
    probe = torch.arange(7, device=rotary.inv_freq.device)[None, :]
    x = torch.zeros(1, dtype=torch.float32, device=rotary.inv_freq.device)
    with torch.no_grad():
        want = rotary(x, probe)
        got = Rope2DRotaryEmbedding(rotary, Rope2DSettings())(x, probe)
    if any(w.shape != g.shape or not torch.allclose(w, g) for w, g in zip(want, got, strict=True)):
        raise BadInput(f"rope2d: {name}'s rotary layout is not Llama's rotate_half layout")


def model_settings(model: Any, overrides: Mapping[str, Any] | None = None) -> Rope2DSettings:
    """Settings for `model`: its config's `rope2d` section, then `overrides` (None = unset)."""
    return resolve_settings(model.config, overrides)


def patch_model(model: Any, settings: Rope2DSettings | None = None) -> Rope2DSettings:
    """Install 2D positions in `model` for good (idempotent); return the settings used.

    With `settings` None the model config's `rope2d` section (or the defaults) apply.
    """
    check_supported(model)
    settings = settings or model_settings(model)
    decoder = _decoder(model)
    original = decoder.rotary_emb
    if isinstance(original, Rope2DRotaryEmbedding):
        original = original.original
    decoder.rotary_emb = Rope2DRotaryEmbedding(original, settings)
    return settings


def unpatch_model(model: Any) -> None:
    """Restore the model's own rotary embedding."""
    decoder = _decoder(model)
    if isinstance(decoder.rotary_emb, Rope2DRotaryEmbedding):
        decoder.rotary_emb = decoder.rotary_emb.original


@contextmanager
def rope2d_positions(
    model: Any, settings: Rope2DSettings | None = None
) -> Iterator[Rope2DSettings]:
    """Within the block, `model` takes 2D positions; afterwards it is as before."""
    decoder = _decoder(model)
    before = decoder.rotary_emb
    used = patch_model(model, settings)
    try:
        yield used
    finally:
        decoder.rotary_emb = before
