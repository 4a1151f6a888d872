"""A KV cache reserved once per group and written in place, for every method.

transformers' `DynamicCache` concatenates each layer's keys and values with the new
rows at every step: a copy of the whole cache per step (a measurable share of a
sequential step: benchmarks/README.md, "What the runners do"). A decoding group knows
its largest size in advance (prompt plus max_new_tokens per stream), so each layer here
reserves that once and a step writes its new rows in place. Every runner uses it, so
the methods are compared on their forward passes, not on who got the faster cache.
`keys`/`values` are views of the filled part, so `cache_nbytes` reports the cache's
contents, not the reservation.

`rows_after_prefix` builds the cache of the `prefix` method: N rows that all start
with one shared prefix, whose keys and values are either referenced once per layer
(`SharedPrefixLayer`, read by `pmbench.engine.attention_kernels.shared_prefix_attention`)
or copied into every row.

Static decoding (`pmbench.engine.compile`) passes a `BufferPool`: the reservation is then
rounded up to a multiple of `BUCKET` positions and its buffers come from the pool, the
same tensors for every group of the same rows and bucket. A compiled step replays as a
CUDA graph only on the addresses and shapes it recorded, so a new group of a bucket seen
before replays instead of recording again, and the attention's mask rows (the bucket
long) keep the 8-element alignment SDPA's memory-efficient kernel wants.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer

BUCKET = 64  # a pooled reservation is a multiple of this many positions


def bucket(capacity: int) -> int:
    """`capacity` rounded up to a multiple of BUCKET."""
    return -(-capacity // BUCKET) * BUCKET


class BufferPool:
    """Tensors kept from group to group, one per key (what it is for, and its shape,
    dtype and device): `take` hands back the same tensor, its contents left as they were,
    whenever the same key is asked for again. A runner owns one for its run."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def take(self, name: tuple, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device | str) -> torch.Tensor:
        key = (name, tuple(shape), dtype, str(torch.device(device)))
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return self._buffers[key]

    def __len__(self) -> int:
        return len(self._buffers)


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of `capacity` positions (from `pool`,
    under `name`, when one is given)."""

    def __init__(self, capacity: int, pool: BufferPool | None = None, name: tuple = ()):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self.index: torch.Tensor | None = None  # static decoding: where the step writes
        self.pool, self.name = pool, name

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self.dtype = key_states.dtype
        k_shape = (b, h, self.capacity, d)
        v_shape = (b, h, self.capacity, value_states.shape[-1])
        if self.pool is None:
            self._k, self._v = key_states.new_empty(k_shape), value_states.new_empty(v_shape)
        else:
            self._k = self.pool.take((*self.name, "k"), k_shape, key_states.dtype, self.device)
            self._v = self.pool.take((*self.name, "v"), v_shape, value_states.dtype,
                                     self.device)
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

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, capacity: int,
                 pool: BufferPool | None = None, name: tuple = (),
                 prefix_mask: torch.Tensor | None = None, prefix_length: int | None = None):
        super().__init__(capacity, pool, name)
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values
        # a pooled prefix is its whole bucket, the unfilled part hidden by this additive
        # [1, 1, 1, bucket] mask; `prefix_length` positions of it are filled
        self.prefix_mask = prefix_mask
        self.prefix_length = prefix_keys.shape[-2] if prefix_length is None else prefix_length

    def get_seq_length(self) -> int:
        return self.prefix_length + self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


def rows_after_prefix(prefix: Cache | None, rows: int, capacity: int, share: bool,
                      num_layers: int, pool: BufferPool | None = None) -> Cache:
    """A cache for `rows` sequences that all continue the one-row cache `prefix`.

    `capacity` is the positions each row adds after the prefix. `share`: the prefix is
    referenced once per layer (`SharedPrefixLayer`); otherwise it is copied into every
    row of a `ReservedLayer`, which any attention implementation can read. `prefix`
    None (nothing shared) gives plain reserved rows. With a `pool`, the rows' reservation
    is a bucket (`bucket`) taken from it.
    """
    size = bucket if pool is not None else (lambda n: n)
    if prefix is None:
        return Cache(layers=[ReservedLayer(size(capacity), pool, ("rows", i))
                             for i in range(num_layers)])
    layers: list[ReservedLayer] = []
    mask = _prefix_mask(prefix, pool) if share and pool is not None else None
    for i, src in enumerate(prefix.layers):
        k, v = src.keys, src.values  # [1, heads, P, dim]
        if share and mask is not None:  # the whole pooled bucket, its tail zeroed and masked
            src._k[:, :, src.length:] = 0
            src._v[:, :, src.length:] = 0
            layers.append(SharedPrefixLayer(src._k, src._v, size(capacity), pool, ("rows", i),
                                            mask, src.length))
            continue
        if share:
            layers.append(SharedPrefixLayer(k, v, size(capacity), pool, ("rows", i)))
            continue
        p = k.shape[-2]
        layer = ReservedLayer(size(p + capacity), pool, ("rows", i))
        layer.lazy_initialization(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
        layer._k[:, :, :p] = k
        layer._v[:, :, :p] = v
        layer.length = p
        layer._views()
        layers.append(layer)
    return Cache(layers=layers)


def _prefix_mask(prefix: Cache, pool: BufferPool) -> torch.Tensor:
    """Additive [1, 1, 1, bucket] mask of a pooled prefix: its filled positions seen."""
    layer = prefix.layers[0]
    mask = pool.take(("prefix_mask",), (1, 1, 1, layer._k.shape[-2]), layer._k.dtype,
                     layer._k.device)
    mask.fill_(torch.finfo(mask.dtype).min)[..., : layer.length] = 0.0
    return mask


def reserved_cache(config: Any, capacity: int, sliding: bool = True,
                   pool: BufferPool | None = None, name: str = "cache") -> Cache:
    """A cache for one decoding group of at most `capacity` positions per row.

    Models with sliding-window layers keep transformers' own cache, which knows how
    to drop what leaves the window, unless `sliding` is False (rope2d: its packed
    cache is ordered by branch, not time, so only its mask may decide visibility).
    With a `pool` (static decoding) the reservation is a bucket (`bucket(capacity)`)
    whose buffers, one per layer under `name`, come from the pool.
    """
    text = config.get_text_config()
    windowed = getattr(text, "sliding_window", None) or any(
        kind != "full_attention" for kind in getattr(text, "layer_types", None) or [])
    if sliding and windowed:
        return DynamicCache(config=config)
    if pool is not None:
        capacity = bucket(capacity)
    return Cache(layers=[ReservedLayer(capacity, pool, (name, i))
                         for i in range(text.num_hidden_layers)])


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
    crop(cache, length)


def crop(cache: Cache, length: int) -> None:
    """Keep the first `length` positions of a reserved cache, in place: what sequential
    does after each question, so the next one continues the group's shared context
    without computing it again (nothing is copied; later writes overwrite the rest)."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.length = length
            layer._views()
