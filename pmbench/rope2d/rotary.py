"""Rotary cos/sin from 2D positions (t, b).

RoPE rotates frequency pair i of every query/key head by an angle `pos * theta_i`.
2D RoPE gives a fraction `ratio` of the pairs to the branch coordinate b and the
rest to time t. Both modes are one formula, `angle_i = t * tf_i + b * bf_i`, with
two frequency vectors:

    split:     tf = theta on time pairs, 0 on branch pairs;  bf = theta on branch pairs
    additive:  tf = theta on every pair;                      bf = theta on branch pairs

so `ratio = 0` (bf = 0, tf = theta) is bit-for-bit the model's own RoPE, and additive
mode with b = 0 is vanilla RoPE at any ratio.

Layout: Llama/Qwen2 apply RoPE with `rotate_half`, where pair i is the dims
(i, i + d/2) and cos/sin are `cat(freqs, freqs)`. Choosing a pair therefore selects
the same index in both halves; the cos/sin returned here follow that layout.
"""

from __future__ import annotations

import torch
from torch import nn

from pmbench.rope2d.settings import Rope2DSettings


def default_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    """theta_i = base^(-2i/d), i = 0..d/2-1: plain RoPE frequencies, highest first."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def branch_pairs(n_pairs: int, ratio: float, branch_freqs: str) -> torch.Tensor:
    """Bool [n_pairs]: True for the pairs that encode the branch coordinate.

    round(ratio * n_pairs) pairs are chosen. Pair 0 rotates fastest (highest frequency):
    "high" takes the first pairs, "low" the last, "interleaved" spreads them evenly.
    """
    k = round(ratio * n_pairs)
    chosen = torch.zeros(n_pairs, dtype=torch.bool)
    if k == 0:
        return chosen
    if branch_freqs == "high":
        chosen[:k] = True
    elif branch_freqs == "low":
        chosen[n_pairs - k :] = True
    elif branch_freqs == "interleaved":
        # the centre of each of k equal slices of the spectrum: distinct since k <= n_pairs
        chosen[((torch.arange(k) + 0.5) * n_pairs / k).long()] = True
    else:
        raise ValueError(f"unknown branch_freqs {branch_freqs!r}")
    return chosen


def frequencies(
    inv_freq: torch.Tensor, settings: Rope2DSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(time_freq, branch_freq), each [d/2], so that angle = t * time_freq + b * branch_freq."""
    is_branch = branch_pairs(inv_freq.numel(), settings.ratio, settings.branch_freqs)
    is_branch = is_branch.to(inv_freq.device)
    zero = torch.zeros_like(inv_freq)
    branch_freq = torch.where(is_branch, inv_freq, zero)
    if settings.mode == "split":
        time_freq = torch.where(is_branch, zero, inv_freq)
    elif settings.mode == "additive":
        time_freq = inv_freq.clone()
    else:
        raise ValueError(f"unknown rope-2d mode {settings.mode!r}")
    return time_freq, branch_freq


class Rotary2D(nn.Module):
    """cos/sin for positions (t, b): a model's frequencies plus 2D settings.

    `inv_freq` is the model's own [d/2] frequency vector (so rope scaling types that
    only rescale frequencies, like linear, llama3 or yarn, carry over), and
    `attention_scaling` its cos/sin factor (1 for plain RoPE). The two frequency
    vectors are buffers, so they follow the model across devices.
    """

    def __init__(
        self,
        inv_freq: torch.Tensor,
        settings: Rope2DSettings,
        attention_scaling: float = 1.0,
    ):
        super().__init__()
        self.settings = settings
        self.attention_scaling = attention_scaling
        time_freq, branch_freq = frequencies(inv_freq.float(), settings)
        self.time_freq = nn.Buffer(time_freq, persistent=False)
        self.branch_freq = nn.Buffer(branch_freq, persistent=False)

    def angles(self, t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[..., d/2] angles (float32) for integer positions t, b of equal shape."""
        return t[..., None].float() * self.time_freq + b[..., None].float() * self.branch_freq

    def forward(
        self, t: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each [..., d] in the rotate_half layout, cast to `dtype`.

        Computed in float32 like transformers' own rotary embedding, so that ratio 0
        matches it exactly.
        """
        freqs = self.angles(t, b)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)
