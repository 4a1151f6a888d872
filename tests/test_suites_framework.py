"""The suite framework: registry, options, data resolution, grouping and token ids."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.errors import BadInput
from pmbench.suites import available_suites, load_suite

FIXTURES = Path(__file__).parent / "fixtures"
SUITES = ["squad", "gsm8k", "mmlu", "ceval", "humaneval", "multirc"]


def test_available_suites_come_from_the_yaml_files():
    suites = available_suites()
    assert set(suites) == {*SUITES, "squad_v2", "race", "quality", "synthetic"}
    assert all(desc for desc in suites.values())


@pytest.mark.parametrize("options, message", [
    ({"branch": 0}, "--branch"),
    ({"limit": 0}, "--limit"),
    ({"num_fewshot": -1}, "--num-fewshot"),
    ({"samples_per_task": 0}, "--samples-per-task"),
    ({"samples_per_task": 4}, "humaneval"),           # squad is not sampled
    ({"split": "train"}, "valid: validation"),
    ({"subjects": ["anatomy"]}, "no subjects"),
])
def test_bad_options_are_bad_input(tokenizer, options, message):
    with pytest.raises(BadInput, match=message):
        load_suite("squad", tokenizer, **options)


def test_unknown_suite_and_subject(tokenizer):
    with pytest.raises(BadInput, match="valid: ceval, gsm8k, humaneval, mmlu, multirc, "
                                       "quality, race, squad"):
        load_suite("squat", tokenizer)
    with pytest.raises(BadInput, match="unknown mmlu subject.*valid: abstract_algebra"):
        load_suite("mmlu", tokenizer, subjects=["anatomy", "astrology"])
    with pytest.raises(BadInput, match="valid: val"):
        load_suite("ceval", tokenizer, split="test")  # the test split has no answers


def test_missing_data_names_both_options(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("PMBENCH_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInput) as exc:
        load_suite("gsm8k", tokenizer)
    msg = str(exc.value)
    assert "--data-dir" in msg and "$PMBENCH_DATA" in msg and "openai/gsm8k" in msg
    assert "HF_HUB_OFFLINE" in msg and "\n" not in msg


def test_an_explicit_data_dir_without_the_files_is_bad_input(tokenizer, tmp_path, monkeypatch):
    """No fall-back to $PMBENCH_DATA or ../shared/data: the folder asked for, or an error."""
    from conftest import SHARED_DATA

    monkeypatch.setenv("PMBENCH_DATA", str(SHARED_DATA))  # holds gsm8k: must not be used
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="lacks suite gsm8k's files .* the only place looked"):
        load_suite("gsm8k", tokenizer, data_dir=tmp_path / "empty")
    res = CliRunner().invoke(app, ["run", "--method", "batch", "--suite", "gsm8k",
                                   "--data-dir", str(tmp_path / "empty")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "lacks suite gsm8k's files" in res.stderr


def test_unreachable_hub_fails_fast(tokenizer, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset but no hub: a clear error in seconds, not datasets' retries."""
    monkeypatch.setenv("PMBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("PMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    t0 = time.perf_counter()
    with pytest.raises(BadInput, match="cannot reach 127.0.0.1"):
        load_suite("humaneval", tokenizer)
    assert time.perf_counter() - t0 < 10


def test_empty_data_is_bad_input(tokenizer, tmp_path, data_dir):
    (tmp_path / "gsm8k").mkdir()
    shutil.copy(data_dir / "gsm8k" / "train.jsonl", tmp_path / "gsm8k")
    (tmp_path / "gsm8k" / "test.jsonl").write_text("")
    with pytest.raises(BadInput, match="no questions"):
        load_suite("gsm8k", tokenizer, data_dir=tmp_path)


def test_data_dir_comes_before_pmbench_data(tokenizer, tmp_path, data_dir):
    (tmp_path / "humaneval").mkdir()
    lines = (data_dir / "humaneval" / "HumanEval.jsonl").read_text().splitlines()
    (tmp_path / "humaneval" / "HumanEval.jsonl").write_text("\n".join(lines[:3]) + "\n")
    suite = load_suite("humaneval", tokenizer, data_dir=tmp_path)
    assert sum(len(g.questions) for g in suite.groups) == 3
    assert suite.record_info()["data_source"] == str(tmp_path)


@pytest.mark.parametrize("name", SUITES)
def test_context_and_question_ids_concatenate_to_the_whole_prompt(tokenizer, name):
    """Separate tokenization (DESIGN) loses nothing: the ids equal one joint tokenization."""
    suite = load_suite(name, tokenizer, branch=4, limit=8)
    assert [len(g.questions) for g in suite.groups] == [4, 4]
    for group in suite.groups:
        for q in group.questions:
            text = group.meta["context_text"] + q.meta["prompt_text"]
            joint = tokenizer.encode(text, add_special_tokens=False)
            assert group.context_ids + q.prompt_ids == joint
    if name == "humaneval":
        assert suite.groups[0].context_ids == []


def test_limit_takes_questions_in_data_order(tokenizer):
    suite = load_suite("squad", tokenizer, branch=4, limit=10)
    assert [len(g.questions) for g in suite.groups] == [4, 4, 2]
    assert suite.groups[0].questions[0].doc_id == "56be4db0acb8001400a502ec"
    assert [g.group_id for g in suite.groups] == [0, 1, 2]


def test_squad_groups_extend_the_context_with_the_next_paragraphs(tokenizer, data_dir):
    article = json.loads((data_dir / "squad" / "dev-v1.1.json").read_text())["data"][0]
    p0, p1 = (p["context"] for p in article["paragraphs"][:2])
    assert len(article["paragraphs"][0]["qas"]) == 30
    suite = load_suite("squad", tokenizer, branch=8, limit=40)
    g = suite.groups
    assert [len(x.questions) for x in g] == [8, 8, 8, 8, 8]
    assert g[0].meta["context_text"] == f"Context: {p0}\n"
    assert g[0].context_ids == g[2].context_ids
    # 6 questions left in paragraph 0, then 2 from paragraph 1, which joins the context
    assert g[3].meta["context_text"] == f"Context: {p0}\n{p1}\n"
    assert g[3].meta["paragraphs"] == 2
    assert g[4].meta["context_text"] == f"Context: {p1}\n"


def test_squad_groups_stop_at_the_article_end(tokenizer):
    # fixture: paragraph 1 has 1 question, paragraph 2 has 3
    suite = load_suite("squad_v2", tokenizer, data_dir=FIXTURES / "squad_v2", branch=3)
    assert [[q.doc_id for q in g.questions] for g in suite.groups] == [
        ["tt-1", "tt-2", "tt-3"], ["tt-4"]]
    assert suite.groups[0].meta["paragraphs"] == 2 and suite.groups[1].meta["paragraphs"] == 1


def test_mmlu_groups_share_one_subject_prefix(tokenizer):
    suite = load_suite("mmlu", tokenizer, branch=8, limit=120)
    sizes = [len(g.questions) for g in suite.groups]
    assert sizes == [8] * 12 + [4] + [8] * 2 + [4]  # abstract_algebra has 100 test items
    subjects = [g.meta["subject"] for g in suite.groups]
    assert subjects == ["abstract_algebra"] * 13 + ["anatomy"] * 3
    for g in suite.groups:
        assert {q.meta["subject"] for q in g.questions} == {g.meta["subject"]}
    assert suite.groups[0].context_ids == suite.groups[12].context_ids
    assert suite.groups[0].context_ids != suite.groups[13].context_ids


def test_subjects_and_split_select_the_items(tokenizer):
    suite = load_suite("mmlu", tokenizer, split="val", subjects=["virology", "anatomy"], branch=64)
    assert [(g.meta["subject"], len(g.questions)) for g in suite.groups] == [
        ("anatomy", 14), ("virology", 18)]  # subject order, val sizes from the data README
    assert suite.record_info()["split"] == "val"


def test_num_fewshot_changes_the_shared_prefix(tokenizer):
    zero = load_suite("gsm8k", tokenizer, num_fewshot=0, limit=1).groups[0]
    two = load_suite("gsm8k", tokenizer, num_fewshot=2, limit=1).groups[0]
    assert zero.context_ids == [] and zero.meta["context_text"] == ""
    assert two.meta["context_text"].count("Question:") == 2
    assert zero.questions[0].prompt_ids == two.questions[0].prompt_ids[-len(
        zero.questions[0].prompt_ids):]


def test_generation_config(tokenizer):
    mmlu = load_suite("mmlu", tokenizer, limit=1)
    gen = mmlu.generation(None, False, [2])
    letters = [tokenizer.encode(f" {c}", add_special_tokens=False)[0] for c in "ABCD"]
    assert gen.score_token_ids == letters and gen.max_new_tokens == 1
    gsm = load_suite("gsm8k", tokenizer, limit=1).generation(64, True, [2])
    assert gsm.max_new_tokens == 64 and gsm.ignore_eos and gsm.eos_token_ids == [2]
    assert gsm.stop_strings == ["Question:", "</s>", "<|im_end|>"] and gsm.temperature == 0
    assert gsm.score_token_ids is None


def test_humaneval_samples_per_task(tokenizer):
    suite = load_suite("humaneval", tokenizer, samples_per_task=3, limit=2, branch=4)
    ids = [q.doc_id for g in suite.groups for q in g.questions]
    assert ids == [f"HumanEval/{t}#{s}" for t in (0, 1) for s in range(3)]
    gen = suite.generation()
    assert gen.temperature == 0.2 and gen.top_p == 0.95 and gen.max_new_tokens == 1024
    greedy = load_suite("humaneval", tokenizer, limit=1).generation()
    assert greedy.temperature == 0.0 and greedy.top_p == 1.0


def test_chat_template_wraps_the_prompt_as_lm_eval(tokenizer):
    plain = load_suite("mmlu", tokenizer, limit=1)
    chat = load_suite("mmlu", tokenizer, limit=1, apply_chat_template=True)
    g, q = chat.groups[0], chat.groups[0].questions[0]
    pg, pq = plain.groups[0], plain.groups[0].questions[0]
    description = ("The following are multiple choice questions (with answers) about "
                   "abstract algebra.\n\n")
    shots_and_question = (pg.meta["context_text"] + pq.meta["prompt_text"])[len(description):]
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": description},
         {"role": "user", "content": shots_and_question}],
        tokenize=False, add_generation_prompt=True)
    assert g.meta["context_text"] + q.meta["prompt_text"] == expected
    assert g.context_ids + q.prompt_ids == tokenizer.encode(expected, add_special_tokens=False)
    # the answer starts the assistant turn: letters without the space
    letters = [tokenizer.encode(c, add_special_tokens=False)[0] for c in "ABCD"]
    assert chat.generation().score_token_ids == letters
    assert chat.record_info()["apply_chat_template"] is True


