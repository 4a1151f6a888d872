"""Learning curves (issue 31): a grid stage evaluates every checkpoint a training run saved,
and `pmbench table curve` / `plot learning-curve` set each against its ratio-0 control with
paired intervals. The smoke grid runs end to end on a tiny model: its train stage and its
curve stage each take under a minute on 2 cores."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.errors import BadInput
from pmbench.measure.stats import paired_weighted_difference
from pmbench.sweep.grid import expand_grid, load_grid

SMOKE = Path(__file__).parent / "fixtures" / "curve-smoke.yaml"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _grid(base: str, out: Path) -> str:
    return SMOKE.read_text().replace("BASE", base).replace("OUT", str(out))


def test_checkpoints_entries_expand_to_every_saved_checkpoint(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(_grid("some/model", tmp_path / "out"))
    cells = [c for c in load_grid(path) if c.kind == "run"]
    assert [Path(c.model).relative_to(tmp_path / "out").as_posix() for c in cells] == [
        "curve-r0/checkpoints/step-000001", "curve-r0/checkpoint",
        "curve-r0.5/checkpoints/step-000001", "curve-r0.5/checkpoint"]
    assert {c.stage for c in cells} == {"curve"}


def test_checkpoints_of_a_run_no_stage_trains_is_bad_input():
    grid = {"stages": [{"stage": "eval", "models": [{"checkpoints": "results/nope"}],
                        "methods": ["rope2d"], "branches": [2], "suites": ["squad"]}]}
    with pytest.raises(BadInput, match="no earlier stage trains a run 'nope'"):
        expand_grid(grid, "g")


@pytest.fixture(scope="module")
def curve_records(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("curve") / "records"
    grid = out.parent / "curve-smoke.yaml"
    grid.write_text(_grid(tiny_model_dir, out))
    for stage in ("train", "curve"):
        res = invoke("sweep", grid, "--stage", stage)
        assert res.exit_code == 0, res.output
    return out


def _curve_rows(results: Path) -> list[dict[str, str]]:
    res = invoke("table", "curve", "--results", results, "--format", "csv")
    assert res.exit_code == 0, res.output
    return list(csv.DictReader(io.StringIO(res.stdout)))


def test_table_curve_pairs_each_checkpoint_with_its_control(curve_records):
    rows = _curve_rows(curve_records)
    assert [(r["Setting"], r["Step"]) for r in rows] == [
        ("isolated r0", "1"), ("isolated r0", "2"), ("isolated r0.5", "1"),
        ("isolated r0.5", "2")]
    train = {run: json.loads((curve_records / run / "train.json").read_text())
             for run in ("curve-r0", "curve-r0.5")}
    for row, step in zip(rows[2:], (0, 1), strict=True):
        # Δ held-out loss recomputed from the per-example losses both runs recorded
        a = train["curve-r0"]["checkpoints"][step]["heldout_examples"]
        b = train["curve-r0.5"]["checkpoints"][step]["heldout_examples"]
        expected = paired_weighted_difference(a, b)
        delta = float(row["Held-out loss Δ"])
        assert delta == pytest.approx(expected.delta, abs=5e-4)
        assert float(row["Held-out loss low"]) <= delta <= float(row["Held-out loss high"])
        assert float(row["Held-out loss value"]) == pytest.approx(
            train["curve-r0.5"]["checkpoints"][step]["heldout_loss"], abs=5e-4)
        # the SQuAD F1 of each checkpoint, paired over the same 20 questions
        f1 = float(row["SQuAD F1 (%) Δ"])
        assert float(row["SQuAD F1 (%) low"]) <= f1 <= float(row["SQuAD F1 (%) high"])
    for row in rows[:2]:  # the control has none
        assert row["Held-out loss Δ"] == "" and row["SQuAD F1 (%) Δ"] == ""
        assert row["SQuAD F1 (%) value"] != ""


def test_plot_learning_curve_draws_it(curve_records, tmp_path):
    target = tmp_path / "curve.png"
    res = invoke("plot", "learning-curve", "--results", curve_records, "-o", target)
    assert res.exit_code == 0, res.output
    assert target.stat().st_size > 10_000 and target.with_suffix(".pdf").is_file()


def test_table_2_reads_the_final_checkpoints_only(curve_records):
    """The intermediate checkpoints' runs are curve points, not Table 2's trained rows."""
    res = invoke("table", "2", "--results", curve_records, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert "checkpoints/step-" not in res.stdout
    trained = [r for r in csv.DictReader(io.StringIO(res.stdout)) if "curve-r0" in r["Model"]]
    assert len(trained) == 2 and all(r["SQuAD F1 (%)"] != "–" for r in trained)


def test_the_sweep_run_again_repeats_nothing(curve_records):
    res = invoke("sweep", curve_records.parent / "curve-smoke.yaml")
    assert res.exit_code == 0, res.output
    assert " ran " not in res.output and "skipped" in res.output


def test_table_curve_without_training_runs_is_one_line(tmp_path):
    res = invoke("table", "curve", "--results", tmp_path)
    assert res.exit_code == 2 and "no training runs with checkpoints" in res.output
