"""The training grids (suites/grids/*.yaml with `kind: train`) name real runs: every
entry parses as a `pmbench train pretrain | finetune` command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

from pmbench.cli import app

GRIDS = sorted(p for p in (Path(__file__).resolve().parents[1] / "suites" / "grids").glob(
    "*.yaml") if yaml.safe_load(p.read_text()).get("kind") == "train")


def _args(entry: dict) -> list[str]:
    args = []
    for key, value in entry.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else {"--lora": "--full"}.get(flag, "--no-" + flag[2:]))
        else:
            args += [flag, str(value)]
    return args


def test_training_grids_exist():
    names = {p.stem for p in GRIDS}
    assert {"table2-train", "table2-train-cpu", "table3-train", "table3-train-cpu"} <= names


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_every_entry_is_a_valid_train_command(grid):
    raw = yaml.safe_load(grid.read_text())
    train = typer.main.get_command(app).commands["train"]
    ids = [r["id"] for r in raw["runs"]]
    assert len(ids) == len(set(ids)), "run ids must be unique"
    for run in raw["runs"]:
        entry = {**raw.get("options", {}), **run}
        command = train.commands[entry.pop("command")]
        entry["run_id"] = entry.pop("id")
        ctx = command.make_context(command.name, _args(entry))  # raises on a bad option
        assert ctx.params["run_id"] == run["id"]
        if "rope_2d_ratio" in entry:
            assert ctx.params["rope_2d_ratio"] == pytest.approx(float(entry["rope_2d_ratio"]))
