"""sequential with its context cached (the default) against `--no-context-cache`: the same
greedy tokens (tiny models of several architectures, early stops, the static and compiled
steps, real SQuAD groups), the context prefilled once per group (forward passes counted),
the option recorded, old records read as no-cache, and the cached run as the reference
of the tables and of compare's ratios where both variants are present."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_same_tokens, make_family_model, random_group, real_squad_group
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.sequential import SequentialRunner
from pmbench.report.results import method_label
from pmbench.types import GenerationConfig

FIXTURES = Path(__file__).parent / "fixtures" / "records"


def _seq(model, tokenizer, group, gen, cache: bool, compile: str = "off"):
    opts = RunnerOptions(compile=compile, context_cache=cache)
    return SequentialRunner(model, tokenizer, opts).run_group(group, gen)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_cached_equals_no_cache(arch, n, request, tokenizer):
    model = request.getfixturevalue(arch)
    group = random_group(n, seed=n)
    gen = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    old = _seq(model, tokenizer, group, gen, cache=False)
    new = _seq(model, tokenizer, group, gen, cache=True)
    assert len({tuple(o.output_ids) for o in old.outputs}) == n  # not a trivial match
    assert_same_tokens(old, new)
    p, own = len(group.context_ids), sum(len(q.prompt_ids) for q in group.questions)
    decoded = n * (gen.max_new_tokens - 1)
    # no-cache: the context with every question; cached: once (but its last token, fed
    # again with each question so that every question has a position to take logits from)
    assert old.tokens_processed == n * p + own + decoded
    assert new.tokens_processed == (p - 1) + n + own + decoded
    assert new.decode_steps == old.decode_steps == decoded
    assert 0 < new.kv_cache_bytes <= old.kv_cache_bytes


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("stop_by", ["eos", "stop"])
def test_questions_stopping_early(arch, stop_by, request, tokenizer):
    model = request.getfixturevalue(arch)
    group = random_group(8, seed=11)
    free = _seq(model, tokenizer, group, GenerationConfig(max_new_tokens=12), cache=False)
    stopper = free.outputs[0].output_ids[3]  # question 0 produces it at step 4
    if stop_by == "eos":
        gen = GenerationConfig(max_new_tokens=12, eos_token_ids=[stopper])
    else:
        gen = GenerationConfig(max_new_tokens=12, stop_strings=[tokenizer.decode([stopper])])
    old = _seq(model, tokenizer, group, gen, cache=False)
    assert stop_by in [o.finish_reason for o in old.outputs]
    assert "length" in [o.finish_reason for o in old.outputs]
    assert_same_tokens(old, _seq(model, tokenizer, group, gen, cache=True))


def test_empty_context_and_empty_question(tiny_llama, tokenizer):
    gen = GenerationConfig(max_new_tokens=6)
    with_empty = random_group(3, seed=6)
    with_empty.questions[1].prompt_ids = []  # continues straight from the context
    for group in (random_group(3, seed=5, context_len=0), random_group(3, seed=5, context_len=1),
                  with_empty):
        assert_same_tokens(_seq(tiny_llama, tokenizer, group, gen, cache=False),
                     _seq(tiny_llama, tokenizer, group, gen, cache=True))


@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_other_llama_family_models(family, tokenizer):
    """Mistral with a window shorter than the context: its transformers cache (which
    drops what leaves the window) is copied per question instead of cropped."""
    model = make_family_model(family, len(tokenizer),
                              sliding_window=16 if family == "mistral" else None)
    group, gen = random_group(3, seed=4, context_len=40), GenerationConfig(max_new_tokens=8)
    for mode in ("off", "static"):
        assert_same_tokens(_seq(model, tokenizer, group, gen, cache=False),
                     _seq(model, tokenizer, group, gen, cache=True, compile=mode))


def _counting(monkeypatch, model) -> list[list[int]]:
    """Every forward pass's input ids from now on (one row each: sequential)."""
    fed: list[list[int]] = []
    forward = model.forward

    def counted(*args, **kwargs):
        fed.append(kwargs["input_ids"][0].tolist())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    return fed


@pytest.mark.parametrize("mode", ["off", "static"])
def test_the_context_is_prefilled_once_per_group(tiny_llama, tokenizer, monkeypatch, mode):
    group = random_group(6, seed=3, context_len=30)
    gen = GenerationConfig(max_new_tokens=5, ignore_eos=True)
    fed = {}
    for cache in (False, True):
        calls = _counting(monkeypatch, tiny_llama)
        out = _seq(tiny_llama, tokenizer, group, gen, cache=cache, compile=mode)
        monkeypatch.undo()
        fed[cache] = calls
        assert sum(map(len, calls)) == out.tokens_processed
    context = group.context_ids[:-1]  # all of it but its last token, fed with each question
    with_context = {c: sum(ids[:len(context)] == context for ids in calls)
                    for c, calls in fed.items()}
    assert with_context == {False: 6, True: 1}
    # 6 x 30 context tokens + the questions' own, against 29 + 6 x (1 + their own)
    saved = sum(map(len, fed[False])) - sum(map(len, fed[True]))
    assert saved == 5 * 29