def test_record_info(tokenizer, data_dir):
    info = load_suite("ceval", tokenizer, limit=3, branch=2).record_info()
    assert info["split"] == "val" and info["num_fewshot"] == 5
    assert info["data_source"] == str(data_dir) and info["n_questions"] == 3
    assert info["n_groups"] == 2 and info["apply_chat_template"] is False
    assert info["score_tokens"] == {"A": " A", "B": " B", "C": " C", "D": " D"}


def test_a_new_suite_is_a_yaml_file(tokenizer, tmp_path, monkeypatch):
    (tmp_path / "gsm8k_0shot.yaml").write_text(
        "description: GSM8K without shots\n"
        "implementation: pmbench.suites.gsm8k:GSM8KSuite\n"
        "data: {files: ['gsm8k/{split}.jsonl', gsm8k/train.jsonl], hub: openai/gsm8k}\n"
        "split: test\nsplits: [test]\nnum_fewshot: 0\n"
        "prompt: {question: \"Q: {question}\\nA:\"}\n"
        "stop: ['Q:']\nmax_new_tokens: 128\n")
    monkeypatch.setenv("PMBENCH_SUITES", str(tmp_path))
    assert available_suites()["gsm8k_0shot"] == "GSM8K without shots"
    suite = load_suite("gsm8k_0shot", tokenizer, limit=1)
    assert suite.groups[0].questions[0].meta["prompt_text"].startswith("Q: Janet’s ducks")
    assert suite.generation().stop_strings == ["Q:"]


