"""Run records on disk: `results/<run_id>/{run.json, samples.jsonl, groups.jsonl}`.

run.json is replaced atomically (temporary file + rename), so a reader never sees
half of it. samples.jsonl (one line per question) and groups.jsonl (one line per
group: its timings) only ever grow: each group's lines are written whole (a short
write is continued until every byte is out) on an append-mode file and fsynced, so an
interruption loses at most the group in flight. A group counts as done once its
groups.jsonl line exists and samples.jsonl holds exactly its `n_questions` lines;
`--resume` cuts off a half-written last line and drops the lines of unfinished groups.

A write that fails (full disk, quota, I/O error) is one line of bad input naming the
file, never a traceback, and never leaves a group marked done without its samples.
Run folders are read and written through pmbench.safe_io: no link is followed, a
FIFO or device is refused, and records and lines are read up to a cap (pmbench.limits).
While a process writes a run it holds an exclusive `flock` on `<run>/.lock`, which the
OS releases when the process ends however it ends: a second writer is refused.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.limits import MAX_JSONL_BYTES, MAX_RECORD_BYTES
from pmbench.records.lock import LOCK_FILE, release_lock, take_lock  # noqa: F401 (re-exported)
from pmbench.records.run_record import ABSENT, BadRunRecord, RunRecord
from pmbench.safe_io import (
    atomic_write_text,
    make_folder,
    open_regular,
    parse_json,
    parse_jsonl,
    read_regular,
    reason,
    write_all,
)

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
GROUPS_FILE = "groups.jsonl"
# a folder name on every OS: no separators, no "." or "..", not hidden
RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


# The JSON records (run.json, train.json, attention.json) carry `schema_version`. 1: written
# before the version was stored; such records read exactly as version 2 ones do.
SCHEMA_VERSION = 2


def new_id(*parts: str) -> str:
    """A record id: UTC time, what it is, and 4 random hex digits (two starts per second)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return "-".join([stamp, *parts, secrets.token_hex(2)])


def new_run_id(method: str, suite: str, branch: int) -> str:
    return new_id(method, suite, f"b{branch}")


def write_record(path: Path, record: dict[str, Any], hint: str = "", *, indent: int = 2,
                 ensure_ascii: bool = True) -> None:
    """Write a JSON record atomically, stamped with the schema version."""
    record.setdefault("schema_version", SCHEMA_VERSION)
    text = json.dumps(record, indent=indent, ensure_ascii=ensure_ascii, default=str)
    atomic_write_text(path, text + "\n", hint)