@pytest.mark.parametrize("mode", ["static", "on"])
def test_static_and_compiled_steps_equal_eager_no_cache(tiny_llama, tokenizer, mode):
    """The static step (fixed shapes, the cache's pooled buffers re-used question after
    question) and its compiled form give the eager no-cache tokens, with early stops."""
    for seed in range(2):
        group = random_group(5, seed)
        ref = _seq(tiny_llama, tokenizer, group, GenerationConfig(max_new_tokens=10),
                   cache=False)
        eos = sorted({o.output_ids[2 + k % 4] for k, o in enumerate(ref.outputs)})[:3]
        gen = GenerationConfig(max_new_tokens=10, eos_token_ids=eos)
        old = _seq(tiny_llama, tokenizer, group, gen, cache=False)
        assert len({len(o.output_ids) for o in old.outputs}) > 1
        assert_same_tokens(old, _seq(tiny_llama, tokenizer, group, gen, cache=True, compile=mode))


def test_warmup_key_is_one_bucket_per_group_when_cached(tiny_llama, tokenizer):
    group = random_group(5, seed=2, context_len=20)
    gen = GenerationConfig(max_new_tokens=6)
    cached = SequentialRunner(tiny_llama, tokenizer, RunnerOptions(compile="static"))
    plain = SequentialRunner(tiny_llama, tokenizer,
                             RunnerOptions(compile="static", context_cache=False))
    assert cached.warmup_key(group, gen) == frozenset({(1, 64)})
    assert plain.warmup_key(group, gen) <= frozenset({(1, 64)})


def test_labels_and_old_records():
    assert SequentialRunner.label({"context_cache": True}) == "sequential"
    assert SequentialRunner.label({"context_cache": np.True_}) == "sequential"
    for missing in ({}, {"context_cache": None}, {"context_cache": math.nan},
                    {"context_cache": False}):
        assert SequentialRunner.label(missing) == "sequential no-cache"
    old = json.loads((FIXTURES / "20261126-110000-sequential-mmlu-b1-2921" / "run.json")
                     .read_text())
    assert "context_cache" not in old and method_label(old) == "sequential no-cache"
    assert method_label({**old, "context_cache": True}) == "sequential"


def test_run_records_the_option(tmp_path, tiny_model_dir):
    from pmbench.cli import app

    common = ["--model", tiny_model_dir, "--suite", "squad", "--limit", "4", "--branch", "4",
              "--max-new-tokens", "3", "--output-dir", str(tmp_path / "out"), "--json",
              "--no-warmup"]
    for flags, cached in (([], True), (["--no-context-cache"], False),
                          (["--context-cache"], True)):
        res = CliRunner().invoke(app, ["run", "--method", "sequential", *flags, *common])
        assert res.exit_code == 0, res.stderr
        record = json.loads(res.stdout)
        assert record["context_cache"] is cached and record["settings"]["context_cache"] is cached
        assert method_label(record) == ("sequential" if cached else "sequential no-cache")
        assert record["metrics"]["n"] == 4
    refused = CliRunner().invoke(app, ["run", "--method", "batch", "--no-context-cache", *common])
    assert refused.exit_code == 2
    assert "--context-cache applies to --method sequential only" in refused.stderr


def _record(root: Path, run_id: str, method: str, *, cached: bool | None, q_s: float,
            tok_s: float, minute: int, throughput: bool, rope2d: dict | None = None) -> None:
    record = {
        "run_id": run_id, "created": f"2026-12-01T10:{minute:02d}:00+00:00", "method": method,
        "branch": 4, "suite": "squad", "model": "m", "limit": 8, "status": "complete",
        "max_new_tokens": 16, "ignore_eos": throughput, "dtype": "float32",
        "env": {"cpu": "AMD EPYC", "gpu": None, "threads": 2},
        "metrics": {"f1": 0.5, "em": 0.4, "n": 8},
        "throughput": {"output_tok_s": tok_s, "total_tok_s": 5 * tok_s, "q_s": q_s},
        "suite_info": {"suite": "squad", "data_files": ["squad/dev-v1.1.json"]},
    }
    if cached is not None:
        record["context_cache"] = cached
    if rope2d is not None:
        record["rope2d"] = {"ratio": 0.0, "mode": "split", "branch_freqs": "interleaved",
                            "mask": "isolated", **rope2d}
    (root / run_id).mkdir(parents=True)
    (root / run_id / "run.json").write_text(json.dumps(record))


