"""The one decoding loop every model-based method shares (greedy, or sampling).

Methods differ only in how they arrange the forward pass (one question, a padded
batch, or packed 2D-RoPE branches over one cache). They hand this loop two
callables and it does the rest: token choice, EOS / stop-string / length stopping,
dropping finished streams, timing. Keeping a single loop means the methods are
compared on their forward passes, not on incidental Python overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pmbench.types import GenerationConfig, QuestionOutput

# prefill() -> logits [n_streams, vocab] at each stream's last prompt position
PrefillFn = Callable[[], torch.Tensor]
# step(live, tokens) -> logits [len(live), vocab]; `live` are stream indices still decoding,
# `tokens` [len(live)] the token each of them just produced.
StepFn = Callable[[list[int], torch.Tensor], torch.Tensor]


def device_sync(device: torch.device | str | None) -> None:
    """Wait for queued kernels, so a host clock measures finished work (CUDA is async)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


@dataclass
class DecodeResult:
    outputs: list[QuestionOutput]
    prefill_s: float
    decode_s: float
    steps: int
    step_tokens: int  # sum over steps of streams fed (tokens processed while decoding)


def _stopped_by_string(tokenizer, ids: Sequence[int], stop_strings: Sequence[str]) -> bool:
    # Decode only the tail: a stop string spans at most a few tokens, and decoding the
    # whole output every step would cost O(T^2).
    tail = tokenizer.decode(list(ids[-8:]), skip_special_tokens=False)
    return any(s in tail for s in stop_strings)


def _picker(gen: GenerationConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """argmax for greedy; temperature / top-p sampling with a seeded generator otherwise."""
    if gen.temperature <= 0:
        return lambda logits: logits.argmax(dim=-1)
    rng = torch.Generator(device="cpu").manual_seed(gen.seed)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float().cpu() / gen.temperature, dim=-1)
        if gen.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(dim=-1) - sorted_p < gen.top_p
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=rng).squeeze(-1)

    return sample


class _Streams:
    """Each stream's tokens so far, and why and when it stopped."""

    def __init__(self, first: list[int], gen: GenerationConfig, tokenizer) -> None:
        self.ids: list[list[int]] = [[tok] for tok in first]
        self.reasons = ["length"] * len(first)
        # when each stream produced its last token: host time, and decoding steps run by then
        self.done_at: dict[int, tuple[float, int]] = {}
        self.eos = set() if gen.ignore_eos else set(gen.eos_token_ids)
        self.stops = [] if gen.ignore_eos else list(gen.stop_strings)
        self.budget = gen.budget
        self.tokenizer = tokenizer

    def last(self, live: list[int]) -> torch.Tensor:
        """The token each `live` stream produced last, to feed the next step."""
        return torch.tensor([self.ids[i][-1] for i in live], dtype=torch.long)

    def still_live(self, live: list[int], steps: int, now: float | None = None) -> list[int]:
        """The `live` streams that go on; the others are done after `steps` steps, at
        `now` (default: the host clock's now)."""
        still = [i for i in live if not self._finished(i)]
        if len(still) < len(live):
            now = time.perf_counter() if now is None else now
            self.done_at.update({i: (now, steps) for i in live if i not in still})
        return still

    def _finished(self, i: int) -> bool:
        ids = self.ids[i]
        if ids[-1] in self.eos:
            self.reasons[i] = "eos"
            return True
        if self.stops and _stopped_by_string(self.tokenizer, ids, self.stops):
            self.reasons[i] = "stop"
            return True
        return len(ids) >= self.budget(i)


def decode_loop(
    prefill: PrefillFn,
    step: StepFn,
    n_streams: int,
    gen: GenerationConfig,
    tokenizer,
    device: torch.device | str | None = None,
    t0: float | None = None,
) -> DecodeResult:
    """Decode `n_streams` questions that are prefilled together, until each stops.

    `t0` is the group's start on the host clock (defaults to now); each question's
    times to its first and last token are measured from it, so queueing inside a group
    counts (a one-at-a-time method's later questions wait for the earlier ones).
    """
    t0 = time.perf_counter() if t0 is None else t0
    start = time.perf_counter()
    pick = _picker(gen)
    logits = prefill()
    first = pick(logits)
    first_logits = None
    if gen.score_token_ids is not None:
        first_logits = logits[:, gen.score_token_ids].float().cpu().tolist()
    streams = _Streams(first.tolist(), gen, tokenizer)  # .tolist() synchronizes
    device_sync(device)
    t_first = time.perf_counter()

    live = streams.still_live(list(range(n_streams)), 0, t_first)
    steps = step_tokens = 0
    while live:
        logits = step(live, streams.last(live))
        nxt = pick(logits).tolist()  # synchronizes: the step's work is done
        steps += 1
        step_tokens += len(live)
        for i, tok in zip(live, nxt, strict=True):
            streams.ids[i].append(tok)
        live = streams.still_live(live, steps)
    device_sync(device)
    decode_s = time.perf_counter() - t_first

    outputs = [
        QuestionOutput(
            output_ids=ids,
            output_text=tokenizer.decode(ids, skip_special_tokens=True),
            ttft_s=t_first - t0,
            first_logits=first_logits[i] if first_logits is not None else None,
            finish_reason=streams.reasons[i],
            ttlt_s=streams.done_at[i][0] - t0,
            start_s=start - t0,
            idle_steps=steps - streams.done_at[i][1],
        )
        for i, ids in enumerate(streams.ids)
    ]
    return DecodeResult(outputs, t_first - start, decode_s, steps, step_tokens)


def cache_nbytes(cache) -> int:
    """Bytes held by a transformers KV cache's key/value tensors (any Cache subclass)."""
    total = 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:  # a shared prefix (kvcache.SharedPrefixLayer) counts once
            for name in ("keys", "values", "prefix_keys", "prefix_values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total
    for name in ("key_cache", "value_cache"):  # older transformers
        for t in getattr(cache, name, []) or []:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
