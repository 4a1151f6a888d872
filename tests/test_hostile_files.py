"""Hostile files in a run folder, a sweep's cell folders, a results folder or a grid (issue
28): a planted link is never followed, a FIFO never blocks, nothing is unpickled, a file
built to crash or balloon is one line (exit 2) or a skipped file with a warning, within
seconds, and what a record says reaches the terminal, Markdown and LaTeX escaped."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.records.store import LOCK_FILE, RunStore
from pmbench.sweep import claims, queue
from pmbench.sweep.grid import load_grid
from pmbench.sweep.status import sweep_status
from pmbench.sweep.supervise import LOG_FILE

NESTED = "[" * 200_000  # 200 kB of nesting: json.loads alone overflows the recursion limit
PRECIOUS = b"precious: must stay as it is\n"


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail the test instead of hanging when the code under test blocks (on a FIFO)."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(*args):
    with deadline(60):
        return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(res, exit_code: int = 2) -> str:
    """The one `error:` line of a command that failed as bad input (no traceback; progress
    lines may come before it)."""
    assert res.exit_code == exit_code, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output, res.output
    errors = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and res.stderr.rstrip().endswith(errors[0]), res.stderr
    return errors[0]


def target_file(tmp_path: Path) -> Path:
    """A file outside every run folder that a planted link points at."""
    target = tmp_path / "elsewhere" / "victim.txt"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(PRECIOUS)
    return target


# ------------------------------------------------------------------ run folders


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    target = target_file(tmp_path)
    store = RunStore(tmp_path / "results", "r1")
    store.dir.mkdir(parents=True)
    (store.dir / LOCK_FILE).symlink_to(target)
    with pytest.raises(Exception, match="a link: pmbench does not follow links"):
        store.lock()
    assert target.read_bytes() == PRECIOUS
    fifo = RunStore(tmp_path / "results", "r2")
    fifo.dir.mkdir(parents=True)
    os.mkfifo(fifo.dir / LOCK_FILE)
    with deadline(5), pytest.raises(Exception, match="a FIFO, not a regular file"):
        fifo.lock()


def run_args(model: str, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", model, "--suite", "squad", "--limit", "4", "--branch", "2",
            "--max-new-tokens", "2", "--method", "batch", "--output-dir", str(out), *extra]


@pytest.fixture
def interrupted(tiny_model_dir, tmp_path):
    """A run stopped by Ctrl-C after its first group: `--resume` continues it."""
    from pmbench.engine.runners.batch import BatchRunner

    original = BatchRunner.run_group
    calls = []

    def once(self, group, gen):
        calls.append(group)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(self, group, gen)

    out = tmp_path / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BatchRunner, "run_group", once)
        res = invoke(*run_args(tiny_model_dir, out, "--run-id", "half", "--no-warmup"))
    assert res.exit_code == 130, res.output
    assert (out / "half" / "groups.jsonl").read_text().count("\n") == 1
    return out / "half"


def test_resume_refuses_a_linked_samples_file_and_leaves_its_target_alone(interrupted,
                                                                          tmp_path):
    target = target_file(tmp_path)
    samples = interrupted / "samples.jsonl"
    target.write_bytes(samples.read_bytes() + b'{"half": "a line to cut"')  # a torn tail
    before = target.read_bytes()
    samples.unlink()
    samples.symlink_to(target)
    res = invoke("run", "--resume", "half", "--output-dir", interrupted.parent)
    line = one_error_line(res)
    assert "samples.jsonl: a link" in line
    assert target.read_bytes() == before  # not cut back, not rewritten
    assert samples.is_symlink()


def test_resume_refuses_a_nested_groups_line_in_one_line(interrupted):
    groups = interrupted / "groups.jsonl"
    groups.write_text(groups.read_text() + NESTED + "\n")
    res = invoke("run", "--resume", "half", "--output-dir", interrupted.parent)
    assert "groups.jsonl line 2: nested deeper than 64 levels" in one_error_line(res)


# ------------------------------------------------------------------ sweep folders


@pytest.fixture
def grid(tmp_path):
    """One cell, which never runs a model here."""
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({
        "name": "g", "methods": ["batch"], "branches": [2], "suites": ["squad"],
        "options": {"limit": 2, "max_new_tokens": 2}}))
    return path


def test_a_linked_sweep_log_is_refused_and_its_target_untouched(grid, tmp_path):
    target = target_file(tmp_path)
    out = tmp_path / "out"
    [cell] = load_grid(grid)
    (out / cell.id).mkdir(parents=True)
    (out / cell.id / LOG_FILE).symlink_to(target)
    res = invoke("sweep", grid, "--output-dir", out)
    assert f"{LOG_FILE}: a link: pmbench does not follow links" in one_error_line(res)
    assert target.read_bytes() == PRECIOUS


def test_a_run_or_cell_folder_planted_as_a_link_is_refused(grid, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = RunStore(tmp_path / "results", "r1")
    store.dir.parent.mkdir()
    store.dir.symlink_to(elsewhere)
    with pytest.raises(Exception, match="a link, not a folder: pmbench does not write"):
        store.lock()
    out = tmp_path / "out"
    [cell] = load_grid(grid)
    out.mkdir()
    (out / cell.id).symlink_to(elsewhere)
    res = invoke("sweep", grid, "--output-dir", out)
    assert "a link, not a folder: pmbench does not write through links" in one_error_line(res)
    assert list(elsewhere.iterdir()) == []  # no lock, claim or log written through it


class Planted:
    """Unpickling this creates the file `path`: the proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "unpickled"))


