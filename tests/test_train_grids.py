"""The training grids (suites/grids/*.yaml with `kind: train`) name real runs: the sweep
parses every entry with the CLI's own parser (a bad option fails here, not an hour in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pmbench.sweep.grid import load_grid

GRIDS = sorted(p for p in (Path(__file__).resolve().parents[1] / "suites" / "grids").glob(
    "*.yaml") if yaml.safe_load(p.read_text()).get("kind") == "train")


def test_training_grids_exist():
    names = {p.stem for p in GRIDS}
    assert {"table2-train", "table2-train-cpu", "table3-train", "table3-train-cpu"} <= names


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_every_entry_is_a_valid_train_command(grid):
    raw = yaml.safe_load(grid.read_text())
    cells = load_grid(grid)
    assert [c.id for c in cells] == [r["id"] for r in raw["runs"]]
    assert len({c.id for c in cells}) == len(cells)
    for cell in cells:
        args = cell.command_args("new")
        assert args[:2] == ["train", cell.command] and cell.command in ("pretrain", "finetune")
        assert "--rope-2d-ratio" in args and "--branch" in args
