"""The reference experiment (suites/grids/reference-cpu.yaml) in miniature: the shipped
grid's own stages, shrunk to a tiny random model, two fine-tunes of two steps and a few
questions, run end to end by the sweep; Tables 2 and 3 read what it wrote. The real
experiment takes hours and is not a test (results/reference/cpu-smollm2/README.md)."""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.cli import app
from pmbench.sweep.grid import expand_grid, grid_output_dir
from pmbench.sweep.supervise import run_sweep

GRID = Path(__file__).resolve().parents[1] / "suites" / "grids" / "reference-cpu.yaml"
ENV = {"PMBENCH_NO_ROOFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _shrink(raw: dict, base: Path, out: Path) -> dict:
    """The grid with the default model swapped for `base`, its records in `out`, two
    fine-tunes of two steps, and 4 SQuAD questions per cell (7 cells in all)."""
    grid = copy.deepcopy(raw)
    real_out = grid_output_dir(raw)
    grid["output_dir"] = str(out)
    # the throughput stage is left out: only its timing differs from the table3 stage
    grid["stages"] = [s for s in grid["stages"] if s["stage"] != "throughput"]
    stages = {s["stage"]: s for s in grid["stages"]}
    train = stages["train"]
    train["options"].update(model=str(base), steps=2, batch_size=2, save_every=2)
    train["runs"] = [{**r, "heldout_branches": "4", "eval_every": 0}
                     for r in train["runs"][:2]]
    kept = {r["id"] for r in train["runs"]}
    suites = [{"name": "squad", "limit": 4}]
    for name, stage in stages.items():
        if name == "train":
            continue
        stage["models"] = [m.replace(real_out, str(out)) for m in stage["models"]
                           if m == "smollm2-135m-instruct" or Path(m).parent.name in kept]
        stage["models"] = [str(base) if m == "smollm2-135m-instruct" else m
                           for m in stage["models"]]
        stage["suites"] = suites
        stage["options"] = {"device": "cpu", "threads": 1, "no_warmup": True}
        if "rope2d" in stage:
            stage["rope2d"] = stage["rope2d"][:1]
        if name == "table3":
            stage["branches"] = [1, 4]
    return grid


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer):
    base = tmp_path_factory.mktemp("tiny-base")
    make_tiny_model("llama", len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path_factory.mktemp("reference")
    raw = yaml.safe_load(GRID.read_text(encoding="utf-8"))
    cells = expand_grid(_shrink(raw, base, out), "reference-cpu")
    results = run_sweep(cells, out, env={**os.environ, **ENV})
    return cells, results, out


def test_the_shipped_grid_names_the_issue_13_runs():
    raw = yaml.safe_load(GRID.read_text(encoding="utf-8"))
    cells = expand_grid(raw, "reference-cpu")
    trains = [c for c in cells if c.kind == "train"]
    settings = {(c.options["mask"], c.options["rope_2d_ratio"]) for c in trains}
    assert settings == {("cross", 0.0), ("cross", 0.25), ("cross", 0.5), ("cross", 0.75),
                        ("isolated", 0.0), ("isolated", 0.5)}
    assert len({json.dumps({k: v for k, v in c.options.items()
                            if k not in ("mask", "rope_2d_ratio", "heldout_branches",
                                         "eval_every")}, sort_keys=True)
                for c in trains}) == 1  # the same fine-tuning settings for every cell
    evals = [c for c in cells if c.stage in ("trained", "untrained")]
    assert {c.branch for c in evals} == {4}
    for suite in ("squad", "mmlu", "ceval"):
        assert all(c.options["limit"] >= 200 for c in evals if c.suite == suite)
        trained = {c.model for c in evals if c.suite == suite and c.method == "rope2d"}
        assert {f"{grid_output_dir(raw)}/{c.id}/checkpoint" for c in trains} <= trained
        untrained = {(c.rope2d["mask"], c.rope2d["ratio"]) for c in evals
                     if c.suite == suite and c.model == "smollm2-135m-instruct"
                     and c.method == "rope2d"}
        assert untrained == settings  # the untrained model at each trained setting
        assert any(c.method == "sequential" for c in evals if c.suite == suite)
    table3 = {c.branch for c in cells if getattr(c, "throughput", False)}
    assert table3 == {1, 2, 4, 8, 16}


def test_the_miniature_runs_every_stage(reference):
    cells, results, out = reference
    failed = [(r.cell.id, r.message) for r in results if r.status != "ran"]
    assert not failed
    stages = {c.stage for c in cells}
    assert stages == {"train", "trained", "untrained", "table3"}
    train = json.loads((out / "ref-ft-cross-r0.5" / "train.json").read_text())
    assert train["status"] == "complete" and train["rope2d"]["mask"] == "cross"
    assert train["heldout_loss_start"] > 0 and set(train["heldout_loss"]) == {"4"}


def test_tables_2_and_3_read_the_miniature(reference):
    _, _, out = reference
    t2 = CliRunner().invoke(app, ["table", "2", "--results", str(out), "--format", "csv"])
    assert t2.exit_code == 0, t2.output
    rows = pd.read_csv(io.StringIO(t2.stdout))
    assert rows["Weights"].tolist() == ["as shipped"] * 2 + ["fine-tuned", "as shipped",
                                                             "fine-tuned"]
    assert rows["Setting"][0] == "sequential" and rows["Mask"][1:].tolist() == [
        "cross", "cross", "isolated", "isolated"]
    assert rows["Loss"][1:].notna().all() and rows["SQuAD F1 (%)"][:3].notna().all()
    t3 = CliRunner().invoke(app, ["table", "3", "--results", str(out), "--format", "csv"])
    assert t3.exit_code == 0, t3.output
    rows = pd.read_csv(io.StringIO(t3.stdout))
    best = rows[rows["Model"].str.contains("ref-ft-isolated-r0.5")]
    assert sorted(best["#branch"]) == [1, 4] and best["SQuAD F1 (%)"].notna().all()
