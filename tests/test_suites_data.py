"""Hub copies and `pmbench data`: no network here, so a fake hub serves rows in the hub's
schema, built from ../shared/data; a suite read from the fetched copy must ask exactly the
questions it asks from the original files."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.safe_io import read_jsonl
from pmbench.suites import data, load_suite
from pmbench.suites.ceval import SUBJECTS as CEVAL_SUBJECTS

FIXTURES = Path(__file__).parent / "fixtures"
N = 12  # rows per split and subject the fake hub serves
MMLU_SUBJECTS = ["abstract_algebra", "anatomy"]


def _squad_rows(path: Path) -> list[dict]:
    doc = json.loads(path.read_text())
    return [{"id": qa["id"], "title": a["title"], "context": p["context"],
             "question": qa["question"],
             "answers": {"text": [x["text"] for x in qa["answers"]],
                         "answer_start": [x["answer_start"] for x in qa["answers"]]}}
            for a in doc["data"][:2] for p in a["paragraphs"] for qa in p["qas"]]


def _multirc_rows(path: Path) -> list[dict]:
    return [{"paragraph": r["passage"]["text"], "question": q["question"], "answer": a["text"],
             "idx": {"paragraph": r["idx"], "question": q["idx"], "answer": a["idx"]},
             "label": a.get("label", -1)}
            for r in read_jsonl(path, follow=True)[:3] for q in r["passage"]["questions"]
            for a in q["answers"]]


def _csv_rows(path: Path, header: bool) -> list:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f) if header else csv.reader(f))[:N]


def fake_hub(shared: Path):
    """`data.load_hub` stand-in: the hub's schema for each dataset the suites fetch."""
    from datasets import Dataset

    def load(path, name=None, split=None):
        if path == "rajpurkar/squad":
            rows = _squad_rows(shared / "squad" / "dev-v1.1.json")
        elif path == "rajpurkar/squad_v2":
            rows = _squad_rows(FIXTURES / "squad_v2" / "squad" / "dev-v2.0.json")
        elif path == "openai/gsm8k":
            rows = read_jsonl(shared / "gsm8k" / f"{split}.jsonl", follow=True)[:N]
        elif path == "openai/openai_humaneval":
            rows = read_jsonl(shared / "humaneval" / "HumanEval.jsonl", follow=True)[:N]
        elif path == "aps/super_glue":
            local = {"validation": "val"}.get(split, split)
            rows = _multirc_rows(shared / "multirc" / f"{local}.jsonl")
        elif path == "cais/mmlu":
            local = {"validation": "val"}.get(split, split)
            rows = [{"question": r[0], "subject": s, "choices": r[1:5],
                     "answer": "ABCD".index(r[5])}
                    for s in MMLU_SUBJECTS
                    for r in _csv_rows(shared / "mmlu" / local / f"{s}_{local}.csv", False)]
        elif path == "ceval/ceval-exam":
            return {split: Dataset.from_list(
                        _csv_rows(shared / "ceval" / split / f"{name}_{split}.csv", True))
                    for split in ("dev", "val", "test")}
        else:
            raise AssertionError(f"unexpected hub dataset {path}")
        return Dataset.from_list(rows)

    return load


@pytest.fixture
def online(monkeypatch, data_dir):
    monkeypatch.setattr(data, "hub_offline_reason", lambda: None)
    monkeypatch.setattr(data, "load_hub", fake_hub(data_dir))


def prompts(suite, n=8):
    return [(g.meta["context_text"] + q.meta["prompt_text"], q.target)
            for g in suite.groups for q in g.questions][:n]


@pytest.mark.parametrize("name, options", [
    ("squad", {}), ("gsm8k", {"num_fewshot": 3}), ("humaneval", {}), ("multirc", {}),
    ("mmlu", {"subjects": MMLU_SUBJECTS}), ("mmlu", {"subjects": ["anatomy"], "split": "val"}),
    ("ceval", {"subjects": ["law", "logic"]}),
])
def test_download_writes_the_local_layout(tokenizer, tmp_path, data_dir, online, name, options):
    result = CliRunner().invoke(app, ["data", "download", name, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fetched = load_suite(name, tokenizer, data_dir=tmp_path, limit=8, **options)
    original = load_suite(name, tokenizer, data_dir=data_dir, limit=8, **options)
    assert fetched.data_root == tmp_path and original.data_root == data_dir
    assert prompts(fetched) == prompts(original)


def test_download_squad_v2_keeps_unanswerable_questions(tmp_path, online):
    assert CliRunner().invoke(app, ["data", "download", "squad_v2", "--data-dir",
                                    str(tmp_path)]).exit_code == 0
    rebuilt = json.loads((tmp_path / "squad" / "dev-v2.0.json").read_text())
    qas = [qa for p in rebuilt["data"][0]["paragraphs"] for qa in p["qas"]]
    assert [qa["is_impossible"] for qa in qas] == [False, False, True, True]
    assert rebuilt["version"] == "v2.0"


def test_ceval_download_covers_every_subject(tmp_path, online):
    assert CliRunner().invoke(app, ["data", "download", "ceval", "--data-dir",
                                    str(tmp_path)]).exit_code == 0
    assert len(list((tmp_path / "ceval" / "val").glob("*_val.csv"))) == len(CEVAL_SUBJECTS) == 52


def test_suite_fetches_the_hub_copy_into_the_cache(tokenizer, tmp_path, monkeypatch, online):
    monkeypatch.setenv("PMBENCH_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path / "cache"))
    suite = load_suite("humaneval", tokenizer, limit=2)
    assert suite.data_root == tmp_path / "cache" / "data"
    assert (tmp_path / "cache" / "data" / "humaneval" / "HumanEval.jsonl").is_file()


def test_failed_fetch_is_one_line(tokenizer, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\nRetrying...")

    monkeypatch.setenv("PMBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "hub_offline_reason", lambda: None)
    monkeypatch.setattr(data, "load_hub", broken)
    with pytest.raises(data.BadInput, match=r"could not fetch openai/gsm8k.*Hub$"):
        load_suite("gsm8k", tokenizer)


def test_data_status(monkeypatch, data_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["data", "status"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines()
             if line.count("│") > 3 and line.split("│")[1].strip()}
    for name in ("squad", "gsm8k", "mmlu", "ceval", "humaneval", "multirc"):
        assert str(data_dir) in lines[name] and "ok" in lines[name]
    assert "missing" in lines["squad_v2"] and "rajpurkar/squad_v2" in lines["squad_v2"]


def test_download_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["data", "download", "gsm8k"])
    assert result.exit_code == 2
    assert "offline" in result.output and "--data-dir" in result.output
    assert "Traceback" not in result.output
    assert CliRunner().invoke(app, ["data", "download", "gsm9k"]).exit_code == 2
