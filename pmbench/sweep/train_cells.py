"""Training cells of a grid (`kind: train`): `pmbench train pretrain | finetune` runs.

A cell's options are `pmbench train` options by their python names; they are checked
by building the run's TrainSettings (types, then its own validation) and become the
command line as given, so the command's own per-kind defaults apply to the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_origin, get_type_hints

from pmbench.errors import BadInput
from pmbench.jobs.spec import command_line_value, fits, type_name
from pmbench.records.store import check_run_id
from pmbench.rope2d.settings import OPTIONS as ROPE2D_OPTIONS
from pmbench.sweep.options import SWEEP_SET, check_keys, normalize_options, safe_name
from pmbench.train.settings import KINDS, TrainSettings

TRAIN_KEYS = {"name", "kind", "description", "options", "runs", "slurm"}
NOT_OPTIONS = {"kind", "max_grad_norm"}  # settings no option of `pmbench train` sets
ONLY = {"pretrain": {"size", "context_len", "segment_len", "corpus", "vocab_size",
                     "tokenizer_chars"},
        "finetune": {"model", "lora", "lora_r", "lora_alpha", "sources"}}
NEGATIVE = {"lora": "--full"}  # --lora/--full
EXTRA = {"json_out": bool, "quiet": bool}  # options that are no setting


def train_options(command: str) -> dict[str, Any]:
    """The options of `pmbench train <command>` (python name) -> the type of their value."""
    other = set().union(*ONLY.values()) - ONLY[command]
    hints = get_type_hints(TrainSettings)
    types = {ROPE2D_OPTIONS.get(name, name): hint for name, hint in hints.items()
             if name not in NOT_OPTIONS | other}
    return {**types, **EXTRA}


def train_argv(options: dict[str, Any]) -> list[str]:
    """Command-line arguments for train `options` (lists become comma-separated values)."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else [NEGATIVE[name]] if name in NEGATIVE else []
        elif value is not None:
            args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


def check_train_settings(command: str, options: dict[str, Any], where: str) -> None:
    """The run's TrainSettings, typed and validated as `pmbench train` would."""
    types = train_options(command)
    setting = {opt: name for name, opt in ROPE2D_OPTIONS.items()}
    given: dict[str, Any] = {}
    for name, value in options.items():
        if name in EXTRA:
            continue
        if isinstance(value, str) and get_origin(types[name]) is list:
            value = [x.strip() for x in value.split(",") if x.strip()]  # as the CLI splits it
        if isinstance(value, list) and types[name] == list[int]:
            value = [_int(v, name, where) for v in value]
        value = command_line_value(value, types[name])
        if not fits(value, types[name]):
            raise BadInput(f"{where}: --{name.replace('_', '-')}: {value!r} is not "
                           f"{type_name(types[name])}")
        given[setting.get(name, name)] = value
    try:
        TrainSettings(kind=command, **given).validate()
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def _int(value: Any, name: str, where: str) -> int:
    try:
        return int(str(value))  # as the command line reads it: 2 and "2", not 2.5 or true
    except ValueError:
        raise BadInput(f"{where}: --{name.replace('_', '-')} takes integers, "
                       f"got {value!r}") from None


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
        return train_argv(self.options)

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
        options = normalize_options(merged, where, types, SWEEP_SET)
        options.update(normalize_options(overrides, "--set", types, SWEEP_SET))
        cell = TrainCell(grid, run_id, command,
                         {k: v for k, v in options.items() if v is not None})
        check_train_settings(command, cell.options, where)
        cells.append(cell)
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise BadInput(f"grid runs: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return cells

