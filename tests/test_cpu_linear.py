"""Prepacked CPU Linear layers: same results as nn.Linear, same model otherwise, and
the same greedy answers for every method (so the method comparison stays fair)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.cli import app
from pmbench.engine.cpu_linear import MIN_ROWS, PrepackedLinear, prepack_linears
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.batch import BatchRunner
from pmbench.engine.runners.prefix import PrefixRunner
from pmbench.engine.runners.rope2d import Rope2DRunner
from pmbench.engine.runners.sequential import SequentialRunner
from pmbench.types import GenerationConfig, Group, Question


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (3, 48), (4, 48), (8, 48), (2, 33, 48)])
def test_matches_nn_linear_on_both_sides_of_the_threshold(shape, bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias).requires_grad_(False)
    packed = PrepackedLinear(linear)
    x = torch.randn(*shape)
    y = packed(x)
    assert y.shape == (*shape[:-1], 80)
    torch.testing.assert_close(y, linear(x), rtol=1e-5, atol=1e-5)


def test_small_inputs_take_the_plain_kernel(monkeypatch):
    linear = nn.Linear(16, 8).requires_grad_(False)
    packed = PrepackedLinear(linear)
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise",
                        lambda *a: calls.append(a[0].shape) or real(*a), raising=False)
    packed(torch.randn(MIN_ROWS - 1, 16))
    assert calls == []
    packed(torch.randn(MIN_ROWS, 16))
    assert calls == [torch.Size([MIN_ROWS, 16])]


def test_swaps_every_linear_and_keeps_the_model(tokenizer):
    model = make_tiny_model("llama", len(tokenizer), tie_word_embeddings=True)
    keys = set(model.state_dict())
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert prepack_linears(model) == n_linear == 2 * 7 + 1
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert set(model.state_dict()) == keys  # checkpoints look the same
    assert prepack_linears(model) == 0  # idempotent


def test_only_cpu_float32():
    fp32 = nn.Sequential(nn.Linear(4, 4))
    assert prepack_linears(fp32) == int(torch.backends.mkldnn.is_available())
    bf16 = nn.Sequential(nn.Linear(4, 4).to(torch.bfloat16))
    assert prepack_linears(bf16) == 0
    elsewhere = nn.Sequential(nn.Linear(4, 4, device="meta"))  # not CPU, as for CUDA
    assert prepack_linears(elsewhere) == 0


def test_every_method_gives_the_same_greedy_answers(tiny_llama, tokenizer):
    packed = copy.deepcopy(tiny_llama)
    prepack_linears(packed)
    group = Group(0, list(range(400, 430)), [
        Question(str(i), list(range(1000 + 50 * i, 1000 + 50 * i + 3 + i))) for i in range(6)])
    gen = GenerationConfig(max_new_tokens=10)
    for runner in (SequentialRunner, BatchRunner, PrefixRunner, Rope2DRunner):
        opts = RunnerOptions(branch=6, rope2d={"ratio": 0.0, "mask": "isolated"})
        plain = runner(tiny_llama, tokenizer, opts).run_group(group, gen)
        fast = runner(packed, tokenizer, opts).run_group(group, gen)
        assert [o.output_ids for o in fast.outputs] == [o.output_ids for o in plain.outputs]


@pytest.mark.parametrize(("flag", "kernel"), [("--cpu-prepack", "onednn-prepacked"),
                                              ("--no-cpu-prepack", "torch")])
def test_run_record_says_which_kernel(flag, kernel, tmp_path, tokenizer):
    folder = tmp_path / "tiny"
    make_tiny_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    res = CliRunner().invoke(app, [
        "run", "--model", str(folder), "--suite", "squad", "--limit", "4", "--branch", "4",
        "--max-new-tokens", "2", "--method", "rope2d", "--output-dir", str(tmp_path / "out"),
        "--json", flag])
    assert res.exit_code == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["linear_kernel"].startswith(kernel)
    assert record["settings"]["cpu_prepack"] == (flag == "--cpu-prepack")


def test_a_freed_model_leaves_no_packed_weight_behind():
    """The compiled op's table of packed weights drops a module's entry with it: a process
    that loads many models (a sweep, the tests) does not keep their weights."""
    import gc

    from pmbench.engine import cpu_linear

    before = set(cpu_linear._PACKED)
    layer = PrepackedLinear(nn.Linear(64, 32))
    assert set(cpu_linear._PACKED) - before == {layer.key}
    del layer
    gc.collect()
    assert set(cpu_linear._PACKED) == before