class NewlineMergingTokenizer:
    """A toy tokenizer that pre-tokenizes as Qwen2 / Llama-3 do around newlines: a run of
    newlines is one token ("\\n\\n" before a word stays whole), unlike SmolLM2's GPT-2 rule."""

    eos_token_id = 0
    chat_template = None
    pieces = re.compile(r"\s*[\r\n]+|\s+(?!\S)|\s+| ?[^\s]+")

    def __init__(self):
        self.vocab: dict[str, int] = {"<eos>": 0}

    def encode(self, text, add_special_tokens=True):
        return [self.vocab.setdefault(p, len(self.vocab)) for p in self.pieces.findall(text)]

    def decode(self, ids, skip_special_tokens=False):
        inverse = {i: p for p, i in self.vocab.items()}
        return "".join(inverse[i] for i in ids)


def test_the_boundary_cut_follows_the_tokenizer(tokenizer):
    toy = NewlineMergingTokenizer()
    suite = load_suite("gsm8k", toy, num_fewshot=2, limit=2, branch=2)
    group = suite.groups[0]
    assert group.meta["context_text"].endswith("\n\n")  # kept whole: one "\n\n" token
    for q in group.questions:
        assert not q.meta["prompt_text"].startswith("\n")
        joint = toy.encode(group.meta["context_text"] + q.meta["prompt_text"])
        assert group.context_ids + q.prompt_ids == joint
    smol = load_suite("gsm8k", tokenizer, num_fewshot=2, limit=1).groups[0]
    assert smol.meta["context_text"].endswith("#### 10\n")  # SmolLM2: "\n" | "\nQuestion"
    assert smol.questions[0].meta["prompt_text"].startswith("\nQuestion: Janet")


