"""RACE and QuALITY on hand-written fixtures in the hub's own parquet layout
(tests/fixtures/reading): grouping by document, prompts, few-shot, scoring, the oracle,
hub downloads, `pmbench data status`, and documents longer than the model's context."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.errors import BadInput
from pmbench.suites import data, load_suite
from pmbench.types import QuestionOutput

READING = Path(__file__).parent / "fixtures" / "reading"


def _build():
    spec = importlib.util.spec_from_file_location("reading_build", READING / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def race(tokenizer, **options):
    return load_suite("race", tokenizer, data_dir=READING, **options)


def quality(tokenizer, **options):
    return load_suite("quality", tokenizer, data_dir=READING, **options)


def picked(letter_index: int) -> QuestionOutput:
    logits = [0.0, 0.0, 0.0, 0.0]
    logits[letter_index] = 1.0
    return QuestionOutput([], "", 0.0, first_logits=logits)


def test_fixtures_are_the_texts_in_the_hub_layout():
    build = _build()
    expected = build.tables(build.load_texts())
    files = sorted(str(p.relative_to(READING)) for p in READING.rglob("*.parquet"))
    assert files == sorted(expected)
    for relative, table in expected.items():
        assert pq.read_table(READING / relative).to_pylist() == table.to_pylist(), relative


def test_race_groups_are_passages_and_their_questions_branches(tokenizer):
    suite = race(tokenizer, branch=8)
    assert [g.meta["document"] for g in suite.groups] == [
        "middle4.txt", "middle5.txt", "high4.txt", "high5.txt"]
    assert [len(g.questions) for g in suite.groups] == [4, 3, 4, 3]  # never across passages
    small = race(tokenizer, branch=3)
    assert [(g.meta["document"], len(g.questions)) for g in small.groups] == [
        ("middle4.txt", 3), ("middle4.txt", 1), ("middle5.txt", 3), ("high4.txt", 3),
        ("high4.txt", 1), ("high5.txt", 3)]
    q = suite.groups[0].questions[1]
    assert q.doc_id == "middle4.txt/1" and q.target == "C" and q.meta["gold_index"] == 2
    assert q.meta["prompt_text"] == ("\nQuestion: What does Anna's father do?\nA. He is a "
                                     "doctor.\nB. He is a teacher.\nC. He is a fisherman.\n"
                                     "D. He is a driver.\nAnswer:")


def test_race_shots_are_the_first_train_passages_of_the_level(tokenizer):
    context = race(tokenizer, subjects=["high"]).groups[0].meta["context_text"]
    assert context.startswith("The following are reading comprehension questions (with "
                              "answers) about English exam passages.\n\nArticle: For "
                              "centuries, lighthouses")
    assert "Answer: C\n\nQuestion: What is the passage mainly about?" in context
    assert context.count("Article: ") == 3  # two shot passages, then the test passage
    assert context.endswith("during the Second World War.\n")
    zero = race(tokenizer, subjects=["middle"], num_fewshot=0).groups[0].meta["context_text"]
    assert zero.count("Article: ") == 1 and "Answer:" not in zero
    with pytest.raises(BadInput, match="only 2 train documents for --num-fewshot 3"):
        race(tokenizer, num_fewshot=3)
    with pytest.raises(BadInput, match="unknown race level.*valid: middle, high"):
        race(tokenizer, subjects=["college"])
    assert [g.meta["document"] for g in race(tokenizer, split="validation", branch=8).groups] == [
        "middle3.txt", "high3.txt"]


def test_race_scores_letters_and_breaks_down_by_level(tokenizer):
    suite = race(tokenizer, branch=8)
    questions = [q for g in suite.groups for q in g.questions]
    samples = [suite.score(q, picked(q.meta["gold_index"] if q.doc_id.startswith("middle")
                                     else 0)) for q in questions]
    assert samples[0] | {"choice_logits": None} == {
        "target": "B", "prediction": "B", "choice_logits": None, "acc": 1.0, "score": 1.0,
        "document": "middle4.txt", "level": "middle"}
    m = suite.aggregate(samples)
    # high: answers B C B A and B A C, all picked A: 2 of 7 right
    assert m == {"acc": pytest.approx(9 / 14), "acc_middle": 1.0, "acc_high": pytest.approx(2 / 7),
                 "n": 14, "n_documents": 4}
    assert race(tokenizer, subjects=["high"]).aggregate(samples[7:])["acc_middle"] is None


def test_quality_gathers_an_articles_questions_from_both_writers(tokenizer):
    suite = quality(tokenizer, branch=16)
    assert [(g.meta["document"], g.meta["title"], len(g.questions)) for g in suite.groups] == [
        ("validation/0", "THE LAST SIGNAL", 5), ("validation/1", "A MARKET IN WINTER", 4)]
    signal = suite.groups[0]
    assert [q.meta["difficulty"] for q in signal.questions] == [
        "easy", "hard", "easy", "easy", "hard"]
    assert signal.questions[3].meta["prompt_text"].startswith(
        "\nQuestion: How long did the reply from Earth take?")
    assert signal.meta["context_text"].count("Article: THE LAST SIGNAL\n\nBy the time") == 1
    samples = [suite.score(q, picked(q.meta["gold_index"] if q.meta["difficulty"] == "hard"
                                     else 3)) for g in suite.groups for q in g.questions]
    assert suite.aggregate(samples) == {"acc": pytest.approx(4 / 9), "acc_easy": 0.0,
                                        "acc_hard": 1.0, "n": 9, "n_documents": 2}
    with pytest.raises(BadInput, match="no few-shot examples"):
        quality(tokenizer, num_fewshot=1)


@pytest.mark.parametrize("suite, n", [("race", 14), ("quality", 9)])
def test_the_oracle_scores_100_percent(tokenizer, tmp_path, suite, n):
    res = CliRunner().invoke(app, ["run", "--method", "oracle", "--suite", suite, "--branch",
                                   "4", "--data-dir", str(READING), "--output-dir",
                                   str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)["metrics"]
    assert metrics["acc"] == 1.0 and metrics["n"] == n
    # Table 1 names the suite from its YAML, with no code of its own
    table = CliRunner().invoke(app, ["table", "1", "--results", str(tmp_path), "--format",
                                     "csv"])
    assert table.exit_code == 0, table.output
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert rows[0][f"{ {'race': 'RACE', 'quality': 'QuALITY'}[suite]} Acc"] == "100"


# --- longer than the model's context --------------------------------------------------------


def test_a_document_past_the_context_is_refused_in_one_line(tokenizer):
    with pytest.raises(BadInput) as err:
        quality(tokenizer, context_window=200)
    message = str(err.value)
    assert "\n" not in message and "document validation/0 ('THE LAST SIGNAL')" in message
    assert "but the model reads 200" in message and "--truncate-documents" in message
    with pytest.raises(BadInput, match="lower --num-fewshot"):  # no document to cut
        load_suite("mmlu", tokenizer, limit=1, context_window=200)
    quality(tokenizer, context_window=4096)  # fits: nothing to say


@pytest.mark.parametrize("branch, new", [(1, 1), (4, 1), (16, 24)])
def test_truncate_documents_cuts_each_group_to_fit(tokenizer, branch, new):
    full = quality(tokenizer, branch=branch, max_new_tokens=new)
    cut = quality(tokenizer, branch=branch, max_new_tokens=new, context_window=200,
                  truncate_documents=True)
    for before, after in zip(full.groups, cut.groups, strict=True):
        longest = max(len(q.prompt_ids) for q in after.questions)
        assert len(after.context_ids) + longest + new <= 200
        assert [q.prompt_ids for q in after.questions] == [q.prompt_ids for q in before.questions]
        article = before.meta["context_text"].split("Article: ")[1]
        kept = after.meta["context_text"].split("Article: ")[1].rstrip("\n")
        assert article.startswith(kept) and len(kept) < len(article)  # the start, kept
    info = cut.record_info()
    assert info["truncate_documents"] and info["context_window"] == 200
    assert [c["group_id"] for c in info["truncated_documents"]] == list(range(len(cut.groups)))
    assert all(0 < c["kept"] < c["tokens"] for c in info["truncated_documents"])
    with pytest.raises(BadInput, match="even with its document cut to nothing"):
        quality(tokenizer, context_window=60, truncate_documents=True)


def test_run_refuses_or_truncates_before_the_model_runs(tokenizer, tmp_path):
    from conftest import make_tiny_model

    model = tmp_path / "tiny-200"
    make_tiny_model("llama", len(tokenizer), max_position_embeddings=200).save_pretrained(model)
    tokenizer.save_pretrained(model)
    argv = ["run", "--method", "rope2d", "--branch", "8", "--suite", "quality", "--model",
            str(model), "--data-dir", str(READING), "--output-dir", str(tmp_path), "--json"]
    refused = CliRunner().invoke(app, argv)
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.output
    assert "needs 305 positions (context 234 + question 70 + answer 1)" in refused.stderr
    assert "but the model reads 200" in refused.stderr
    res = CliRunner().invoke(app, [*argv, "--truncate-documents"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["settings"]["truncate_documents"] is True
    cuts = record["suite_info"]["truncated_documents"]
    assert [c["document"] for c in cuts] == ["validation/0", "validation/1"]
    samples = [json.loads(line) for line in
               (tmp_path / record["run_id"] / "samples.jsonl").read_text().splitlines()]
    assert max(len(s["prompt_ids"]) + len(s["output_ids"]) for s in samples) <= 200


# --- data: status and hub downloads ---------------------------------------------------------


def test_data_status_lists_both_with_their_source(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path))
    found = CliRunner().invoke(app, ["data", "status", "--data-dir", str(READING)])
    missing = CliRunner().invoke(app, ["data", "status", "--data-dir", str(tmp_path)])
    for result, name, hub in ((found, "race", "ehovy/race"), (found, "quality", None),
                              (missing, "race", "ehovy/race"),
                              (missing, "quality", "emozilla/quality")):
        assert result.exit_code == 0, result.output
        line = next(x for x in result.output.splitlines() if x.split("│")[1:2]
                    and x.split("│")[1].strip() == name)
        if result is found:
            assert str(READING) in line and "ok" in line
        else:
            assert hub in line and "missing" in line


def fake_hub(path, name=None, split=None):
    """`data.load_hub` for ehovy/race and emozilla/quality, serving the fixtures' rows."""
    from datasets import Dataset

    if path == "ehovy/race":
        file = READING / "race" / name / f"{split}-00000-of-00001.parquet"
    else:
        assert path == "emozilla/quality" and name is None
        file = next((READING / "quality" / "data").glob(f"{split}-*.parquet"))
    return Dataset.from_list(pq.read_table(file).to_pylist())


@pytest.mark.parametrize("name", ["race", "quality"])
def test_download_writes_the_hub_layout(tokenizer, tmp_path, monkeypatch, name):
    monkeypatch.setattr(data, "hub_offline_reason", lambda: None)
    monkeypatch.setattr(data, "load_hub", fake_hub)
    result = CliRunner().invoke(app, ["data", "download", name, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fetched = load_suite(name, tokenizer, data_dir=tmp_path, branch=4)
    original = load_suite(name, tokenizer, data_dir=READING, branch=4)
    assert fetched.data_root == tmp_path
    assert [(g.context_ids, [q.prompt_ids for q in g.questions]) for g in fetched.groups] == [
        (g.context_ids, [q.prompt_ids for q in g.questions]) for g in original.groups]
