"""One-line errors everywhere (issue 14, item 6): every entry point turns a bad grid, a bad
option, a corrupt record or data file and a full disk into one line on stderr and exit 2,
never a traceback."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pmbench.cli import _last_resort, app
from pmbench.errors import BadInput
from pmbench.report.results import load
from pmbench.safe_io import atomic_write, atomic_write_text, read_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "records"
GRID = {"methods": ["sequential"], "branches": [1], "suites": ["squad"],
        "options": {"limit": 2}}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


PROGRESS_LINE = re.compile(r"\[\s*\d+\.\d s\] ")  # a run's progress without a terminal


def one_line(res) -> str:
    """The error line of a run that must have failed as bad input (after any progress
    lines a run prints without a terminal)."""
    assert "Traceback" not in res.output + res.stderr
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines()
             if ln.strip() and not PROGRESS_LINE.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def grid_file(tmp_path: Path, grid: dict | bytes) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_bytes(grid if isinstance(grid, bytes) else yaml.safe_dump(grid).encode())
    return path


# ------------------------------------------------------------------------ sweeps


@pytest.mark.parametrize("value", ["[", "{a: 1", "'open", "a: b: c"])
def test_a_set_value_that_is_not_yaml(tmp_path, value):
    line = one_line(invoke("sweep", grid_file(tmp_path, GRID), "--set", f"limit={value}",
                           "--dry-run"))
    assert line.startswith(f"error: --set {'limit=' + value!r}: the value is not valid YAML (")


@pytest.mark.parametrize("grid", [
    {**GRID, "options": ["limit", 2]},
    {"kind": "train", "options": ["branches", 4],
     "runs": [{"id": "t1", "command": "pretrain"}]},
    {"stages": [{"stage": "a", "kind": "train", "options": [1],
                 "runs": [{"id": "t1", "command": "pretrain"}]}]},
])
def test_grid_options_that_are_a_list(tmp_path, grid):
    line = one_line(invoke("sweep", grid_file(tmp_path, grid), "--dry-run"))
    assert line == "error: grid options: options must be a mapping, got list"


def test_a_grid_file_that_is_not_utf8(tmp_path):
    path = grid_file(tmp_path, b"methods: [sequential]\nname: caf\xe9\n")
    line = one_line(invoke("sweep", path, "--dry-run"))
    assert line == f"error: grid file {path} is not UTF-8 text (invalid continuation byte " \
                   "at byte 31)"


@pytest.mark.parametrize(("option", "needle"), [
    ("threads=0", "--threads must be >= 1 (got 0)"),
    ("threads=-1", "--threads must be >= 1 (got -1)"),
    ("device=foo", "unknown --device 'foo'"),
])
def test_grid_cells_with_bad_options_fail_before_anything_runs(tmp_path, option, needle):
    line = one_line(invoke("sweep", grid_file(tmp_path, GRID), "--set", option,
                           "--output-dir", tmp_path / "out"))
    assert needle in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------- records: bad types


def _edited_fixtures(tmp_path: Path, edit, run: str = "20261126-100400-rope2d-squad-b4-6918"
                     ) -> tuple[Path, Path]:
    """A copy of the fixture records with `edit` applied to one squad run; its path."""
    root = tmp_path / "records"
    shutil.copytree(FIXTURES, root)
    path = root / run / "run.json"
    rec = json.loads(path.read_text())
    edit(rec)
    path.write_text(json.dumps(rec))
    return root, path


def _set(dotted: str, value):
    def edit(rec: dict) -> None:
        *parents, key = dotted.split(".")
        target = rec
        for p in parents:
            target = target[p]
        target[key] = value
    return edit


@pytest.mark.parametrize(("dotted", "value", "why"), [
    ("metrics.n", "8", "metrics.n '8' is not a count of questions"),
    ("metrics.n", -1, "metrics.n -1 is not a count of questions"),
    ("metrics.f1", "0.5", "metrics.f1 '0.5' is not a number"),
    ("throughput.output_tok_s", "fast", "throughput.output_tok_s 'fast' is not a number"),
    ("throughput.repeats", {"output_tok_s": ["a"]}, "throughput.repeats is not lists of numbers"),
    ("latency.wall_s", [1], "latency.wall_s [1] is not a number"),
])
def test_a_record_with_a_figure_of_the_wrong_type_is_skipped(tmp_path, dotted, value, why):
    root, path = _edited_fixtures(tmp_path, _set(dotted, value))
    with pytest.warns(UserWarning, match="skipped"):
        records = load(root)
    assert records.skipped == [(path, why)]


def test_tables_and_compare_skip_a_record_whose_n_is_a_string(tmp_path):
    # the only record of its cell (batch squad b4), so compare finds the cell missing
    root, path = _edited_fixtures(tmp_path, _set("metrics.n", "8"),
                                  "20261126-100200-batch-squad-b4-1971")
    for number in (1, 5):
        res = invoke("table", number, "--results", root)
        assert res.exit_code == 0, res.output
        assert f"skipped {path}: metrics.n '8' is not a count" in " ".join(res.stderr.split())
    res = invoke("compare", FIXTURES, root)  # the skipped run's cell is missing: exit 1
    assert res.exit_code == 1 and "MISSING" in res.stdout and "Traceback" not in res.output


def test_a_training_record_whose_loss_is_a_string_is_skipped(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "r")
    path = next((tmp_path / "r").rglob("train.json"))
    rec = json.loads(path.read_text())
    rec["heldout_loss"] = {"4": "low"}
    path.write_text(json.dumps(rec))
    with pytest.warns(UserWarning):
        assert (path, "heldout_loss.4 'low' is not a number") in load(tmp_path / "r").skipped


# --------------------------------------------------------------- data files


@pytest.mark.parametrize(("content", "why"), [
    (b'{"a": 1}\n\n{"a": 2\n', "line 3: not valid JSON (Expecting ',' delimiter at column 8)"),
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', "line 2: not UTF-8 text (invalid continuation byte)"),
    (b'{"a": 1}\n[1, 2]\n', "line 2: expected a JSON object, got list"),
])
def test_a_corrupt_data_line_names_file_and_line(tmp_path, content, why):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(BadInput) as info:
        read_jsonl(path, follow=True)
    assert str(info.value) == f"{path}, {why}"


def test_one_jsonl_reader_strict_for_data_lenient_for_records(tmp_path):
    """A data file's last line needs no newline; a record's unterminated last line is a torn
    append, and the lenient reader also leaves out lines that are not objects."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n[1]\n\n{"a": 2}')
    assert read_jsonl(path, lenient=True) == [{"a": 1}]
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(tmp_path / "none.jsonl", lenient=True) == []
    with pytest.raises(BadInput, match="none.jsonl: No such file"):
        read_jsonl(tmp_path / "none.jsonl")


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    atomic_write_text(path, "old")

    def fail(fd, tmp):
        os.write(fd, b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(BadInput, match="cannot write .*t.parquet: No space left on device"):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_an_unreadable_data_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="a folder, not a regular file"):
        read_jsonl(tmp_path, follow=True)


