"""Verdicts a reviewer accepts (issue 25): the statistics are scipy's, two runs are paired by
question id, and the committed reference experiment reads as its README says."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.measure.stats import (
    RESAMPLES,
    mcnemar_exact,
    median_interval,
    median_ratio_interval,
    paired_difference,
    questions_to_decide,
    verdict,
)
from pmbench.report.paired import MIN_SHARED, pair_runs, unit_scores
from pmbench.report.results import load
from pmbench.suites import load_suite, suite_info

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "cpu-smollm2"
ISOLATED_R0 = "sweep-reference-cpu-rope2d-squad-b4-a5e6bd49"  # fine-tuned, ratio 0
ISOLATED_R05 = "sweep-reference-cpu-rope2d-squad-b4-a671598c"  # fine-tuned, ratio 0.5
SEQUENTIAL = "sweep-reference-cpu-sequential-squad-b4-bbc7c89d"  # untrained
UNTRAINED_R0 = "sweep-reference-cpu-rope2d-squad-b4-c456ecf1"  # untrained, isolated ratio 0


def compare(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["compare", *map(str, args)])
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------- the statistics are scipy's


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs():
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # by hand
    for a_only, b_only in [(3, 9), (9, 3), (0, 5), (17, 17)]:
        assert mcnemar_exact(a_only, b_only) == stats.binomtest(
            b_only, a_only + b_only, 0.5).pvalue
    assert mcnemar_exact(0, 0) == 1.0


def _scores(seed: int = 1, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 100, n).round(1)
    return a, np.clip(a + rng.normal(-2, 15, n), 0, 100)


def test_paired_bootstrap_is_scipys_with_the_same_seed():
    a, b = _scores()
    ours = paired_difference(a, b, seed=7)
    theirs = stats.bootstrap((a, b), lambda x, y, axis: np.mean(y - x, axis=axis),
                             paired=True, vectorized=True, n_resamples=RESAMPLES,
                             method="BCa", rng=np.random.default_rng(7))
    assert (ours.low, ours.high) == tuple(theirs.confidence_interval)
    assert ours.delta == pytest.approx(float(np.mean(b - a)))
    assert ours.sd == pytest.approx(float(np.std(b - a, ddof=1)))
    again = paired_difference(a, b, seed=7)
    assert (again.low, again.high) == (ours.low, ours.high)  # same seed, same interval
    assert (paired_difference(a, b, seed=8).low, paired_difference(a, b, seed=8).high) != (
        ours.low, ours.high)
    assert ours.low < ours.delta < ours.high


def test_identical_scores_give_a_point_interval():
    a, _ = _scores()
    same = paired_difference(a, a)
    assert (same.delta, same.low, same.high, same.sd) == (0, 0, 0, 0)
    assert questions_to_decide(same.sd, 1.0) is None


def test_median_intervals_are_scipys_percentile_bootstrap():
    values = [10.0, 11.0, 12.5, 11.5, 10.5, 12.0, 11.2]
    theirs = stats.bootstrap((values,), np.median, vectorized=True, n_resamples=RESAMPLES,
                             method="percentile", rng=np.random.default_rng(0))
    assert median_interval(values) == tuple(theirs.confidence_interval)
    assert median_interval([5.0]) is None
    # five repeats: the median's percentile interval is [min, max]
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)
    low, high = median_ratio_interval([[10, 11, 12]], [[5, 5.5, 6]])
    assert low <= 11 / 5.5 <= high and (low, high) == (10 / 6, 12 / 5)


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.2, 3.0, "better"), (-0.9, 0.5, "non-inferior"), (-0.5, -0.1, "non-inferior"),
    (0.0, 0.0, "non-inferior"), (-3.0, 0.5, "inconclusive"), (-3.0, -0.5, "inconclusive"),
    (-5.0, -1.5, "inferior"),
])
def test_verdict_against_a_one_point_margin(low, high, expected):
    assert verdict(low, high, 1.0) == expected


def test_questions_to_decide_is_the_normal_approximation():
    z = stats.norm.ppf(0.975)
    assert questions_to_decide(47.0, 1.0) == math.ceil((z * 47) ** 2)
    assert questions_to_decide(47.0, 2.0) == math.ceil((z * 47 / 2) ** 2)


# ---------------------------------------------------------------- pairing two runs


def _run(root: Path, run_id: str, *, model: str = "m", suite: str = "squad",
         method: str = "rope2d", ids: range = range(30), f1: list[float] | None = None,
         predictions: list[str] | None = None) -> Path:
    """A complete run record with one samples.jsonl line per question id."""
    f1 = f1 if f1 is not None else [1.0 if i % 3 else 0.0 for i in ids]
    predictions = predictions or [f"answer {i}" for i in ids]
    folder = root / run_id
    folder.mkdir(parents=True)
    samples = [{"doc_id": f"q{i}", "f1": x, "em": float(x == 1.0), "prediction": p,
                "output_text": f" {p}", "output_ids": [7, 8, i]}
               for i, x, p in zip(ids, f1, predictions, strict=True)]
    record = {"run_id": run_id, "created": "2026-12-01T10:00:00+00:00", "method": method,
              "branch": 4, "suite": suite, "model": model, "status": "complete",
              "suite_info": {"split": "validation"}, "throughput": None,
              "metrics": {"f1": float(np.mean(f1)), "em": float(np.mean([x == 1 for x in f1])),
                          "n": len(samples)}}
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return folder


def test_unmatched_questions_are_counted_and_reported(tmp_path):
    a = _run(tmp_path, "a", ids=range(0, 30))
    b = _run(tmp_path, "b", ids=range(5, 35))
    code, out, _ = compare(a, b)
    assert code == 0, out
    assert "Questions: 25 scored by both, 5 only by A, 5 only by B." in out
    pair = pair_runs(*load(tmp_path).runs)
    assert (pair.shared, pair.only_a, pair.only_b) == (25, 5, 5)
    assert {m.n for m in pair.metrics} == {25}


def test_a_disagreement_is_measured_where_tokens_differ(tmp_path):
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b", predictions=[f"answer {i}" if i % 10 else "other" for i in range(30)])
    code, out, _ = compare(a, b, "-f", "json")
    report = json.loads(out)
    assert report["agreement"]["same_prediction"] == pytest.approx(27 / 30)
    assert report["agreement"]["same_output"] == pytest.approx(27 / 30)
    assert report["agreement"]["differing"] == 0  # the fake outputs share their token ids


@pytest.mark.parametrize(("edit", "needle"), [
    ({"suite": "mmlu"}, "runs of different suites (squad vs mmlu)"),
    ({"model": "other"}, "runs of different models (m vs other)"),
])
def test_runs_of_different_suites_or_models_are_refused_in_one_line(tmp_path, edit, needle):
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b", **edit)
    code, _, err = compare(a, b)
    assert code == 2
    assert err.count("\n") == 1 and needle in err


def test_a_fine_tune_is_compared_with_its_base_models_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ft-a", "ft-b"):
        (tmp_path / name / "checkpoint").mkdir(parents=True)
        (tmp_path / name / "train.json").write_text(json.dumps(
            {"run_id": name, "created": "2026-12-01T09:00:00+00:00", "kind": "finetune",
             "model": "m", "checkpoint": f"{name}/checkpoint"}))
    control = _run(tmp_path / "runs", "control", model="ft-a/checkpoint")
    treated = _run(tmp_path / "runs", "treated", model="ft-b/checkpoint",
                   f1=[0.0] * 30)
    shipped = _run(tmp_path / "runs", "shipped", model="m")
    assert compare(control, treated)[0] == 1  # allowed, and inferior: exit 1
    assert compare(shipped, treated)[0] == 1
    (tmp_path / "ft-b" / "train.json").unlink()  # no longer known to be a fine-tune of m
    code, _, err = compare(control, treated)
    assert code == 2 and "runs of different models" in err


def test_a_hand_edited_non_finite_score_is_not_paired(tmp_path):
    folder = _run(tmp_path, "a")
    lines = (folder / "samples.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"f1": 1.0', '"f1": NaN')
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")
    _run(tmp_path, "b")
    pair = pair_runs(*load(tmp_path).runs)
    assert [m.key for m in pair.metrics] == ["em"]  # F1 has no finite score for q1


def test_too_few_shared_questions_give_no_figures(tmp_path):
    _run(tmp_path, "a", ids=range(0, 30))
    _run(tmp_path, "b", ids=range(30 - MIN_SHARED + 1, 60))
    pair = pair_runs(*load(tmp_path).runs)
    assert pair.metrics == () and pair.note.startswith(f"only {MIN_SHARED - 1} shared")


# ----------------------------------------------------------- the committed reference


def test_reference_ratio_half_is_inferior_to_its_ratio_0_control():
    code, out, err = compare(REFERENCE / ISOLATED_R0, REFERENCE / ISOLATED_R05, "-f", "json")
    assert code == 1 and "inferior" in err
    report = json.loads(out)
    assert (report["shared"], report["only_a"], report["only_b"]) == (200, 0, 0)
    f1 = next(m for m in report["metrics"] if m["key"] == "f1")
    assert f1["delta"] == pytest.approx(-12.70, abs=0.01)
    assert f1["high"] < 0 and f1["verdict"] == "inferior"
    em = next(m for m in report["metrics"] if m["key"] == "em")
    assert em["p_value"] < 0.05 and em["a_only"] + em["b_only"] > 0


def test_reference_untrained_ratio_0_isolated_is_sequential_exactly():
    code, out, _ = compare(REFERENCE / SEQUENTIAL, REFERENCE / UNTRAINED_R0, "-f", "json")
    assert code == 0
    report = json.loads(out)
    assert report["agreement"]["same_prediction"] == 1.0
    assert report["agreement"]["same_output"] == 1.0
    assert report["agreement"]["differing"] == 0
    for m in report["metrics"]:
        assert (m["delta"], m["low"], m["high"]) == (0, 0, 0)
        assert m["verdict"] == "non-inferior"


def test_every_declared_sample_field_reproduces_its_committed_metric():
    """The per-question scores the paired tests use average to the run's own metric."""
    records = load(ROOT / "results", include_committed=True)
    checked = 0
    for run in records.runs:
        samples = [json.loads(line) for line in
                   (Path(run["_path"]).parent / "samples.jsonl").read_text().splitlines()]
        for metric in suite_info(run["suite"]).metrics:
            scores = unit_scores(samples, metric)
            if scores is not None and metric.key in run["metrics"]:
                assert np.mean(list(scores.values())) == pytest.approx(
                    run["metrics"][metric.key], abs=1e-12), (run["run_id"], metric.key)
                checked += 1
    assert checked >= 80  # every committed run, 1 or 2 metrics each


