"""Suites in YAML: `include:` of a template, the keys reports read, the training-split hook,
and a new suite added as ARCHITECTURE.md's "Adding a suite" says (a YAML file in a folder
of $PMBENCH_SUITES, no Python): listed, loaded, scored, run and reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.engine.runners.oracle import OracleRunner
from pmbench.errors import BadInput
from pmbench.suites import (
    SUITES_DIR,
    available_suites,
    core_suites,
    family_suites,
    load_suite,
    report_order,
    suite_config,
    suite_info,
    training_suites,
)
from pmbench.suites.ceval import CATEGORIES as CEVAL_CATEGORIES
from pmbench.suites.mmlu import CATEGORIES as MMLU_CATEGORIES
from pmbench.train.sources import FINETUNE_SOURCES

TINY_YAML = """\
include: _multiple_choice.yaml   # the template mmlu, ceval, race and quality share
description: a tiny multiple-choice suite in MMLU's layout, 2-shot
implementation: pmbench.suites.mmlu:MMLUSuite
display_name: TinyMC
has_subjects: true
breakdown: {field: category, values: [other]}   # subjects outside MMLU's map: other
data: {files: {eval: "tinymc/{split}", shots: tinymc/dev}, hub: none/tinymc}
split: test
splits: [test]
num_fewshot: 2
prompt:
  description: "The following are multiple choice questions (with answers) about {subject}.\\n\\n"
  question: "{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:"
