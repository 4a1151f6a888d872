"""Multi-branch training examples: coordinates, masks and targets, and the promise that
training sees exactly what rope2d inference sees."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import make_tiny_model
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.rope2d import Rope2DRunner
from pmbench.rope2d.patch import patch_model
from pmbench.rope2d.settings import Rope2DSettings
from pmbench.train.data import IGNORE, Branch, Example, branch_loss, collate, pack_example
from pmbench.types import GenerationConfig, Group, Question

X = IGNORE


def _example(loss_on: str = "response") -> Example:
    # context 5 6 7 | branch 1: prompt 10 11, response 12 13 | branch 2: prompt 20, response 21
    return Example([5, 6, 7], [Branch([10, 11], [12, 13]), Branch([20], [21])], loss_on)


def test_packed_example_matches_hand_built_layout():
    p = pack_example(_example(), "isolated")
    assert p.input_ids.tolist() == [5, 6, 7, 10, 11, 12, 13, 20, 21]
    assert p.t.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 4]
    assert p.b.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert p.step.tolist() == [0, 0, 0, 0, 0, 1, 2, 0, 1]
    # fine-tuning: the last prompt token predicts the first answer token, and so on
    assert p.targets.tolist() == [X, X, X, X, 12, 13, X, 21, X]
    o, _ = 1, 0
    want = [  # row = query, column = key, packed order
        [o, _, _, _, _, _, _, _, _],
        [o, o, _, _, _, _, _, _, _],
        [o, o, o, _, _, _, _, _, _],
        [o, o, o, o, _, _, _, _, _],
        [o, o, o, o, o, _, _, _, _],
        [o, o, o, o, o, o, _, _, _],
        [o, o, o, o, o, o, o, _, _],
        [o, o, o, _, _, _, _, o, _],
        [o, o, o, _, _, _, _, o, o],
    ]
    assert p.visible.int().tolist() == want


def test_cross_mask_sees_other_branches_of_earlier_steps_only():
    p = pack_example(_example(), "cross")
    vis = p.visible
    # branch 2's answer (step 1) sees branch 1's prompt (step 0), not its answer (steps 1, 2)
    assert vis[8, 3] and vis[8, 4]
    assert not vis[8, 5] and not vis[8, 6]
    # branch 1's second answer token (step 2) sees branch 2's answer (step 1)
    assert vis[6, 8] and vis[6, 7]
    # prompts (step 0) never see another branch
    assert not vis[7, 3] and not vis[4, 7]


def test_pretraining_targets_cover_context_and_branches():
    ex = Example([5, 6, 7], [Branch([1], [30, 31]), Branch([1], [40])], "all")
    p = pack_example(ex)
    # the context's last token predicts BOS, the first token of every branch
    assert p.targets.tolist() == [6, 7, 1, 30, 31, X, 40, X]
    held = pack_example(Example(ex.context, ex.branches, "branches"))
    assert held.targets.tolist() == [X, X, X, 30, 31, X, 40, X]


def test_targets_stay_in_their_branch_and_off_padding():
    """Random examples, each branch with its own token range: every target is the next
    token of the same branch (never another branch's, never padding)."""
    rng = random.Random(0)
    packed = []
    for _ in range(20):
        n = rng.randint(1, 5)
        branches = [Branch([100 * k + j for j in range(rng.randint(0, 4))],
                           [100 * k + 50 + j for j in range(rng.randint(1, 4))])
                    for k in range(1, n + 1)]
        packed.append(pack_example(Example([1, 2, 3], branches, rng.choice(
            ["all", "branches", "response"])), "isolated"))
    batch = collate(packed, pad_id=0)
    ids, targets = batch["input_ids"], batch["targets"]
    t, b = batch["position_ids"]
    for i, p in enumerate(packed):
        n = len(p)
        assert (targets[i, n:] == IGNORE).all()  # padding carries no loss
        assert (batch["attention_mask"][i, 0, n:, :n] == 0).all()  # and sees nothing real
        for j in range(n):
            if targets[i, j] == IGNORE or b[i, j] == 0:
                continue
            same = (b[i, :n] == b[i, j]) & (t[i, :n] == t[i, j] + 1)
            assert same.sum() == 1, "a target must be the next token of its own branch"
            assert targets[i, j] == ids[i, :n][same].item()
            assert targets[i, j] // 100 == b[i, j]


def test_packed_loss_at_ratio_zero_equals_sequential_loss():
    """Ratio 0 + isolated mask: the packed branches cost exactly what each
    `context + branch` costs alone (the training analogue of the runner's check)."""
    model = make_tiny_model("llama", 200)
    patch_model(model, Rope2DSettings(ratio=0.0))
    ex = Example([5, 6, 7, 8], [Branch([10, 11], [12, 13, 14]), Branch([20], [21, 22]),
                                Branch([30, 31, 32], [33])])
    packed = branch_loss(model, collate([pack_example(ex)], 0), reduction="sum")
    alone = 0.0
    for br in ex.branches:
        logits = model(input_ids=torch.tensor([ex.context + br.prompt + br.response])).logits[0]
        start = len(ex.context) + len(br.prompt) - 1
        logp = torch.log_softmax(logits[start:start + len(br.response)], dim=-1)
        alone -= logp[torch.arange(len(br.response)), br.response].sum()
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mask", ["isolated", "cross"])
def test_training_forward_reproduces_rope2d_decoding(tokenizer, mask):
    """Teacher-forcing the rope2d runner's own greedy outputs through the training
    forward gives those same tokens as argmax at every step: training and inference
    agree on positions and masks (ratio 0.5, both masks)."""
    model = make_tiny_model("llama", len(tokenizer), seed=3)
    settings = {"ratio": 0.5, "mode": "split", "branch_freqs": "interleaved", "mask": mask}
    context = tokenizer.encode("Context: the cat sat on the mat.\n")
    prompts = [tokenizer.encode(q) for q in ("Question: who sat?\nAnswer:",
                                             "Question: where?\nAnswer:", "Question: why\n")]
    group = Group(0, context, [Question(str(i), p) for i, p in enumerate(prompts)])
    runner = Rope2DRunner(model, tokenizer, RunnerOptions(branch=3, rope2d=settings))
    out = runner.run_group(group, GenerationConfig(max_new_tokens=5, ignore_eos=True))
    answers = [o.output_ids for o in out.outputs]

    patch_model(model, Rope2DSettings(**settings))
    ex = Example(context, [Branch(p, a) for p, a in zip(prompts, answers, strict=True)])
    batch = collate([pack_example(ex, mask)], pad_id=0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"]).logits[0]
    trained = batch["targets"][0] != IGNORE
    assert trained.sum() == sum(len(a) for a in answers)
    assert torch.equal(logits[trained].argmax(-1), batch["targets"][0][trained])


@pytest.mark.parametrize("mask", ["isolated", "cross"])
def test_heldout_loss_with_shared_contexts_equals_the_packed_batches(mask):
    """The held-out loss computes a context shared by several examples once (as inference
    prefills a group's context once) and gives what the packed batches give."""
    from pmbench.train.data import shared_context_groups
    from pmbench.train.loop import evaluate_loss

    model = make_tiny_model("llama", 200, seed=1)
    patch_model(model, Rope2DSettings(ratio=0.5, mask=mask))
    contexts = [[5, 6, 7, 8], [9, 10, 11]]
    rng = random.Random(0)
    examples = []
    for k in range(7):  # contexts 0, 1, 0, 1, ...; one lone context at the end
        context = contexts[k % 2] if k < 6 else [12, 13]
        branches = [Branch([20 + rng.randrange(100) for _ in range(rng.randint(1, 3))],
                           [20 + rng.randrange(100) for _ in range(rng.randint(1, 4))])
                    for _ in range(rng.randint(1, 3))]
        examples.append(pack_example(Example(context, branches), mask))
    groups, rest = shared_context_groups(examples)
    assert [len(g) for g in groups] == [3, 3] and len(rest) == 1
    shared = evaluate_loss(model, examples, torch.device("cpu"), pad_id=0, batch_size=2)
    batches = [collate(examples[i:i + 2], 0) for i in range(0, len(examples), 2)]
    total = sum(float(branch_loss(model, b, reduction="sum")) for b in batches)
    count = sum(int((b["targets"] != IGNORE).sum()) for b in batches)
    assert shared == pytest.approx(total / count, rel=1e-5)


def test_example_losses_are_each_examples_own_in_order():
    """Per-example held-out losses (what the paired bootstrap over examples resamples): each
    equals the example's loss computed alone, whether its context is shared or not."""
    from pmbench.train.loop import example_losses

    model = make_tiny_model("llama", 200, seed=1)
    patch_model(model, Rope2DSettings(ratio=0.5, mask="cross"))
    rng = random.Random(1)
    examples = []
    for k in range(5):  # contexts A, B, A, lone C, B
        context = [[5, 6, 7], [9, 10, 11, 12], [5, 6, 7], [14], [9, 10, 11, 12]][k]
        branches = [Branch([20 + rng.randrange(100) for _ in range(2)],
                           [20 + rng.randrange(100) for _ in range(rng.randint(1, 4))])
                    for _ in range(2)]
        examples.append(pack_example(Example(context, branches), "cross"))
    losses = example_losses(model, examples, torch.device("cpu"), pad_id=0, batch_size=2)
    assert len(losses) == len(examples)
    for ex, (loss, n) in zip(examples, losses, strict=True):
        alone = collate([ex], 0)
        assert n == int((alone["targets"] != IGNORE).sum())
        assert loss == pytest.approx(float(branch_loss(model, alone, reduction="sum")), rel=1e-5)
