"""rope2d: N question branches decoded together over one shared KV cache.

The group's shared context and the N questions are prefilled together, once, as one
packed sequence with 2D positions (t, b) and a branch mask, and then every
decoding step feeds one token per live branch (N tokens) in a single forward pass.
Branches that stop leave the step; their cache rows stay (invisible to the others
under the isolated mask).

Settings (`RunnerOptions.rope2d`: ratio, mode, branch_freqs, mask; None = unset) come
from the options, else the model config's `rope2d` section, else the defaults of
`pmbench.rope2d.settings`: ratio 0 (plain RoPE: exactly sequential's answers on a
model never trained with 2D positions), split mode, interleaved frequencies, isolated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from pmbench.engine.attention_kernels import GQA_SDPA, swapped_attention
from pmbench.engine.compile import (
    mark_dynamic,
    resolve,
    static_addresses,
    step_buffers,
    step_forward,
)
from pmbench.engine.decoding import cache_nbytes, decode_loop
from pmbench.engine.kvcache import bucket, end_static, make_static, reserved_cache
from pmbench.engine.runners.base import Runner, RunnerOptions
from pmbench.errors import BadInput
from pmbench.rope2d import (
    BranchMask,
    PackedLayout,
    check_supported,
    model_settings,
    pack,
    positions,
    rope2d_positions,
)
from pmbench.rope2d.settings import DEFAULTS, KEY, NAMES, RECORD_COLUMNS
from pmbench.types import GenerationConfig, Group, GroupOutput


class Rope2DRunner(Runner):
    name = "rope2d"
    step_reads = "shared"  # see Runner.step_reads
    description = "N branches per forward pass over one shared KV cache (2D RoPE)"
    uses_rope2d = True
    record_columns = RECORD_COLUMNS
    order = 3
    color = "#009E73"
    # over prefix: what 2D positions and one packed sequence add beyond the prefix sharing
    # that any serving engine already has; over batch and sequential, everything
    ratios_over = ("prefix", "batch", "sequential")

    def __init__(self, model: Any, tokenizer: Any, options: RunnerOptions | None = None):
        super().__init__(model, tokenizer, options)
        check_supported(model)
        self.settings = model_settings(model, self.options.rope2d)

    def record_options(self) -> dict[str, Any]:
        return {KEY: self.settings.as_dict()}

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """"rope2d r=<ratio>", then each setting that differs from its default (the
        runner's own, `rope2d.settings.DEFAULTS`): "rope2d r=0" is ratio 0 with the
        default split / interleaved / isolated settings, "rope2d r=0.5 cross" adds one."""
        settings = dict(zip(NAMES, (values.get(c) for c in RECORD_COLUMNS), strict=True))
        ratio = settings["ratio"]
        unset = ratio is None or (isinstance(ratio, float) and math.isnan(ratio))
        label = cls.name if unset else f"{cls.name} r={ratio:g}"
        extras = [settings[name] for name, default in DEFAULTS.items()
                  if name != "ratio" and isinstance(settings[name], str)
                  and settings[name] != default]
        return " ".join([label, *extras])

    @torch.inference_mode()
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        t0 = time.perf_counter()
        with rope2d_positions(self.model, self.settings), _gqa_attention(self.model):
            return self._run(group, gen, t0)

    def warmup_key(self, group: Group, gen: GenerationConfig) -> tuple[int, int]:
        """Its rows and bucket: one packed sequence of the context, every question and
        each branch's generated tokens."""
        n = len(group.questions)
        return n, bucket(_capacity(group, gen.max_new_tokens))

    def _run(self, group: Group, gen: GenerationConfig, t0: float) -> GroupOutput:
        model, device = self.model, self.model.device
        layout = pack(group.context_ids, [q.prompt_ids for q in group.questions])
        n = layout.n_branches
        _check_window(model.config, int(layout.next_t().max()) + gen.max_new_tokens)
        mode = resolve(self.options.compile, device)
        static = mode != "off" and self.settings.mask == "isolated"
        # cross masks let branches see each other's steps: finished ones must leave (eager)
        pool = self.static_pool(mode) if static else None
        capacity = _capacity(group, gen.max_new_tokens)
        if pool is not None:
            capacity = bucket(capacity)
        cache = reserved_cache(model.config, capacity, sliding=False,  # see _check_window
                               pool=pool)
        out = None if pool is None else pool.take(("step", "branch_mask"), (n, capacity),
                                                  model.dtype, device)
        masks = BranchMask(layout, self.settings.mask, capacity, model.dtype, device, out)
        next_t = layout.next_t().to(device)
        branch_b = layout.branch_ids().to(device)

        def prefill() -> torch.Tensor:
            return _prefill(model, layout, masks, cache, device)

        step = StaticBranches(model, layout, masks, cache, mode == "on", pool) if static else None

        def eager_step(live: list[int], tokens: torch.Tensor) -> torch.Tensor:
            idx = torch.tensor(live, device=device)
            pos = positions(next_t[idx], branch_b[idx])
            next_t[idx] += 1
            mask = masks.step(idx)
            out = model(
                input_ids=tokens.to(device)[None, :],
                position_ids=pos,
                attention_mask=mask[None, None],
                cache=cache,
                use_cache=True,
            )
            return out.logits[0]

        res = decode_loop(prefill, eager_step if step is None else step, n, gen,
                          self.tokenizer, device, t0=t0)
        if step is not None:
            step.finish()
        return GroupOutput(
            outputs=res.outputs,
            prefill_s=res.prefill_s,
            decode_s=res.decode_s,
            kv_cache_bytes=cache_nbytes(cache),
            tokens_processed=len(layout) + (res.step_tokens if step is None else step.fed),
            decode_steps=res.steps,
        )


def _capacity(group: Group, max_new_tokens: int) -> int:
    """Cache positions of a group: its packed prompt, then N - 1 more per step (each live
    branch's token; the first comes from the prefill)."""
    prompt = len(group.context_ids) + sum(len(q.prompt_ids) for q in group.questions)
    return prompt + len(group.questions) * max(max_new_tokens - 1, 0)


def _check_window(config, span: int) -> None:
    """Mistral-style models slide every layer's window through their causal mask; the
    branch mask does not, so refuse groups whose time span would leave the window."""
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "layer_types", None) is None and span > window:
        raise BadInput(f"rope2d: a group spans {span} positions, more than the model's "
                       f"sliding window ({window}), which the branch mask does not apply")