@pytest.mark.parametrize("suite", ["gsm8k", "multirc", "mmlu", "squad"])
def test_sample_fields_reproduce_each_suites_aggregate(tokenizer, suite):
    """Half the answers gold, half wrong: each declared metric is the mean of its field."""
    from pmbench.types import QuestionOutput

    s = load_suite(suite, tokenizer, limit=12, branch=4)
    questions = [q for g in s.groups for q in g.questions]
    outputs = []
    for k, q in enumerate(questions):
        text = q.meta["gold_output"] if k % 2 else " 12345 nothing"
        ids = tokenizer.encode(text, add_special_tokens=False)
        outputs.append(QuestionOutput(ids, tokenizer.decode(ids), 0.0))
    samples = [{"doc_id": q.doc_id, **f} for q, f in
               zip(questions, s.score_all(questions, outputs), strict=True)]
    metrics = s.aggregate(samples)
    declared = [m for m in suite_info(suite).metrics if m.sample]
    assert declared
    for metric in declared:
        scores = unit_scores(samples, metric)
        assert np.mean(list(scores.values())) == pytest.approx(metrics[metric.key]), metric.key
        assert 0 < metrics[metric.key] < 1  # a mix, so a wrong field would show


def test_humaneval_pass_at_1_is_the_mean_over_problems_of_their_samples():
    s = [{"doc_id": f"t{t}#{k}", "task_id": f"t{t}", "passed": bool((t + k) % 3)}
         for t in range(5) for k in range(4)]
    metric = suite_info("humaneval").metric("pass@1")
    scores = unit_scores(s, metric)
    assert set(scores) == {f"t{t}" for t in range(5)}
    from pmbench.suites.metrics import compute

    by_task = [[x["passed"] for x in s if x["task_id"] == t] for t in sorted(scores)]
    expected = compute("pass_at_k", predictions=by_task, k=[1])["pass@1"]
    assert np.mean(list(scores.values())) == pytest.approx(expected)


