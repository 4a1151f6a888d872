"""prefix: a shared-prefix batch, the baseline a serving engine gives for free.

vLLM's automatic prefix caching, SGLang's RadixAttention and llama.cpp's `seq_cp` all
compute a shared prompt prefix once and let N sequences read its KV entries. This
runner does the same with plain 1D positions, so rope2d can be compared with what a
practitioner would use instead of it, not only with a padded batch:

1. the group's shared context is prefilled once, as one row;
2. the N questions are prefilled as one left-padded batch on top of it: row k holds
   `question k` at positions P, P+1, ... after the context (the context's last token
   is fed again in every row, as vLLM recomputes a prompt's last token, so every row
   has a last position to take logits from even when its question is empty);
3. one token per live row per step through the shared `decode_loop`; finished rows
   leave the batch, as in `batch`.

The context's keys and values are shared by reference where the attention allows it
(`pmbench.engine.attention_kernels.shared_prefix_attention` reads them once for all rows)
and copied into every row otherwise (`--prefix-kv copy`, or attention features the
shared kernel does not implement). run.json records which (`prefix_kv`), and
`kv_cache_bytes` counts the context once when shared, N times when copied.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pmbench.engine.attention_kernels import SHARED_PREFIX, SHARED_PREFIX_KWARG, swapped_attention
from pmbench.engine.compile import resolve
from pmbench.engine.decoding import decode_loop
from pmbench.engine.kvcache import bucket, reserved_cache, rows_after_prefix
from pmbench.engine.rows import Rows
from pmbench.engine.runners.base import Runner, RunnerOptions
from pmbench.engine.runners.batch import left_pad, pad_token_id
from pmbench.errors import BadInput
from pmbench.options import option
from pmbench.rope2d.masks import additive
from pmbench.types import GenerationConfig, Group, GroupOutput

KV_MODES = ("auto", "shared", "copy")


@dataclass(frozen=True)
class PrefixOptions:
    prefix_kv: str = option("auto", choices=KV_MODES, help=(
        "prefix method: auto | shared (context KV by reference) | copy (into every row)."))


def kv_sharing(model: Any, requested: str = "auto") -> str:
    """"shared" or "copied": how the context's KV entries reach the rows.

    Sharing needs the attention swapped for `shared_prefix_attention`, which implements
    plain (optionally grouped-query) softmax attention: models with softcapping or
    attention sinks, or run with another backend than sdpa/eager, get a copy.
    """
    if requested not in KV_MODES:
        raise BadInput(f"unknown --prefix-kv {requested!r}; valid: {', '.join(KV_MODES)}")
    text = model.config.get_text_config()
    unsupported = [name for name in ("attn_logit_softcapping", "final_attn_softcapping")
                   if getattr(text, name, None)]
    if model.config._attn_implementation not in ("sdpa", "eager"):
        unsupported.append(f"attention {model.config._attn_implementation}")
    if requested == "copy" or (requested == "auto" and unsupported):
        return "copied"
    if unsupported:
        raise BadInput(f"--prefix-kv shared is not possible here ({', '.join(unsupported)}); "
                       "use --prefix-kv copy")
    return "shared"


def _check_window(config: Any, span: int) -> None:
    """Left padding sits between the context and the questions, where a sliding window
    (which counts cache slots, not positions) would see it; refuse groups that reach
    the window so that it never cuts anything."""
    window = getattr(config.get_text_config(), "sliding_window", None)
    if window and span > window:
        raise BadInput(f"prefix: a group spans {span} positions, more than the model's "
                       f"sliding window ({window})")


class PrefixRunner(Runner):
    name = "prefix"
    step_reads = "shared"  # see Runner.step_reads
    description = ("shared-prefix batch: the context prefilled once, its KV read by N rows "
                   "(vLLM/SGLang prefix caching)")
    Options = PrefixOptions
    record_columns = ("prefix_kv",)
    order = 2
    color = "#56B4E9"
    ratios_over = ("sequential", "batch")  # vs one-at-a-time, and what sharing adds to a batch

    def __init__(self, model: Any, tokenizer: Any, options: RunnerOptions | None = None):
        super().__init__(model, tokenizer, options)
        self.kv = kv_sharing(model, self.own.prefix_kv)

    def record_options(self) -> dict[str, Any]:
        return {"prefix_kv": self.kv}

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """"prefix", or "prefix copied" for a run whose context was copied into every row
        (shared, the default, is not named)."""
        return f"{cls.name} copied" if values.get("prefix_kv") == "copied" else cls.name

    def warmup_key(self, group: Group, gen: GenerationConfig) -> tuple[int, int, int]:
        """Its rows, the shared prefix's bucket and the rows' reservation's bucket."""
        p = max(len(group.context_ids) - 1, 0)
        width = 1 + max(len(q.prompt_ids) for q in group.questions)
        own = width + gen.max_new_tokens
        return len(group.questions), bucket(p), bucket(own if self.kv == "shared" else p + own)

    @torch.inference_mode()
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        t0 = time.perf_counter()
        model, device = self.model, self.model.device
        share = self.kv == "shared"
        attention = SHARED_PREFIX if share else None
        mode = resolve(self.options.compile, device)
        pool = self.static_pool(mode)
        prefix_ids = group.context_ids[:-1]
        prompts = [group.context_ids[-1:] + q.prompt_ids for q in group.questions]
        ids, valid = left_pad(prompts, pad_token_id(self.tokenizer, gen))
        ids, valid = ids.to(device), valid.to(device).bool()
        p, n, width = len(prefix_ids), len(prompts), ids.shape[1]
        _check_window(model.config, p + width + gen.max_new_tokens)
        # Columns the rows' masks cover: their own positions, plus the prefix when copied.
        lead = valid.new_ones((n, 0 if share else p))
        rows = Rows(torch.cat([lead, valid], dim=1), p + valid.sum(dim=1))

        def forward(**inputs) -> torch.Tensor:
            if share:  # the attention reads the shared prefix from the cache it is given
                inputs[SHARED_PREFIX_KWARG] = rows.cache
            with swapped_attention(model, attention):
                out = model(cache=rows.cache, use_cache=True, **inputs)
            return out.logits[:, -1, :]

        def prefill() -> torch.Tensor:
            prefix = _prefill_prefix(model, prefix_ids, pool)
            rows.cache = rows_after_prefix(prefix, n, width + gen.max_new_tokens, share,
                                           model.config.get_text_config().num_hidden_layers,
                                           pool)
            position_ids = p + (valid.long().cumsum(dim=1) - 1).clamp(min=0)
            return forward(input_ids=ids, position_ids=position_ids, logits_to_keep=1,
                           attention_mask=_prefill_mask(lead, valid, model.dtype))

        def step(live: list[int], last: torch.Tensor) -> torch.Tensor:
            if mode != "off":  # all rows stay, in fixed shapes
                extra = {SHARED_PREFIX_KWARG: rows.cache} if share else {}
                static = rows.static_step(model, mode == "on", pool, **extra)
                with swapped_attention(model, attention):
                    return static(live, last)
            visible = rows.next_mask(live)
            return forward(input_ids=last.view(-1, 1).to(device),
                           position_ids=rows.next_positions().view(-1, 1),
                           attention_mask=additive(visible, model.dtype)[:, None, None])

        res = decode_loop(prefill, step, n, gen, self.tokenizer, device, t0=t0)
        rows.finish()
        return GroupOutput(
            res.outputs,
            res.prefill_s,
            res.decode_s,
            kv_cache_bytes=rows.kv_peak,
            tokens_processed=p + ids.numel() + rows.tokens_fed(res),
            decode_steps=res.steps,
        )


def _prefill_prefix(model: Any, prefix_ids: list[int], pool: Any) -> Any:
    """The shared prefix's cache, one row, prefilled once (None when there is none)."""
    if not prefix_ids:
        return None
    prefix = reserved_cache(model.config, len(prefix_ids), sliding=False, pool=pool,
                            name="prefix")
    model(input_ids=torch.tensor([prefix_ids], device=model.device), cache=prefix,
          use_cache=True, logits_to_keep=1)
    return prefix


def _prefill_mask(lead: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [N, 1, W, lead + W] mask of the rows' prefill: the `lead` columns (a
    copied prefix), then causal attention among each row's `valid` (unpadded) tokens."""
    n, width = valid.shape
    causal = torch.ones(width, width, dtype=torch.bool, device=valid.device).tril()
    seen = torch.cat([lead[:, None].expand(n, width, -1), causal[None] & valid[:, None, :]],
                     dim=2)
    return additive(seen, dtype)[:, None]
