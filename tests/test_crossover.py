"""The crossover map (issue 30): the grid's shape, and a smoke version of it run end to
end on a tiny model, read back by `pmbench table crossover` and `plot crossover`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.sweep.grid import load_grid

ROOT = Path(__file__).resolve().parents[1]
SMOKE = Path(__file__).parent / "fixtures" / "crossover-smoke.yaml"
METHODS = {"sequential", "batch", "prefix", "rope2d"}


def _axes(cell) -> tuple:
    o = cell.options
    return o["context_len"], cell.branch, o["answer_len"]


def test_the_grid_crosses_each_axis_through_one_centre():
    cells = load_grid(ROOT / "suites" / "grids" / "crossover-cpu.yaml")
    assert all(c.suite == "synthetic" for c in cells)
    by_stage = {}
    for c in cells:
        by_stage.setdefault(c.stage, set()).add((c.method, *_axes(c)))
    # the must-hold: every method at N 16 on contexts 256 to 4096
    assert {(m, ctx) for m, ctx, n, _ in by_stage["context"] if n == 16} == {
        (m, ctx) for m in METHODS for ctx in (256, 1024, 4096)}
    assert {n for m, _, n, _ in by_stage["branches"] if m in ("prefix", "rope2d")} >= {32, 64}
    full = {(ctx, n, a) for _, ctx, n, a in by_stage["full"]}
    assert {ctx for ctx, _, _ in full} == {256, 1024, 4096}
    assert {a for _, _, a in full} == {"16", "64", "256"}


@pytest.fixture(scope="module")
def smoke_records(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("crossover")
    grid = out / "crossover-smoke.yaml"  # the fixture on the tiny model
    grid.write_text(SMOKE.read_text().replace(
        "    methods: &methods", f"    models: &models [{tiny_model_dir}]\n    methods: &methods"
    ).replace("    methods: *methods", "    models: *models\n    methods: *methods"))
    res = CliRunner().invoke(app, ["sweep", str(grid), "--output-dir", str(out / "records")])
    assert res.exit_code == 0, res.output
    return out / "records"


def test_table_crossover_reads_the_smoke_grid(smoke_records):
    res = CliRunner().invoke(app, ["table", "crossover", "--results", str(smoke_records),
                                   "--format", "csv"])
    assert res.exit_code == 0, res.output
    sections = {}
    for part in res.stdout.split("# Table ")[1:]:
        name, _, body = part.partition("\n")
        sections[name] = [line for line in body.splitlines() if line]
    assert set(sections) == {"crossover", "crossover-roof", "crossover-growth"}
    table = list(csv.DictReader(io.StringIO("\n".join(sections["crossover"]))))
    # the centre (context 8, N 2, answer 3), context 24, N 3 and answers of 2-5 tokens
    assert {(r["Context"], r["N"], r["Answer"]) for r in table} == {
        ("8", "2", "3"), ("24", "2", "3"), ("8", "3", "3"), ("8", "2", "2-5")}
    for pair in ("rope2d/prefix", "prefix/sequential", "batch/sequential"):
        for r in table:  # a value with its interval around it
            low, value, high = (float(r[f"{pair} {k}"]) for k in ("low", "×", "high"))
            assert 0 < low <= value <= high
    # the growth table: every method from context 8 to 24 at N 2
    assert len(sections["crossover-growth"]) == 1 + 4


def test_plot_crossover_draws_the_heatmaps(smoke_records, tmp_path):
    target = tmp_path / "crossover.png"
    res = CliRunner().invoke(app, ["plot", "crossover", "--results", str(smoke_records),
                                   "-o", str(target)])
    assert res.exit_code == 0, res.output
    assert target.stat().st_size > 10_000


def test_table_crossover_without_synthetic_runs_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["table", "crossover", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "synthetic" in res.output


def test_the_papers_tables_leave_the_synthetic_workload_out(smoke_records):
    """A workload is not a benchmark: Tables 1-5 do not show its runs (crossover does)."""
    res = CliRunner().invoke(app, ["table", "1", "--results", str(smoke_records)])
    assert res.exit_code == 2, res.output
    assert "Synthetic" not in res.output
