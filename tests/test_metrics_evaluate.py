"""pmbench's metrics are `evaluate` modules: loadable offline by path, described by `_info`,
loaded once per process, and the scores of stored runs do not change through them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pmbench.suites.metrics import METRICS_DIR, NAMES, load, path

ROOT = Path(__file__).resolve().parents[1]

# Loads every metric by its path with the network cut off (any connection raises) and the
# hub not declared offline, so a fetch would fail loudly; prints one compute per metric.
_OFFLINE = """
import json, socket, sys
def no_network(*args, **kwargs):
    raise RuntimeError("network access")
socket.socket.connect = no_network
socket.create_connection = no_network
import evaluate
inputs = {
    "squad": dict(predictions=["Denver"], references=[["Denver Broncos"]]),
    "gsm8k": dict(predictions=["#### 18"], references=["18"]),
    "pass_at_k": dict(predictions=[[True, False]], k=[1]),
    "multirc": dict(predictions=[1], references=[1], question_ids=["q"]),
}
out = {}
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    metric = evaluate.load(path)
    out[name] = [metric.name, metric.compute(**inputs[name])]
print(json.dumps(out))
"""


def test_every_metric_loads_offline_by_path(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE",
                                                                      "HF_DATASETS_OFFLINE"))}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_HOME"] = str(tmp_path / "home")
    args = [a for name in NAMES for a in (name, str(path(name)))]
    res = subprocess.run([sys.executable, "-c", _OFFLINE, *args], env=env, text=True,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["squad"] == ["squad", {"exact_match": 0.0, "f1": pytest.approx(2 / 3), "total": 1,
                                      "HasAns_exact_match": 0.0,
                                      "HasAns_f1": pytest.approx(2 / 3), "HasAns_total": 1}]
    assert out["gsm8k"][1] == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}
    assert out["pass_at_k"][1] == {"pass@1": 0.5}
    assert out["multirc"][1] == {"exact_match": 1.0, "f1_a": 1.0}
    # evaluate copied each script into the modules cache it was given, nowhere else
    copied = {p.parent.parent.name for p in (tmp_path / "modules").rglob("*.py")
              if p.name != "__init__.py"}
    assert copied == set(NAMES)


def test_each_script_is_one_described_evaluate_metric():
    import evaluate

    for name in NAMES:
        source = path(name).read_text()
        assert "import evaluate" in source and source.count("(evaluate.Metric)") == 1
        metric = load(name)
        assert isinstance(metric, evaluate.Metric)
        info = metric._info()
        assert info.description.strip() and info.inputs_description.strip()
        assert "@" in info.citation and info.codebase_urls  # a bibtex entry and a source
        assert "predictions" in info.features
    assert sorted(p.stem for p in METRICS_DIR.glob("*.py") if p.stem != "__init__") == sorted(
        NAMES)


def test_a_metric_loads_once_per_process():
    assert load("squad") is load("squad")
    with pytest.raises(Exception, match="unknown metric"):
        path("bleu")


@pytest.mark.parametrize("run", sorted(
    p.parent.name for p in (ROOT / "results" / "reference" / "cpu-smollm2").glob(
        "sweep-reference-cpu-*-squad-b[14]-*/samples.jsonl"))[:3])
def test_stored_squad_runs_score_the_same(run, tokenizer):
    """The reference experiment's SQuAD runs were scored by hand-written code: their samples,
    scored again through the evaluate metric, give every stored figure unchanged."""
    from pmbench.suites import load_suite

    folder = ROOT / "results" / "reference" / "cpu-smollm2" / run
    record = json.loads((folder / "run.json").read_text())
    samples = [json.loads(line) for line in (folder / "samples.jsonl").open()]
    suite = load_suite("squad", tokenizer, limit=1)
    assert suite.aggregate(samples) == record["metrics"]  # exactly, not approximately
    from pmbench.types import QuestionOutput

    by_id = {q.doc_id: q for g in load_suite("squad", tokenizer, limit=len(samples)).groups
             for q in g.questions}
    fresh = suite.score_all([by_id[s["doc_id"]] for s in samples],
                            [QuestionOutput(s["output_ids"], s["output_text"], 0.0)
                             for s in samples], eos_token_ids=[tokenizer.eos_token_id])
    assert [(f["em"], f["f1"], f["prediction"]) for f in fresh] == [
        (s["em"], s["f1"], s["prediction"]) for s in samples]


def test_a_suite_loads_its_metric_before_any_group_runs(tokenizer):
    """Importing evaluate takes seconds: a suite pays it when built (prepare_run, before the
    model loads), not inside the first timed group."""
    from pmbench.suites import load_suite

    load.cache_clear()
    load_suite("gsm8k", tokenizer, limit=1)
    assert load.cache_info().currsize == 1
    load_suite("mmlu", tokenizer, limit=1)  # scored by letter logits: no metric module
    assert load.cache_info().currsize == 1