"""
QUESTIONS = [
    ("What colour is the sky on a clear day?", "Green", "Blue", "Red", "Black", "B"),
    ("What colour is fresh grass?", "Green", "Purple", "White", "Orange", "A"),
    ("What colour is snow?", "Brown", "Blue", "White", "Pink", "C"),
]
SHOTS = [
    ("What colour is a ripe banana?", "Yellow", "Blue", "Grey", "Black", "A"),
    ("What colour is coal?", "White", "Red", "Green", "Black", "D"),
]


@pytest.fixture
def tiny_suite(tmp_path, monkeypatch):
    """The folders a user would make: one YAML under $PMBENCH_SUITES, the data elsewhere."""
    suites, data = tmp_path / "suites", tmp_path / "data"
    suites.mkdir()
    (suites / "tinymc.yaml").write_text(TINY_YAML)
    for split, rows in (("test", QUESTIONS), ("dev", SHOTS)):
        (data / "tinymc" / split).mkdir(parents=True)
        (data / "tinymc" / split / f"colours_{split}.csv").write_text(
            "".join(",".join(row) + "\n" for row in rows))
    monkeypatch.setenv("PMBENCH_SUITES", str(suites))
    return data


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_new_suite_is_listed_loads_and_scores(tiny_suite, tokenizer):
    assert available_suites()["tinymc"].startswith("a tiny multiple-choice suite")
    assert "tinymc" in invoke("suites").output
    suite = load_suite("tinymc", tokenizer, data_dir=tiny_suite, branch=2)
    assert [len(g.questions) for g in suite.groups] == [2, 1]
    context = suite.groups[0].meta["context_text"]
    assert "about colours.\n\nWhat colour is a ripe banana?" in context
    assert "D. Black\nAnswer: A\n\n" in context  # the template's delimiters
    runner = OracleRunner(None, tokenizer)
    gen = suite.generation(None, False, [tokenizer.eos_token_id])
    questions = [q for g in suite.groups for q in g.questions]
    outputs = [o for g in suite.groups for o in runner.run_group(g, gen).outputs]
    samples = suite.score_all(questions, outputs)
    assert [s["prediction"] for s in samples] == ["B", "A", "C"]
    assert suite.aggregate(samples) == {"acc": 1.0, "acc_macro": 1.0, "acc_other": 1.0,
                                        "n": 3, "n_subjects": 1}
    outputs[0].first_logits = list(reversed(outputs[0].first_logits))  # now it says C
    assert suite.score_all(questions, outputs)[0]["acc"] == 0.0


def test_a_new_suite_runs_and_reports(tiny_suite, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    res = invoke("run", "--method", "oracle", "--suite", "tinymc", "--model", tiny_model_dir,
                 "--branch", "2", "--data-dir", tiny_suite, "--output-dir", out,
                 "--run-id", "tiny", "--json")
    assert res.exit_code == 0, res.output
    record = json.loads((out / "tiny" / "run.json").read_text())
    assert record["suite"] == "tinymc" and record["metrics"]["acc"] == 1.0
    table = invoke("table", "1", "--results", out)
    assert table.exit_code == 0, table.output
    assert "TinyMC" in table.output and "100.0" in table.output


def test_include_merges_the_template_under_the_suite(tmp_path, monkeypatch):
    (tmp_path / "_base.yaml").write_text("stop: [x]\nmax_new_tokens: 3\nprompt: {a: 1}\n")
    (tmp_path / "child.yaml").write_text(
        "include: _base.yaml\nprompt: {b: 2}\nmax_new_tokens: 5\n"
        "implementation: pmbench.suites.mmlu:MMLUSuite\n")
    monkeypatch.setenv("PMBENCH_SUITES", str(tmp_path))
    assert "_base" not in available_suites()  # a template, not a suite
    child = suite_config("child")
    # the including file's top-level keys win, whole (lm-eval's include: no deep merge)
    assert (child["stop"], child["max_new_tokens"], child["prompt"]) == (["x"], 5, {"b": 2})
    assert "include" not in child
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\n")
    (tmp_path / "lost.yaml").write_text("include: _nowhere.yaml\n")
    with pytest.raises(BadInput, match="includes itself"):
        suite_config("loop")
    with pytest.raises(BadInput, match="include '_nowhere.yaml' not found"):
        suite_config("lost")
    for name in ("loop", "lost"):
        (tmp_path / f"{name}.yaml").unlink()
    # a user's suite may include a built-in one (looked up in suites/ after its own folder)
    (tmp_path / "mmlu_3shot.yaml").write_text("include: mmlu.yaml\nnum_fewshot: 3\n")
    assert suite_config("mmlu_3shot") == {**suite_config("mmlu"), "num_fewshot": 3,
                                          "name": "mmlu_3shot"}


def test_the_template_is_shared_and_changes_nothing():
    template = (SUITES_DIR / "_multiple_choice.yaml").read_text()
    for name in ("mmlu", "ceval", "race", "quality"):
        assert "include: _multiple_choice.yaml" in (SUITES_DIR / f"{name}.yaml").read_text()
        config = suite_config(name)
        assert config["choices"] == ["A", "B", "C", "D"] and config["max_new_tokens"] == 1
        assert (config["target_delimiter"], config["fewshot_delimiter"]) == (" ", "\n\n")
        assert suite_info(name).metric().label == "Acc"
    assert "fewshot_delimiter" in template


def test_the_breakdown_keys_name_every_category():
    for name, categories in (("mmlu", MMLU_CATEGORIES), ("ceval", CEVAL_CATEGORIES)):
        assert suite_config(name)["breakdown"] == {
            "field": "category", "values": sorted(set(categories.values()))}


def test_what_reports_need_is_in_the_yaml():
    """The paper's order of suites, Table 1's core columns, Table 5's family (the values
    pmbench/report held as SUITE_ORDER, CORE_SUITES and SQUAD_SUITES) and the data version."""
    assert report_order() == ("mmlu", "ceval", "gsm8k", "humaneval", "squad", "squad_v2",
                              "multirc")
    assert core_suites() == ("mmlu", "ceval", "gsm8k", "humaneval")
    assert family_suites("squad") == ("squad", "squad_v2") and family_suites("mmlu") == (
        "mmlu",)
    assert [suite_info(n).version for n in ("squad", "squad_v2", "mmlu")] == ["1.1", "2.0",
                                                                                None]


def test_training_sources_come_from_the_suites_and_not_at_import():
    assert set(FINETUNE_SOURCES) <= set(training_suites())
    code = ("import pmbench.suites as s, pmbench.train.sources, pmbench.train.settings; "
            "print(s._read_yaml.cache_info().currsize)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "0"  # no YAML read on import