def test_status_never_unpickles_and_reads_no_folder_a_claim_names(grid, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(queue, "available", lambda: False)  # no Slurm to ask
    out = tmp_path / "out"
    [cell] = load_grid(grid)
    proof = tmp_path / "unpickled.txt"
    elsewhere = tmp_path / "elsewhere"
    own = out / claims.SLURM_DIR / "7_0"
    for folder in (elsewhere, own):  # where the claim points, and where pmbench looks
        folder.mkdir(parents=True)
        (folder / "7_0_0_result.pkl").write_bytes(pickle.dumps(("error", Planted(proof))))
    (elsewhere / "7_0_0_log.err").write_text("CellFailed: read from where the claim said\n")
    (own / "7_0_0_log.err").write_text("Traceback (most recent call last):\n  ...\n"
                                       "pmbench.sweep.slurm.CellFailed: model not found: x "
                                       "(log: out/sweep.log)\nsrun: error: task 0: Exited\n")
    claims.write_claim(out, cell.id, {"executor": "slurm", "job_id": "7_0",
                                      "folder": str(elsewhere), "claimed": "2026-01-01"})
    res = invoke("sweep", grid, "--output-dir", out, "--status")
    assert res.exit_code == 0, res.output
    assert not proof.exists()
    assert not proof.exists() and "1 failed" in res.output
    [status] = sweep_status([cell], out)
    assert status.detail == "model not found: x"  # from the job's stderr, in .slurm/7_0


@pytest.mark.parametrize("job_id", ["--user=victim", "7 8", 7])
def test_a_claim_whose_job_id_is_no_slurm_id_is_no_claim(grid, tmp_path, job_id):
    out = tmp_path / "out"
    [cell] = load_grid(grid)
    claims.write_claim(out, cell.id, {"executor": "slurm", "job_id": job_id})
    assert claims.read_claim(out, cell.id) is None  # never reaches squeue or scancel


@pytest.mark.parametrize("name", ["run.json", LOG_FILE, "claim.json"])
@pytest.mark.parametrize("flag", ["--dry-run", "--status"])
def test_a_fifo_in_a_cell_folder_never_blocks_and_is_skipped_with_a_warning(grid, tmp_path,
                                                                            name, flag):
    out = tmp_path / "out"
    [cell] = load_grid(grid)
    (out / cell.id).mkdir(parents=True)
    os.mkfifo(out / cell.id / name)
    if name != "claim.json":
        claims.write_claim(out, cell.id, {**claims.local_claim(started=True), "pid": 2**22 + 7})
    with deadline(20):
        res = invoke("sweep", grid, "--output-dir", out, flag)
    assert res.exit_code == 0, res.output
    warnings = [x for x in res.stderr.splitlines() if x.startswith("warning:")]
    if flag == "--dry-run" and name != "run.json":
        assert warnings == []  # the plan reads only the record
        return
    assert warnings == [f"warning: skipping {out / cell.id / name}: a FIFO, not a regular "
                        "file: not opened"], res.stderr


# ------------------------------------------------------------------ grids

LAUGHS = ('name: g\nmethods: [batch]\nbranches: [2]\nsuites: [squad]\n'
          'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
          + "".join(f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n"
                    for p, x in zip("abcdefgh", "bcdefghi", strict=True)))


def test_an_alias_bomb_grid_is_one_line_in_a_second(tmp_path):
    assert len(LAUGHS) < 600  # 9**9 = 387 million strings once expanded
    grid = tmp_path / "laughs.yaml"
    grid.write_text(LAUGHS)
    with deadline(10):
        res = invoke("sweep", grid, "--dry-run")
    line = one_error_line(res)
    assert "expands to more than 100,000 nodes once its aliases are resolved" in line
    assert len(line) < 300


def test_an_error_quoting_a_huge_value_is_one_short_line(tmp_path):
    grid = tmp_path / "long.yaml"
    grid.write_text(yaml.safe_dump({"methods": ["x\x1b" * 100_000], "branches": [1],
                                    "suites": ["squad"]}))
    line = one_error_line(invoke("sweep", grid, "--dry-run"))
    assert line.startswith("error: grid: unknown method 'x\\x1bx\\x1b") and len(line) < 1020
    assert line.endswith(" […]") and "\x1b" not in line


def test_a_grid_using_anchors_as_the_reference_grid_does_still_reads(tmp_path):
    grid = tmp_path / "anchored.yaml"
    grid.write_text("name: g\noptions: &opts {limit: 2, max_new_tokens: 2}\n"
                    "methods: [batch]\nbranches: [2]\n"
                    "suites: [squad, {name: gsm8k, <<: *opts}]\n")
    assert len(load_grid(grid)) == 2


def test_a_grid_nested_too_deeply_is_one_line(tmp_path):
    grid = tmp_path / "deep.yaml"
    grid.write_text("methods: " + "[" * 100_000 + "\n")
    with deadline(10):
        res = invoke("sweep", grid, "--dry-run")
    assert "nested deeper than 64 levels" in one_error_line(res)


def test_a_grid_over_the_cell_cap_is_refused_with_its_count_unless_asked_for(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump({"methods": ["batch", "sequential", "prefix", "rope2d"],
                                    "branches": list(range(1, 501)),
                                    "suites": ["squad", "mmlu"], "models": ["a", "b"],
                                    "rope2d": [{"ratio": r / 10} for r in range(11)]}))
    with deadline(10):
        res = invoke("sweep", huge, "--dry-run")
    assert ("the grid expands to 28,000 cells, over the cap of 10,000" in one_error_line(res)
            and "--max-cells 28000" in res.stderr)
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"methods": ["batch"], "branches": [1, 2, 4],
                                     "suites": ["squad", "mmlu"], "throughput": {}}))
    assert "the grid expands to 12 cells, over the cap of 10" in one_error_line(
        invoke("sweep", small, "--dry-run", "--max-cells", 10))
    shown = invoke("sweep", small, "--dry-run", "--max-cells", 12)
    assert shown.exit_code == 0 and "12 cells" in shown.stdout, shown.output


