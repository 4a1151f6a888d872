"""The pre-training half of the reference experiment (issue 31) in miniature: the stages of
suites/grids/pretrain-cpu.yaml on a cpu-tiny model from scratch (tests/fixtures/
pretrain-smoke.yaml), each under a minute on 2 cores, read back by `pmbench table loss`
(held-out loss by #branch against the ratio-0 control, paired over the same held-out
examples) and by Tables 2 and 3, whose "pre-trained from scratch" groups they fill."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.measure.stats import paired_weighted_difference
from pmbench.report.paired import pair_runs
from pmbench.report.results import load
from pmbench.sweep.grid import load_grid

SMOKE = Path(__file__).parent / "fixtures" / "pretrain-smoke.yaml"
PRODUCTION = Path(__file__).parents[1] / "suites" / "grids" / "pretrain-cpu.yaml"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _csv(*args) -> list[dict[str, str]]:
    res = invoke("table", *args, "--format", "csv")
    assert res.exit_code == 0, res.output
    return list(csv.DictReader(io.StringIO(res.stdout)))


@pytest.fixture(scope="module")
def pretrain_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "records"
    grid = out.parent / "pretrain-smoke.yaml"
    grid.write_text(SMOKE.read_text().replace("OUT", str(out)))
    for stage in ("train", "seed", "accuracy", "throughput"):
        res = invoke("sweep", grid, "--stage", stage)
        assert res.exit_code == 0, res.output
    return out


def _train(out: Path, run: str) -> dict:
    return json.loads((out / run / "train.json").read_text())


def test_the_production_grid_trains_six_runs_alike_but_for_mask_and_ratio():
    train = [c for c in load_grid(PRODUCTION) if c.stage == "train"]
    settings = {(c.options["mask"], c.options["rope_2d_ratio"]) for c in train}
    assert settings == {("cross", 0.0), ("cross", 0.25), ("cross", 0.5), ("cross", 0.75),
                        ("isolated", 0.0), ("isolated", 0.5)}
    shared = [{k: v for k, v in c.options.items() if k not in ("mask", "rope_2d_ratio")}
              for c in train]
    assert all(s == shared[0] for s in shared)  # same size, budget, seed, data
    assert shared[0]["heldout_branches"] == "1,2,4,8,16" and shared[0]["branch"] == 4
    (seed,) = [c for c in load_grid(PRODUCTION) if c.stage == "seed"]  # the yardstick
    assert seed.options == {**shared[0], "mask": "cross", "rope_2d_ratio": 0.0, "seed": 1}


def test_table_loss_pairs_every_branch_with_the_ratio0_control(pretrain_records):
    rows = _csv("loss", "--results", pretrain_records)
    settings = ["cross r0", "cross r0 seed 1", "cross r0.5"]
    assert [(r["Setting"], r["#branch"], r["Examples"]) for r in rows] == [
        (s, b, n) for s in settings for b, n in (("1", "16"), ("2", "8"), ("4", "4"))]
    assert len({r["Tokens"] for r in rows}) == 1  # the same held-out tokens at every #branch
    control, seed1, treated = (_train(pretrain_records, r)["heldout_examples"]
                               for r in ("pre-r0", "pre-r0-seed1", "pre-r0.5"))
    # ratio 0.5 against ratio 0, and seed 1 against seed 0 (the yardstick), both at ratio 0
    for row, other in zip(rows[3:], [seed1] * 3 + [treated] * 3, strict=True):
        expected = paired_weighted_difference(control[row["#branch"]], other[row["#branch"]])
        assert float(row["Δ"]) == pytest.approx(expected.delta, rel=1e-6, abs=1e-9)
        assert float(row["low"]) <= float(row["Δ"]) <= float(row["high"])
    assert all(r["Δ"] == "" for r in rows[:3])  # the control itself


def test_table2_fills_the_pretrained_group_with_the_paired_companion(pretrain_records):
    rows = _csv("2", "--results", pretrain_records)
    assert {r["Training"] for r in rows} == {"pre-trained from scratch: cpu-tiny"}
    assert [(r["Ratio"], r["Setting"]) for r in rows] == [
        ("0", "split/interleaved"), ("0", "split/interleaved, seed 1"),
        ("0.5", "split/interleaved")]
    assert {r["Weights"] for r in rows} == {"pre-trained"}
    for row, run in zip(rows, ("pre-r0", "pre-r0-seed1", "pre-r0.5"), strict=True):
        assert float(row["Loss"]) == pytest.approx(_train(pretrain_records, run)
                                                   ["heldout_loss"]["2"])
    for row in (rows[0], rows[2]):  # the accuracy stage evaluates seed 0's checkpoints
        assert row["SQuAD F1 (%)"] != "" and row["MMLU (%)"] != ""
    paired = _csv("2b", "--results", pretrain_records)
    squad = [r for r in paired if r["Metric"] == "SQuAD F1"]
    assert len(squad) == 1 and squad[0]["n"] == "20"
    assert squad[0]["Reference"] == "ratio-0 cross control"


def test_two_checkpoints_from_scratch_of_one_size_pair_question_by_question(
        pretrain_records):
    squad = [r for r in load(pretrain_records).runs if r["suite"] == "squad"
             and r["metrics"].get("n") == 20]  # the accuracy stage's, one per checkpoint
    assert sorted(Path(r["model"]).parent.name for r in squad) == ["pre-r0", "pre-r0.5"]
    assert pair_runs(squad[0], squad[1], train=load(pretrain_records).train).shared == 20


def test_table3_fills_the_pretrained_group_with_its_speedup(pretrain_records):
    rows = [r for r in _csv("3", "--results", pretrain_records) if r["tok/s"]]
    assert [(r["Training"], r["#branch"]) for r in rows] == [
        ("pre-trained from scratch", "1"), ("pre-trained from scratch", "2")]
    assert float(rows[0]["Speedup (×)"]) == 1.0 and float(rows[1]["Speedup (×)"]) > 0
    losses = _train(pretrain_records, "pre-r0.5")["heldout_loss"]
    assert [float(r["Loss"]) for r in rows] == pytest.approx([losses["1"], losses["2"]])


def test_table_loss_without_training_records_or_with_a_suite_is_bad_input(
        tmp_path, pretrain_records):
    res = invoke("table", "loss", "--results", tmp_path)
    assert res.exit_code == 2 and "Traceback" not in res.output
    res = invoke("table", "loss", "--results", pretrain_records, "--suite", "squad")
    assert res.exit_code == 2 and "drop --suite" in res.output


def test_hand_edited_held_out_losses_leave_their_delta_out(pretrain_records, tmp_path):
    """Files in a results folder are hostile: per-example losses edited into strings, a
    wrong shape or a zero token count drop that run's Δ; the table still prints."""
    copy = tmp_path / "records"
    shutil.copytree(pretrain_records, copy)
    path = copy / "pre-r0.5" / "train.json"
    record = json.loads(path.read_text())
    record["heldout_examples"]["1"][0] = ["x", 1]
    record["heldout_examples"]["2"][0] = [1.0, 0]
    record["heldout_examples"]["4"] = {"not": "a list"}
    record["checkpoints"][0]["heldout_examples"] = [[1.0]]
    record["checkpoints"].append("not a checkpoint")
    path.write_text(json.dumps(record))
    rows = _csv("loss", "--results", copy)
    assert [r["Setting"] for r in rows].count("cross r0.5") == 0  # no valid #branch left
    assert [r["Setting"] for r in rows].count("cross r0") == 3
    curve = _csv("curve", "--results", copy)
    treated = [r for r in curve if r["Setting"] == "cross r0.5"]
    assert [r["Step"] for r in treated] == ["2", "3"]
    assert treated[0]["Held-out loss Δ"] == "" and treated[1]["Held-out loss Δ"] != ""