def read_record(path: Path, what: str = "record") -> dict[str, Any]:
    """A JSON record, or BadInput naming what is wrong with it (missing, corrupt, newer;
    UnsafeFile: a link, a FIFO, over MAX_RECORD_BYTES, nested too deeply)."""
    try:
        data = read_regular(path, MAX_RECORD_BYTES)
        if data is None:
            raise BadInput(f"no {what} at {path}")
        record = parse_json(data, path)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise BadInput(f"corrupt {what}: {path}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {reason(exc)}") from None
    if not isinstance(record, dict):
        raise BadInput(f"corrupt {what}: {path} (not a JSON object)")
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BadInput(f"{path}: schema version {version!r} is newer than this pmbench's "
                       f"({SCHEMA_VERSION}); upgrade pmbench to read it")
    return record


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_run_id(run_id: Any, option: str = "--run-id") -> str:
    """`run_id` if it is a plain folder name; BadInput otherwise (it becomes a path
    under the output folder: `../x`, `/abs` or `a/b` would write elsewhere)."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise BadInput(f"{option} {run_id!r} is not a valid run id: use letters, digits, "
                       "'.', '_' and '-' (at most 200, not starting with '.'), no path separators")
    return run_id


def read_samples(run_dir: Path) -> list[dict[str, Any]] | None:
    """The samples.jsonl lines of a finished run folder, as JSON objects (None when it has
    none). Records are read from folders anyone may have filled: the file must be a
    regular file, not a link (a link could point at a device or another user's file), and
    a line that is not a JSON object is BadInput naming the file."""
    path = Path(run_dir) / SAMPLES_FILE
    lines = _Lines(path)
    if lines.data is None:
        return None
    if any(row is None for row in lines.rows):
        raise BadInput(f"corrupt samples file: {path} (a line is not a JSON object)")
    return lines.rows


class _Lines:
    """The complete lines of a JSON-lines file, with their byte spans, as written."""

    def __init__(self, path: Path):
        self.path = path
        try:  # None: no file
            self.data = read_regular(path, MAX_JSONL_BYTES)
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {reason(exc)}") from None
        self.spans: list[tuple[int, int]] = []
        self.rows: list[Any] = parse_jsonl(self.data or b"", path, lenient=True,
                                           spans=self.spans)

    def keep(self, wanted: list[bool]) -> None:
        """Leave only the lines `wanted` says, and no half-written last line.

        Usually what goes is a tail (the group in flight and a torn line): the file is
        cut there, which needs no free space; otherwise it is rewritten atomically.
        """
        data = self.data or b""
        kept = [span for span, ok in zip(self.spans, wanted, strict=True) if ok]
        prefix = all(wanted[: len(kept)])
        if prefix:
            end = kept[-1][1] if kept else 0
            if end == len(data):
                return
            try:  # the file read, not a link put in its place since
                fd = open_regular(self.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, end)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise BadInput(f"cannot repair {self.path}: {reason(exc)}") from None
            return
        text = b"".join(data[a:b] for a, b in kept).decode("utf-8")
        atomic_write_text(self.path, text)


class RunStore:
    """The folder of one run: create, lock, append group results, finish, resume."""

    def __init__(self, output_dir: str | Path, run_id: str):
        self.dir = Path(output_dir) / run_id
        self.run_id = run_id
        self._lock_fd: int | None = None

    @property
    def run_path(self) -> Path:
        return self.dir / RUN_FILE

    def exists(self) -> bool:
        return os.path.lexists(self.run_path)

    @property
    def _hint(self) -> str:
        return (f"; the run keeps its completed groups, free space and "
                f"--resume {self.run_id}")

    def write_run(self, record: RunRecord | dict[str, Any]) -> None:
        """Replace run.json with `record` (a RunRecord is stamped with the schema version,
        as the dict written is)."""
        if isinstance(record, RunRecord):
            if record.schema_version is ABSENT:
                record.schema_version = SCHEMA_VERSION
            record = record.to_dict()
        write_record(self.run_path, record, self._hint)

    def read_run(self) -> RunRecord:
        """The run's record, or BadInput: missing, unreadable, or not a run record."""
        if not os.path.lexists(self.run_path):
            raise BadInput(f"no run {self.run_id!r} in {self.dir.parent}")
        try:
            return RunRecord.from_dict(read_record(self.run_path, "run record"))
        except BadRunRecord as exc:
            raise BadInput(f"corrupt run record: {self.run_path} ({exc})") from None

    # ----------------------------------------------------------------- lock

    def lock(self) -> None:
        """Take the run folder's exclusive lock for as long as this process writes it
        (records.lock: non-blocking, refused at once while another process holds it)."""
        if self._lock_fd is None:
            self._lock_fd = take_lock(self.dir, self.run_id)

    def unlock(self) -> None:
        """Release the lock, leaving no .lock file behind."""
        if self._lock_fd is not None:
            release_lock(self._lock_fd, self.dir)
            self._lock_fd = None

    # -------------------------------------------------------------- appends

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append `rows` whole or raise BadInput; on failure the file is cut back to its
        size before the call (best effort: an interruption is repaired by load_done)."""
        data = "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows)
        path = self.dir / name
        make_folder(self.dir)
        try:
            fd = open_regular(path, os.O_WRONLY | os.O_APPEND, create=True)
        except OSError as exc:
            raise BadInput(f"cannot write {path}: {reason(exc)}{self._hint}") from None
        try:
            start = os.fstat(fd).st_size
            try:
                write_all(fd, data.encode("utf-8"))
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise BadInput(f"cannot write {path}: {reason(exc)}{self._hint}") from None
        finally:
            os.close(fd)

    def append_group(self, samples: list[dict[str, Any]], group_row: dict[str, Any]) -> None:
        """Samples first, then the group line that marks them complete: if the samples
        cannot all be written, the group line is never written."""
        self._append(SAMPLES_FILE, samples)
        self._append(GROUPS_FILE, [group_row])

    def load_done(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(samples, groups) of completed groups, and the files cut down to them.

        A group is complete when its groups.jsonl line is whole and samples.jsonl holds
        exactly `n_questions` lines of it; anything else (a half-written last line, the
        samples of the group in flight, a group short of samples) is removed from the
        files, since the next append would otherwise follow it, and the group runs again.
        """
        group_lines = _Lines(self.dir / GROUPS_FILE)
        sample_lines = _Lines(self.dir / SAMPLES_FILE)
        counts = Counter(_key(s.get("group_id")) for s in sample_lines.rows if s is not None)
        done: set[str] = set()
        keep_group = []
        for g in group_lines.rows:
            key = _key(g.get("group_id")) if g is not None else None
            n = g.get("n_questions") if g is not None else None
            ok = (key is not None and key not in done and isinstance(n, int)
                  and not isinstance(n, bool) and counts[key] == n)
            if ok:
                done.add(key)
            keep_group.append(ok)
        keep_sample = [s is not None and _key(s.get("group_id")) in done
                       for s in sample_lines.rows]
        sample_lines.keep(keep_sample)
        group_lines.keep(keep_group)
        samples = [s for s, ok in zip(sample_lines.rows, keep_sample, strict=True) if ok]
        groups = [g for g, ok in zip(group_lines.rows, keep_group, strict=True) if ok]
        return samples, groups


def _key(group_id: Any) -> str | None:
    """A hashable key for a group id as JSON gives it (an int, a string...)."""
    return None if group_id is None else json.dumps(group_id, sort_keys=True)
