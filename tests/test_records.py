"""Run records: atomic run.json, torn-line tolerance, resume bookkeeping, summaries, and
faults: a full disk, short writes, half-written lines, two writers, bad run ids."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from pmbench.errors import BadInput
from pmbench.jobs.summary import summarize_groups
from pmbench.measure.stats import median_interval
from pmbench.records import store as records
from pmbench.records.store import (
    GROUPS_FILE,
    SAMPLES_FILE,
    RunStore,
    check_run_id,
)
from pmbench.safe_io import atomic_write_text, read_jsonl


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "run.json"
    atomic_write_text(target, '{"x": 1}\n')
    atomic_write_text(target, '{"x": 2}\n')
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["run.json"]


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(path, lenient=True) == [{"a": 1}, {"a": 2}]


def test_resume_drops_samples_of_unfinished_groups(tmp_path):
    store = RunStore(tmp_path, "r1")
    store.append_group([{"doc_id": "0", "group_id": 0}], {"group_id": 0, "n_questions": 1})
    # an interruption after group 1's samples but before its group line
    with open(store.dir / SAMPLES_FILE, "a") as fh:
        fh.write(json.dumps({"doc_id": "1", "group_id": 1}) + "\n")
    samples, groups = store.load_done()
    assert [s["doc_id"] for s in samples] == ["0"]
    assert [g["group_id"] for g in groups] == [0]
    assert len(read_jsonl(store.dir / SAMPLES_FILE, lenient=True)) == 1
    assert len(read_jsonl(store.dir / GROUPS_FILE, lenient=True)) == 1


def test_summary_medians_over_repeats():
    groups = [
        {"group_id": 0, "n_questions": 2, "prompt_tokens": 20, "output_tokens": 8,
         "prefill_s": [1.0, 2.0, 3.0], "decode_s": [1.0, 2.0, 1.0], "wall_s": [2.0, 4.0, 4.0],
         "ttft_s": [0.5, 0.7], "decode_steps": 3, "kv_cache_bytes": 10, "tokens_processed": 30},
        {"group_id": 1, "n_questions": 2, "prompt_tokens": 20, "output_tokens": 8,
         "prefill_s": [1.0, 1.0, 1.0], "decode_s": [1.0, 1.0, 1.0], "wall_s": [2.0, 2.0, 2.0],
         "ttft_s": [0.5, 0.9], "decode_steps": 3, "kv_cache_bytes": 10, "tokens_processed": 30},
    ]
    s = summarize_groups(groups, 3)
    # repeat walls: 4, 6, 6 -> 16 output tokens / wall
    assert s["throughput"]["repeats"]["output_tok_s"] == [4.0, 16 / 6, 16 / 6]
    assert s["throughput"]["output_tok_s"] == 16 / 6
    assert s["throughput"]["output_tok_s_max"] == 4.0
    assert s["throughput"]["q_s"] == 4 / 6
    assert s["latency"]["wall_s"] == 6.0
    assert s["latency"]["tpot_s"] == 2.0 / 6  # median decode 2.0 over 6 steps
    assert s["latency"]["ttft_s"] == 0.6
    # the median's 95% interval over the three repeats: the percentile bootstrap
    assert (s["throughput"]["output_tok_s_ci_low"], s["throughput"]["output_tok_s_ci_high"]
            ) == median_interval([4.0, 16 / 6, 16 / 6])
    assert summarize_groups(groups[:1], 1)["throughput"].get("q_s_ci_low") is None  # 1 repeat


# ------------------------------------------------------------- faults (issue 14)


def _group(gid: int, n: int = 4, payload: int = 1500) -> tuple[list[dict], dict]:
    samples = [{"doc_id": f"{gid}-{k}", "group_id": gid, "branch": k, "output_text": "x" * payload}
               for k in range(n)]
    return samples, {"group_id": gid, "n_questions": n, "wall_s": [0.1]}


def _lines(path) -> list[dict]:
    """Every line of a JSON-lines file, which must be whole and valid."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert text == "" or text.endswith("\n"), f"{path} ends in a half-written line"
    return [json.loads(line) for line in text.splitlines()]


def _consistent(store: RunStore) -> list[int]:
    """The group ids of groups.jsonl, after checking each has all its samples."""
    samples = _lines(store.dir / SAMPLES_FILE)
    groups = _lines(store.dir / GROUPS_FILE)
    for g in groups:
        assert sum(s["group_id"] == g["group_id"] for s in samples) == g["n_questions"]
    return [g["group_id"] for g in groups]


