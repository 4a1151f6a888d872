"""Sweeps: grid expansion and validation, cell ids, shards, and real runs that resume.
(The shipped grids are checked in test_grids.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.cli import app
from pmbench.errors import BadInput
from pmbench.jobs.spec import THROUGHPUT_REPEATS, RunSettings
from pmbench.sweep.grid import expand_grid, load_grid, parse_shard, shard
from pmbench.sweep.options import parse_set
from pmbench.sweep.supervise import cell_state, run_sweep

GRID = {
    "name": "t",
    "methods": ["sequential", "batch", "rope2d"],
    "branches": [1, 4],
    "suites": ["squad", {"name": "mmlu", "max_new_tokens": 1}],
    "rope2d": [{}, {"ratio": 0.5, "mode": "split"}],
    "options": {"limit": 8, "max-new-tokens": 16, "ignore_eos": True},
}


def test_expansion_crosses_axes_and_rope2d_only_for_rope2d():
    cells = expand_grid(GRID, "file")
    # per suite x branch: sequential, batch, and rope2d twice (two rope2d settings)
    assert len(cells) == 2 * 2 * 4
    assert {c.method for c in cells if c.rope2d} == {"rope2d"}
    rope = [c for c in cells if c.method == "rope2d"]
    assert sorted(str(c.rope2d) for c in rope).count("{}") == len(rope) // 2
    assert len({c.id for c in cells}) == len(cells)
    first = cells[0]
    assert first.id.startswith("sweep-t-sequential-squad-b1-") and len(first.id.split("-")[-1]) == 8
    # deterministic: the same grid gives the same ids, in the same order
    assert [c.id for c in expand_grid(GRID, "file")] == [c.id for c in cells]


def test_options_merge_and_become_flags():
    cells = expand_grid(GRID, "file", overrides={"limit": 3})
    squad = next(c for c in cells if c.suite == "squad" and c.method == "batch")
    mmlu = next(c for c in cells if c.suite == "mmlu" and c.method == "batch")
    assert squad.options == {"ignore_eos": True, "limit": 3, "max_new_tokens": 16}
    assert mmlu.options["max_new_tokens"] == 1  # the suite entry beats the grid options
    args = next(c for c in cells if c.rope2d).run_args()
    assert args[:6] == ["--method", "rope2d", "--suite", "squad", "--branch", "1"]
    assert args[args.index("--rope-2d-ratio") + 1] == "0.5"
    assert "--ignore-eos" in args and args[args.index("--limit") + 1] == "3"
    off = expand_grid({**GRID, "options": {"ignore_eos": False}}, "f")[0].run_args()
    assert "--ignore-eos" not in off


def test_any_parameter_changes_the_id():
    base = expand_grid(GRID, "f")[0].id
    assert expand_grid(GRID, "f", overrides={"device": "cuda"})[0].id != base
    assert expand_grid({**GRID, "models": ["other/model"]}, "f")[0].id != base
    assert expand_grid({**GRID, "name": "u"}, "f")[0].id != base


def test_include_and_exclude():
    grid = {**GRID, "exclude": [{"method": "sequential", "branch": 4},
                                {"method": "rope2d", "rope2d": {"ratio": 0.5}}],
            "include": [{"method": "batch", "suite": "gsm8k", "branch": 2,
                         "options": {"limit": 2}}]}
    cells = expand_grid(grid, "f")
    assert not [c for c in cells if c.method == "sequential" and c.branch == 4]
    assert not [c for c in cells if c.rope2d.get("ratio") == 0.5]
    extra = [c for c in cells if c.suite == "gsm8k"]
    assert len(extra) == 1 and extra[0].branch == 2 and extra[0].options["limit"] == 2


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"colour": "red"}, "unknown key"),
        ({"kind": "dance"}, "kind"),
        ({"methods": []}, "empty"),
        ({"methods": ["nope"]}, "unknown method"),
        ({"suites": ["nope"]}, "unknown suite"),
        ({"branches": [0]}, "branch"),
        ({"branches": ["two"]}, "branch"),
        ({"options": {"limit": "ten"}}, "limit"),
        ({"options": {"limit": 0}}, "--limit"),
        ({"options": {"ignore_eos": "yes"}}, "ignore_eos"),
        ({"options": {"frobnicate": 1}}, "unknown option"),
        ({"options": {"method": "batch"}}, "set by the grid"),
        ({"options": {"run_id": "x"}}, "set by the grid"),
        ({"options": {"subjects": {"a": 1}}}, "subjects"),
        ({"rope2d": [{"ratio": 2.0}]}, "ratio"),
        ({"rope2d": [{"mode": "diagonal"}]}, "mode"),
        ({"rope2d": [{"angle": 1}]}, "unknown key"),
        ({"exclude": [{"method": "sequential"}, {"method": "batch"}, {"method": "rope2d"}]},
         "no cells"),
        ({"suites": [{"max_new_tokens": 3}]}, "name"),
    ],
)
def test_bad_grids_are_bad_input(change, needle):
    with pytest.raises(BadInput, match=needle):
        expand_grid({**GRID, **change}, "f")


# a grid with a throughput block: accuracy runs keep the suite's stopping (no ignore_eos)
TP_GRID = {
    "name": "tp",
    "methods": [{"name": "sequential", "branches": [1]}, {"name": "batch", "branches": [4, 2]},
                "rope2d"],
    "branches": [4],
    "suites": ["squad", {"name": "mmlu", "max_new_tokens": 1}],
    "options": {"limit": 8},
    "throughput": {"max_new_tokens": 16, "no_warmup": True},
}


def test_method_entries_may_carry_their_own_branches():
    grid = {k: v for k, v in TP_GRID.items() if k != "throughput"}
    cells = expand_grid(grid, "f")
    rows = [(c.method, c.branch) for c in cells if c.suite == "squad"]
    # the grid's branches first, then those only a method names, ascending; method order kept
    assert rows == [("batch", 4), ("rope2d", 4), ("sequential", 1), ("batch", 2)]
    assert all("branches" not in c.options for c in cells)
    no_common = {k: v for k, v in grid.items() if k != "branches"}
    with pytest.raises(BadInput, match="'rope2d' has none"):
        expand_grid(no_common, "f")
    no_common["methods"] = TP_GRID["methods"][:2]
    assert len(expand_grid(no_common, "f")) == 2 * 3


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"methods": [{"name": "batch", "branches": [0]}]}, "branch counts"),
        ({"methods": [{"name": "batch", "branches": []}]}, "empty"),
        ({"suites": [{"name": "squad", "branches": [2]}]}, "only method entries"),
    ],
)
def test_bad_method_branches(change, needle):
    with pytest.raises(BadInput, match=needle):
        expand_grid({**TP_GRID, **change}, "f")


def test_throughput_block_makes_every_cell_an_accuracy_and_a_throughput_run():
    cells = expand_grid(TP_GRID, "f", overrides={"limit": 4})
    plain = expand_grid({k: v for k, v in TP_GRID.items() if k != "throughput"}, "f",
                        overrides={"limit": 4})
    assert len(cells) == 2 * len(plain)
    accuracy, throughput = cells[0::2], cells[1::2]  # each accuracy run, then its throughput run
    # accuracy runs are the cells of the same grid without the block: same ids, same records
    assert [c.id for c in accuracy] == [c.id for c in plain]
    assert not any(c.throughput for c in accuracy) and all(c.throughput for c in throughput)
    for acc, tp in zip(accuracy, throughput, strict=True):
        assert (acc.method, acc.suite, acc.branch) == (tp.method, tp.suite, tp.branch)
        assert "ignore_eos" not in acc.options and acc.options["limit"] == 4  # --set: both
        assert tp.options == {"ignore_eos": True, "limit": 4, "max_new_tokens": 16,
                              "no_warmup": True}  # the block beats mmlu's 1
        assert tp.id.startswith(f"sweep-tp-{acc.method}-{acc.suite}-b{acc.branch}-tp-")
        assert "--ignore-eos" in tp.run_args() and "--ignore-eos" not in acc.run_args()
        assert tp.label().endswith("(throughput)")
    assert len({c.id for c in cells}) == len(cells)
    mmlu = next(c for c in accuracy if c.suite == "mmlu")
    assert mmlu.options["max_new_tokens"] == 1
    # defaults: 64 tokens, and `pmbench run`'s repeats for --ignore-eos; `--set` beats the
    # block too
    tp = expand_grid({**TP_GRID, "throughput": None}, "f")[1]
    assert tp.options["max_new_tokens"] == 64 and "repeats" not in tp.options
    assert RunSettings("rope2d", "squad", ignore_eos=True).timed_repeats == THROUGHPUT_REPEATS == 5
    tp = expand_grid({**TP_GRID, "throughput": None}, "f", overrides={"repeats": 2})[1]
    assert tp.options["max_new_tokens"] == 64 and tp.options["repeats"] == 2


@pytest.mark.parametrize(
    ("change", "overrides", "needle"),
    [
        ({"options": {"ignore_eos": True}}, None, "drop ignore_eos"),
        ({"suites": [{"name": "squad", "ignore-eos": True}]}, None, "drop ignore_eos"),
        ({}, {"ignore_eos": True}, "drop ignore_eos"),
        ({"include": [{"method": "batch", "suite": "squad", "options": {"ignore_eos": True}}]},
         None, "drop ignore_eos"),
        ({"throughput": {"ignore_eos": True}}, None, "throughput: ignore_eos is set by"),
        ({"throughput": {"max_new_tokens": None}}, None, "fixed number of tokens"),
        ({"throughput": {"max_new_tokens": 0}}, None, "--max-new-tokens"),
        ({"throughput": {"frobnicate": 1}}, None, "unknown option"),
        ({"throughput": [64]}, None, "mapping"),
    ],
)
def test_bad_throughput_blocks(change, overrides, needle):
    with pytest.raises(BadInput, match=needle):
        expand_grid({**TP_GRID, **change}, "f", overrides=overrides)


TRAIN = {
    "kind": "train",
    "options": {"branch": 4, "seed": 0, "command": "pretrain"},
    "runs": [
        {"id": "p-r0.5", "size": "cpu-tiny", "rope_2d_ratio": 0.5, "steps": 3},
        {"id": "ft", "command": "finetune", "lora": False, "branch": 2},
    ],
}


def test_train_grids_list_train_commands():
    cells = expand_grid(TRAIN, "f", overrides={"device": "cpu"})
    assert [c.id for c in cells] == ["p-r0.5", "ft"]  # ids as given: eval grids name them
    pre, ft = (c.command_args("new") for c in cells)
    assert pre[:2] == ["train", "pretrain"] and pre[-2:] == ["--run-id", "p-r0.5"]
    assert pre[pre.index("--rope-2d-ratio") + 1] == "0.5" and "--device" in pre
    assert ft[:2] == ["train", "finetune"] and "--full" in ft  # lora: false
    assert ft[ft.index("--branch") + 1] == "2"  # the entry beats the shared options
    assert cells[0].command_args("partial") == ["train", "pretrain", "--resume", "p-r0.5"]
    assert cells[0].record_file == "train.json"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"runs": []}, "runs"),
        ({"runs": [{"size": "cpu-tiny"}]}, "id"),
        ({"runs": [{"id": "a", "command": "dance"}]}, "command"),
        ({"runs": [{"id": "a"}, {"id": "a"}]}, "duplicate"),
        ({"runs": [{"id": "a b"}]}, "run id"),
        ({"runs": [{"id": "a", "steps": "many"}]}, "--steps"),
        ({"runs": [{"id": "a", "frobnicate": 1}]}, "unknown option"),
        ({"methods": ["batch"]}, "unknown key"),
    ],
)
def test_bad_train_grids_are_bad_input(change, needle):
    with pytest.raises(BadInput, match=needle):
        expand_grid({**TRAIN, **change}, "f")


STAGED = {
    "name": "st",
    "output_dir": "results/st",
    "stages": [
        {"stage": "train", **{k: v for k, v in TRAIN.items() if k != "name"}},
        {"stage": "eval", "models": ["results/st/p-r0.5/checkpoint"], "methods": ["rope2d"],
         "branches": [4], "suites": ["mmlu"], "options": {"limit": 8}},
        {"stage": "again", "models": ["results/st/p-r0.5/checkpoint"], "methods": ["rope2d"],
         "branches": [4, 8], "suites": ["mmlu"], "options": {"limit": 8}},
    ],
}


def test_staged_grid_runs_its_stages_in_order_with_one_name():
    from pmbench.sweep.grid import grid_output_dir, pick_stage, stage_names
    from pmbench.sweep.supervise import needed_training

    cells = expand_grid(STAGED, "file", overrides={"limit": 4})
    assert [c.stage for c in cells] == ["train", "train", "eval", "again"]
    assert stage_names(cells) == ["train", "eval", "again"]
    # the b4 cell of "again" is the "eval" cell: it runs once, in the earlier stage
    assert [c.branch for c in pick_stage(cells, "again")] == [8]
    assert all(c.id.startswith("sweep-st-") for c in cells if c.kind == "run")
    assert cells[2].options["limit"] == 4  # --set reaches the run stages
    assert "--limit" not in cells[0].command_args("new")  # and not the train commands
    trainings = {c.id: c for c in cells if c.kind == "train"}
    assert [needed_training(c, trainings) for c in cells] == [None, None, "p-r0.5", "p-r0.5"]
    assert grid_output_dir(STAGED) == "results/st"
    with pytest.raises(BadInput, match="no stage 'x'"):
        pick_stage(cells, "x")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"stages": []}, "stages"),
        ({"stages": [{"stage": "a", "kind": "train", "runs": [{"id": "x",
                                                                "command": "pretrain"}]},
                     {"stage": "a", "methods": ["batch"], "branches": [1],
                      "suites": ["squad"]}]}, "two stages named"),
        ({"stages": [{"stage": "a", "name": "b", "methods": ["batch"], "branches": [1],
                      "suites": ["squad"]}]}, "belong to the whole grid"),
        ({"methods": ["batch"]}, "unknown key"),
        ({"output_dir": ["a"]}, "output_dir"),
    ],
)
def test_bad_staged_grids_are_bad_input(change, needle):
    from pmbench.sweep.grid import grid_output_dir

    with pytest.raises(BadInput, match=needle):
        grid = {**STAGED, **change}
        grid_output_dir(grid)
        expand_grid(grid, "f")


def test_eval_cell_fails_at_once_when_its_training_is_missing_or_failed(tmp_path, monkeypatch):
    from pmbench.sweep import supervise as sweep

    cells = expand_grid(STAGED, "f")
    train, evaluate = cells[0], cells[2]
    # the other shard's training was never started: fail, don't wait
    (result,) = run_sweep([evaluate], tmp_path, grid_cells=cells, wait_s=0.01)
    assert result.status == "failed" and "has not been started" in result.message
    # this process ran the training, which stopped half-way: fail, don't wait
    (tmp_path / train.id).mkdir()
    (tmp_path / train.id / "train.json").write_text(json.dumps({"status": "running"}))
    monkeypatch.setattr(sweep, "run_cell", lambda cell, *a, **k: sweep.CellResult(cell, "failed"))
    results = run_sweep([train, evaluate], tmp_path, grid_cells=cells, wait_s=0.01)
    assert results[1].status == "failed" and "did not complete" in results[1].message


def test_eval_cell_waits_while_another_process_trains(tmp_path, monkeypatch):
    from pmbench.sweep import supervise as sweep

    cells = expand_grid(STAGED, "f")
    train, evaluate = cells[0], cells[2]
    record = tmp_path / train.id / "train.json"
    record.parent.mkdir()
    record.write_text(json.dumps({"status": "running"}))
    events = []

    def on_event(event, cell, *_):
        events.append(event)
        if event == "waiting" and events.count("waiting") == 3:  # the other shard finishes
            record.write_text(json.dumps({"status": "complete"}))

    ran = []
    monkeypatch.setattr(sweep, "run_cell", lambda cell, *a, **k: ran.append(cell) or
                        sweep.CellResult(cell, "ran"))
    (result,) = run_sweep([evaluate], tmp_path, on_event, grid_cells=cells, wait_s=0.01)
    assert result.status == "ran" and ran == [evaluate]
    assert events.count("waiting") == 3


def test_bad_grid_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [batch\n")
    for args in (["sweep", str(bad)], ["sweep", str(tmp_path / "missing.yaml")],
                 ["sweep", str(bad), "--shard", "3/2"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_are_disjoint_balanced_and_cover_the_grid(n):
    cells = expand_grid(GRID, "f")
    parts = [[c.id for c in shard(cells, (i, n))] for i in range(1, n + 1)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == sorted(c.id for c in cells) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_throughput_run_goes_to_the_shard_of_its_accuracy_run():
    cells = expand_grid(TP_GRID, "f")
    parts = [shard(cells, (i, 2)) for i in (1, 2)]
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in cells)
    assert abs(len(parts[0]) - len(parts[1])) <= 2
    for part in parts:  # pairs: each accuracy run followed by its own throughput run
        assert [c.throughput for c in part] == [False, True] * (len(part) // 2)
        assert all(a.label() + " (throughput)" == t.label() for a, t in zip(
            part[0::2], part[1::2], strict=True))


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "1-2", ""])
def test_bad_shards(text):
    with pytest.raises(BadInput):
        parse_shard(text)


def test_parse_set():
    assert parse_set(["device=cuda", "limit=8", "ignore_eos=true", "limit2="]) == {
        "device": "cuda", "limit": 8, "ignore_eos": True, "limit2": None}
    with pytest.raises(BadInput):
        parse_set(["novalue"])


# ------------------------------------------------------------------ real runs

ENV = {"PMBENCH_NO_ROOFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def two_cell_grid(tmp_path_factory, tokenizer):
    """A 2-cell grid (sequential and batch, squad, 2 questions, 2 tokens) on a tiny model."""
    folder = tmp_path_factory.mktemp("sweep")
    model = folder / "tiny"
    make_tiny_model("llama", len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    grid = folder / "two.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "two", "models": [str(model)], "methods": ["sequential", "batch"],
        "branches": [2], "suites": ["squad"],
        "options": {"limit": 2, "max_new_tokens": 2, "no_warmup": True, "threads": 1},
    }))
    return grid


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _record(out: Path, cell) -> dict:
    return json.loads((out / cell.id / "run.json").read_text())


def test_shards_together_run_the_grid_once(two_cell_grid, tmp_path):
    cells = load_grid(two_cell_grid)
    assert len(cells) == 2
    first = run_sweep(shard(cells, (1, 2)), tmp_path, env=_env())
    second = run_sweep(shard(cells, (2, 2)), tmp_path, env=_env())
    assert [r.status for r in first + second] == ["ran", "ran"], [r.message for r in first + second]
    assert {r.cell.id for r in first} | {r.cell.id for r in second} == {c.id for c in cells}
    for cell in cells:
        rec = _record(tmp_path, cell)
        assert rec["status"] == "complete" and rec["method"] == cell.method
        assert rec["branch"] == 2 and rec["metrics"]["n"] == 2
    again = run_sweep(cells, tmp_path, env=_env())
    assert [r.status for r in again] == ["skipped", "skipped"]


def test_interrupted_sweep_resumes_with_only_the_unfinished_cell(two_cell_grid, tmp_path):
    """Ctrl-C the real CLI once the first cell is complete, then run the same command."""
    cells = load_grid(two_cell_grid)
    cmd = [sys.executable, "-c", "from pmbench.cli import main; main()", "sweep",
           str(two_cell_grid), "--output-dir", str(tmp_path)]
    # a shell's background job starts with SIGINT ignored, and Python keeps it so: give the
    # sweep the default disposition, as a terminal would
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 600
    while cell_state(tmp_path, cells[0]) != "done":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "first cell did not finish"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to continue" in err
    assert cell_state(tmp_path, cells[1]) != "done"
    finished_first = _record(tmp_path, cells[0])["finished"]

    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert cell_state(tmp_path, cells[1]) == "done"
    assert _record(tmp_path, cells[0])["finished"] == finished_first  # not run again
    starts = [_starts(tmp_path, c) for c in cells]
    assert starts[0] == 1 and starts[1] >= 1, starts


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _starts(out: Path, cell) -> int:
    """How many times the sweep started this cell (one header line per start in its log)."""
    log = (out / cell.id / "sweep.log").read_text()
    return sum(1 for line in log.splitlines() if line.startswith("# "))


def test_grid_options_are_the_commands_own():
    """A grid names `pmbench run` / `pmbench train` options; the sweep knows them from the
    run spec and the training settings, which must list exactly the commands' options."""
    import click
    import typer.main

    from pmbench.jobs.spec import option_types
    from pmbench.sweep.train_cells import train_options

    command = typer.main.get_command(app)
    run = command.get_command(click.Context(command), "run")
    assert set(option_types()) | {"json_out"} == {p.name for p in run.params}
    train = command.commands["train"]
    for kind in ("pretrain", "finetune"):
        assert set(train_options(kind)) == {p.name for p in train.commands[kind].params}


def test_without_a_terminal_a_sweep_prints_a_line_per_cell(two_cell_grid, tmp_path,
                                                            monkeypatch):
    """nohup, CI, a log file: the live bar would print nothing until the end."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    res = CliRunner().invoke(app, ["sweep", str(two_cell_grid), "--output-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = [ln.split("] ", 1)[1] for ln in res.stderr.splitlines() if ln.startswith("[")]
    cells = load_grid(two_cell_grid)
    assert [ln for ln in lines if ln.startswith("cells: ")] == [
        "cells: 1/2 cells done", "cells: 2/2 cells done"]
    assert all(any(cell.label() in ln for ln in lines) for cell in cells)
