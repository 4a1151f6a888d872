"""A KV cache reserved once per group and written in place, for every method.

transformers' `DynamicCache` concatenates each layer's keys and values with the new
rows at every step: a copy of the whole cache per step (7% of a sequential step on
the default model here). A decoding group knows its largest size in advance (prompt
plus max_new_tokens per stream), so each layer here reserves that once and a step
writes its new rows in place. Every runner uses it, so the methods are compared on
their forward passes, not on who got the faster cache. `keys`/`values` are views of
the filled part, so `cache_nbytes` reports the cache's contents, not the reservation.

`rows_after_prefix` builds the cache of the `prefix` method: N rows that all start
with one shared prefix, whose keys and values are either referenced once per layer
(`SharedPrefixLayer`, read by `pmbench.engine.attention_kernels.shared_prefix_attention`)
or copied into every row.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of `capacity` positions."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self.index: torch.Tensor | None = None  # static decoding: where the step writes

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self.dtype = key_states.dtype
        self._k = key_states.new_empty(b, h, self.capacity, d)
        self._v = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.index is not None:  # static: fixed shapes, the mask hides unwritten slots
            self._k.index_copy_(2, self.index, key_states)
            self._v.index_copy_(2, self.index, value_states)
            return self._k, self._v
        end = self.length + key_states.shape[-2]
        while end > self._k.shape[-2]:  # more than reserved: double (not in a normal run)
            self._k = torch.cat([self._k, torch.empty_like(self._k)], dim=-2)
            self._v = torch.cat([self._v, torch.empty_like(self._v)], dim=-2)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the batch rows `indices` (finished rows leave a batch)."""
        if self.is_initialized:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0


class SharedPrefixLayer(ReservedLayer):
    """One layer of N rows that share a prefix: the prefix's keys and values are held
    once ([1, heads, P, dim], by reference) and each row's own positions in a reserved
    buffer. `keys`/`values` are the rows' own part; the attention reads the prefix from
    `prefix_keys`/`prefix_values` (`shared_prefix_attention`), so nothing is copied."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, capacity: int):
        super().__init__(capacity)
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[-2] + self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


def rows_after_prefix(prefix: Cache | None, rows: int, capacity: int, share: bool,
                      num_layers: int) -> Cache:
    """A cache for `rows` sequences that all continue the one-row cache `prefix`.

    `capacity` is the positions each row adds after the prefix. `share`: the prefix is
    referenced once per layer (`SharedPrefixLayer`); otherwise it is copied into every
    row of a `ReservedLayer`, which any attention implementation can read. `prefix`
    None (nothing shared) gives plain reserved rows.
    """
    if prefix is None:
        return Cache(layers=[ReservedLayer(capacity) for _ in range(num_layers)])
    layers: list[ReservedLayer] = []
    for src in prefix.layers:
        k, v = src.keys, src.values  # [1, heads, P, dim]
        if share:
            layers.append(SharedPrefixLayer(k, v, capacity))
            continue
        p = k.shape[-2]
        layer = ReservedLayer(p + capacity)
        layer.lazy_initialization(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
        layer._k[:, :, :p] = k
        layer._v[:, :, :p] = v
        layer.length = p
        layer._views()
        layers.append(layer)
    return Cache(layers=layers)


def reserved_cache(config: Any, capacity: int, sliding: bool = True) -> Cache:
    """A cache for one decoding group of at most `capacity` positions per row.

    Models with sliding-window layers keep transformers' own cache, which knows how
    to drop what leaves the window, unless `sliding` is False (rope2d: its packed
    cache is ordered by branch, not time, so only its mask may decide visibility).
    """
    text = config.get_text_config()
    windowed = getattr(text, "sliding_window", None) or any(
        kind != "full_attention" for kind in getattr(text, "layer_types", None) or [])
    if sliding and windowed:
        return DynamicCache(config=config)
    return Cache(layers=[ReservedLayer(capacity) for _ in range(text.num_hidden_layers)])


def make_static(cache: Cache, index: torch.Tensor) -> int:
    """Switch every layer of a prefilled reserved cache to static decoding: a step writes
    its keys and values at the positions in `index` (a tensor the caller advances in
    place) and attends over the whole reservation. Returns the reservation's length."""
    if not all(isinstance(layer, ReservedLayer) for layer in cache.layers):
        raise TypeError("static decoding needs a reserved cache (no sliding window)")
    for layer in cache.layers:
        layer.index = index
        layer._k[:, :, layer.length:] = 0  # masked, but garbage (NaN) would leak through
        layer._v[:, :, layer.length:] = 0
    return cache.layers[0]._k.shape[-2]


def end_static(cache: Cache, length: int) -> None:
    """Back to an ordinary reserved cache whose first `length` positions are filled."""
    for layer in cache.layers:
        layer.index = None
        layer.length = length
        layer._views()
