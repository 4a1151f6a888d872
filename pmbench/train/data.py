"""Multi-branch training examples: pack a shared context and N branches, then collate.

An `Example` is what one rope2d inference group looks like, plus the tokens the model
should learn to produce. Each branch has a `prompt` (fed all at once, like the
question prompts of the rope2d runner's packed prefill) and a `response` (fed one
token per decoding step under teacher forcing). Packing reuses `pmbench.rope2d`:
`pack` gives the (t, b) coordinates and `dense_mask` the isolated / cross mask, so a
model is trained on exactly the positions and visibility it sees at inference.

Targets are aligned per position (the token each position must predict within its
own stream), not shifted by the model: in a packed sequence the next token in
memory is often another branch's. The context's last token predicts every branch's
first token; it gets a target only when those agree (pretraining branches all start
with BOS), otherwise none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pmbench.rope2d.layout import pack
from pmbench.rope2d.masks import additive, dense_mask

IGNORE = -100  # target of positions that carry no loss (torch cross_entropy's ignore_index)
LOSS_ON = ("all", "branches", "response")


@dataclass
class Branch:
    prompt: list[int]  # fed at step 0 with the packed prompts
    response: list[int] = field(default_factory=list)  # response[i] is fed at step i + 1


@dataclass
class Example:
    """A shared context and its branches. `loss_on` says which predictions are trained:
    "all" (pretraining: context, prompts and responses), "branches" (the branches' own
    tokens after their first: held-out pretraining loss, comparable across #branch) or
    "response" (fine-tuning: only the response tokens, each predicted from the token
    before it in its branch)."""

    context: list[int]
    branches: list[Branch]
    loss_on: str = "response"
    source: str = ""


@dataclass
class PackedExample:
    input_ids: torch.Tensor  # [L]
    t: torch.Tensor  # [L]
    b: torch.Tensor  # [L]
    step: torch.Tensor  # [L] decoding step each token is fed at (0 = prompt / context)
    targets: torch.Tensor  # [L] next token within the same branch, or IGNORE
    visible: torch.Tensor  # [L, L] bool, query i may attend to key j

    def __len__(self) -> int:
        return self.input_ids.numel()


def pack_example(ex: Example, mask: str = "isolated") -> PackedExample:
    """Lay out `ex` with the rope2d coordinates and mask, and align its targets."""
    if ex.loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {ex.loss_on!r}")
    streams = [br.prompt + br.response for br in ex.branches]
    layout = pack(ex.context, streams)
    p = layout.context_len
    n = len(layout)
    targets = torch.full((n,), IGNORE, dtype=torch.long)
    step = torch.zeros(n, dtype=torch.long)
    every = ex.loss_on != "response"  # every branch token is a target
    if ex.loss_on == "all" and p > 1:
        targets[: p - 1] = torch.tensor(ex.context[1:])
    firsts = {s[0] for s in streams if s}
    no_prompts = not any(br.prompt for br in ex.branches)
    if p and len(firsts) == 1 and all(streams) and (
        ex.loss_on == "all" or (ex.loss_on == "response" and no_prompts)
    ):
        targets[p - 1] = firsts.pop()
    start = p
    for br, stream in zip(ex.branches, streams, strict=True):
        m = len(stream)
        n_prompt = len(br.prompt)
        step[start + n_prompt : start + m] = torch.arange(1, m - n_prompt + 1)
        first_trained = 0 if every else max(n_prompt - 1, 0)
        # position start + j predicts stream[j + 1]
        for j in range(first_trained, m - 1):
            targets[start + j] = stream[j + 1]
        start += m
    visible = dense_mask(layout.b, step, mask)
    return PackedExample(layout.input_ids, layout.t, layout.b, step, targets, visible)


def collate(packed: Sequence[PackedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into model inputs.

    Returns `input_ids` [B, L], `position_ids` [2, B, L] (t, b: what the rope2d patch
    reads), `attention_mask` [B, 1, L, L] bool, True where visible (padding sees only
    itself, so no row is empty), `targets` [B, L] and `lengths` [B].
    """
    bsz, length = len(packed), max(len(p) for p in packed)
    ids = torch.full((bsz, length), pad_id, dtype=torch.long)
    pos = torch.zeros((2, bsz, length), dtype=torch.long)
    targets = torch.full((bsz, length), IGNORE, dtype=torch.long)
    visible = torch.eye(length, dtype=torch.bool).repeat(bsz, 1, 1)
    for i, p in enumerate(packed):
        n = len(p)
        ids[i, :n] = p.input_ids
        pos[0, i, :n] = p.t
        pos[1, i, :n] = p.b
        targets[i, :n] = p.targets
        visible[i, :n, :n] = p.visible
    lengths = torch.tensor([len(p) for p in packed])
    return {"input_ids": ids, "position_ids": pos, "attention_mask": visible[:, None],
            "targets": targets, "lengths": lengths}


def model_mask(model, visible: torch.Tensor) -> torch.Tensor:
    """A bool visibility mask as the model's attention wants it: bool for SDPA, else
    additive in the model's dtype (eager attention adds it to the scores)."""
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    if getattr(inner.config, "_attn_implementation", "sdpa") == "sdpa":
        return visible
    return additive(visible, next(model.parameters()).dtype)


def branch_loss(model, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `model` on a collated batch (only positions with a target).

    The LM head runs only on the sequence positions where some row has a target
    (`logits_to_keep` as an index tensor), which matters for fine-tuning, where few
    positions are trained and the vocabulary is large.
    """
    targets = batch["targets"]
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                attention_mask=model_mask(model, batch["attention_mask"]),
                logits_to_keep=keep, use_cache=False)
    logits = out.logits.float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets[:, keep].reshape(-1),
        ignore_index=IGNORE, reduction=reduction,
    )


def _context_len(p: PackedExample) -> int:
    return int((p.b == 0).sum())


def shared_context_groups(packed: Sequence[PackedExample]
                          ) -> tuple[list[list[PackedExample]], list[PackedExample]]:
    """(groups of examples with the same context, 2 or more each, no target in it; the rest).

    A context token sees only earlier context tokens under both masks, so its keys and
    values are the same in every example that shares the context: computed once, they serve
    them all, as a rope2d inference group prefills its context once.
    """
    by_context: dict[tuple[int, ...], list[PackedExample]] = {}
    for p in packed:
        n = _context_len(p)
        by_context.setdefault(tuple(p.input_ids[:n].tolist()), []).append(p)
    groups, rest = [], []
    for key, members in by_context.items():
        untargeted = all(bool((m.targets[:len(key)] == IGNORE).all()) for m in members)
        if key and len(members) > 1 and untargeted:
            groups.append(members)
        else:
            rest.extend(members)
    return groups, rest


@torch.no_grad()
def shared_context_loss(model, group: Sequence[PackedExample]) -> list[list[float]]:
    """[summed cross-entropy, target count] of each example of a group that shares one
    context, in the group's order: the context
    is run once into a cache, then each example's branch tokens over it (the cache is
    cropped back to the context after each). Equal to `branch_loss` on each example alone
    up to float rounding."""
    from transformers import DynamicCache

    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    device = next(inner.parameters()).device
    first = group[0]
    n = _context_len(first)
    ctx = collate([PackedExample(first.input_ids[:n], first.t[:n], first.b[:n], first.step[:n],
                                 first.targets[:n], first.visible[:n, :n])], pad_id=0)
    cache = DynamicCache(config=inner.config)
    inner(input_ids=ctx["input_ids"].to(device), position_ids=ctx["position_ids"].to(device),
          attention_mask=model_mask(inner, ctx["attention_mask"].to(device)),
          cache=cache, use_cache=True, logits_to_keep=1)
    losses: list[list[float]] = []
    for ex in group:
        targets = ex.targets[n:].to(device)
        keep = (targets != IGNORE).nonzero().squeeze(-1)
        pos = torch.stack([ex.t[n:], ex.b[n:]])[:, None].to(device)
        mask = ex.visible[None, None, n:].to(device)
        out = inner(input_ids=ex.input_ids[None, n:].to(device), position_ids=pos,
                    attention_mask=model_mask(inner, mask), cache=cache,
                    use_cache=True, logits_to_keep=keep)
        logits = out.logits[0].float()
        loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
        losses.append([float(loss), keep.numel()])
        cache.crop(n - cache.get_seq_length())  # negative: the tokens to drop
    return losses