def test_samples_behind_a_link_are_not_read(tmp_path):
    folder = _run(tmp_path, "a")
    (tmp_path / "elsewhere.jsonl").write_text((folder / "samples.jsonl").read_text())
    (folder / "samples.jsonl").unlink()
    (folder / "samples.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    _run(tmp_path, "b")
    code, _, err = compare(folder, tmp_path / "b")
    assert code == 2 and "samples.jsonl: a link: pmbench does not follow links" in err


def test_reference_folder_copy_compares_with_itself(tmp_path):
    """Two results folders: accuracy is paired where samples exist, and nothing changes."""
    copy = tmp_path / "copy"
    shutil.copytree(REFERENCE / SEQUENTIAL, copy / SEQUENTIAL)
    shutil.copytree(REFERENCE / UNTRAINED_R0, copy / UNTRAINED_R0)
    code, out, _ = compare(copy, copy)
    assert code == 0, out
    rows = [line for line in out.splitlines() if "| f1 " in line or "| em " in line]
    assert len(rows) == 4 and all("paired n 200: Δ +0.0 pts [+0.0, +0.0]" in r for r in rows)


# ------------------------------------------------------------- the paired companions


def _table(*args: str):
    result = CliRunner().invoke(app, ["table", *args, "--results", str(REFERENCE)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_table_2b_pairs_each_fine_tune_with_its_control():
    import io

    import pandas as pd

    t2b = pd.read_csv(io.StringIO(_table("2b", "-f", "csv")))
    row = t2b[(t2b["Weights"] == "fine-tuned") & (t2b["Mask"] == "isolated")
              & (t2b["Metric"] == "SQuAD F1")].iloc[0]
    assert row["Reference"] == "ratio-0 isolated control" and row["n"] == 200
    assert row["Δ (pts)"] == pytest.approx(-12.70, abs=0.01)
    assert row["CI high"] < 0 and row["Verdict"] == "inferior"
    # the ratio-0 fine-tunes are the controls, not rows of their own
    tuned = t2b[t2b["Weights"] == "fine-tuned"]
    assert set(tuned["Ratio"]) == {0.25, 0.5, 0.75}
    shipped = t2b[(t2b["Weights"] == "as shipped") & (t2b["Mask"] == "isolated")
                  & (t2b["Ratio"] == 0)]
    assert set(shipped["Verdict"]) == {"non-inferior"} and set(shipped["Δ (pts)"]) == {0}
    # Markdown: Table 2, then 2b, with the margin and the test named in the notes
    text = _table("2", "--margin", "2")
    assert text.index("Table 2:") < text.index("Table 2b:")
    assert "margin of ±2 pt" in text and "McNemar" in text and "paired bootstrap" in text
    assert "Table 2b" not in _table("2", "--no-paired")


def test_the_companions_compile_in_latex(tmp_path):
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    tex = tmp_path / "t.tex"
    tex.write_text(_table("-f", "latex", "--standalone"))
    text = tex.read_text()
    assert "\\renewcommand{\\thetable}{\\arabic{table}b}" in text
    assert "tab:pmbench-2b" in text and "\\ensuremath{\\Delta}" in text
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
