"""run.json as a type: the one description of a run record, written by `pmbench run` and
read back by `--resume` and the reports.

The file is flat JSON. Its keys are this dataclass's fields, in this order, with the
runner's own blocks (`Runner.record_options`: `rope2d`, `prefix_kv`, a plugin's) in
`extras`, written at top level just before `env`. A field an older record lacks (schema
version 1 had no `weights`, `architecture`, `compile`...) holds ABSENT and is left out of
the dict again, so a record read and written back is the record that was read, key for
key and in the same order. A key this version does not type is kept among the extras for
the same reason.

Reading checks each field present against its annotation (the type map the reports used
to keep by hand); `complete=True` also asks for what a table needs (a finished run's
identity, metrics and throughput) and checks the figures tables add up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any, get_type_hints

from pmbench.options import fits
from pmbench.rope2d.settings import KEY as ROPE2D_KEY


class _Absent:
    """A key the record does not have (an older schema, or a run not finished yet)."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:  # `record.metrics or {}` reads an absent block as empty
        return False


ABSENT: Any = _Absent()

# What a record needs before a table can place it (a finished run: metrics and throughput).
IDENTITY = ("run_id", "created", "method", "branch", "suite", "model")
RESULTS = ("metrics", "throughput")
EXTRAS_BEFORE = "env"  # the runner's blocks are written just before this field


class BadRunRecord(ValueError):
    """A run.json that is not a usable run record; the message says why, in one line."""


Block = dict[str, Any]


@dataclass
class RunRecord:
    """One run.json. Identity and settings are written when the run starts (status
    "running"); results when it completes (or the status turns "interrupted")."""

    run_id: str = ABSENT
    created: str = ABSENT
    method: str = ABSENT
    branch: int = ABSENT
    suite: str = ABSENT
    model: str = ABSENT
    model_path: str | None = ABSENT
    weights: str | None = ABSENT  # "pretrained", "random", or None (no model)
    architecture: Block | None = ABSENT
    limit: int | None = ABSENT
    max_new_tokens: int | None = ABSENT
    ignore_eos: bool = ABSENT
    seed: int = ABSENT
    repeats: int = ABSENT
    dtype: str = ABSENT
    device: str = ABSENT
    status: str = ABSENT  # "running", "interrupted", "complete"
    settings: Block = ABSENT  # what --resume reads back (jobs.spec.resumed_settings)
    suite_info: Block = ABSENT
    method_kind: str = ABSENT
    linear_kernel: str = ABSENT
    code_execution: Block | None = ABSENT
    compile: str = ABSENT
    # the runner's own blocks, by key: written here, at top level
    extras: Block = field(default_factory=dict)
    env: Block = ABSENT
    load_s: float = ABSENT
    # stamped by records.store.write_record when the run first writes its record
    schema_version: int = ABSENT
    # results: written when the run completes
    metrics: Block = ABSENT
    throughput: Block | None = ABSENT
    latency: Block | None = ABSENT
    tokens: Block | None = ABSENT
    question_latency: Block | None = ABSENT
    telemetry: Block = ABSENT
    memory: Block = ABSENT
    roofline: Block | None = ABSENT
    resumed: bool = ABSENT
    timed_region_s: float = ABSENT
    compile_s: float = ABSENT
    compile_s_timed: float = ABSENT
    cuda_graph_skips: int = ABSENT  # the three cuda_graph_* only with --compile on
    cuda_graph_recordings: int = ABSENT
    cuda_graph_recordings_timed: int = ABSENT
    deterministic: bool = ABSENT
    finished: str = ABSENT

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of run.json: fields in order, the extras before `env`, absent
        fields left out."""
        out: dict[str, Any] = {}
        for name in field_names():
            if name == EXTRAS_BEFORE:
                out.update(self.extras)
            value = getattr(self, name)
            if value is not ABSENT:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, record: Any, complete: bool = False) -> RunRecord:
        """`record` (a parsed run.json) as a RunRecord, or BadRunRecord saying what is
        wrong. `complete`: it must also be a finished run a table can place."""
        if not isinstance(record, dict):
            raise BadRunRecord(f"not a pmbench run record (a JSON {type(record).__name__})")
        if complete:
            _check_complete(record)
        hints = _hints()
        for key, value in record.items():
            if key in hints and not fits(value, hints[key]):
                raise BadRunRecord(f"field {key!r} has the wrong type ({type(value).__name__})")
        _check_figures(record)
        if isinstance(record.get("created"), str):
            try:
                datetime.fromisoformat(record["created"])
            except ValueError:
                raise BadRunRecord(f"created {record['created']!r} is not an ISO time") from None
        extras = {k: v for k, v in record.items() if k not in hints}
        return cls(**{k: v for k, v in record.items() if k in hints}, extras=extras)


@cache
def field_names() -> tuple[str, ...]:
    """run.json's typed keys, in the order they are written (`extras` is not one)."""
    return tuple(f.name for f in fields(RunRecord) if f.name != "extras")


@cache
def _hints() -> dict[str, Any]:
    hints = get_type_hints(RunRecord)
    return {name: hints[name] for name in field_names()}


def method_blocks(method: str, own: dict[str, Any]) -> Block:
    """A run's extras: `rope2d` (null unless the method writes it) and the runner's own
    blocks. A runner may add keys, never take a field's: TypeError names the ones it
    tried (a programming error in the runner, not bad input)."""
    if taken := sorted(set(own) & set(field_names())):
        raise TypeError(f"runner {method!r} may not overwrite run.json keys {taken}")
    return {ROPE2D_KEY: None, **own}


def _check_complete(record: dict[str, Any]) -> None:
    """A finished run, with the keys a table places it by (an unfinished one is skipped
    whatever else it lacks)."""
    if record.get("status", "complete") != "complete":
        raise BadRunRecord(f"incomplete run (status {record['status']!r})")
    missing = [k for k in (*IDENTITY, *RESULTS) if k not in record]
    if missing:
        raise BadRunRecord(f"not a complete pmbench run record (missing {', '.join(missing)})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_figures(record: dict[str, Any]) -> None:
    """The figures tables and compare read must each be a number or null, ``metrics.n`` a
    count. (NaN is a number here: compare judges it; a string would break every sum and
    division downstream.)"""
    metrics = record.get("metrics") or {}
    n = metrics.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise BadRunRecord(f"metrics.n {n!r} is not a count of questions")
    for key, value in metrics.items():
        if value is not None and not _is_number(value) and not isinstance(value, dict):
            raise BadRunRecord(f"metrics.{key} {value!r} is not a number")
    for block in ("throughput", "latency"):
        for key, value in (record.get(block) or {}).items():
            if key == "repeats":
                if not isinstance(value, dict) or not all(
                        isinstance(v, list) and all(x is None or _is_number(x) for x in v)
                        for v in value.values()):
                    raise BadRunRecord(f"{block}.repeats is not lists of numbers")
            elif value is not None and not _is_number(value):
                raise BadRunRecord(f"{block}.{key} {value!r} is not a number")
