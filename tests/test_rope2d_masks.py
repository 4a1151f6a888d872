"""Masks: isolated never shows another branch; cross shows other branches' earlier steps
only; the incremental decoding masks equal the dense rule, step by step."""

from __future__ import annotations

import pytest
import torch

from pmbench.rope2d import BranchMask, additive, dense_mask, pack


def _decode_trace(layout, live_per_step):
    """b and step of every cache column after feeding `live_per_step` (0-based branches)."""
    b, step = layout.b.tolist(), [0] * len(layout)
    for s, live in enumerate(live_per_step, start=1):
        b += [k + 1 for k in live]
        step += [s] * len(live)
    return torch.tensor(b), torch.tensor(step)


LAYOUT = pack([1, 2, 3, 4], [[5, 6], [7], [8, 9, 10]])
# branch 2 (index 1) stops after step 2, branch 1 after step 3
LIVE = [[0, 1, 2], [0, 1, 2], [0, 2], [2], [2]]


def test_isolated_never_sees_another_branch():
    b, step = _decode_trace(LAYOUT, LIVE)
    vis = dense_mask(b, step, "isolated")
    other = (b[:, None] != b[None, :]) & (b[None, :] != 0)
    assert not (vis & other).any()
    # a branch token sees all of the context, a context token no branch
    assert vis[b != 0][:, b == 0].all()
    assert not vis[b == 0][:, b != 0].any()


def test_cross_sees_other_branches_of_earlier_steps_only():
    b, step = _decode_trace(LAYOUT, LIVE)
    vis = dense_mask(b, step, "cross")
    iso = dense_mask(b, step, "isolated")
    other = (b[:, None] != b[None, :]) & (b[:, None] != 0) & (b[None, :] != 0)
    earlier = step[None, :] < step[:, None]
    assert torch.equal(vis & other, other & earlier)
    assert torch.equal(vis & ~other, iso)
    assert (vis & other).any()  # the rule is exercised
    # the packed prompts (all step 0) do not see each other
    assert not (vis[: len(LAYOUT)] & other[: len(LAYOUT)]).any()


@pytest.mark.parametrize("kind", ["isolated", "cross"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("capacity", [None, 40])  # None: the buffer has to grow
def test_incremental_masks_equal_the_dense_rule(kind, dtype, capacity):
    b, step = _decode_trace(LAYOUT, LIVE)
    want = dense_mask(b, step, kind)
    masks = BranchMask(LAYOUT, kind, capacity=capacity, dtype=dtype)
    n = len(LAYOUT)
    prompt_rows = want[:n, :n]
    expected = prompt_rows if dtype == torch.bool else additive(prompt_rows, dtype)
    assert torch.equal(masks.prefill(), expected)
    start = n
    for live in LIVE:
        got = masks.step(live)
        rows = want[start : start + len(live), : start + len(live)]
        expected = rows if dtype == torch.bool else additive(rows, dtype)
        assert torch.equal(got, expected)
        start += len(live)
    assert masks.length == len(b)


def test_additive_mask_values():
    vis = torch.tensor([[True, False]])
    out = additive(vis, torch.bfloat16)
    assert out[0, 0] == 0 and out[0, 1] == torch.finfo(torch.bfloat16).min


def test_unknown_mask_kind():
    with pytest.raises(ValueError):
        dense_mask(torch.zeros(3, dtype=torch.long), kind="leaky")
