"""The rope2d runner: with the isolated mask and ratio 0 it reproduces sequential greedy
decoding token for token; it honours the model config's `rope2d` section; it prefills
the branches in one packed pass and feeds one token per live branch per step."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_family_model, make_tiny_model, random_group, real_squad_group
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.rope2d import Rope2DRunner
from pmbench.engine.runners.sequential import SequentialRunner
from pmbench.errors import BadInput
from pmbench.types import GenerationConfig

EXACT = {"ratio": 0.0, "mask": "isolated"}



def _run(runner_cls, model, tokenizer, group, gen, **rope2d):
    out = runner_cls(model, tokenizer, RunnerOptions(branch=len(group.questions),
                                                     rope2d=rope2d)).run_group(group, gen)
    return out, [o.output_ids for o in out.outputs]


def _assert_same(seq, r2d):
    for i, (a, b) in enumerate(zip(seq.outputs, r2d.outputs, strict=True)):
        assert a.output_ids == b.output_ids, f"question {i}"
        assert a.finish_reason == b.finish_reason, f"question {i}"


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_isolated_ratio_zero_equals_sequential(arch, n, request, tokenizer):
    model = request.getfixturevalue(arch)
    group = random_group(n, seed=n)
    gen = GenerationConfig(max_new_tokens=12)
    seq, seq_ids = _run(SequentialRunner, model, tokenizer, group, gen)
    r2d, r2d_ids = _run(Rope2DRunner, model, tokenizer, group, gen, **EXACT)
    assert len({tuple(ids) for ids in seq_ids}) == n  # distinct answers: not a trivial match
    _assert_same(seq, r2d)
    assert r2d.decode_steps == gen.max_new_tokens - 1
    assert r2d.tokens_processed == len(group.context_ids) + sum(
        len(q.prompt_ids) for q in group.questions) + n * (gen.max_new_tokens - 1)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("stop_by", ["eos", "stop"])
def test_branches_stopping_early(arch, stop_by, request, tokenizer):
    model = request.getfixturevalue(arch)
    group = random_group(8, seed=11)
    free = GenerationConfig(max_new_tokens=12)
    _, ids = _run(SequentialRunner, model, tokenizer, group, free)
    stopper = ids[0][3]  # question 0 produces it at step 4, so it stops early
    if stop_by == "eos":
        gen = GenerationConfig(max_new_tokens=12, eos_token_ids=[stopper])
    else:
        gen = GenerationConfig(max_new_tokens=12, stop_strings=[tokenizer.decode([stopper])])
    seq, _ = _run(SequentialRunner, model, tokenizer, group, gen)
    r2d, _ = _run(Rope2DRunner, model, tokenizer, group, gen, **EXACT)
    reasons = [o.finish_reason for o in seq.outputs]
    assert stop_by in reasons and "length" in reasons
    _assert_same(seq, r2d)



@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_other_llama_family_models(family, tokenizer):
    model = make_family_model(family, len(tokenizer),
                              sliding_window=64 if family == "mistral" else None)
    group, gen = random_group(3, seed=4), GenerationConfig(max_new_tokens=8)
    seq, ids = _run(SequentialRunner, model, tokenizer, group, gen)
    r2d, _ = _run(Rope2DRunner, model, tokenizer, group, gen, **EXACT)
    assert len({tuple(x) for x in ids}) == 3
    _assert_same(seq, r2d)
    if family == "mistral":  # beyond the sliding window the branch mask would be wrong
        with pytest.raises(BadInput, match="sliding window"):
            _run(Rope2DRunner, model, tokenizer, random_group(3, seed=4, context_len=70), gen)


def test_empty_context_and_empty_question(tiny_llama, tokenizer):
    gen = GenerationConfig(max_new_tokens=6)
    no_context = random_group(3, seed=5, context_len=0)  # humaneval: nothing shared
    with_empty = random_group(3, seed=6)
    with_empty.questions[1].prompt_ids = []  # continues straight from the context
    for group in (no_context, with_empty):
        seq, _ = _run(SequentialRunner, tiny_llama, tokenizer, group, gen)
        r2d, _ = _run(Rope2DRunner, tiny_llama, tokenizer, group, gen, **EXACT)
        _assert_same(seq, r2d)


def test_first_step_logits_for_multiple_choice(tiny_qwen2, tokenizer):
    group = random_group(4, seed=3)
    gen = GenerationConfig(max_new_tokens=1, score_token_ids=[330, 331, 332, 333])
    seq, _ = _run(SequentialRunner, tiny_qwen2, tokenizer, group, gen)
    r2d, _ = _run(Rope2DRunner, tiny_qwen2, tokenizer, group, gen, **EXACT)
    for a, b in zip(seq.outputs, r2d.outputs, strict=True):
        assert len(b.first_logits) == 4
        torch.testing.assert_close(torch.tensor(b.first_logits), torch.tensor(a.first_logits),
                                   rtol=1e-4, atol=1e-4)


def test_one_packed_prefill_then_one_forward_per_step(tiny_llama, tokenizer):
    group = random_group(5, seed=8)
    gen = GenerationConfig(max_new_tokens=4)
    seen: list[int] = []
    hook = tiny_llama.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        _run(Rope2DRunner, tiny_llama, tokenizer, group, gen)
    finally:
        hook.remove()
    packed = len(group.context_ids) + sum(len(q.prompt_ids) for q in group.questions)
    assert seen == [packed, 5, 5, 5]


@pytest.mark.parametrize("eos", [False, True])
def test_kv_cache_holds_the_context_once(eos, tiny_llama, tokenizer):
    group = random_group(8, seed=9)
    gen = GenerationConfig(max_new_tokens=5)
    if eos:  # question 0 stops after its first token: its later rows never exist
        _, ids = _run(SequentialRunner, tiny_llama, tokenizer, group, gen)
        gen = GenerationConfig(max_new_tokens=5, eos_token_ids=[ids[0][0]])
    r2d, ids = _run(Rope2DRunner, tiny_llama, tokenizer, group, gen)
    cfg = tiny_llama.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (
        cfg.hidden_size // cfg.num_attention_heads) * 4
    fed = sum(len(out) - 1 for out in ids)  # every generated token but the last is fed back
    tokens = len(group.context_ids) + sum(len(q.prompt_ids) for q in group.questions) + fed
    assert r2d.tokens_processed == tokens
    assert r2d.kv_cache_bytes == tokens * per_token
    assert (fed < 8 * 4) == eos  # the early stop happened only where asked


def test_model_is_left_as_it_was(tiny_llama, tokenizer):
    before = tiny_llama.model.rotary_emb
    group = random_group(2, seed=1)
    _run(Rope2DRunner, tiny_llama, tokenizer, group, GenerationConfig(4), ratio=0.5)
    assert tiny_llama.model.rotary_emb is before
    assert tiny_llama.config._attn_implementation == "sdpa"


def test_config_section_is_used_without_options(tokenizer, tmp_path):
    section = {"ratio": 0.5, "mode": "additive", "branch_freqs": "high", "mask": "cross"}
    model = make_tiny_model("llama", len(tokenizer))
    model.config.rope2d = dict(section)
    # it survives save / load like a trained checkpoint's config.json
    model.config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["rope2d"] == section
    runner = Rope2DRunner(model, tokenizer, RunnerOptions(rope2d=dict.fromkeys(section)))
    assert runner.record_options() == {"rope2d": section}
    # an explicit option overrides the config, the rest still comes from it
    override = Rope2DRunner(model, tokenizer, RunnerOptions(rope2d={"mask": "isolated"}))
    assert override.record_options()["rope2d"] == {**section, "mask": "isolated"}
    # and the section really drives decoding: the same as passing it explicitly
    plain = make_tiny_model("llama", len(tokenizer))
    group, gen = random_group(4, seed=2), GenerationConfig(max_new_tokens=8)
    _, from_config = _run(Rope2DRunner, model, tokenizer, group, gen)
    _, explicit = _run(Rope2DRunner, plain, tokenizer, group, gen, **section)
    _, vanilla = _run(Rope2DRunner, plain, tokenizer, group, gen)
    assert from_config == explicit and from_config != vanilla


def test_defaults_without_a_config_section(tiny_llama, tokenizer):
    runner = Rope2DRunner(tiny_llama, tokenizer, RunnerOptions())
    assert runner.record_options() == {"rope2d": {
        "ratio": 0.0, "mode": "split", "branch_freqs": "interleaved", "mask": "isolated"}}


@pytest.mark.parametrize("bad", [
    {"ratio": 1.5}, {"ratio": -0.1}, {"ratio": "half"}, {"mode": "diagonal"},
    {"branch_freqs": "mid"}, {"mask": "leaky"}, {"colour": "red"},
])
def test_bad_options(bad, tiny_llama, tokenizer):
    with pytest.raises(BadInput):
        Rope2DRunner(tiny_llama, tokenizer, RunnerOptions(rope2d=bad))


def test_bad_config_section(tokenizer):
    model = make_tiny_model("llama", len(tokenizer))
    model.config.rope2d = {"ratio": 3}
    with pytest.raises(BadInput):
        Rope2DRunner(model, tokenizer, RunnerOptions())


def test_unsupported_architecture(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(BadInput, match="rope2d"):
        Rope2DRunner(gpt2, tokenizer, RunnerOptions())


@pytest.mark.slow
def test_real_squad_questions_match_sequential(smollm2, data_dir):
    tok = smollm2.tokenizer
    group = real_squad_group(data_dir, tok)
    gen = GenerationConfig(max_new_tokens=16, eos_token_ids=[tok.eos_token_id],
                           stop_strings=["\n"])
    seq, _ = _run(SequentialRunner, smollm2.model, tok, group, gen)
    r2d, _ = _run(Rope2DRunner, smollm2.model, tok, group, gen, **EXACT)
    _assert_same(seq, r2d)
    assert r2d.kv_cache_bytes < 0.3 * 8 * seq.kv_cache_bytes
