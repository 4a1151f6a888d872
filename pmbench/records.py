"""Run records on disk: `results/<run_id>/{run.json, samples.jsonl, groups.jsonl}`.

run.json is replaced atomically (temporary file + rename), so a reader never sees
half of it. samples.jsonl (one line per question) and groups.jsonl (one line per
group: its timings) only ever grow: each group's lines go out in a single
`write()` on an append-mode file followed by fsync, so an interruption loses at
most the group in flight. A group counts as done once its groups.jsonl line
exists; `--resume` drops any sample lines of unfinished groups.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
GROUPS_FILE = "groups.jsonl"


def new_run_id(method: str, suite: str, branch: int) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{method}-{suite}-b{branch}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, ignoring a torn last line left by an interruption."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunStore:
    """The folder of one run: create, append group results, finish, resume."""

    def __init__(self, output_dir: str | Path, run_id: str):
        self.dir = Path(output_dir) / run_id
        self.run_id = run_id

    @property
    def run_path(self) -> Path:
        return self.dir / RUN_FILE

    def exists(self) -> bool:
        return self.run_path.exists()

    def write_run(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.run_path, json.dumps(record, indent=2, default=str) + "\n")

    def read_run(self) -> dict[str, Any]:
        try:
            return json.loads(self.run_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInput(f"no run {self.run_id!r} in {self.dir.parent}") from None
        except json.JSONDecodeError:
            raise BadInput(f"corrupt run record: {self.run_path}") from None

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows)
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def append_group(self, samples: list[dict[str, Any]], group_row: dict[str, Any]) -> None:
        """Samples first, then the group line that marks them complete."""
        self._append(SAMPLES_FILE, samples)
        self._append(GROUPS_FILE, [group_row])

    def load_done(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(samples, groups) of completed groups; drops samples of unfinished groups."""
        groups = read_jsonl(self.dir / GROUPS_FILE)
        done = {g["group_id"] for g in groups}
        samples = read_jsonl(self.dir / SAMPLES_FILE)
        kept = [s for s in samples if s.get("group_id") in done]
        if len(kept) != len(samples):
            atomic_write_text(
                self.dir / SAMPLES_FILE,
                "".join(json.dumps(s, default=str, ensure_ascii=False) + "\n" for s in kept),
            )
        return kept, groups
