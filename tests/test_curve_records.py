"""The committed learning curves (results/reference/cpu-smollm2-curves, issue 31): `table
curve` and `plot learning-curve` read them, every fine-tune has its checkpoints paired with
its ratio-0 control on the same 400 held-out questions, and the folder holds records only."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from pmbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "reference" / "cpu-smollm2-curves"


def test_table_curve_pairs_every_checkpoint_of_the_isolated_fine_tunes():
    res = CliRunner().invoke(app, ["table", "curve", "--results", str(FOLDER), "-f", "csv"])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(io.StringIO(res.stdout))
    treated = rows[rows["Setting"] == "isolated r0.5"]
    assert list(treated["Step"]) == [32, 64, 96]
    for column in ("Held-out loss Δ", "SQuAD F1 (%) Δ", "SQuAD F1 (%) low",
                   "SQuAD F1 (%) high"):
        assert treated[column].notna().all(), column
    assert (treated["SQuAD F1 (%) low"] <= treated["SQuAD F1 (%) Δ"]).all()
    assert (treated["SQuAD F1 (%) Δ"] <= treated["SQuAD F1 (%) high"]).all()
    # 400 questions: a 5-point paired difference is decidable (half-width under 5)
    assert ((treated["SQuAD F1 (%) high"] - treated["SQuAD F1 (%) low"]) / 2 < 5).all()


def test_plot_learning_curve_reads_the_committed_records(tmp_path):
    res = CliRunner().invoke(app, ["plot", "learning-curve", "--results", str(FOLDER),
                                   "-o", str(tmp_path / "curve.png")])
    assert res.exit_code == 0, res.output


def test_every_checkpoint_answered_the_same_held_out_questions(squad_titles):
    trained = [json.loads(p.read_text()) for p in FOLDER.glob("curve-ft-*/train.json")]
    heldout = {t for r in trained for t in r["data_split"]["squad"]["heldout_articles"]}
    asked = []
    for run in FOLDER.glob("sweep-*/run.json"):
        ids = [json.loads(line)["doc_id"] for line in (run.parent / "samples.jsonl").open()]
        assert {squad_titles[i] for i in ids} <= heldout, run.parent.name
        asked.append(sorted(ids))
    assert len(asked) >= 6 and all(ids == asked[0] for ids in asked)
    assert len(asked[0]) == 400


def test_the_committed_folder_holds_records_not_weights():
    tracked = subprocess.run(["git", "ls-files", str(FOLDER)], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert any(p.endswith("train.json") for p in tracked)
    assert not [p for p in tracked if p.endswith((".safetensors", ".bin", ".pt", "claim.json"))
                or "/checkpoint/" in p or "/checkpoints/" in p or "/state/" in p]
    assert sum((ROOT / p).stat().st_size for p in tracked) < 12 * 2**20