def test_full_disk_is_one_line_and_never_marks_a_group_done_without_its_samples(small_disk):
    store = RunStore(small_disk, "r1")
    store.write_run({"run_id": "r1", "status": "running"})
    with pytest.raises(BadInput) as info:
        for gid in range(1000):
            store.append_group(*_group(gid))
    message = str(info.value)
    assert "\n" not in message
    assert "No space left on device" in message and "--resume r1" in message
    assert f"{small_disk}/r1/" in message
    written = _consistent(store)  # whole lines only, and every group row has its samples
    assert written == list(range(len(written))) and len(written) >= 3

    # run.json's atomic write on the full disk: one line, the old record intact
    with pytest.raises(BadInput, match="cannot write .*run.json: No space left on device"):
        store.write_run({"run_id": "r1", "status": "running", "pad": "y" * 100_000})
    assert json.loads(store.run_path.read_text())["status"] == "running"
    assert not [p for p in store.dir.iterdir() if p.name.endswith(".tmp")]

    # space freed: resume sees exactly the complete groups, and appends go on cleanly
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_disk)], check=True)
    samples, groups = RunStore(small_disk, "r1").load_done()
    assert [g["group_id"] for g in groups] == written
    assert len(samples) == 4 * len(written)
    store.append_group(*_group(len(written)))
    assert _consistent(store) == [*written, len(written)]


def test_short_writes_are_continued(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(records.os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    store = RunStore(tmp_path, "r1")
    store.append_group(*_group(0, payload=50))
    store.write_run({"run_id": "r1", "pad": "z" * 100})
    assert _consistent(store) == [0]
    assert json.loads(store.run_path.read_text())["pad"] == "z" * 100


def test_a_failed_group_line_leaves_the_group_not_done(tmp_path, monkeypatch):
    store = RunStore(tmp_path, "r1")
    store.append_group(*_group(0, payload=10))
    real_write = os.write

    def full_for_groups(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(GROUPS_FILE):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real_write(fd, data)

    monkeypatch.setattr(records.os, "write", full_for_groups)
    with pytest.raises(BadInput, match="cannot write .*groups.jsonl: Disk quota exceeded"):
        store.append_group(*_group(1, payload=10))
    monkeypatch.undo()
    samples, groups = store.load_done()
    assert [g["group_id"] for g in groups] == [0] and len(samples) == 4
    assert _consistent(store) == [0]
    assert len(_lines(store.dir / SAMPLES_FILE)) == 4  # group 1's samples are gone


def test_half_written_last_lines_are_cut_off_on_resume(tmp_path):
    store = RunStore(tmp_path, "r1")
    for gid in (0, 1):
        store.append_group(*_group(gid, payload=10))
    samples_path = store.dir / SAMPLES_FILE
    inode = samples_path.stat().st_ino
    with open(samples_path, "a") as fh:  # killed while writing group 2's samples
        fh.write(json.dumps(_group(2)[0][0]) + "\n" + '{"doc_id": "2-1", "gro')
    with open(store.dir / GROUPS_FILE, "a") as fh:
        fh.write('{"group_id": 2, "n_quest')
    samples, groups = store.load_done()
    assert [g["group_id"] for g in groups] == [0, 1] and len(samples) == 8
    assert samples_path.stat().st_ino == inode  # cut in place: no free space needed
    assert not samples_path.read_text().endswith('"gro')
    store.append_group(*_group(2, payload=10))  # appends start on a fresh line
    assert _consistent(store) == [0, 1, 2]


def test_a_group_short_of_samples_is_not_done(tmp_path):
    store = RunStore(tmp_path, "r1")
    for gid in (0, 1, 2):
        store.append_group(*_group(gid, payload=10))
    path = store.dir / SAMPLES_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5] + lines[6:]))  # group 1 lost one of its 4 samples
    samples, groups = store.load_done()
    assert [g["group_id"] for g in groups] == [0, 2]
    assert [s["group_id"] for s in samples] == [0] * 4 + [2] * 4
    assert _consistent(store) == [0, 2]  # group 1's row and its 3 samples are gone


def test_a_second_writer_is_refused(tmp_path):
    first, second = RunStore(tmp_path, "r1"), RunStore(tmp_path, "r1")
    first.lock()
    with pytest.raises(BadInput) as info:
        second.lock()
    assert str(info.value) == f"run r1 is being written by another process (pid {os.getpid()})"
    first.unlock()
    second.lock()  # free again
    second.unlock()


def test_the_lock_of_a_killed_writer_is_released(tmp_path):
    code = ("import sys, time; from pmbench.records.store import RunStore; "
            "s = RunStore(sys.argv[1], 'r1'); s.lock(); print('locked', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(BadInput, match=rf"being written by another process \(pid {proc.pid}\)"):
            RunStore(tmp_path, "r1").lock()
    finally:
        proc.kill()
        proc.wait()
    store = RunStore(tmp_path, "r1")
    store.lock()  # the OS released the dead writer's lock
    store.unlock()


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/b", "..", ".", "", ".hidden", "a\\b",
                                 "x" * 201, "a b", "run\n"])
def test_run_ids_that_are_not_plain_folder_names_are_refused(bad):
    with pytest.raises(BadInput, match="is not a valid run id"):
        check_run_id(bad, "--run-id")


def test_plain_run_ids_pass():
    for good in ("r1", "sweep-t-batch-squad-b4-1a2b3c4d", "20261126-100400-x_y.z", "-a"):
        assert check_run_id(good) == good