def test_suite_knowledge_comes_from_the_yaml(tmp_path, monkeypatch):
    from pmbench.suites import display_name, metric, metric_keys, primary_metric, suite_info

    info = suite_info("gsm8k")
    assert info.display_name == "GSM8K" and info.primary_metric == "exact_match"
    assert info.data_files == {"eval": "gsm8k/test.jsonl", "shots": "gsm8k/train.jsonl"}
    assert suite_info("mmlu", split="val").data_files["eval"] == "mmlu/val"
    assert display_name("squad_v2") == "SQuAD v2.0" and primary_metric("multirc") == "f1a"
    assert metric_keys("multirc") == ("acc", "em", "f1a")
    assert (metric("squad", "em").label, metric("squad").words) == ("EM", "F1")
    # a suite no YAML describes (a record from elsewhere): its name, generic metrics
    assert display_name("toy") == "toy" and metric("toy").label == "Acc"
    assert primary_metric("toy", {"em": 0.5, "f1": 0.6}) == "f1"
    assert primary_metric("toy") == "acc" and {"acc", "f1a"} <= set(metric_keys("toy"))
    # a new suite's YAML is all reports need
    (tmp_path / "arc.yaml").write_text(
        "implementation: pmbench.suites.mmlu:MMLUSuite\ndisplay_name: ARC\n"
        "primary_metric: acc_norm\nmetrics: {acc_norm: {label: Acc norm}}\n"
        "data: {files: {eval: 'arc/{split}'}, hub: allenai/ai2_arc}\n"
        "split: test\nsplits: [test]\n")
    monkeypatch.setenv("PMBENCH_SUITES", str(tmp_path))
    assert display_name("arc") == "ARC" and metric_keys("arc") == ("acc_norm",)
    assert metric("arc").words == "Acc norm" and suite_info("arc").data_files == {
        "eval": "arc/test"}
