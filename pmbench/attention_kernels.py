"""Attention functions that runners plug into transformers' attention interface.

transformers lets a model's attention be swapped by name (`AttentionInterface`); the
runners use that for two things its built-in kernels do not do:

- `gqa_sdpa`: sdpa with grouped-query heads matched inside the kernel when a mask is
  given (transformers copies the keys and values once per query head instead);
- `shared_prefix_attention`: N rows whose keys start with one prefix stored once
  (`pmbench.kvcache.SharedPrefixLayer`). This is the "cascade" or shared-prefix
  attention of FlashInfer and vLLM: the prefix is read once for all rows, not once
  per row. No library here offers it for transformers models on CPU and CUDA alike
  (FlashInfer is CUDA-only and not a transformers attention backend), so it is
  written with torch matmuls.

`swapped_attention(model, name)` selects one of them for a block of forward passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

GQA_SDPA = "pmbench_gqa_sdpa"
SHARED_PREFIX = "pmbench_shared_prefix"
SHARED_PREFIX_KWARG = "shared_prefix"  # forward kwarg carrying the cache with the prefix


def gqa_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' sdpa attention, with grouped-query heads matched inside the kernel.

    Given a mask on CPU, transformers copies the keys and values once per query head
    (`repeat_kv`) in every layer for a query of several tokens; with one cache shared by
    N branches that copy costs more than the attention itself. torch's CPU kernel takes
    `enable_gqa` with a mask and gives the same result without the copy.
    """
    if attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, None, dropout, scaling, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0,
                            scaling=None, **kwargs):
    """Attention of N rows over [shared prefix | each row's own keys], prefix read once.

    query [N, H, Q, D]; key/value [N, Hkv, S, D] (the rows' own part, from the cache);
    the prefix [1, Hkv, P, D] comes from the cache passed as forward kwarg
    `shared_prefix` (layer `module.layer_idx`). `attention_mask` is an additive float
    mask [N, 1, Q, S] over the rows' own keys; every query sees the whole prefix.
    One softmax runs over the prefix and row scores together, so the result is the
    attention over the concatenated keys, exactly as if the prefix were copied.
    Without the kwarg (a one-row prefill of the prefix itself) this is plain sdpa.
    """
    cache = kwargs.pop(SHARED_PREFIX_KWARG, None)
    if cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout,
                                      scaling, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise ValueError("shared-prefix attention supports neither softcapping nor sinks")
    layer = cache.layers[module.layer_idx]
    n, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads  # query head h reads key/value head h // group
    scale = dim**-0.5 if scaling is None else scaling
    q = (query * scale).reshape(n, kv_heads, group * q_len, dim)  # [N, Hkv, G*Q, D]

    row_scores = q @ key.transpose(-1, -2)  # [N, Hkv, G*Q, S]
    if attention_mask is not None:
        s = key.shape[-2]
        row_scores = (row_scores.view(n, kv_heads, group, q_len, s)
                      + attention_mask[:, :, None]).view(n, kv_heads, group * q_len, s)
    prefix_keys = getattr(layer, "prefix_keys", None)  # None: nothing shared (no context)
    if prefix_keys is None:
        probs = torch.softmax(row_scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out = probs @ value
    else:
        pk, pv = prefix_keys[0], layer.prefix_values[0]  # [Hkv, P, D]
        p = pk.shape[-2]
        # All rows' queries against the prefix in one matmul per key/value head.
        q_all = q.transpose(0, 1).reshape(kv_heads, n * group * q_len, dim)
        prefix_scores = (q_all @ pk.transpose(-1, -2)).view(kv_heads, n, group * q_len, p)
        scores = torch.cat([prefix_scores.transpose(0, 1), row_scores], dim=-1)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out = probs[..., p:] @ value  # [N, Hkv, G*Q, D]
        prefix_probs = probs[..., :p].transpose(0, 1).reshape(kv_heads, n * group * q_len, p)
        out += (prefix_probs @ pv).view(kv_heads, n, group * q_len, dim).transpose(0, 1)
    out = out.view(n, kv_heads, group, q_len, dim).reshape(n, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_SDPA, gqa_sdpa)
AttentionInterface.register(SHARED_PREFIX, shared_prefix_attention)


@contextmanager
def swapped_attention(model, name: str | None) -> Iterator[None]:
    """Run the block with attention function `name` (None: leave the model as it is)."""
    before = model.config._attn_implementation
    if name is not None:
        model.config._attn_implementation = name
    try:
        yield
    finally:
        if name is not None:
            model.config._attn_implementation = before
