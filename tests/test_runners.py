"""sequential and batch: same greedy ids, early stops, equivalence with HF generate."""

from __future__ import annotations

import pytest
import torch

from pmbench.engine.runners.batch import BatchRunner, left_pad
from pmbench.engine.runners.sequential import SequentialRunner
from pmbench.types import GenerationConfig, Group, Question


def make_group(tokenizer, n: int, context: str = "Shared context: the sky is blue. ") -> Group:
    ctx = tokenizer(context)["input_ids"]
    questions = [
        Question(str(i), tokenizer(f"\nQuestion {i}: why{' really' * i}?\nAnswer:")["input_ids"])
        for i in range(n)
    ]
    return Group(0, ctx, questions)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_sequential_and_batch_agree(request, tokenizer, arch, n):
    model = request.getfixturevalue(arch)
    group = make_group(tokenizer, n)
    gen = GenerationConfig(max_new_tokens=10, eos_token_ids=[2])
    seq = SequentialRunner(model, tokenizer).run_group(group, gen)
    bat = BatchRunner(model, tokenizer).run_group(group, gen)
    assert [o.output_ids for o in seq.outputs] == [o.output_ids for o in bat.outputs]
    assert all(len(o.output_ids) == 10 for o in seq.outputs)
    # batch holds every padded row at once; sequential one question at a time
    assert seq.kv_cache_bytes > 0
    if n > 1:
        assert bat.kv_cache_bytes > seq.kv_cache_bytes
    assert seq.decode_steps == 9 * n and bat.decode_steps == 9


def test_batch_matches_hf_generate(tiny_llama, tokenizer):
    group = make_group(tokenizer, 4)
    gen = GenerationConfig(max_new_tokens=8, ignore_eos=True)
    bat = BatchRunner(tiny_llama, tokenizer).run_group(group, gen)
    ids, mask = left_pad([group.context_ids + q.prompt_ids for q in group.questions], 2)
    ref = tiny_llama.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8,
                              do_sample=False, eos_token_id=None, pad_token_id=2)
    assert ref[:, ids.shape[1]:].tolist() == [o.output_ids for o in bat.outputs]


def test_early_stop_on_eos_and_stop_string(tiny_llama, tokenizer):
    group = make_group(tokenizer, 4)
    free = SequentialRunner(tiny_llama, tokenizer).run_group(
        group, GenerationConfig(max_new_tokens=12, ignore_eos=True))
    # Declare the 3rd generated token of question 1 an EOS: that question stops there,
    # unless the same id already appears earlier in another question's output.
    eos_tok = free.outputs[1].output_ids[2]
    gen = GenerationConfig(max_new_tokens=12, eos_token_ids=[eos_tok])
    seq = SequentialRunner(tiny_llama, tokenizer).run_group(group, gen)
    bat = BatchRunner(tiny_llama, tokenizer).run_group(group, gen)
    assert [o.output_ids for o in seq.outputs] == [o.output_ids for o in bat.outputs]
    assert seq.outputs[1].finish_reason == "eos"
    assert len(seq.outputs[1].output_ids) <= 3
    for ref, out in zip(free.outputs, seq.outputs, strict=True):  # a prefix of the free run
        assert ref.output_ids[: len(out.output_ids)] == out.output_ids
    # --ignore-eos generates exactly max_new_tokens for everyone
    ign = BatchRunner(tiny_llama, tokenizer).run_group(
        group, GenerationConfig(max_new_tokens=12, eos_token_ids=[eos_tok], ignore_eos=True))
    assert all(len(o.output_ids) == 12 for o in ign.outputs)

    text = tokenizer.decode(free.outputs[0].output_ids[:4])
    stop = text[-3:]
    if stop.strip():
        gen = GenerationConfig(max_new_tokens=12, stop_strings=[stop])
        out = SequentialRunner(tiny_llama, tokenizer).run_group(group, gen).outputs[0]
        assert out.finish_reason == "stop" and len(out.output_ids) <= 4


def test_first_logits_for_scoring(tiny_qwen2, tokenizer):
    group = make_group(tokenizer, 3)
    letters = [tokenizer(f" {c}")["input_ids"][-1] for c in "ABCD"]
    gen = GenerationConfig(max_new_tokens=1, score_token_ids=letters)
    seq = SequentialRunner(tiny_qwen2, tokenizer).run_group(group, gen)
    bat = BatchRunner(tiny_qwen2, tokenizer).run_group(group, gen)
    for a, b in zip(seq.outputs, bat.outputs, strict=True):
        assert len(a.first_logits) == 4
        assert torch.allclose(torch.tensor(a.first_logits), torch.tensor(b.first_logits),
                              atol=1e-4)


def test_sampling_is_seeded(tiny_llama, tokenizer):
    group = make_group(tokenizer, 2)
    gen = GenerationConfig(max_new_tokens=8, ignore_eos=True, temperature=1.0, seed=3)
    a = SequentialRunner(tiny_llama, tokenizer).run_group(group, gen)
    b = SequentialRunner(tiny_llama, tokenizer).run_group(group, gen)
    assert [o.output_ids for o in a.outputs] == [o.output_ids for o in b.outputs]
