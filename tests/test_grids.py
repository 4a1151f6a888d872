"""The shipped grids (suites/grids/*.yaml) expand with the sweep's own parser, and the table
grids hold the paper's rows, each as an accuracy run followed by its throughput run.
Expansion loads no model, so grids naming hub ids or checkpoints not trained yet expand."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from pmbench.sweep.grid import Cell, load_grid

FOLDER = Path(__file__).resolve().parents[1] / "suites" / "grids"
GRIDS = sorted(FOLDER.glob("*.yaml"))
HUB_MODELS = ["smollm2-135m-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
              "meta-llama/Meta-Llama-3-8B-Instruct"]


@pytest.fixture(autouse=True)
def prefix_method(monkeypatch):
    """The `prefix` runner is a separate plugin: stand in for it where it is not registered."""
    from pmbench.engine.runners import base

    runners = base.available_runners()
    if "prefix" not in runners:
        monkeypatch.setattr(base, "available_runners",
                            lambda: {**runners, "prefix": runners["batch"]})


def _load(stem: str) -> list[Cell]:
    return load_grid(FOLDER / f"{stem}.yaml")


def _rows(cells: list[Cell]) -> set[tuple]:
    return {(c.model, c.method, c.branch, c.suite) for c in cells}


def _cross(models, rows, suites) -> set[tuple]:
    return {(m, method, b, s) for m, (method, b), s in itertools.product(models, rows, suites)}


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_every_shipped_grid_expands(grid):
    if "llamacpp" in (yaml.safe_load(grid.read_text()).get("methods") or []):
        pytest.importorskip("llama_cpp")
    cells = load_grid(grid)
    assert cells and len({c.id for c in cells}) == len(cells)


TABLE_GRIDS = {  # grid: (cells, new tokens and repeats of its throughput runs)
    "table1": (288, 64, 5), "table3": (42, 64, 5), "table5": (26, 64, 5),
    "table1-cpu-smoke": (24, 8, 1), "table3-cpu-smoke": (18, 8, 1),
    "table5-cpu-smoke": (14, 8, 1),
}


@pytest.mark.parametrize("stem", TABLE_GRIDS)
def test_table_grids_pair_each_accuracy_run_with_a_throughput_run(stem):
    cells = _load(stem)
    count, tokens, repeats = TABLE_GRIDS[stem]
    assert len(cells) == count
    for acc, tp in zip(cells[0::2], cells[1::2], strict=True):
        assert not acc.throughput and tp.throughput and "-tp-" in tp.id
        assert (acc.model, acc.method, acc.branch, acc.suite, acc.rope2d) == (
            tp.model, tp.method, tp.branch, tp.suite, tp.rope2d)
        assert not acc.options.get("ignore_eos")  # the suite's own stopping
        assert tp.options["ignore_eos"] and tp.options["max_new_tokens"] == tokens
        assert tp.options["repeats"] == repeats and tp.options["limit"] == acc.options["limit"]
    if stem.endswith("cpu-smoke"):  # sized for a shared 2-core CPU
        assert all(c.options["threads"] == 1 and c.options["limit"] <= 8 for c in cells)
        assert "device" not in cells[0].options
    else:
        assert all(c.options["device"] == "cuda" and c.options["dtype"] == "bfloat16"
                   for c in cells)


def test_table1_has_the_papers_rows_for_every_model_and_suite():
    rows = [("sequential", 1), ("batch", 4), ("batch", 8), ("prefix", 4), ("prefix", 8),
            ("rope2d", 2), ("rope2d", 4), ("rope2d", 8), ("rope2d", 16)]
    assert _rows(_load("table1")) == _cross(HUB_MODELS, rows,
                                            ["mmlu", "ceval", "gsm8k", "humaneval"])
    smoke = [("sequential", 1), ("batch", 4), ("prefix", 4), ("rope2d", 4)]
    assert _rows(_load("table1-cpu-smoke")) == _cross([None], smoke, ["mmlu", "ceval", "gsm8k"])


def test_table5_has_every_method_at_2_to_16_questions():
    rows = [("sequential", 1)] + [(m, b) for m in ("batch", "prefix", "rope2d")
                                  for b in (2, 4, 8, 16)]
    assert _rows(_load("table5")) == _cross(["smollm2-135m-instruct"], rows, ["squad"])
    smoke = [("sequential", 1)] + [(m, b) for m in ("batch", "prefix", "rope2d") for b in (2, 4)]
    assert _rows(_load("table5-cpu-smoke")) == _cross([None], smoke, ["squad"])


@pytest.mark.parametrize(("stem", "train", "branches", "model"), [
    ("table3", "table3-train", [1, 2, 4, 8, 16], "smollm2-135m-instruct"),
    ("table3-cpu-smoke", "table3-train-cpu-smoke", [1, 4], None),
])
def test_table3_scales_the_shipped_model_and_the_checkpoints_trained_at_0_5(
        stem, train, branches, model):
    cells = [c for c in _load(stem) if not c.throughput]
    shipped = [c for c in cells if c.model == model]
    rows = [("sequential", 1)] + [(m, b) for m in ("batch", "prefix", "rope2d") for b in branches]
    assert _rows(shipped) == _cross([model], rows, ["mmlu"])
    assert all(c.rope2d == {"ratio": 0.0} for c in shipped if c.method == "rope2d")
    # one rope2d row per #branch on the checkpoint trained with that many branches at ratio
    # 0.5 by the training grid; the run takes its settings from the checkpoint's config.json
    runs = {c.options["branch"]: c for c in load_grid(FOLDER / f"{train}.yaml")}
    assert sorted(runs) == branches
    assert all(r.options["rope_2d_ratio"] == 0.5 for r in runs.values())
    trained = sorted((c for c in cells if c.model != model), key=lambda c: c.branch)
    assert [(c.model, c.method, c.branch, c.rope2d) for c in trained] == [
        (f"results/{runs[b].id}/checkpoint", "rope2d", b, {}) for b in branches]


def test_cpu_smoke_runs_every_method():
    assert {c.method for c in _load("cpu-smoke")} == {"sequential", "batch", "prefix", "rope2d"}