# ------------------------------------------------------------------ results folders

EVIL = "evil\x1b[2J\x07\u202e"  # clear the screen, ring the bell, reverse the text
EVIL_SHOWN = "evil\\x1b[2J\\x07\\u202e"


def record(root: Path, run_id: str, method: str, model: str = "m",
           throughput: bool = True) -> Path:
    """A complete run record of Table 5's shape (a throughput or an accuracy run)."""
    from test_provenance import run

    run(root, run_id, method, 4 if method == "rope2d" else 1, throughput=throughput)
    path = root / run_id / "run.json"
    path.write_text(path.read_text().replace('"model": "m"', json.dumps({"model": model})[1:-1]))
    return path


def results_folder(root: Path, model: str = "m") -> Path:
    """Two methods, each with its accuracy and its throughput run."""
    for method in ("sequential", "rope2d"):
        record(root, f"{method}-acc", method, model, throughput=False)
        record(root, f"{method}-tp", method, model, throughput=True)
    return root


@pytest.mark.parametrize("planted", ["nested", "fifo", "link", "huge"])
def test_a_bad_record_in_a_results_folder_is_skipped_with_a_warning(tmp_path, planted):
    from pmbench.limits import MAX_RECORD_BYTES

    results = results_folder(tmp_path / "results")
    bad = results / "bad" / "run.json"
    bad.parent.mkdir()
    if planted == "nested":
        bad.write_text(NESTED)
    elif planted == "fifo":
        os.mkfifo(bad)
    elif planted == "link":
        bad.symlink_to(record(tmp_path / "elsewhere", "other", "batch"))
    else:
        with bad.open("wb") as f:
            f.truncate(MAX_RECORD_BYTES + 1)
    reason = {"nested": "nested deeper than 64 levels",
              "fifo": "a FIFO, not a regular file: not opened",
              "link": "a link: pmbench does not follow links in run, cell and results folders",
              "huge": "16,777,217 bytes, over the 16 MiB pmbench reads of such a file"}[planted]
    clean = results_folder(tmp_path / "clean")
    for args in (["table", "5", "--results", results], ["compare", clean, results],
                 ["plot", "throughput", "--results", results, "--output", tmp_path / "f.png"]):
        res = invoke(*args)
        assert res.exit_code == 0, (args, res.output)
        warned = [x for x in res.stderr.splitlines() if x.startswith("warning:")]
        assert warned == [f"warning: skipped {bad}: {reason}"], res.stderr
    # the baseline of a regression check must be whole: exit 2 (never 1, "a regression")
    line = one_error_line(invoke("compare", results, clean))
    assert line == f"error: unusable baseline: {bad}: {reason}"


