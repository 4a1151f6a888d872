"""2D rotary: ratio 0 is the model's own RoPE, additive b=0 is vanilla, split rotates
exactly the chosen pairs (in both rotate_half halves), scores depend on t differences only."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from conftest import make_tiny_model
from pmbench.rope2d import (
    BRANCH_FREQS,
    MODES,
    Rope2DRotaryEmbedding,
    Rope2DSettings,
    Rotary2D,
    branch_pairs,
    default_inv_freq,
)

HEAD_DIM = 64
INV_FREQ = default_inv_freq(HEAD_DIM, 1e5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("freqs", BRANCH_FREQS)
def test_ratio_zero_is_the_models_own_rotary(arch, mode, freqs):
    model = make_tiny_model(arch, vocab_size=128, rope_theta=1e4)
    own = model.model.rotary_emb
    ours = Rope2DRotaryEmbedding(own, Rope2DSettings(ratio=0.0, mode=mode, branch_freqs=freqs))
    t = torch.arange(0, 3000, 7)[None, :]
    b = torch.randint(0, 16, t.shape)
    x = torch.zeros(1, dtype=torch.float32)
    want = own(x, t)
    for got in (ours(x, t), ours(x, torch.stack([t, b]))):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_scaled_rope_frequencies_carry_over():
    # llama3 scaling rescales the frequencies: 2D RoPE must start from the model's own
    model = make_tiny_model(
        "llama", vocab_size=128,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
    )
    own = model.model.rotary_emb
    assert not torch.allclose(own.inv_freq, default_inv_freq(16, 5e5))
    ours = Rope2DRotaryEmbedding(own, Rope2DSettings())
    t = torch.arange(500)[None, :]
    x = torch.zeros(1)
    assert all(torch.equal(a, b) for a, b in zip(ours(x, t), own(x, t), strict=True))


@pytest.mark.parametrize("freqs", BRANCH_FREQS)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_additive_with_branch_zero_is_vanilla(freqs, ratio):
    vanilla = Rotary2D(INV_FREQ, Rope2DSettings(ratio=0.0))
    additive = Rotary2D(INV_FREQ, Rope2DSettings(ratio=ratio, mode="additive", branch_freqs=freqs))
    t = torch.arange(0, 5000, 3)
    zero = torch.zeros_like(t)
    for got, want in zip(additive(t, zero), vanilla(t, zero), strict=True):
        assert torch.equal(got, want)
    # and a non-zero branch does change the branch pairs, so the check above can fail
    assert not torch.equal(additive(t, zero + 3)[0], vanilla(t, zero)[0])


@pytest.mark.parametrize("freqs", BRANCH_FREQS)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_split_rotates_exactly_the_chosen_pairs_in_both_halves(freqs, ratio):
    n_pairs = HEAD_DIM // 2
    chosen = branch_pairs(n_pairs, ratio, freqs)
    assert chosen.sum() == round(ratio * n_pairs)
    settings = Rope2DSettings(ratio=ratio, mode="split", branch_freqs=freqs)
    rot = Rotary2D(INV_FREQ.double(), settings)
    both_halves = torch.cat([chosen, chosen])
    # a pure branch position turns the branch pairs only, a pure time position the rest
    assert torch.equal(rot.angles(torch.tensor(0), torch.tensor(3)) != 0, chosen)
    assert torch.equal(rot.angles(torch.tensor(5), torch.tensor(0)) != 0, ~chosen)
    for t, b, moving in ((0, 3, both_halves), (5, 0, ~both_halves)):
        cos, sin = rot(torch.tensor([t]), torch.tensor([b]), dtype=torch.float64)
        assert torch.equal(sin[0] != 0, moving)
        # rotating a vector moves exactly dims i and i + d/2 of each such pair
        x = torch.randn(1, 1, 1, HEAD_DIM, dtype=torch.float64)
        moved, _ = apply_rotary_pos_emb(x, x, cos, sin)
        assert torch.equal(moved.flatten() != x.flatten(), moving)


def test_branch_pair_choice():
    n = 32
    high = branch_pairs(n, 0.25, "high").nonzero().flatten().tolist()
    low = branch_pairs(n, 0.25, "low").nonzero().flatten().tolist()
    inter = branch_pairs(n, 0.25, "interleaved").nonzero().flatten().tolist()
    assert high == list(range(8)) and low == list(range(24, 32))
    assert inter == [2, 6, 10, 14, 18, 22, 26, 30]  # one per slice of 4 pairs
    assert branch_pairs(n, 1.0, "interleaved").all() and not branch_pairs(n, 0.0, "high").any()


def _scores(rot: Rotary2D, q, k, tq, bq, tk, bk):
    cq, sq = rot(tq, bq, dtype=torch.float64)
    ck, sk = rot(tk, bk, dtype=torch.float64)
    q_rot, _ = apply_rotary_pos_emb(q, q, cq, sq, unsqueeze_dim=0)
    k_rot, _ = apply_rotary_pos_emb(k, k, ck, sk, unsqueeze_dim=0)
    return q_rot @ k_rot.transpose(-1, -2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("freqs", BRANCH_FREQS)
def test_scores_invariant_to_shifting_time(mode, freqs):
    torch.manual_seed(0)
    rot = Rotary2D(INV_FREQ.double(), Rope2DSettings(ratio=0.5, mode=mode, branch_freqs=freqs))
    q, k = torch.randn(4, 12, HEAD_DIM).double(), torch.randn(4, 20, HEAD_DIM).double()
    tq, tk = torch.randint(0, 200, (12,)), torch.randint(0, 200, (20,))
    bq, bk = torch.randint(0, 9, (12,)), torch.randint(0, 9, (20,))
    base = _scores(rot, q, k, tq, bq, tk, bk)
    for shift in (1, 37, 1000):
        shifted = _scores(rot, q, k, tq + shift, bq, tk + shift, bk)
        torch.testing.assert_close(shifted, base, rtol=0, atol=1e-3)
    # the branch coordinate is not a no-op: moving one side's branch changes the scores
    assert not torch.allclose(_scores(rot, q, k, tq, bq + 1, tk, bk), base, atol=1e-3)
