"""The static decoding step (engine/compile.py) gives the eager step's greedy tokens.

Static shapes are checked for every method on every run of the suite; the compiled
step (inductor on CPU: about 10-40 s of compilation a model) only with
PMBENCH_TEST_COMPILE=1.
"""

from __future__ import annotations

import os

import pytest

from conftest import random_group, real_squad_group
from pmbench.engine.runners.base import RunnerOptions, get_runner
from pmbench.types import GenerationConfig

METHODS = ("sequential", "batch", "prefix", "rope2d")
compile_tests = pytest.mark.skipif(not os.environ.get("PMBENCH_TEST_COMPILE"),
                                   reason="compiles with inductor; set PMBENCH_TEST_COMPILE=1")


def answers(model, tokenizer, method, group, gen, mode, **opts):
    runner = get_runner(method)(model, tokenizer, RunnerOptions(compile=mode, **opts))
    return [o.output_ids for o in runner.run_group(group, gen).outputs]


def early_stop_gen(model, tokenizer, group, method, max_new=12):
    """EOS = tokens the eager run produces midway, so streams stop at different steps."""
    gen = GenerationConfig(max_new_tokens=max_new, eos_token_ids=[])
    ref = answers(model, tokenizer, method, group, gen, "off")
    eos = sorted({ids[k] for k, ids in enumerate(ref) if len(ids) > 2 + k % 5 for k in [2 + k % 5]})
    return GenerationConfig(max_new_tokens=max_new, eos_token_ids=eos[:3])


@pytest.mark.parametrize("method", METHODS)
def test_static_step_equals_eager_with_early_stops(tiny_llama, tokenizer, method):
    for seed in range(3):
        group = random_group(5, seed)
        gen = early_stop_gen(tiny_llama, tokenizer, group, method)
        eager = answers(tiny_llama, tokenizer, method, group, gen, "off")
        assert len({len(ids) for ids in eager}) > 1 or method == "sequential"
        assert answers(tiny_llama, tokenizer, method, group, gen, "static") == eager


def test_static_prefix_copied_equals_eager(tiny_llama, tokenizer):
    group = random_group(4, 7)
    gen = early_stop_gen(tiny_llama, tokenizer, group, "prefix")
    eager = answers(tiny_llama, tokenizer, "prefix", group, gen, "off", prefix_kv="copy")
    assert answers(tiny_llama, tokenizer, "prefix", group, gen, "static",
                   prefix_kv="copy") == eager


@pytest.mark.parametrize("method", METHODS)
def test_static_step_real_squad(smollm2, data_dir, method):
    model, tok = smollm2.model, smollm2.tokenizer
    group = real_squad_group(data_dir, tok, n=4)
    gen = GenerationConfig(max_new_tokens=10, eos_token_ids=[tok.eos_token_id],
                           stop_strings=["\n"])
    assert answers(model, tok, method, group, gen, "static") == answers(
        model, tok, method, group, gen, "off")


@compile_tests
@pytest.mark.parametrize("method", METHODS)
def test_compiled_step_equals_eager(tiny_llama, tokenizer, method):
    group = random_group(5, 1)
    gen = early_stop_gen(tiny_llama, tokenizer, group, method)
    eager = answers(tiny_llama, tokenizer, method, group, gen, "off")
    assert answers(tiny_llama, tokenizer, method, group, gen, "on") == eager
    other = random_group(5, 2)  # another group: other shapes, no new graph needed
    assert answers(tiny_llama, tokenizer, method, other, gen, "on") == answers(
        tiny_llama, tokenizer, method, other, gen, "off")