def test_compare_of_a_run_whose_record_is_nested_is_exit_2_not_a_regression(tmp_path):
    results = results_folder(tmp_path / "results")
    (results / "bad").mkdir()
    (results / "bad" / "run.json").write_text(NESTED)
    res = invoke("compare", "sequential-acc", "bad", "--results", results)
    assert "holds no complete run record" in one_error_line(res)


def test_control_characters_in_records_come_out_escaped_in_every_format(tmp_path):
    results = results_folder(tmp_path / "results", model=EVIL)
    for fmt in ("markdown", "latex", "csv"):
        res = invoke("table", "5", "--results", results, "--format", fmt)
        assert res.exit_code == 0, res.output
        assert "\x1b" not in res.output and "\x07" not in res.output, fmt
        assert "\u202e" not in res.output, fmt
        shown = {"latex": EVIL_SHOWN.replace("\\", r"\textbackslash{}")}.get(fmt, EVIL_SHOWN)
        assert shown in res.stdout, (fmt, res.stdout)


def test_control_characters_in_a_log_come_out_escaped_on_the_terminal(grid, tmp_path):
    out = tmp_path / "out"
    [cell] = load_grid(grid)
    (out / cell.id).mkdir(parents=True)
    (out / cell.id / LOG_FILE).write_text(f"# 2026-01-01 run\nerror: {EVIL}\n")
    claims.write_claim(out, cell.id, {**claims.local_claim(started=True), "pid": 2**22 + 7})
    res = invoke("sweep", grid, "--output-dir", out, "--status")
    assert res.exit_code == 0, res.output
    assert "\x1b[2J" not in res.output and "\x07" not in res.output
    assert sweep_status([cell], out)[0].detail == f"error: {EVIL}"  # kept, escaped when shown
    assert "\\x1b[2J" in res.output.replace("\n", "").replace("│", "").replace(" ", "")


# ------------------------------------------------------------------ model folders

EVIL_CODE = "import pathlib\npathlib.Path({proof!r}).write_text('ran')\n"


def model_folder(tmp_path: Path, tiny_model_dir: str, kind: str) -> tuple[Path, Path]:
    """A model folder whose loading would run code, and the file that code would create:
    `pickle`, its weights a pickle; `code`, its config naming its own classes (auto_map)."""
    import shutil

    folder, proof = tmp_path / f"model-{kind}", tmp_path / f"{kind}-ran.txt"
    shutil.copytree(tiny_model_dir, folder)
    if kind == "pickle":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Planted(proof)}))
    else:
        config = json.loads((folder / "config.json").read_text())
        config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig",
                                                   "AutoModelForCausalLM": "evil.EvilModel"})
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "evil.py").write_text(EVIL_CODE.format(proof=str(proof)))
    return folder, proof


@pytest.mark.parametrize(("kind", "needle"), [
    ("pickle", "holds its weights as a pickle (pytorch_model.bin), which can run code"),
    ("code", "needs its own Python code (auto_map in config.json): pmbench never runs code")])
def test_a_model_folder_that_would_run_code_is_one_line(tiny_model_dir, tmp_path, kind,
                                                        needle):
    folder, proof = model_folder(tmp_path, tiny_model_dir, kind)
    res = invoke("run", "--model", folder, "--suite", "squad", "--limit", "2",
                 "--method", "batch", "--output-dir", tmp_path / "results")
    assert one_error_line(res).startswith(f"error: model folder {folder} {needle}")
    assert not proof.exists()


@pytest.mark.parametrize("kind", ["pickle", "code"])
def test_transformers_itself_never_runs_a_folders_code_even_when_told_yes(
        tiny_model_dir, tmp_path, monkeypatch, kind):
    """Without pmbench's own check, transformers is asked with trust_remote_code=False and
    safetensors only: its prompt is never shown, so a `y` on stdin cannot run the code."""
    import io
    import sys

    from pmbench.engine import models
    from pmbench.errors import BadInput

    folder, proof = model_folder(tmp_path, tiny_model_dir, kind)
    monkeypatch.setattr(models, "check_model_folder", lambda path: None)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))
    with deadline(60), pytest.raises(BadInput, match=f"cannot load model {folder}") as info:
        models.load_model(str(folder), device="cpu", dtype="float32")
    assert "\n" not in str(info.value) and not proof.exists()


def test_a_checkpoint_folder_planted_as_a_link_is_replaced_not_written_through(
        tmp_path, tokenizer):
    from conftest import make_tiny_model
    from pmbench.records.train import save_checkpoint
    from pmbench.rope2d.settings import Rope2DSettings

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = tmp_path / "run" / "checkpoint"
    path.parent.mkdir()
    path.symlink_to(elsewhere)
    save_checkpoint(make_tiny_model("llama", len(tokenizer)), tokenizer, Rope2DSettings(),
                    path)
    assert list(elsewhere.iterdir()) == []
    assert not path.is_symlink() and (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint"]  # no temporary left
