"""2D rotary positions (time, branch) for parallel branches: the core, free of any runner.

The rope2d runner, training and attention analysis all build on these pieces:

- `layout.pack(context_ids, branches)`: packed ids and the (t, b) of every token;
- `rotary.Rotary2D`: cos/sin from (t, b) under `Rope2DSettings` (ratio, mode, branch_freqs);
- `masks.dense_mask` / `masks.BranchMask`: the isolated and cross masks, the latter
  grown step by step while decoding;
- `patch.rope2d_positions(model)` / `patch.patch_model(model)`: an HF Llama-family model
  that reads position_ids [2, B, L] as (t, b);
- `settings.resolve_settings(config, overrides)`: defaults <- the config's `rope2d`
  section <- explicit options.
"""

from pmbench.rope2d.layout import PackedLayout, pack
from pmbench.rope2d.masks import BranchMask, additive, dense_mask
from pmbench.rope2d.patch import (
    Rope2DRotaryEmbedding,
    check_supported,
    model_settings,
    patch_model,
    positions,
    rope2d_positions,
    unpatch_model,
)
from pmbench.rope2d.rotary import Rotary2D, branch_pairs, default_inv_freq, frequencies
from pmbench.rope2d.settings import (
    BRANCH_FREQS,
    CONFIG_KEY,
    MASKS,
    MODES,
    Rope2DSettings,
    resolve_settings,
)

__all__ = [
    "BRANCH_FREQS",
    "CONFIG_KEY",
    "MASKS",
    "MODES",
    "BranchMask",
    "PackedLayout",
    "Rope2DRotaryEmbedding",
    "Rope2DSettings",
    "Rotary2D",
    "additive",
    "branch_pairs",
    "check_supported",
    "default_inv_freq",
    "dense_mask",
    "frequencies",
    "model_settings",
    "pack",
    "patch_model",
    "positions",
    "resolve_settings",
    "rope2d_positions",
    "unpatch_model",
]
