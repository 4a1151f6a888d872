"""pmbench compare of two results folders: throughput and method ratios (the 95% interval
of candidate / baseline over repeats against the threshold), accuracy (binomial SE for
records without samples; paired tests are in test_paired.py), exit codes and the
github-action-benchmark JSON shape."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from test_tables import FIXTURES, invoke

from pmbench.errors import BadInput
from pmbench.report.compare import figures
from pmbench.report.results import load

SPEEDS = ("output_tok_s", "total_tok_s", "q_s")


def candidate(tmp_path: Path, edit: Callable[[dict], None] | None = None,
              only: Callable[[dict], bool] = lambda rec: True) -> Path:
    """A copy of the fixture records with `edit` applied to the run records `only` selects."""
    root = tmp_path / "candidate"
    shutil.copytree(FIXTURES, root)
    for path in root.rglob("run.json"):
        rec = json.loads(path.read_text())
        if edit and only(rec):
            edit(rec)
            path.write_text(json.dumps(rec))
    return root


def scale(factor: float, spread: float | None = None) -> Callable[[dict], None]:
    """Multiply every throughput median by `factor`; repeats scale with it, or are set to
    median x (1 - spread, 1, 1 + spread) when `spread` is given."""
    def edit(rec: dict) -> None:
        tp = rec["throughput"]
        for m in SPEEDS:
            tp[m] *= factor
            tp["repeats"][m] = ([x * factor for x in tp["repeats"][m]] if spread is None
                                else [tp[m] * (1 - spread), tp[m], tp[m] * (1 + spread)])
    return edit


def test_identical_folders_exit_0():
    result = invoke("compare", FIXTURES, FIXTURES)
    assert result.exit_code == 0, result.output
    assert "0 regression(s) flagged" in result.stdout
    assert "REGRESSION" not in result.stdout


def test_throughput_halved_exits_1(tmp_path):
    result = invoke("compare", FIXTURES, candidate(tmp_path, scale(0.5)))
    assert result.exit_code == 1, result.output
    rows = [line for line in result.stdout.splitlines() if "REGRESSION" in line]
    assert any("squad rope2d r=0 b4" in r and "| output_tok_s " in r and "0.500" in r
               for r in rows)
    assert "regression(s) flagged" in result.stderr


def test_ten_percent_with_a_wide_interval_exits_0(tmp_path):
    # baseline repeats span about ±5%; the candidate is 10% slower with a ±15% spread
    result = invoke("compare", FIXTURES, candidate(tmp_path, scale(0.9, spread=0.15)))
    assert result.exit_code == 0, result.output


def test_a_regression_needs_the_whole_interval_below_the_threshold(tmp_path):
    # 25% slower but noisy: the 95% interval of candidate / baseline reaches past 0.9
    noisy = candidate(tmp_path / "a", scale(0.75, spread=0.3))
    assert invoke("compare", FIXTURES, noisy).exit_code == 0
    # 25% slower with the baseline's own spread: the whole interval is below 0.9
    tight = candidate(tmp_path / "b", scale(0.75))
    result = invoke("compare", FIXTURES, tight)
    assert result.exit_code == 1
    row = next(line for line in result.stdout.splitlines()
               if "squad rope2d r=0 b4" in line and "| output_tok_s " in line)
    assert "95% CI [" in row and "REGRESSION" in row
    # ... unless the threshold allows 40%
    assert invoke("compare", FIXTURES, tight, "--threshold", "0.4").exit_code == 0


def test_a_single_repeat_is_never_judged_and_says_so(tmp_path):
    """Two runs 12% apart with one repeat each: no spread was measured, so no verdict."""
    one = candidate(tmp_path / "one", lambda rec: rec["throughput"]["repeats"].update(
        {m: rec["throughput"]["repeats"][m][1:2] for m in SPEEDS}))
    slower = candidate(tmp_path / "slower", lambda rec: (
        rec["throughput"].update({m: rec["throughput"][m] * 0.88 for m in SPEEDS}),
        rec["throughput"]["repeats"].update(
            {m: [rec["throughput"][m]] for m in SPEEDS})))
    result = invoke("compare", one, slower)
    assert result.exit_code == 0, result.output
    assert "REGRESSION" not in result.stdout
    assert "no spread measured (a single repeat): not judged" in result.stdout
    assert "rest on a single repeat" in result.stdout


def test_compares_three_traps_are_three_messages(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "the baseline holds no complete run record" in str(
        invoke("compare", empty, FIXTURES).exception)
    # no cell in common: the cells on each side and the nearest pair's differing keys
    other = candidate(tmp_path / "other", lambda rec: rec.update(limit=16))
    msg = str(invoke("compare", FIXTURES, other).exception)
    assert msg.startswith("baseline and candidate have no cell in common: baseline: ")
    assert "candidate: " in msg and "differ in limit 8 vs 16" in msg
    # a truncated baseline record is bad input (exit 2), not a skipped file
    broken = candidate(tmp_path / "broken")
    path = next(broken.rglob("run.json"))
    path.write_text(path.read_text()[:40])
    code, _, err = gate(broken, FIXTURES)
    assert code == 2 and "unusable baseline: " in err and str(path) in err


def test_the_interval_is_the_bootstrap_of_the_ratio_of_medians():
    from pmbench.measure.stats import median_ratio_interval
    from pmbench.report.compare import _judge

    figs = figures(load(FIXTURES))
    cell = "squad rope2d r=0 b4 smollm2-135m-instruct limit=8 T=16 float32 ignore-eos"
    base = figs[cell, "output_tok_s"]
    slower = type(base)("throughput", "tok/s", base.value * 0.5, base.low * 0.5,
                        base.high * 0.5, num=(tuple(x * 0.5 for x in base.num[0]),))
    status, test = _judge(base, slower, 0.1, False, False, None, "output_tok_s")
    low, high = median_ratio_interval([slower.num[0]], [base.num[0]])
    assert status == "REGRESSION" and test.endswith(f"95% CI [{low:.4g}, {high:.4g}]")
    assert high < 0.9


def test_faster_candidate_is_not_a_regression(tmp_path):
    result = invoke("compare", FIXTURES, candidate(tmp_path, scale(2.0)))
    assert result.exit_code == 0 and "improved" in result.stdout


def _squad_f1(value: float) -> Callable[[dict], None]:
    def edit(rec: dict) -> None:
        rec["metrics"]["f1"] = value
    return edit


def _is_rope2d_squad_b4(rec: dict) -> bool:
    return (rec["method"], rec["suite"], rec["branch"]) == ("rope2d", "squad", 4)


def test_accuracy_drop_against_binomial_standard_error(tmp_path):
    # n = 8: F1 0.5 -> 0.2 is a drop of 0.30 > SE sqrt(.25/8 + .16/8) = 0.226: flagged
    big = candidate(tmp_path / "big", _squad_f1(0.2), _is_rope2d_squad_b4)
    result = invoke("compare", FIXTURES, big)
    assert result.exit_code == 1
    assert any("| f1 " in line and "REGRESSION" in line for line in result.stdout.splitlines())
    # 0.5 -> 0.4: a drop of 0.10 < SE 0.245: within noise for 8 questions
    small = candidate(tmp_path / "small", _squad_f1(0.4), _is_rope2d_squad_b4)
    assert invoke("compare", FIXTURES, small).exit_code == 0
    # ... but a fixed greedy subset must reproduce exactly
    result = invoke("compare", FIXTURES, small, "--exact-accuracy")
    assert result.exit_code == 1 and "CHANGED" in result.stdout


def test_ratios_are_computed_within_a_folder():
    figs = figures(load(FIXTURES))
    cell = "squad rope2d r=0 b4 smollm2-135m-instruct limit=8 T=16 float32 ignore-eos"
    ratio = figs[cell, "output_tok_s rope2d/batch"]
    assert ratio.value == pytest.approx(70 / 50)
    assert (ratio.low, ratio.high) == (pytest.approx(68 / 52), pytest.approx(72 / 48))
    assert figs[cell, "output_tok_s rope2d/sequential"].value == pytest.approx(70 / 20.5)


def test_machine_independent_compares_ratios_not_absolute_speed(tmp_path):
    slower_machine = candidate(tmp_path / "slow", scale(0.5))
    assert invoke("compare", FIXTURES, slower_machine).exit_code == 1
    result = invoke("compare", FIXTURES, slower_machine, "--machine-independent")
    assert result.exit_code == 0, result.output
    # only rope2d got slower: its ratios to batch and sequential drop, which is flagged
    rope2d_slower = candidate(tmp_path / "rope", scale(0.5), _is_rope2d_squad_b4)
    result = invoke("compare", FIXTURES, rope2d_slower, "--machine-independent")
    assert result.exit_code == 1
    flagged = [line for line in result.stdout.splitlines() if "REGRESSION" in line]
    assert len(flagged) == 2
    assert any("rope2d/batch" in f for f in flagged)
    assert any("rope2d/sequential" in f for f in flagged)


def test_json_has_the_github_action_benchmark_shape(tmp_path):
    result = invoke("compare", FIXTURES, candidate(tmp_path, scale(0.5)), "--format", "json")
    assert result.exit_code == 1
    entries = json.loads(result.stdout)
    assert isinstance(entries, list) and entries
    for e in entries:
        assert set(e) == {"name", "unit", "value", "range", "extra"}
        assert isinstance(e["name"], str) and isinstance(e["unit"], str)
        assert isinstance(e["value"], float) and isinstance(e["range"], str)
        assert e["range"] == "" or e["range"].startswith("± ")
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    by_name = {e["name"]: e for e in entries}
    cell = "squad rope2d r=0 b4 smollm2-135m-instruct limit=8 T=16 float32 ignore-eos"
    speed = by_name[f"{cell} output_tok_s"]
    assert (speed["value"], speed["unit"], speed["range"]) == (35.0, "tok/s", "± 1")
    assert "REGRESSION" in speed["extra"] and "baseline 70" in speed["extra"]
    assert "95% CI [34, 36]" in speed["extra"]  # the candidate's own interval over repeats
    f1 = by_name[f"{cell} f1"]
    assert (f1["value"], f1["unit"], f1["range"]) == (50.0, "%", "± 17.68")  # sqrt(.25/8)


def test_run_ids_are_looked_up_under_results(tmp_path):
    """Two run ids are two runs: compared question by question (these fixture records kept
    no samples, which the report says), and by speed over their repeats."""
    run_id = "20261126-100400-rope2d-squad-b4-6918"
    out = tmp_path / "report.json"
    result = invoke("compare", run_id, run_id, "--results", FIXTURES, "-f", "json", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["a"] == report["b"] == run_id and report["metrics"] == []
    assert report["note"].startswith("no samples.jsonl beside")
    assert {s["figure"] for s in report["speed"]} == {"output_tok_s", "total_tok_s", "q_s"}
    assert all(s["ratio"] == 1 and s["low"] <= 1 <= s["high"] for s in report["speed"])


def _folders_without_common_cells(tmp_path: Path) -> list[str]:
    out = []
    for run in ("20261126-100400-rope2d-squad-b4-6918", "20261126-110000-sequential-mmlu-b1-2921"):
        shutil.copytree(FIXTURES / run, tmp_path / run / run)
        out.append(str(tmp_path / run))
    return out


@pytest.mark.parametrize("args, message", [
    (["no-such-run", str(FIXTURES)], "neither a folder nor a run id"),
    ([str(FIXTURES / "20261126-100400-rope2d-squad-b4-6918"),
      str(FIXTURES / "20261126-110000-sequential-mmlu-b1-2921")], "runs of different suites"),
    ([str(FIXTURES / "20261126-100400-rope2d-squad-b4-6918"), str(FIXTURES)],
     "not one of each"),
    (["FOLDERS"], "no cell in common"),
    ([str(FIXTURES), str(FIXTURES), "--threshold", "1.5"], "--threshold"),
    ([str(FIXTURES), str(FIXTURES), "--margin", "-1"], "--margin"),
    ([str(FIXTURES), str(FIXTURES), "--format", "xml"], "unknown format"),
])
def test_bad_input(args, message, tmp_path):
    if args == ["FOLDERS"]:
        args = _folders_without_common_cells(tmp_path)
    result = invoke("compare", *args)
    assert isinstance(result.exception, BadInput)
    assert message in str(result.exception)


def test_only_whole_run_accuracies_are_compared():
    # per-category scores (their question counts are not recorded) and counts are left out
    figs = figures(load(FIXTURES))
    cell = "mmlu sequential no-cache b1 smollm2-135m-instruct limit=8 T=16 float32 ignore-eos"
    assert {m for c, m in figs if c == cell} == {"output_tok_s", "total_tok_s", "q_s", "acc"}


def test_rope2d_over_prefix_is_a_ratio_row(tmp_path):
    """A prefix record beside batch and rope2d gives rope2d/prefix and prefix/batch rows."""
    root = candidate(tmp_path / "with-prefix")
    batch = next(p for p in root.rglob("run.json") if _is_batch_squad_b4(json.loads(
        p.read_text())))
    rec = json.loads(batch.read_text())
    rec.update(run_id="prefix-squad-b4", method="prefix", prefix_kv="shared")
    rec["throughput"]["output_tok_s"] = 60.0
    rec["throughput"]["repeats"]["output_tok_s"] = [59.0, 60.0, 61.0]
    (root / "prefix-squad-b4").mkdir()
    (root / "prefix-squad-b4" / "run.json").write_text(json.dumps(rec))
    figs = figures(load(root))
    rope = next(c for c, m in figs if m == "output_tok_s rope2d/batch" and " b4 " in c)
    assert figs[rope, "output_tok_s rope2d/prefix"].value == pytest.approx(70 / 60)
    prefix_cell = next(c for c, m in figs if m == "output_tok_s prefix/batch")
    assert figs[prefix_cell, "output_tok_s prefix/batch"].value == pytest.approx(60 / 50)


def _is_batch_squad_b4(rec: dict) -> bool:
    return rec["method"] == "batch" and rec["suite"] == "squad" and rec["branch"] == 4


# ------------------------------------------- a gate a broken run cannot pass (issue 14)


def gate(*args) -> tuple[int, str, str]:
    """`pmbench compare ...` through the real CLI: (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from pmbench.cli import app

    result = CliRunner().invoke(app, ["compare", *map(str, args)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _set_speed(values: list[float], median: float | None = None) -> Callable[[dict], None]:
    def edit(rec: dict) -> None:
        rec["throughput"]["repeats"]["output_tok_s"] = values
        rec["throughput"]["output_tok_s"] = sorted(values)[1] if median is None else median
    return edit


def _flagged(stdout: str, cell: str) -> list[str]:
    return [line for line in stdout.splitlines() if cell in line and "REGRESSION" in line]


ROPE_B4 = "squad rope2d r=0 b4"
BATCH_B4 = "squad batch b4"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_accuracy_in_the_candidate_is_a_regression(tmp_path, bad):
    code, out, _ = gate(FIXTURES, candidate(tmp_path, _squad_f1(bad), _is_rope2d_squad_b4))
    assert code == 1
    rows = [line for line in _flagged(out, ROPE_B4) if "| f1 " in line]
    assert rows and all("candidate value" in r and "is not a finite number" in r for r in rows)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_speed_in_the_candidate_is_a_regression(tmp_path, bad):
    edit = _set_speed([bad, bad, bad], median=bad)
    code, out, _ = gate(FIXTURES, candidate(tmp_path, edit, _is_rope2d_squad_b4),
                        "--machine-independent")  # absolute speed is info-only there...
    assert code == 1  # ...but a broken one still fails, and so do its ratios
    assert any("| output_tok_s " in line for line in _flagged(out, ROPE_B4))
    assert any("rope2d/batch" in line for line in _flagged(out, ROPE_B4))


def test_missing_cells_of_the_baseline_are_regressions(tmp_path):
    root = candidate(tmp_path)
    batch = next(p for p in root.rglob("run.json") if _is_batch_squad_b4(json.loads(
        p.read_text())))
    shutil.rmtree(batch.parent)
    code, out, err = gate(FIXTURES, root)
    assert code == 1
    missing = [line for line in out.splitlines() if "MISSING" in line]
    assert {line.split("|")[2].strip() for line in missing if BATCH_B4 in line} == {
        "output_tok_s", "total_tok_s", "q_s", "f1", "em", "output_tok_s batch/sequential"}
    assert any(ROPE_B4 in line and "rope2d/batch" in line for line in missing)
    assert "missing from the candidate" in out and "regression(s) flagged" in err


def test_missing_figures_are_named_on_stderr_with_json(tmp_path):
    root = candidate(tmp_path, _squad_f1(math.nan), _is_rope2d_squad_b4)
    batch = next(p for p in root.rglob("run.json") if _is_batch_squad_b4(json.loads(
        p.read_text())))
    shutil.rmtree(batch.parent)
    code, out, err = gate(FIXTURES, root, "--format", "json")
    assert code == 1

    def no_nan(name: str):
        raise AssertionError(f"{name} in JSON output")

    entries = json.loads(out, parse_constant=no_nan)  # strict JSON: no NaN, no Infinity
    assert not any(BATCH_B4 in e["name"] for e in entries)
    assert f"MISSING: {BATCH_B4}" in err and "REGRESSION: " + ROPE_B4 in err


@pytest.mark.parametrize("repeats", [[0.0, 50.0, 52.0], [-1.0, 50.0, 52.0]])
def test_a_zero_or_negative_repeat_minimum_in_the_candidate_is_a_regression(tmp_path, repeats):
    code, out, _ = gate(FIXTURES, candidate(tmp_path, _set_speed(repeats), _is_batch_squad_b4),
                        "--machine-independent")
    assert code == 1  # no ZeroDivisionError: the broken speed and every ratio over it fail
    assert any("repeat minimum" in line and "| output_tok_s " in line
               for line in _flagged(out, BATCH_B4))
    assert any("rope2d/batch" in line for line in _flagged(out, ROPE_B4))


@pytest.mark.parametrize(("edit", "needle"), [
    (_squad_f1(math.nan), "f1: value nan is not a finite number"),
    (_squad_f1(1.5), "f1: accuracy 1.5 is outside [0, 1]"),
    (_set_speed([0.0, 0.0, 0.0], median=0.0), "output_tok_s: value 0 is not positive"),
    (_set_speed([0.0, 70.0, 72.0]), "output_tok_s: repeat minimum 0 is not positive"),
])
def test_an_unusable_baseline_is_bad_input(tmp_path, edit, needle):
    baseline = candidate(tmp_path, edit, _is_rope2d_squad_b4)
    code, _, err = gate(baseline, FIXTURES)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unusable baseline: ")
    assert needle in lines[0], lines[0]
