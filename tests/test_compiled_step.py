"""The static decoding step (engine/compile.py) gives the eager step's greedy tokens.

Static shapes and the compiled step (inductor, 12-23 s of compilation per method on a
tiny model here) are checked for every method; the compiled step on the real model
(about 45 s of compilation per method) only with PMBENCH_TEST_COMPILE=1.
"""

from __future__ import annotations

import os

import pytest

from conftest import random_group, real_squad_group
from pmbench.engine.compile import compile_seconds
from pmbench.engine.runners.base import RunnerOptions, get_runner
from pmbench.types import GenerationConfig

METHODS = ("sequential", "batch", "prefix", "rope2d")
slow_compile = pytest.mark.skipif(not os.environ.get("PMBENCH_TEST_COMPILE"),
                                  reason="compiles the real model; set PMBENCH_TEST_COMPILE=1")


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


@pytest.mark.parametrize("method", ["batch", "prefix", "rope2d"])
def test_static_step_counts_every_row_it_computes(tiny_llama, tokenizer, method):
    """A finished row keeps feeding tokens in a static step: the compute counted for the
    roofline must include it (the eager step drops it and counts only live rows)."""
    group = random_group(5, 1)
    gen = early_stop_gen(tiny_llama, tokenizer, group, method)
    out = {}
    for mode in ("off", "static"):
        runner = get_runner(method)(tiny_llama, tokenizer, RunnerOptions(compile=mode))
        out[mode] = runner.run_group(group, gen)
    eager, static = out["off"], out["static"]
    lengths = [len(o.output_ids) for o in eager.outputs]
    assert len(set(lengths)) > 1  # streams stop at different steps
    assert static.decode_steps == eager.decode_steps == max(lengths) - 1
    extra = sum(max(lengths) - n for n in lengths)  # steps finished rows still computed
    assert static.tokens_processed - eager.tokens_processed == extra


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


@pytest.mark.parametrize("method", METHODS)
def test_compiled_step_equals_eager(tiny_llama, tokenizer, method):
    group = random_group(5, 1)
    gen = early_stop_gen(tiny_llama, tokenizer, group, method)
    eager = answers(tiny_llama, tokenizer, method, group, gen, "off")
    assert answers(tiny_llama, tokenizer, method, group, gen, "on") == eager
    other = random_group(5, 2)  # another group: other shapes, no new graph needed
    before = compile_seconds()
    assert answers(tiny_llama, tokenizer, method, other, gen, "on") == answers(
        tiny_llama, tokenizer, method, other, gen, "off")
    assert compile_seconds() == before


@slow_compile
@pytest.mark.parametrize("method", METHODS)
def test_compiled_step_real_squad(smollm2, data_dir, method):
    model, tok = smollm2.model, smollm2.tokenizer
    group = real_squad_group(data_dir, tok, n=4)
    gen = GenerationConfig(max_new_tokens=10, eos_token_ids=[tok.eos_token_id],
                           stop_strings=["\n"])
    assert answers(model, tok, method, group, gen, "on") == answers(
        model, tok, method, group, gen, "off")


def test_compiled_run_times_no_compilation(tiny_llama, tokenizer, tmp_path, monkeypatch):
    """A stub compiler that takes 1 s at its first call: the run's warm-up pays it, the
    record gives it as compile_s, and no timed group contains it."""
    import time

    import torch
    from torch._dynamo.utils import counters

    from pmbench.engine import compile as compile_mod
    from pmbench.engine import models
    from pmbench.jobs.run import execute_run
    from pmbench.jobs.spec import RunSettings

    def fake_compile(fn, **kwargs):
        def compiled(*args, **kw):
            if not calls:
                time.sleep(1.0)
                counters["stats"]["unique_graphs"] += 1
            calls.append(1)
            return fn(*args, **kw)
        return compiled

    calls: list[int] = []
    monkeypatch.setattr(compile_mod.compiler(), "steps", {})
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: models.LoadedModel(
        tiny_llama, tokenizer, "tiny", "tiny", "cpu", "float32", 0.0))
    monkeypatch.setenv("PMBENCH_NO_ROOFLINE", "1")
    record = execute_run(RunSettings(method="batch", suite="squad", branch=4, limit=8,
                                     max_new_tokens=4, ignore_eos=True, compile="on",
                                     cpu_prepack=False, output_dir=str(tmp_path)))
    assert calls and record["compile"] == "on"
    assert record["compile_s"] >= 1.0 and record["compile_s_timed"] == 0.0
    assert record["timed_region_s"] < 1.0


def test_compiled_step_with_prepacked_linears(tokenizer, monkeypatch):
    """The compiled graph keeps cpu_prepack's oneDNN weights (one opaque op per linear,
    instead of inductor's MKL packing), with the eager step's tokens."""
    from conftest import make_tiny_model
    from pmbench.engine import cpu_linear

    model = make_tiny_model("llama", len(tokenizer), seed=5)
    assert cpu_linear.prepack_linears(model)
    group = random_group(6, 4)
    gen = early_stop_gen(model, tokenizer, group, "batch")
    eager = answers(model, tokenizer, "batch", group, gen, "off")

    class Counting(dict):
        lookups = 0

        def __getitem__(self, key):
            Counting.lookups += 1
            return super().__getitem__(key)

    monkeypatch.setattr(cpu_linear, "_PACKED", Counting(cpu_linear._PACKED))
    assert answers(model, tokenizer, "batch", group, gen, "on") == eager
    assert Counting.lookups > 0  # the compiled step ran the prepacked op
    # all models' steps share one code object: many compiled models in one process (as
    # under PMBENCH_TEST_COMPILE=1) must not fall back to eager silently past 8 graphs
    import torch

    assert torch._dynamo.config.recompile_limit >= 64
    assert torch._dynamo.config.fail_on_recompile_limit_hit


