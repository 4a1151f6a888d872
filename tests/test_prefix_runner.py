"""The prefix runner (shared-prefix batch): the same greedy tokens as sequential, the
context prefilled once and its KV held once (shared) or per row (copied), early stops,
and the shared-prefix attention kernel against sdpa over the copied keys."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_family_model, make_tiny_model, random_group, real_squad_group
from pmbench.engine.attention_kernels import shared_prefix_attention
from pmbench.engine.kvcache import SharedPrefixLayer
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.prefix import PrefixRunner, kv_sharing
from pmbench.engine.runners.rope2d import Rope2DRunner
from pmbench.engine.runners.sequential import SequentialRunner
from pmbench.errors import BadInput
from pmbench.report.results import method_label
from pmbench.types import GenerationConfig


def _prefix(model, tokenizer, group, gen, kv="auto"):
    opts = RunnerOptions(branch=len(group.questions), prefix_kv=kv)
    return PrefixRunner(model, tokenizer, opts).run_group(group, gen)


def _assert_same(ref, out):
    for i, (a, b) in enumerate(zip(ref.outputs, out.outputs, strict=True)):
        assert a.output_ids == b.output_ids, f"question {i}"
        assert a.finish_reason == b.finish_reason, f"question {i}"


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("kv", ["shared", "copy"])
def test_equals_sequential(arch, n, kv, request, tokenizer):
    model = request.getfixturevalue(arch)
    group = random_group(n, seed=n)
    gen = GenerationConfig(max_new_tokens=12)
    seq = SequentialRunner(model, tokenizer).run_group(group, gen)
    out = _prefix(model, tokenizer, group, gen, kv)
    assert len({tuple(o.output_ids) for o in seq.outputs}) == n  # not a trivial match
    _assert_same(seq, out)
    # one forward pass per step for all rows; the context (but its last token) once
    assert out.decode_steps == gen.max_new_tokens - 1
    width = 1 + max(len(q.prompt_ids) for q in group.questions)
    assert out.tokens_processed == (len(group.context_ids) - 1 + n * width
                                    + n * (gen.max_new_tokens - 1))


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("stop_by", ["eos", "stop"])
def test_rows_stopping_early(arch, stop_by, request, tokenizer):
    model = request.getfixturevalue(arch)
    group = random_group(8, seed=11)
    free = SequentialRunner(model, tokenizer).run_group(group, GenerationConfig(max_new_tokens=12))
    stopper = free.outputs[0].output_ids[3]  # question 0 produces it at step 4
    if stop_by == "eos":
        gen = GenerationConfig(max_new_tokens=12, eos_token_ids=[stopper])
    else:
        gen = GenerationConfig(max_new_tokens=12, stop_strings=[tokenizer.decode([stopper])])
    seq = SequentialRunner(model, tokenizer).run_group(group, gen)
    assert stop_by in [o.finish_reason for o in seq.outputs]
    assert "length" in [o.finish_reason for o in seq.outputs]
    for kv in ("shared", "copy"):
        _assert_same(seq, _prefix(model, tokenizer, group, gen, kv))


def test_kv_cache_holds_the_context_once_when_shared(tiny_llama, tokenizer):
    group = random_group(6, seed=2, context_len=30)
    gen = GenerationConfig(max_new_tokens=5, ignore_eos=True)
    shared = _prefix(tiny_llama, tokenizer, group, gen, "shared")
    copied = _prefix(tiny_llama, tokenizer, group, gen, "copy")
    config = tiny_llama.config
    per_position = (2 * config.num_hidden_layers * config.num_key_value_heads
                    * (config.hidden_size // config.num_attention_heads) * 4)
    # the 29 shared positions (the last context token is in every row) are held once
    # instead of 6 times
    assert copied.kv_cache_bytes - shared.kv_cache_bytes == 5 * 29 * per_position
    for kv, recorded in (("shared", "shared"), ("copy", "copied")):
        opts = RunnerOptions(branch=6, prefix_kv=kv)
        assert PrefixRunner(tiny_llama, tokenizer, opts).record_options() == {
            "prefix_kv": recorded}


def test_empty_context_and_empty_question(tiny_llama, tokenizer):
    gen = GenerationConfig(max_new_tokens=6)
    with_empty = random_group(3, seed=6)
    with_empty.questions[1].prompt_ids = []  # continues straight from the context
    for group in (random_group(3, seed=5, context_len=0), random_group(3, seed=5, context_len=1),
                  with_empty):
        seq = SequentialRunner(tiny_llama, tokenizer).run_group(group, gen)
        for kv in ("shared", "copy"):
            _assert_same(seq, _prefix(tiny_llama, tokenizer, group, gen, kv))



@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_other_llama_family_models(family, tokenizer):
    model = make_family_model(family, len(tokenizer),
                              sliding_window=64 if family == "mistral" else None)
    group, gen = random_group(3, seed=4), GenerationConfig(max_new_tokens=8)
    seq = SequentialRunner(model, tokenizer).run_group(group, gen)
    _assert_same(seq, _prefix(model, tokenizer, group, gen))
    if family == "mistral":  # the padding would count against the window: refused
        with pytest.raises(BadInput, match="sliding window"):
            _prefix(model, tokenizer, random_group(3, seed=4, context_len=70), gen)


def test_eager_attention_and_the_model_left_as_it_was(tokenizer):
    model = make_tiny_model("llama", len(tokenizer), seed=4)
    model.config._attn_implementation = "eager"
    group, gen = random_group(4, seed=8), GenerationConfig(max_new_tokens=6)
    seq = SequentialRunner(model, tokenizer).run_group(group, gen)
    _assert_same(seq, _prefix(model, tokenizer, group, gen, "shared"))
    assert model.config._attn_implementation == "eager"


def test_kv_sharing_decision(tiny_llama):
    assert kv_sharing(tiny_llama) == "shared"
    assert kv_sharing(tiny_llama, "copy") == "copied"
    with pytest.raises(BadInput, match="prefix-kv"):
        kv_sharing(tiny_llama, "everywhere")

    class Softcapped:
        class config:  # noqa: N801 - stands in for an HF config
            _attn_implementation = "eager"
            attn_logit_softcapping = 50.0

            @classmethod
            def get_text_config(cls):
                return cls

    assert kv_sharing(Softcapped) == "copied"
    with pytest.raises(BadInput, match="softcapping"):
        kv_sharing(Softcapped, "shared")


@pytest.mark.parametrize(("heads", "kv_heads", "q_len"), [(4, 2, 1), (4, 2, 5), (3, 3, 4)])
def test_shared_prefix_attention_equals_sdpa_over_copied_keys(heads, kv_heads, q_len):
    torch.manual_seed(0)
    n, p, s, d = 3, 7, 6, 8
    query = torch.randn(n, heads, q_len, d)
    key, value = torch.randn(n, kv_heads, s, d), torch.randn(n, kv_heads, s, d)
    pk, pv = torch.randn(1, kv_heads, p, d), torch.randn(1, kv_heads, p, d)
    visible = torch.rand(n, 1, q_len, s) > 0.3
    visible[..., -1] = True
    mask = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)

    class Module:
        layer_idx = 0

    class Cache:
        layers = [SharedPrefixLayer(pk, pv, capacity=s)]

    got, _ = shared_prefix_attention(Module, query, key, value, mask, scaling=0.3,
                                     shared_prefix=Cache)
    full_k = torch.cat([pk.expand(n, -1, -1, -1), key], dim=2)
    full_v = torch.cat([pv.expand(n, -1, -1, -1), value], dim=2)
    full_mask = torch.cat([torch.zeros(n, 1, q_len, p), mask], dim=-1)
    want = torch.nn.functional.scaled_dot_product_attention(
        query, full_k, full_v, attn_mask=full_mask, scale=0.3,
        enable_gqa=heads != kv_heads).transpose(1, 2)
    torch.testing.assert_close(got, want)


def test_run_record_says_how_the_context_was_shared(tmp_path, tokenizer):
    from pmbench.cli import app

    folder = tmp_path / "tiny"
    make_tiny_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for kv, recorded in (("auto", "shared"), ("copy", "copied")):
        res = CliRunner().invoke(app, [
            "run", "--model", str(folder), "--suite", "squad", "--limit", "4", "--branch", "4",
            "--max-new-tokens", "3", "--method", "prefix", "--prefix-kv", kv,
            "--output-dir", str(tmp_path / "out"), "--json", "--no-warmup"])
        assert res.exit_code == 0, res.stderr
        record = json.loads(res.stdout)
        assert record["prefix_kv"] == recorded and record["settings"]["prefix_kv"] == kv
        assert method_label(record) == {"shared": "prefix", "copied": "prefix copied"}[recorded]
        assert record["metrics"]["n"] == 4


@pytest.mark.slow
def test_real_squad_questions_with_early_stops(smollm2, data_dir):
    """8 real SQuAD questions on one passage, stopping at "\\n" or EOS: sequential,
    prefix (both ways) and rope2d (isolated, ratio 0) give the same tokens."""
    tok = smollm2.tokenizer
    group = real_squad_group(data_dir, tok, article=1)
    gen = GenerationConfig(max_new_tokens=24, eos_token_ids=[tok.eos_token_id],
                           stop_strings=["\n"])
    seq = SequentialRunner(smollm2.model, tok).run_group(group, gen)
    lengths = {len(o.output_ids) for o in seq.outputs}
    assert len(lengths) > 1 and min(lengths) < gen.max_new_tokens  # rows stop early
    for kv in ("shared", "copy"):
        _assert_same(seq, _prefix(smollm2.model, tok, group, gen, kv))
    opts = RunnerOptions(branch=8, rope2d={"ratio": 0.0, "mask": "isolated"})
    _assert_same(seq, Rope2DRunner(smollm2.model, tok, opts).run_group(group, gen))


def test_shared_prefix_attention_without_the_fused_cpu_kernel(monkeypatch):
    """The portable path (CUDA, or a torch without the fused CPU kernel) gives the same."""
    from pmbench.engine import attention_kernels

    monkeypatch.setattr(attention_kernels, "_FLASH_CPU", None)
    test_shared_prefix_attention_equals_sdpa_over_copied_keys(4, 2, 3)
