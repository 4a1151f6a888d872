"""The reserved KV cache holds what DynamicCache would, without re-concatenating."""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig, MistralConfig

from pmbench.engine.decoding import cache_nbytes
from pmbench.engine.kvcache import ReservedLayer, reserved_cache

CONFIG = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=64, vocab_size=100)


def _feed(cache, lengths: list[int], keep: list[int] | None = None, at: int = 1):
    torch.manual_seed(0)
    for i, n in enumerate(lengths):
        if keep is not None and i == at:
            cache.batch_select_indices(torch.tensor(keep))
        rows = 3 if keep is None or i < at else len(keep)
        for layer in range(2):
            k, v = torch.randn(rows, 2, n, 8), torch.randn(rows, 2, n, 8)
            keys, values = cache.update(k, v, layer)
    return keys, values


def test_same_contents_as_dynamic_cache_even_past_the_reservation():
    lengths = [5, 1, 1, 4, 1]  # 12 positions into a reservation of 6: it has to grow
    want = _feed(DynamicCache(config=CONFIG), lengths)
    cache = reserved_cache(CONFIG, capacity=6)
    got = _feed(cache, lengths)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert cache.get_seq_length() == 12
    assert cache_nbytes(cache) == 2 * 2 * 3 * 2 * 12 * 8 * 4  # contents, not reservation


def test_finished_rows_leave_the_batch():
    lengths = [5, 1, 1]
    want = _feed(DynamicCache(config=CONFIG), lengths, keep=[0, 2])
    got = _feed(reserved_cache(CONFIG, capacity=8), lengths, keep=[0, 2])
    assert got[0].shape[0] == 2
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


def test_sliding_window_models_keep_transformers_cache_unless_told():
    mistral = MistralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                            sliding_window=16)
    assert not isinstance(reserved_cache(mistral, 8).layers[0], ReservedLayer)
    assert isinstance(reserved_cache(mistral, 8, sliding=False).layers[0], ReservedLayer)
    assert isinstance(reserved_cache(CONFIG, 8).layers[0], ReservedLayer)