@pytest.mark.parametrize("method", ["sequential", "batch"])
def test_sliding_window_model_decodes_eagerly(tokenizer, method):
    """A sliding-window model keeps transformers' cache, so the static mode falls back."""
    from conftest import make_family_model

    model = make_family_model("mistral", len(tokenizer), sliding_window=4096)
    group = random_group(3, 2)
    gen = GenerationConfig(max_new_tokens=5, eos_token_ids=[])
    assert answers(model, tokenizer, method, group, gen, "static") == answers(
        model, tokenizer, method, group, gen, "off")


# ------------------------------------------ buffers a CUDA graph can replay on (issue 26)


def _group(seed: int, context_len: int):
    return random_group(4, seed, context_len=context_len)


def _pooled(runner) -> dict:
    return {key: (t.data_ptr(), tuple(t.shape)) for key, t in runner.pool._buffers.items()}


@pytest.mark.parametrize("method", METHODS)
def test_a_group_of_a_bucket_seen_before_reuses_every_buffer(tiny_llama, tokenizer, method):
    """Static decoding takes its cache, mask, positions and tokens from the runner's pool:
    a second group of the same rows and bucket runs on the very same tensors (a CUDA
    graph replays only on the addresses it recorded), and still gives the eager tokens."""
    gen = GenerationConfig(max_new_tokens=6, eos_token_ids=[])
    runner = get_runner(method)(tiny_llama, tokenizer, RunnerOptions(compile="static"))
    first, second = _group(1, 20), _group(2, 24)
    assert runner.warmup_key(first, gen) == runner.warmup_key(second, gen)
    runner.run_group(first, gen)
    seen = _pooled(runner)
    assert seen  # the static step pooled its buffers
    for group in (second, first):
        out = [o.output_ids for o in runner.run_group(group, gen).outputs]
        assert _pooled(runner) == seen  # nothing new, nothing moved
        assert out == answers(tiny_llama, tokenizer, method, group, gen, "off")
    longer = _group(3, 90)  # another bucket: its own buffers, the old ones kept
    assert runner.warmup_key(longer, gen) != runner.warmup_key(first, gen)
    runner.run_group(longer, gen)
    assert set(seen) < set(_pooled(runner))


@pytest.mark.parametrize("method", METHODS)
def test_a_static_reservation_is_a_bucket_of_64_and_its_mask_rows_align(tiny_llama, tokenizer,
                                                                      method):
    from pmbench.engine.kvcache import BUCKET

    gen = GenerationConfig(max_new_tokens=5, eos_token_ids=[])
    runner = get_runner(method)(tiny_llama, tokenizer, RunnerOptions(compile="static"))
    runner.run_group(_group(4, 13), gen)
    masks = [t for key, t in runner.pool._buffers.items()
             if key[0] in (("step", "mask"), ("step", "branch_mask"), ("prefix_mask",))]
    caches = [t for key, t in runner.pool._buffers.items() if key[0][-1] in ("k", "v")]
    assert masks and caches
    for t in masks:
        assert t.shape[-1] % BUCKET == 0 and t.stride(-2 if t.dim() > 1 else -1) % 8 == 0
    assert all(t.shape[-2] % BUCKET == 0 for t in caches)
    # eager decoding keeps its exact reservation and takes nothing from the pool
    eager = get_runner(method)(tiny_llama, tokenizer, RunnerOptions(compile="off"))
    eager.run_group(_group(4, 13), gen)
    assert len(eager.pool) == 0


def test_warm_up_covers_each_bucket_once(tiny_llama, tokenizer):
    from pmbench.engine.runners.base import warmup_groups

    gen = GenerationConfig(max_new_tokens=6, eos_token_ids=[])
    batch = get_runner("batch")(tiny_llama, tokenizer, RunnerOptions(compile="on"))
    groups = [_group(1, 20), _group(2, 24), _group(3, 90), _group(4, 21), _group(5, 95)]
    keys = [batch.warmup_key(g, gen) for g in groups]
    assert keys[0] == keys[1] == keys[3] and keys[2] == keys[4] != keys[0]
    assert warmup_groups(batch, groups, gen, static=True) == [groups[0], groups[2]]
    assert warmup_groups(batch, groups, gen, static=False) == [groups[0]]
    # sequential: one bucket per question; a group whose buckets were all seen is skipped
    seq = get_runner("sequential")(tiny_llama, tokenizer, RunnerOptions(compile="on"))
    picked = warmup_groups(seq, groups, gen, static=True)
    covered = set().union(*(seq.warmup_key(g, gen) for g in picked))
    assert all(seq.warmup_key(g, gen) <= covered for g in groups)


def test_graph_counters_are_the_runs_own_deltas():
    """Process-wide counters (several cells share a process in gpu_check.py): a record
    holds what its warm-up and its timed groups added, not the totals so far."""
    from pmbench.jobs.run import _compile_record

    before, warm, end = (10.0, 3, 7), (12.5, 3, 9), (12.5, 4, 10)
    assert _compile_record("on", before, warm, end) == {
        "compile_s": 2.5, "compile_s_timed": 0.0, "cuda_graph_skips": 1,
        "cuda_graph_recordings": 3, "cuda_graph_recordings_timed": 1}
    assert _compile_record("off", before, warm, end) == {"compile_s": 2.5,
                                                         "compile_s_timed": 0.0}
