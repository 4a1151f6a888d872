"""The committed pre-training runs (results/reference/cpu-minimind-pretrain, issue 31): six
runs from scratch alike but for mask and ratio (and the ratio-0 cross run again with seed
1), `table loss` pairs each with its ratio-0
control at every #branch, Tables 2 and 3 show their "pre-trained from scratch" groups,
`table curve` and `plot learning-curve` read the checkpoints, and the folder holds records
only."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pmbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "reference" / "cpu-minimind-pretrain"
RUNS = ("pre-cross-r0", "pre-cross-r0.25", "pre-cross-r0.5", "pre-cross-r0.75",
        "pre-isolated-r0", "pre-isolated-r0.5", "pre-cross-r0-seed1")


def _csv(*args: str) -> pd.DataFrame:
    res = CliRunner().invoke(app, [*args, "--results", str(FOLDER), "-f", "csv"])
    assert res.exit_code == 0, res.output
    return pd.read_csv(io.StringIO(res.stdout))


def test_six_runs_share_budget_seed_and_held_out_tokens():
    trained = [json.loads((FOLDER / r / "train.json").read_text()) for r in RUNS]
    assert all(t["status"] == "complete" for t in trained)
    assert len({(t["tokens"], t["settings"]["steps"]) for t in trained[:6]}) == 1
    assert {t["settings"]["seed"] for t in trained} == {0, 1}
    for t in trained:
        assert sorted(t["heldout_examples"], key=int) == ["1", "2", "4", "8", "16"]
    counts = [[n for _, n in t["heldout_examples"]["4"]] for t in trained]
    assert all(c == counts[0] for c in counts)  # the same held-out examples, token for token


def test_table_loss_has_every_ratio_against_its_control_at_every_branch():
    rows = _csv("table", "loss")
    treated = rows[~rows["Setting"].isin(["cross r0", "isolated r0"])]
    assert sorted(set(treated["Setting"])) == ["cross r0 seed 1", "cross r0.25", "cross r0.5",
                                               "cross r0.75", "isolated r0.5"]
    assert sorted(set(treated["#branch"])) == [1, 2, 4, 8, 16]
    assert treated[["Δ", "low", "high"]].notna().all().all()
    assert ((treated["low"] <= treated["Δ"]) & (treated["Δ"] <= treated["high"])).all()


def test_tables_2_and_3_show_the_pretrained_groups():
    table2 = _csv("table", "2")
    pre = table2[table2["Training"].str.startswith("pre-trained from scratch")]
    assert len(pre) == 7 and pre["Loss"].notna().all()
    assert pre[["SQuAD F1 (%)", "MMLU (%)", "C-Eval (%)"]].notna().all().all()
    table3 = _csv("table", "3")
    pre = table3[(table3["Training"] == "pre-trained from scratch") & table3["tok/s"].notna()]
    assert sorted(pre["#branch"]) == [1, 2, 4, 8, 16]
    assert pre["Speedup (×)"].notna().all() and pre["Loss"].notna().all()


@pytest.mark.parametrize("command", [["table", "curve"], ["plot", "learning-curve"]])
def test_the_learning_curve_commands_read_the_checkpoints(command, tmp_path):
    extra = ["-o", str(tmp_path / "curve.png")] if command[0] == "plot" else ["-f", "csv"]
    res = CliRunner().invoke(app, [*command, "--results", str(FOLDER), *extra])
    assert res.exit_code == 0, res.output


def test_the_committed_folder_holds_records_not_weights():
    tracked = subprocess.run(["git", "ls-files", str(FOLDER)], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert sum(p.endswith("train.json") for p in tracked) == 7
    assert not [p for p in tracked if p.endswith((".safetensors", ".bin", ".pt", "claim.json"))
                or "/checkpoint/" in p or "/checkpoints/" in p or "/state/" in p]
    assert sum((ROOT / p).stat().st_size for p in tracked) < 12 * 2**20
