"""Training cells of a grid (`kind: train`): `pmbench train pretrain | finetune` runs.

A cell's options are `pmbench train` options by their python names; they are checked
by building the run's TrainSettings (types, then its own validation) and become the
command line as given, so the command's own per-kind defaults apply to the rest.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pmbench.errors import BadInput, PmbenchWarning
from pmbench.options import declared
from pmbench.records.store import check_run_id
from pmbench.sweep.options import SWEEP_SET, check_keys, normalize_options, safe_name
from pmbench.train.settings import KINDS, TrainSettings, from_options
from pmbench.train.settings import train_options as declared_train_options

TRAIN_KEYS = {"name", "kind", "description", "options", "runs", "slurm"}
EXTRA = {"json_out": bool, "quiet": bool}  # options that are no setting


def train_options(command: str) -> dict[str, Any]:
    """The options of `pmbench train <command>` (python name, deprecated ones too) -> the
    type of their value."""
    opts = declared_train_options(command)
    types = {opt.flag: opt.hint for opt in opts}
    return {**types, **{a: opt.hint for opt in opts for a in opt.aliases}, **EXTRA}


def current_names(options: dict[str, Any], where: str) -> dict[str, Any]:
    """`options` with each deprecated name replaced by its option's (with a warning)."""
    out = dict(options)
    for opt in declared(TrainSettings):
        for alias in opt.aliases:
            if alias in out:
                warnings.warn(f"{where}: {alias} is deprecated; use {opt.flag}", PmbenchWarning,
                              stacklevel=2)
                out[opt.flag] = out.pop(alias)
    return out


def train_argv(command: str, options: dict[str, Any]) -> list[str]:
    """Command-line arguments for train `options` (lists become comma-separated values)."""
    off = {opt.flag: opt.off for opt in declared_train_options(command)}
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else ["--" + off[name]] if off.get(name) else []
        elif value is not None:
            args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


def check_train_settings(command: str, options: dict[str, Any], where: str) -> None:
    """The run's TrainSettings, typed and validated as `pmbench train` would."""
    try:
        from_options(command, {k: v for k, v in options.items() if k not in EXTRA}).validate()
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


@dataclass(frozen=True)
class TrainCell:
    """One `pmbench train pretrain | finetune` run of a training grid."""

    grid: str
    run_id: str
    command: str
    options: dict[str, Any] = field(default_factory=dict)
    stage: str = field(default="", compare=False)
    kind: ClassVar[str] = "train"
    record_file: ClassVar[str] = "train.json"
    total: ClassVar[None] = None

    @property
    def id(self) -> str:
        return self.run_id

    def label(self) -> str:
        return f"train {self.command} {self.run_id}"

    def train_args(self) -> list[str]:
        return train_argv(self.command, self.options)

    def command_args(self, state: str) -> list[str]:
        if state == "partial":
            return ["train", self.command, "--resume", self.id]
        return ["train", self.command, *self.train_args(), "--run-id", self.id]


def expand_train(raw: Mapping[str, Any], grid: str,
                 overrides: Mapping[str, Any] | None) -> list[TrainCell]:
    """Training cells, in the order of `runs`."""
    check_keys(raw, TRAIN_KEYS, "train")
    runs = raw.get("runs")
    if not isinstance(runs, list) or not runs:
        raise BadInput("a train grid needs `runs`: a list of {id, command, options...}")
    shared = raw.get("options") or {}
    if not isinstance(shared, Mapping):
        raise BadInput(f"grid options: options must be a mapping, got {type(shared).__name__}")
    cells: list[TrainCell] = []
    for entry in runs:
        if not isinstance(entry, Mapping) or "id" not in entry:
            raise BadInput(f"grid runs: each entry is a mapping with an 'id', got {entry!r}")
        merged = {**shared, **entry}
        run_id, command = str(merged.pop("id")), merged.pop("command", None)
        if command not in KINDS:
            raise BadInput(f"grid run {run_id}: command must be one of {KINDS}, "
                           f"got {command!r}")
        if safe_name(run_id) != run_id:
            raise BadInput(f"grid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
        check_run_id(run_id, "grid run id")
        types = train_options(command)
        where = f"grid run {run_id}"
        options = current_names(normalize_options(merged, where, types, SWEEP_SET), where)
        options.update(current_names(normalize_options(overrides, "--set", types, SWEEP_SET),
                                     "--set"))
        cell = TrainCell(grid, run_id, command,
                         {k: v for k, v in options.items() if v is not None})
        check_train_settings(command, cell.options, where)
        cells.append(cell)
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise BadInput(f"grid runs: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return cells