class StaticBranches:
    """The decoding step in fixed shapes: all N branches feed a token at every step (a
    finished one repeats its last; its logits are dropped), written at columns
    L + s*N + b, which only branch b sees (the isolated mask). Its tensors come from
    `pool` when given (the same addresses for every group of a bucket)."""

    def __init__(self, model: Any, layout: PackedLayout, masks: BranchMask, cache: Any,
                 compiled: bool, pool: Any = None):
        n, device = layout.n_branches, masks.rows.device
        self.cache, self.masks, self.prompt = cache, masks, len(layout)
        self.branch = torch.arange(n, device=device)
        buf = step_buffers(pool, {"index": ((n,), torch.long), "pos": ((2, 1, n), torch.long),
                                  "ids": ((1, n), torch.long)}, device)
        self.index = buf["index"].copy_(len(layout) + self.branch)
        self.pos = buf["pos"].copy_(positions(layout.next_t(), layout.branch_ids()))
        self.ids = buf["ids"].zero_()
        self.mask = masks.rows[None, None]
        self.forward = step_forward(model, compiled)
        self.filled = len(layout)  # cache positions written: the prompt, then N a step
        self.fed = 0  # tokens computed: every branch, finished or not, at every step

    def __call__(self, live: list[int], tokens: torch.Tensor) -> torch.Tensor:
        if self.filled == self.prompt:  # the first step: the prefill has filled the cache
            self._start()
        n = len(self.branch)
        rows = torch.tensor(live, device=self.ids.device)
        self.ids[0, rows] = tokens.to(self.ids.device)
        self.masks.rows[self.branch, self.index] = 0.0
        logits = self.forward(input_ids=self.ids, position_ids=self.pos,
                              attention_mask=self.mask, cache=self.cache)
        self.index.add_(n)
        self.pos[0].add_(1)
        self.filled = int(self.index[0])
        self.fed += n
        return logits[0, rows]

    def _start(self) -> None:
        """Switch the prefilled cache to writing at `index`, and tell the compiler which
        buffers keep their addresses and which sizes vary from group to group."""
        make_static(self.cache, self.index)
        mark_dynamic(self.mask, dims=(3,))
        static_addresses(self.masks.rows, self.pos, self.ids, self.index)
        for layer in self.cache.layers:
            mark_dynamic(layer._k, layer._v, dims=(2,))
            static_addresses(layer._k, layer._v)

    def finish(self) -> None:
        """Leave the cache an ordinary reserved cache, if a step made it static."""
        if self.filled > self.prompt:
            end_static(self.cache, self.filled)


def _prefill(model, layout: PackedLayout, masks: BranchMask, cache, device) -> torch.Tensor:
    """The context and all branches in one packed forward pass; logits [N, vocab] at
    each branch's last token, computing the LM head only there.

    One pass rather than context then branches: one forward pass of fixed overhead
    fewer, and larger matmuls (benchmarks/README.md, "What the runners do")."""
    out = model(
        input_ids=layout.input_ids.to(device)[None, :],
        position_ids=positions(layout.t, layout.b).to(device),
        attention_mask=masks.prefill()[None, None],
        cache=cache,
        use_cache=True,
        logits_to_keep=layout.last.to(device),
    )
    return out.logits[0]


def _gqa_attention(model):
    """`gqa_sdpa` where the model runs sdpa on CPU (on CUDA a mask plus enable_gqa falls
    back to the slow math kernel, so HF's own path stays)."""
    swap = model.config._attn_implementation == "sdpa" and model.device.type == "cpu"
    return swapped_attention(model, GQA_SDPA if swap else None)