def test_a_run_on_a_corrupt_data_file_is_one_line(tmp_path, data_dir):
    (tmp_path / "gsm8k").mkdir()
    os.symlink(data_dir / "gsm8k" / "train.jsonl", tmp_path / "gsm8k" / "train.jsonl")
    head = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines(keepends=True)[:4]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(head) + '{"question": "x", "ans\n')
    line = one_line(invoke("run", "--method", "batch", "--suite", "gsm8k", "--limit", "2",
                           "--data-dir", tmp_path, "--output-dir", tmp_path / "out"))
    assert line.startswith(f"error: {tmp_path}/gsm8k/test.jsonl, line 5: not valid JSON")


# ---------------------------------------------------------------- a full disk


def test_a_run_on_a_full_disk_is_one_line_and_resumes(tiny_model_dir, small_disk):
    args = ["run", "--model", tiny_model_dir, "--method", "batch", "--suite", "squad",
            "--limit", "40", "--branch", "4", "--max-new-tokens", "2", "--no-warmup",
            "--output-dir", small_disk]
    line = one_line(invoke(*args, "--run-id", "r1", "--json"))
    assert line.startswith(f"error: cannot write {small_disk}/r1/")
    assert line.endswith(": No space left on device; the run keeps its completed groups, "
                         "free space and --resume r1")
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    res = invoke("run", "--resume", "r1", "--output-dir", small_disk, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["metrics"]["n"] == 40 and record["status"] == "complete"
    samples = (small_disk / "r1" / "samples.jsonl").read_text().splitlines()
    assert sorted(json.loads(s)["doc_id"] for s in samples) == sorted(
        {json.loads(s)["doc_id"] for s in samples})
    assert len(samples) == 40


# --------------------------------------------------- train, attn, table, plot


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "pretrain", "--threads", "0"], "--threads must be >= 1 (got 0)"),
    (["train", "pretrain", "--threads", "-1"], "--threads must be >= 1 (got -1)"),
    (["train", "finetune", "--device", "foo"], "unknown --device 'foo'"),
    (["train", "pretrain", "--run-id", "../x"], "--run-id '../x' is not a valid run id"),
    (["train", "pretrain", "--resume", "/abs"], "--resume '/abs' is not a valid run id"),
    (["attn", "--suite", "squad", "--device", "foo"], "unknown --device 'foo'"),
    (["attn", "--suite", "squad", "--run-id", "a/b"], "--run-id 'a/b' is not a valid run id"),
])
def test_train_and_attn_check_options_before_loading_anything(tmp_path, args, needle):
    line = one_line(invoke(*args, "--output-dir", tmp_path / "out"))
    assert needle in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["table", "1"], ["plot", "throughput"],
                                  ["compare", FIXTURES, FIXTURES]])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, args):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "out.png"
    extra = ["--results", FIXTURES] if args[0] != "compare" else []
    line = one_line(invoke(*args, *extra, "--output", target))
    assert line.startswith(f"error: cannot write {tmp_path / 'file'}")


def test_any_uncaught_file_error_is_still_one_line(monkeypatch):
    from pmbench.commands import tables

    def failing(path, *args):
        raise OSError(errno.EIO, "Input/output error", "results/x/run.json")

    monkeypatch.setattr(tables, "_load", failing)
    assert one_line(invoke("table", "1")) == "error: results/x/run.json: Input/output error"


def test_last_resort_messages():
    assert _last_resort(OSError(errno.ENOSPC, "No space left on device", "f")) == (
        "f: No space left on device")
    assert _last_resort(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")) == (
        "a file is not valid UTF-8 text (invalid start byte at byte 0)")
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: [")
    assert _last_resort(info.value).startswith("invalid YAML: ")
    assert _last_resort(RuntimeError("x")) is None  # unexpected errors keep their traceback
