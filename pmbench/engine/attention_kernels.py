"""Attention functions that runners plug into transformers' attention interface.

transformers lets a model's attention be swapped by name (`AttentionInterface`); the
runners use that for two things its built-in kernels do not do:

- `gqa_sdpa`: sdpa with grouped-query heads matched inside the kernel when a mask is
  given (transformers copies the keys and values once per query head instead);
- `shared_prefix_attention`: N rows whose keys start with one prefix stored once
  (`pmbench.engine.kvcache.SharedPrefixLayer`). This is the "cascade" or shared-prefix
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


def _flash_cpu():
    """torch's fused CPU attention kernel that also returns the log-sum-exp (what sdpa
    runs on CPU, minus the public wrapper that drops the lse), or None if absent."""
    try:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    except (AttributeError, RuntimeError):
        return None


_FLASH_CPU = _flash_cpu()


def attention_with_lse(query, key, value, mask, scale: float):
    """Softmax attention and the log-sum-exp of its scores, per query: [B, H, Q, D], [B, H, Q].

    Keys and queries have the same number of heads; `mask` is additive, broadcast to
    [B, H, Q, K], or None. The lse lets two attentions over disjoint key sets be merged
    into the attention over their union (see `shared_prefix_attention`).
    """
    if query.device.type == "cpu" and _FLASH_CPU is not None:
        out, lse = _FLASH_CPU(query, key, value, 0.0, False, attn_mask=mask, scale=scale)[:2]
        return out, lse
    scores = (query @ key.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores + mask
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.exp(scores - lse[..., None]).to(query.dtype) @ value
    return out, lse


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0,
                            scaling=None, **kwargs):
    """Attention of N rows over [shared prefix | each row's own keys], prefix read once.

    query [N, H, Q, D]; key/value [N, Hkv, S, D] (the rows' own part, from the cache);
    the prefix [1, Hkv, P, D] comes from the cache passed as forward kwarg
    `shared_prefix` (layer `module.layer_idx`). `attention_mask` is an additive float
    mask [N, 1, Q, S] over the rows' own keys; every query sees the whole prefix (but the
    unfilled tail of a pooled prefix bucket, hidden by the layer's `prefix_mask`).

    Two attentions, merged by their log-sum-exps (as FlashInfer's cascade attention):
    all rows' queries against the prefix in one call per key/value head, and each row
    against its own keys. The result is the attention over the concatenated keys, as if
    the prefix were copied into every row. Without the kwarg (a one-row prefill of the
    prefix itself) this is plain sdpa.
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
    # The query heads of one key/value head become that head's queries: [N, Hkv, G*Q, D].
    q = query.reshape(n, kv_heads, group * q_len, dim)
    mask = attention_mask
    if mask is not None:  # [N, 1, Q, S] -> [N, 1, G*Q, S], queries ordered (head, position)
        mask = mask[:, :, None].expand(-1, -1, group, -1, -1).reshape(n, 1, group * q_len, -1)
    out, lse = attention_with_lse(q, key, value, mask, scale)
    prefix_keys = getattr(layer, "prefix_keys", None)  # None: nothing shared (no context)
    if prefix_keys is not None:
        q_all = q.transpose(0, 1).reshape(1, kv_heads, n * group * q_len, dim)
        pre, pre_lse = attention_with_lse(q_all, prefix_keys, layer.prefix_values,
                                          getattr(layer, "prefix_mask", None), scale)
        pre = pre.view(kv_heads, n, group * q_len, dim).transpose(0, 1)
        pre_lse = pre_lse.view(kv_heads, n, group * q_len).transpose(0, 1)
        # softmax over the union: the prefix part weighs e^pre_lse / (e^pre_lse + e^lse)
        weight = torch.sigmoid(pre_lse - lse).unsqueeze(-1).to(out.dtype)
        out = torch.lerp(out, pre, weight)
    out = out.view(n, kv_heads, group, q_len, dim).reshape(n, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


KERNELS = {GQA_SDPA: gqa_sdpa, SHARED_PREFIX: shared_prefix_attention}


@contextmanager
def swapped_attention(model, name: str | None) -> Iterator[None]:
    """Run the block with attention function `name` (None: leave the model as it is).

    Ours are registered here, when first used, not at import: importing pmbench changes
    nothing in transformers' global attention registry."""
    before = model.config._attn_implementation
    if name in KERNELS:
        # here, not at import: transformers' modeling utilities take seconds to import, and
        # the tables read the runners' declarations without running a model
        from transformers import AttentionInterface

        AttentionInterface.register(name, KERNELS[name])  # idempotent
    if name is not None:
        model.config._attn_implementation = name
    try:
        yield
    finally:
        if name is not None:
            model.config._attn_implementation = before
