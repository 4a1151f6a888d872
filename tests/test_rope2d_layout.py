"""Packing: context at (0..P-1, 0), every branch k at (P.., k), and each branch's last token."""

from __future__ import annotations

import pytest

from pmbench.rope2d import pack


def test_coordinates_and_last_tokens():
    layout = pack([11, 12, 13], [[21, 22], [31], [41, 42, 43]])
    assert layout.input_ids.tolist() == [11, 12, 13, 21, 22, 31, 41, 42, 43]
    assert layout.t.tolist() == [0, 1, 2, 3, 4, 3, 3, 4, 5]
    assert layout.b.tolist() == [0, 0, 0, 1, 1, 2, 3, 3, 3]
    assert layout.last.tolist() == [4, 5, 8]
    assert layout.next_t().tolist() == [5, 4, 6]
    assert layout.branch_ids().tolist() == [1, 2, 3]
    assert (len(layout), layout.n_branches, layout.context_len) == (9, 3, 3)


def test_empty_context_starts_branches_at_time_zero():
    layout = pack([], [[5, 6], [7]])
    assert layout.t.tolist() == [0, 1, 0] and layout.b.tolist() == [1, 1, 2]
    assert layout.last.tolist() == [1, 2]


def test_empty_branch_continues_from_the_context():
    layout = pack([1, 2], [[], [3]])
    assert layout.last.tolist() == [1, 2] and layout.next_t().tolist() == [2, 3]


def test_invalid_layouts():
    with pytest.raises(ValueError):
        pack([1], [])
    with pytest.raises(ValueError):
        pack([], [[1], []])
