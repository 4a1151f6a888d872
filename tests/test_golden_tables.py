"""Tables 1-5 and compare on the committed records are byte-identical across refactors.

The expected outputs under tests/fixtures/golden were written by this test with
PMBENCH_UPDATE_GOLDEN=1 (from commit 4009038, before issue 29's restructuring); a change
to them is a change of what users see and must be made on purpose, in its own commit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "fixtures" / "golden"
BASELINE, REFERENCE = "results/baseline", "results/reference/cpu-smollm2"
CASES = {
    **{f"table-{name}-{fmt}": ("table", "--results", folder, "--format", fmt)
       for name, folder in (("baseline", BASELINE), ("reference", REFERENCE))
       for fmt in ("markdown", "latex", "csv")},
    "compare-folders": ("compare", BASELINE, BASELINE),
    "compare-runs": ("compare", f"{REFERENCE}/sweep-reference-cpu-sequential-squad-b4-bbc7c89d",
                     f"{REFERENCE}/sweep-reference-cpu-rope2d-squad-b4-01c5ae4d"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_output_is_unchanged(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, list(CASES[name]))
    out = f"exit {result.exit_code}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("PMBENCH_UPDATE_GOLDEN") == "1":
        path.write_text(out, encoding="utf-8")
    assert out == path.read_text(encoding="utf-8")