def _both_variants(root: Path, throughput: bool) -> None:
    """sequential without its context cached (an old record, the newer) and with it, and
    batch: q_s and tok/s 1, 2 and 4."""
    for run_id, method, cached, speed, minute in (("old", "sequential", None, 1.0, 5),
                                                  ("new", "sequential", True, 2.0, 0),
                                                  ("batch", "batch", None, 4.0, 0)):
        _record(root, run_id, method, cached=cached, q_s=speed, tok_s=10 * speed,
                minute=minute, throughput=throughput)


def test_compare_divides_by_the_cached_run_where_both_are_present(tmp_path):
    from pmbench.report.compare import figures
    from pmbench.report.results import load

    _both_variants(tmp_path, throughput=True)
    cell = "squad batch b4 m limit=8 T=16 float32 ignore-eos"
    assert figures(load(tmp_path))[cell, "output_tok_s batch/sequential"].value == 2.0
    shutil.rmtree(tmp_path / "new")  # only the old variant: it stands in
    assert figures(load(tmp_path))[cell, "output_tok_s batch/sequential"].value == 4.0


def test_table5_divides_by_the_cached_run_where_both_are_present(tmp_path):
    from pmbench.report import tables
    from pmbench.report.results import load

    _both_variants(tmp_path, throughput=False)
    t5 = tables.build(5, load(tmp_path), margin=None).data.set_index(["Method", "#questions"])
    assert t5.loc[("batch", 4), "over"] == "sequential 4"
    assert t5.loc[("batch", 4), "Speedup (×)"] == 2.0
    assert t5.loc[("sequential no-cache", 4), "Speedup (×)"] == 0.5  # shown, not the divisor
    shutil.rmtree(tmp_path / "new")  # only the old variant: it stands in, and says so
    t5 = tables.build(5, load(tmp_path), margin=None).data.set_index(["Method", "#questions"])
    assert t5.loc[("batch", 4), "over"] == "sequential no-cache 4"
    assert t5.loc[("batch", 4), "Speedup (×)"] == 4.0


def test_the_prior_art_row_is_named_where_a_table_shows_it(tmp_path):
    """rope2d at ratio 0 with the isolated mask is MultiDecode's / Intra-Prompt Parallel
    Decoding's construction: a note says so under a table that has such a row, only."""
    from pmbench.report import tables
    from pmbench.report.results import load

    def notes(number: int) -> str:
        return " ".join(tables.build(number, load(tmp_path), margin=None).notes)

    _record(tmp_path, "seq", "sequential", cached=True, q_s=1.0, tok_s=10.0, minute=0,
            throughput=True)
    for run_id, settings in (("r05", {"ratio": 0.5}), ("r0x", {"mask": "cross"})):
        _record(tmp_path, run_id, "rope2d", cached=None, q_s=1.0, tok_s=10.0, minute=0,
                throughput=True, rope2d=settings)
    assert "MultiDecode" not in notes(1) + notes(3)
    _record(tmp_path, "r0", "rope2d", cached=None, q_s=1.0, tok_s=10.0, minute=0,
            throughput=True, rope2d={})
    for number in (1, 3):
        assert ('Prior art: rope2d at ratio 0 with the isolated mask (Method "rope2d r=0") is '
                "training-free position reuse with a mask, the construction of MultiDecode "
                "and Intra-Prompt Parallel Decoding") in notes(number)


@pytest.mark.slow
def test_real_squad_questions_with_early_stops(smollm2, data_dir):
    """8 real SQuAD questions on one passage, stopping at "\\n" or EOS: the cached context
    gives no-cache's tokens, eagerly and with the static step."""
    tok = smollm2.tokenizer
    group = real_squad_group(data_dir, tok, article=1)
    gen = GenerationConfig(max_new_tokens=24, eos_token_ids=[tok.eos_token_id],
                           stop_strings=["\n"])
    old = _seq(smollm2.model, tok, group, gen, cache=False)
    lengths = {len(o.output_ids) for o in old.outputs}
    assert len(lengths) > 1 and min(lengths) < gen.max_new_tokens  # questions stop early
    new = _seq(smollm2.model, tok, group, gen, cache=True)
    assert_same_tokens(old, new)
    # the passage prefilled once instead of 8 times (but its last token, fed with each)
    assert old.tokens_processed - new.tokens_processed == 7 * (len(group.context_ids) - 1)
    assert_same_tokens(old, _seq(smollm2.model, tok, group, gen, cache=True, compile="static"))
