"""Sweeps: run every cell of a grid file, each cell in its own `pmbench` process.

Two kinds of grid (YAML), told apart by `kind`:

**kind: run** (the default) crosses axes into `pmbench run` cells:

    name: table5                 # used in cell ids; default: the file's stem
    models: [smollm2-135m-instruct, Qwen/Qwen2.5-1.5B-Instruct]   # default: the default model
    methods: [sequential, batch, rope2d]
    branches: [1, 2, 4, 8]       # --branch: questions per group
    suites: [squad]
    rope2d:                      # crossed with rope2d cells only; default: the model's own
      - {ratio: 0.5, mode: split, branch_freqs: interleaved, mask: isolated}
      - {}                       # {} = the model's config.json settings, or the defaults
    options:                     # any `pmbench run` option, by its long name
      limit: 64
      max_new_tokens: 32
      ignore_eos: true
      repeats: 3
    exclude:                     # drop cells matching every key given
      - {method: sequential, branch: 8}
    include:                     # add single cells (axis keys, rope2d, options)
      - {method: llamacpp, suite: squad, branch: 8}
    throughput:                  # makes every cell two runs: accuracy + throughput
      max_new_tokens: 64         # default 64
      repeats: 3                 # default 3
      # any other `pmbench run` option, for the throughput runs only

An axis entry may be a mapping that carries options for its cells, e.g.
`suites: [squad, {name: mmlu, max_new_tokens: 1}]`; options merge in the order grid
`options` < model < suite < method < `--set` on the command line (strongest). A single
value may stand for a one-element list (`suites: squad`). A method entry may also carry
its own `branches`, which replace the grid's for that method, e.g.
`methods: [{name: sequential, branches: [1]}, {name: rope2d, branches: [2, 4, 8]}]`;
the top-level `branches` may then be left out if every method entry gives its own.

With a `throughput:` block every cell (after `exclude`, includes too) is two runs, as the
tables need (Acc from the first, tok/s from the second; the record's `ignore_eos` tells
them apart): the *accuracy run*, the grid's options as they are, with the suite's own
stopping and token budget (so they must not set ignore_eos), then the *throughput run*,
the same cell plus `ignore_eos: true` and the block's options (`--set` still wins).

Cell ids are readable and deterministic, `sweep-<grid>-<method>-<suite>-b<N>-<hash8>`, and
`sweep-<grid>-<method>-<suite>-b<N>-tp-<hash8>` for a throughput run, where the hash
covers every parameter of the cell, so an edited grid makes new cells instead of reusing
old records.

**kind: train** lists `pmbench train pretrain | finetune` runs (Tables 2 and 3):

    kind: train
    options: {branches: 4, seed: 0}          # shared by every run
    runs:
      - {id: table2-pre-r0.5, command: pretrain, size: cpu-tiny, rope_2d_ratio: 0.5}

An entry's keys (`pmbench train` long option names) override `options`; `id` is the run
id, used as given because evaluation grids name `results/<id>/checkpoint`.

**Staged grids** chain such grids, e.g. training and then evaluating the checkpoints
(the reference experiment, suites/grids/reference-cpu.yaml):

    name: reference-cpu
    output_dir: results/reference/cpu-smollm2    # the default --output-dir of this grid
    stages:
      - {stage: train, kind: train, options: {..}, runs: [{id: ft-r0.5, ..}]}
      - {stage: eval, models: [results/reference/cpu-smollm2/ft-r0.5/checkpoint], ..}

Each stage is a grid of either kind (without `name` or `output_dir`, which are the whole
grid's); cells run stage after stage and `--stage NAME` runs one stage. A run cell whose
model is `<folder>/<id>/checkpoint` of one of the grid's training runs waits while
another process (another shard) trains it, and fails at once when that training failed
or was never started. A run cell that an earlier stage already has runs once, there.

In both kinds option names take "_" or "-", and every cell's command line is checked
by the CLI's own parser before anything runs: a bad grid is bad input, not a crash
an hour in. A cell is done when `<output-dir>/<id>/run.json` (train.json) exists with
status "complete"; one left "running" by an interruption is continued with `--resume <id>`.

`--shard I/N` keeps cells whose position in the expanded list is I-1 modulo N (a
throughput run counts with its accuracy run and goes to the same shard): shards are
disjoint, balanced and cover the grid, so a Slurm array, several GPUs or several
machines can split it, and their record folders merge by copying. The assignment
depends on the list order, so every shard must read the same grid file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import yaml

from pmbench.errors import BadInput
from pmbench.records.store import check_run_id
from pmbench.records.train import CHECKPOINT_DIR

KINDS = ("run", "train")
STAGED_KEYS = {"name", "description", "output_dir", "stages"}
STAGE_KEY = "stage"  # a stage's own name (for --stage), not part of its cells' ids
AXES = {"models": "model", "methods": "method", "branches": "branch", "suites": "suite"}
RUN_KEYS = {"name", "kind", "description", "rope2d", "options", "include", "exclude",
            "throughput", *AXES}
TRAIN_KEYS = {"name", "kind", "description", "options", "runs"}
ROPE2D_METHODS = {"rope2d"}  # methods whose cells are crossed with the rope2d settings
ROPE2D_FLAGS = {"ratio": "rope_2d_ratio", "mode": "rope_2d_mode",
                "branch_freqs": "branch_freqs", "mask": "mask"}
# options a sweep sets itself: never among a grid's options
SWEEP_SET = {"output_dir", "json_out", "resume", "run_id"}
RUN_AXES_SET = {"method", "suite", "branch", "model", *ROPE2D_FLAGS.values()}
# what a `throughput:` block gives its runs unless it says otherwise
THROUGHPUT_DEFAULTS = {"max_new_tokens": 64, "repeats": 3}
COMPLETE_STATUS = "complete"
LOG_FILE = "sweep.log"


# ---------------------------------------------------------------- CLI options


class Flag(NamedTuple):
    flag: str  # "--max-new-tokens"
    negative: str | None  # "--full" for "--lora/--full"
    boolean: bool


@functools.cache
def _command(path: tuple[str, ...]):
    """The click command of `pmbench <path...>` (building it is slow: done once)."""
    import typer.main

    from pmbench.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@functools.cache
def command_flags(*path: str) -> dict[str, Flag]:
    """Options of `pmbench <path...>` by python name, read from the CLI itself."""
    command = _command(path)
    return {p.name: Flag(p.opts[0], (p.secondary_opts or [None])[0],
                         bool(getattr(p, "is_flag", False)))
            for p in command.params if p.opts}


def render_args(flags: Mapping[str, Flag], options: Mapping[str, Any]) -> list[str]:
    """Command-line arguments for `options` (lists become comma-separated values)."""
    args: list[str] = []
    for key, value in options.items():
        f = flags[key]
        if f.boolean:
            if value:
                args.append(f.flag)
            elif f.negative:
                args.append(f.negative)
        elif value is not None:
            args += [f.flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


def check_argv(path: tuple[str, ...], args: list[str], where: str) -> None:
    """Parse `args` with the real `pmbench <path>` command (types, choices): BadInput if bad."""
    command = _command(path)
    try:
        command.make_context(command.name, list(args))
    except Exception as exc:  # click's UsageError / BadParameter (vendored by typer)
        param = getattr(exc, "param", None)
        name = f"{param.opts[0]}: " if getattr(param, "opts", None) else ""
        raise BadInput(f"{where}: {name}{exc}") from None


def normalize_options(raw: Any, where: str, flags: Mapping[str, Flag],
                      reserved: set[str]) -> dict[str, Any]:
    """Check option names against `flags` ('-' or '_'); boolean flags take true/false."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BadInput(f"{where}: options must be a mapping, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in reserved:
            raise BadInput(f"{where}: {key} is set by the grid or the sweep, not by options")
        if name not in flags:
            valid = ", ".join(sorted(set(flags) - reserved))
            raise BadInput(f"{where}: unknown option {key!r}; valid: {valid}")
        if flags[name].boolean and not isinstance(value, bool):
            raise BadInput(f"{where}: {name} is true or false, got {value!r}")
        if isinstance(value, Mapping) or (
                isinstance(value, list) and not all(isinstance(v, str | int | float)
                                                    for v in value)):
            raise BadInput(f"{where}: {name} takes a value or a list of values, got {value!r}")
        out[name] = value
    return out


# ---------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One `pmbench run` of a grid: fixed axes, rope2d settings and options."""

    grid: str
    model: str | None
    method: str
    suite: str
    branch: int
    rope2d: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    throughput: bool = False  # the throughput run of a grid with a `throughput:` block
    stage: str = field(default="", compare=False)  # the stage of a staged grid (not in the id)
    kind: ClassVar[str] = "run"
    record_file: ClassVar[str] = "run.json"

    def params(self) -> dict[str, Any]:
        """Everything that defines the cell (what the id's hash covers)."""
        params = {"kind": self.kind, "model": self.model, "method": self.method,
                  "suite": self.suite, "branch": self.branch, "rope2d": self.rope2d,
                  "options": self.options}
        if self.throughput:  # only when set: cells of grids without the block keep their ids
            params["throughput"] = True
        return params

    @property
    def id(self) -> str:
        blob = json.dumps(self.params(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        tag = "-tp" if self.throughput else ""
        return f"sweep-{self.grid}-{self.method}-{self.suite}-b{self.branch}{tag}-{digest}"

    @property
    def total(self) -> int | None:
        """Questions the cell answers, when the grid says (for the progress bar)."""
        return self.options.get("limit")

    def label(self) -> str:
        r2d = ",".join(f"{k}={v}" for k, v in sorted(self.rope2d.items()))
        model = f"{self.model} " if self.model else ""
        return (f"{model}{self.method} {self.suite} b{self.branch}" + (f" [{r2d}]" if r2d else "")
                + (" (throughput)" if self.throughput else ""))

    def run_args(self) -> list[str]:
        """The `pmbench run` arguments of this cell (without id and output folder)."""
        args = ["--method", self.method, "--suite", self.suite, "--branch", str(self.branch)]
        if self.model:
            args += ["--model", self.model]
        flags = command_flags("run")
        rope = {ROPE2D_FLAGS[k]: v for k, v in self.rope2d.items()}
        return args + render_args(flags, rope) + render_args(flags, self.options)

    def command_args(self, state: str) -> list[str]:
        if state == "partial":
            return ["run", "--resume", self.id]
        return ["run", *self.run_args(), "--run-id", self.id]


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
        return render_args(command_flags("train", self.command), self.options)

    def command_args(self, state: str) -> list[str]:
        if state == "partial":
            return ["train", self.command, "--resume", self.id]
        return ["train", self.command, *self.train_args(), "--run-id", self.id]


AnyCell = Cell | TrainCell


def _check_settings(cell: Cell) -> None:
    """Range checks of `pmbench run` itself (RunSettings.validate), before anything runs."""
    from dataclasses import fields

    from pmbench.jobs.run import RunSettings

    known = {f.name for f in fields(RunSettings)}
    opts = {k: v for k, v in cell.options.items() if k in known}
    if isinstance(opts.get("subjects"), list | str):
        text = opts["subjects"]
        opts["subjects"] = text if isinstance(text, list) else text.split(",")
    if "no_warmup" in cell.options:
        opts["warmup"] = not cell.options["no_warmup"]
    try:
        RunSettings(method=cell.method, suite=cell.suite, branch=cell.branch, model=cell.model,
                    rope2d=dict(cell.rope2d), **opts).validate()
    except (TypeError, ValueError) as exc:
        raise BadInput(f"grid cell {cell.label()}: {exc}") from None


# ----------------------------------------------------------------- run grids


def _as_list(value: Any, key: str) -> list[Any]:
    if value is None:
        raise BadInput(f"grid key {key!r} is empty")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadInput(f"grid key {key!r} is an empty list")
    return items


class AxisEntry(NamedTuple):
    value: Any
    options: dict[str, Any]
    branches: list[int] | None = None  # a method entry's own `branches` (not a run option)


def _axis(raw: Mapping[str, Any], key: str, flags: Mapping[str, Flag],
          reserved: set[str]) -> list[AxisEntry]:
    """The entries of an axis; an entry is a scalar or {name: .., options..}."""
    singular = AXES[key]
    if key not in raw:
        if singular == "model":
            return [AxisEntry(None, {})]  # the default model
        raise BadInput(f"grid needs {key!r} (a list of {singular} names)")
    out = []
    for entry in _as_list(raw[key], key):
        opts: dict[str, Any] = {}
        branches = None
        if isinstance(entry, Mapping):
            if "name" not in entry:
                raise BadInput(f"grid {key}: a mapping entry needs 'name' (got {dict(entry)})")
            entry = dict(entry)
            value = entry.pop("name")
            where = f"grid {key} entry {value!r}"
            if "branches" in entry:
                if key != "methods":
                    raise BadInput(f"{where}: only method entries take 'branches'")
                branches = _branch_list(entry.pop("branches"), f"{key} entry {value!r} branches")
            opts = normalize_options(entry, where, flags, reserved)
        else:
            value = entry
        out.append(AxisEntry(_axis_value(singular, value, key), opts, branches))
    return out


def _branch_list(value: Any, key: str) -> list[int]:
    return [_axis_value("branch", b, key) for b in _as_list(value, key)]


def _branches(raw: Mapping[str, Any],
              methods: list[AxisEntry]) -> tuple[list[int], list[list[int]]]:
    """The #branch values in cell order, and each method entry's list (its own, else the
    grid's). Order: the grid's `branches` as written, then those only methods name, ascending."""
    if "branches" in raw:
        common = _branch_list(raw["branches"], "branches")
    elif all(m.branches is not None for m in methods):
        common = []
    else:
        missing = next(m.value for m in methods if m.branches is None)
        raise BadInput(f"grid needs 'branches' (a list of branch counts), or a 'branches' list "
                       f"in every methods entry (method {missing!r} has none)")
    per_method = [m.branches if m.branches is not None else common for m in methods]
    order = list(dict.fromkeys(common))
    return order + sorted({b for bs in per_method for b in bs} - set(order)), per_method


def _axis_value(singular: str, value: Any, key: str) -> Any:
    if singular == "branch":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInput(f"grid {key}: branch counts are integers >= 1, got {value!r}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"grid {key}: expected a name, got {value!r}")
    return value.strip()


def _rope2d_entries(entries: list[Any]) -> list[dict[str, Any]]:
    out = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise BadInput(f"grid rope2d: entries are mappings like {{ratio: 0.5}}, got {entry!r}")
        unknown = set(entry) - set(ROPE2D_FLAGS)
        if unknown:
            raise BadInput(f"grid rope2d: unknown key(s) {sorted(unknown)}; "
                           f"valid: {', '.join(ROPE2D_FLAGS)}")
        out.append({k: entry[k] for k in ROPE2D_FLAGS if entry.get(k) is not None})
    return out


def _matches(cell: Cell, pattern: Mapping[str, Any]) -> bool:
    for key, want in pattern.items():
        if key == "rope2d":
            if not isinstance(want, Mapping) or any(cell.rope2d.get(k) != v
                                                    for k, v in want.items()):
                return False
        elif key == "options":
            if not isinstance(want, Mapping) or any(cell.options.get(str(k).replace("-", "_"))
                                                    != v for k, v in want.items()):
                return False
        elif getattr(cell, key) != want:
            return False
    return True


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    if not clean:
        raise BadInput(f"grid name {name!r} has no usable characters")
    return clean


def _check_keys(raw: Mapping[str, Any], valid: set[str], kind: str) -> None:
    unknown = set(raw) - valid
    if unknown:
        raise BadInput(f"unknown key(s) {sorted(unknown)} in a {kind} grid; "
                       f"valid: {', '.join(sorted(valid))}")


def expand_grid(raw: Any, name: str,
                overrides: Mapping[str, Any] | None = None) -> list[AnyCell]:
    """Every cell of a parsed grid file, in a fixed order.

    `name` is the grid's name unless the file gives one; `overrides` are options applied
    to every cell, strongest of all (`--set`).
    """
    if not isinstance(raw, Mapping):
        raise BadInput("a grid file must hold a mapping (keys: models, methods, ...)")
    grid = _safe_name(str(raw.get("name") or name))
    if "stages" in raw:
        return _expand_stages(raw, grid, overrides)
    kind = raw.get("kind", "run")
    if kind not in KINDS:
        raise BadInput(f"grid kind {kind!r} is not supported; valid: {', '.join(KINDS)}")
    if kind == "train":
        return _expand_train(raw, grid, overrides)
    return _expand_run(raw, grid, overrides)


def _expand_stages(raw: Mapping[str, Any], grid: str,
                   overrides: Mapping[str, Any] | None) -> list[AnyCell]:
    """A staged grid: its stages' cells, stage after stage (each stage a train or run grid
    named by `stage:`; every cell id uses the grid's name). `--set` applies to the run
    stages only: train and run commands take different options."""
    _check_keys(raw, STAGED_KEYS, "staged")
    stages = raw["stages"]
    if not isinstance(stages, list) or not stages or not all(isinstance(s, Mapping)
                                                             for s in stages):
        raise BadInput("grid stages: a list of grids (mappings), each with a `stage` name")
    cells: list[AnyCell] = []
    names: list[str] = []
    for k, stage in enumerate(stages, 1):
        stage = dict(stage)
        stage_name = _safe_name(str(stage.pop(STAGE_KEY, f"stage{k}")))
        if stage_name in names:
            raise BadInput(f"grid stages: two stages named {stage_name!r}")
        names.append(stage_name)
        if "stages" in stage or "name" in stage or "output_dir" in stage:
            raise BadInput(f"grid stage {stage_name}: 'stages', 'name' and 'output_dir' belong "
                           "to the whole grid")
        train = stage.get("kind") == "train"
        stage_cells = expand_grid({**stage, "name": grid}, grid,
                                  None if train else overrides)
        seen = {c.id for c in cells}
        for cell in stage_cells:
            if cell.id in seen and cell.kind == "train":
                raise BadInput(f"grid stages: training run {cell.id} is in two stages")
            if cell.id not in seen:  # a run cell an earlier stage has: it runs once, there
                cells.append(replace(cell, stage=stage_name))
    return cells


def stage_names(cells: Iterable[AnyCell]) -> list[str]:
    """The stages of a grid's cells, in order (empty for a grid without stages)."""
    return list(dict.fromkeys(c.stage for c in cells if c.stage))


def pick_stage(cells: list[AnyCell], stage: str | None) -> list[AnyCell]:
    """Only the cells of `stage` (None: all)."""
    if stage is None:
        return cells
    names = stage_names(cells)
    if stage not in names:
        raise BadInput(f"no stage {stage!r} in this grid; stages: {', '.join(names) or 'none'}")
    return [c for c in cells if c.stage == stage]


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Options merged left to right (later wins), unset (None) ones dropped, sorted."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return {k: v for k, v in sorted(merged.items()) if v is not None}


def _throughput_block(raw: Mapping[str, Any], flags: Mapping[str, Flag],
                      reserved: set[str]) -> dict[str, Any] | None:
    """The options of the grid's throughput runs, or None without a `throughput:` block."""
    if "throughput" not in raw:
        return None
    # an empty block (`throughput:` with every key commented out) means the defaults
    block = _merge(THROUGHPUT_DEFAULTS, normalize_options(
        raw["throughput"], "grid throughput", flags, reserved | {"ignore_eos"}))
    if "max_new_tokens" not in block:
        raise BadInput("grid throughput: max_new_tokens must be a number: throughput runs "
                       "generate a fixed number of tokens")
    return block


def _accuracy_and_throughput(cell: Cell, block: Mapping[str, Any],
                             forced: Mapping[str, Any]) -> list[Cell]:
    """A cell as its accuracy run (unchanged) and its throughput run (`--set` still wins)."""
    if cell.options.get("ignore_eos"):
        raise BadInput(f"grid cell {cell.label()}: ignore_eos is set, but with a `throughput:` "
                       f"block the accuracy runs keep the suite's stopping and the block makes "
                       f"the --ignore-eos runs; drop ignore_eos")
    options = _merge(cell.options, block, forced, {"ignore_eos": True})
    return [cell, replace(cell, options=options, throughput=True)]


def _expand_run(raw: Mapping[str, Any], grid: str,
                overrides: Mapping[str, Any] | None) -> list[Cell]:
    """Run cells in the order model, suite, branch, method, rope2d setting (with a
    `throughput:` block, each accuracy run followed by its throughput run)."""
    _check_keys(raw, RUN_KEYS, "run")
    flags = command_flags("run")
    reserved = SWEEP_SET | RUN_AXES_SET
    common = normalize_options(raw.get("options"), "grid options", flags, reserved)
    forced = normalize_options(overrides, "--set", flags, reserved)
    throughput = _throughput_block(raw, flags, reserved)
    rope2d = _rope2d_entries(_as_list(raw["rope2d"], "rope2d")) if "rope2d" in raw else [{}]

    def make(model, suite, branch, method, r2d, *opts) -> Cell:
        return Cell(grid=grid, model=model, method=method, suite=suite, branch=branch,
                    rope2d=r2d if method in ROPE2D_METHODS else {},
                    options=_merge(common, *opts, forced))

    models, suites, methods = (_axis(raw, key, flags, reserved)
                               for key in ("models", "suites", "methods"))
    order, per_method = _branches(raw, methods)
    cells: list[Cell] = []
    for model, suite, branch, (method, branches) in itertools.product(
            models, suites, order, zip(methods, per_method, strict=True)):
        if branch not in branches:
            continue
        for r2d in rope2d if method.value in ROPE2D_METHODS else [{}]:
            cells.append(make(model.value, suite.value, branch, method.value, r2d,
                              model.options, suite.options, method.options))

    valid_keys = {"model", "method", "suite", "branch", "rope2d", "options"}
    excludes = raw.get("exclude") or []
    if not isinstance(excludes, list) or not all(isinstance(p, Mapping) for p in excludes):
        raise BadInput("grid exclude: a list of mappings like {method: batch, branch: 1}")
    for pattern in excludes:
        if set(pattern) - valid_keys:
            raise BadInput(f"grid exclude: unknown key(s) {sorted(set(pattern) - valid_keys)}")
    cells = [c for c in cells if not any(_matches(c, p) for p in excludes)]

    for extra in raw.get("include") or []:
        if not isinstance(extra, Mapping) or set(extra) - valid_keys:
            raise BadInput(f"grid include: each entry is a mapping of {sorted(valid_keys)}; "
                           f"got {extra!r}")
        for key in ("method", "suite"):
            if key not in extra:
                raise BadInput(f"grid include: entry {dict(extra)} needs {key!r}")
        model = _axis_value("model", extra["model"], "include") if extra.get("model") else None
        r2d = _rope2d_entries([extra["rope2d"]])[0] if "rope2d" in extra else {}
        cells.append(make(model, _axis_value("suite", extra["suite"], "include"),
                          _axis_value("branch", extra.get("branch", 1), "include"),
                          _axis_value("method", extra["method"], "include"), r2d,
                          normalize_options(extra.get("options"), "grid include options",
                                            flags, reserved)))

    if throughput is not None:
        cells = [run for c in cells for run in _accuracy_and_throughput(c, throughput, forced)]
    # one cell per id: an include that repeats a crossed cell runs once
    unique = list({c.id: c for c in cells}.values())
    if not unique:
        raise BadInput("the grid has no cells (everything excluded?)")
    _check_names(unique)
    for cell in unique:
        check_run_id(cell.id, f"grid cell {cell.label()}: its id")
        check_argv(("run",), cell.run_args(), f"grid cell {cell.label()}")
        _check_settings(cell)
    return unique


def _expand_train(raw: Mapping[str, Any], grid: str,
                  overrides: Mapping[str, Any] | None) -> list[TrainCell]:
    """Training cells, in the order of `runs`."""
    _check_keys(raw, TRAIN_KEYS, "train")
    runs = raw.get("runs")
    if not isinstance(runs, list) or not runs:
        raise BadInput("a train grid needs `runs`: a list of {id, command, options...}")
    commands = ("pretrain", "finetune")
    shared = raw.get("options") or {}
    if not isinstance(shared, Mapping):
        raise BadInput(f"grid options: options must be a mapping, got {type(shared).__name__}")
    cells: list[TrainCell] = []
    for entry in runs:
        if not isinstance(entry, Mapping) or "id" not in entry:
            raise BadInput(f"grid runs: each entry is a mapping with an 'id', got {entry!r}")
        merged = {**shared, **entry}
        run_id, command = str(merged.pop("id")), merged.pop("command", None)
        if command not in commands:
            raise BadInput(f"grid run {run_id}: command must be one of {commands}, "
                           f"got {command!r}")
        if _safe_name(run_id) != run_id:
            raise BadInput(f"grid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
        check_run_id(run_id, "grid run id")
        flags = command_flags("train", command)
        where = f"grid run {run_id}"
        options = normalize_options(merged, where, flags, SWEEP_SET)
        options.update(normalize_options(overrides, "--set", flags, SWEEP_SET))
        cell = TrainCell(grid, run_id, command,
                         {k: v for k, v in options.items() if v is not None})
        check_argv(("train", command), cell.train_args(), where)
        cells.append(cell)
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise BadInput(f"grid runs: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return cells


def _check_names(cells: Iterable[Cell]) -> None:
    """Unknown or uninstalled methods, unknown suites: bad input before anything runs."""
    from pmbench.engine.runners.base import RunnerUnavailable, available_runners

    runners = available_runners()
    for method in sorted({c.method for c in cells}):
        if method not in runners:
            raise BadInput(f"grid: unknown method {method!r}; valid: {', '.join(runners)}")
        try:
            runners[method].check_available()
        except RunnerUnavailable as exc:
            raise BadInput(f"grid: method {method} is not installed: {exc}") from None
    from pmbench.suites import available_suites

    suites = available_suites()
    for suite in sorted({c.suite for c in cells}):
        if suite not in suites:
            raise BadInput(f"grid: unknown suite {suite!r}; valid: {', '.join(suites)}")


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (true, 8, 0.5, text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise BadInput(f"--set {item!r}: the value is not valid YAML "
                           f"({_yaml_problem(exc)})") from None
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The gist of a YAML error in a few words (its first line and where)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0] or "invalid YAML"
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def load_grid(path: str | Path, overrides: Mapping[str, Any] | None = None) -> list[AnyCell]:
    """Read, validate and expand a grid file."""
    return expand_grid(read_grid(path), Path(path).stem, overrides)


def grid_output_dir(raw: Any) -> str | None:
    """The grid's own `output_dir` (where its records belong), if it names one."""
    value = raw.get("output_dir") if isinstance(raw, Mapping) else None
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise BadInput(f"grid output_dir: expected a folder name, got {value!r}")
    return value


def read_grid(path: str | Path) -> Any:
    """The parsed YAML of a grid file (bad input when missing or not YAML)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise BadInput(f"grid file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"grid file {path} is not UTF-8 text ({exc.reason} at byte "
                       f"{exc.start})") from None
    except OSError as exc:
        raise BadInput(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"grid file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    return raw


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' (1-based) -> (I, N)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise BadInput(f"--shard expects I/N like 1/4, got {text!r}")
    i, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= i <= n:
        raise BadInput(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def shard(cells: list[AnyCell], which: tuple[int, int] | None) -> list[AnyCell]:
    """The I-th of N disjoint round-robin slices of `cells`; a throughput run stays with
    the accuracy run before it (else, with N even, some shards would get only one kind)."""
    if which is None:
        return list(cells)
    i, n = which
    out, position = [], -1
    for cell in cells:
        if not getattr(cell, "throughput", False):
            position += 1
        if position % n == i - 1:
            out.append(cell)
    return out


# ----------------------------------------------------------------------- running


def cell_state(output_dir: str | Path, cell: AnyCell) -> str:
    """'done' (complete record), 'partial' (interrupted: resume it) or 'new'."""
    path = Path(output_dir) / cell.id / cell.record_file
    try:
        status = json.loads(path.read_text(encoding="utf-8")).get("status")
    except FileNotFoundError:
        return "new"
    except (json.JSONDecodeError, OSError, AttributeError):
        return "partial"  # unreadable record: `--resume` reports it precisely
    return "done" if status == COMPLETE_STATUS else "partial"


def cell_command(cell: AnyCell, output_dir: str | Path, state: str) -> list[str]:
    """The subprocess command line for a cell: a fresh run, or `--resume` of its record."""
    base = [sys.executable, "-c", "from pmbench.cli import main; main()"]
    return base + cell.command_args(state) + ["--output-dir", str(output_dir)]


@dataclass
class CellResult:
    cell: AnyCell
    status: str  # "skipped" (already done), "ran", "resumed", "failed"
    wall_s: float = 0.0
    message: str = ""
    record: dict[str, Any] | None = None


# (event, cell, result-or-None, questions done, questions total)
EventFn = Callable[[str, AnyCell, CellResult | None, int, int | None], None]


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _last_error(log: Path) -> str:
    try:
        lines = [x.strip() for x in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except FileNotFoundError:
        return ""
    errors = [x for x in lines if x.startswith("error:")]
    tail = errors[-1] if errors else next((x for x in reversed(lines) if x), "")
    return tail[:300]


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop a cell like Ctrl-C does (it saves its finished groups), then insist.

    A Ctrl-C in a terminal reaches the cell too (same process group): give it a moment
    to finish on its own before sending SIGINT, so its clean-up is not interrupted twice.
    """
    for sig, wait_s in ((None, 2.0), (signal.SIGINT, grace_s), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_cell(cell: AnyCell, output_dir: str | Path, on_event: EventFn | None = None,
             env: Mapping[str, str] | None = None, poll_s: float = 0.5,
             grace_s: float = 30.0) -> CellResult:
    """Run one cell in its own process, unless its record is complete already."""
    output_dir = Path(output_dir)
    state = cell_state(output_dir, cell)
    if state == "done":
        return CellResult(cell, "skipped", record=read_record(output_dir, cell))
    folder = output_dir / cell.id
    log = folder / LOG_FILE
    cmd = cell_command(cell, output_dir, state)
    total = cell.total
    t0 = time.perf_counter()
    fh = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = log.open("a", encoding="utf-8")
        fh.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[3:])}\n")
        fh.flush()
    except OSError as exc:
        with contextlib.suppress(OSError):
            if fh is not None:
                fh.close()
        raise BadInput(f"cannot write {log}: {exc.strerror or exc}; finished cells are "
                       "saved, free space and run the same command again") from None
    with fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None)
        try:
            while True:
                try:
                    proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    if on_event:
                        on_event("progress", cell, None,
                                 _count_lines(folder / "samples.jsonl"), total)
        except BaseException:
            _stop(proc, grace_s)
            raise
    wall = time.perf_counter() - t0
    if proc.returncode == 0 and cell_state(output_dir, cell) == "done":
        status = "resumed" if state == "partial" else "ran"
        return CellResult(cell, status, wall, record=read_record(output_dir, cell))
    msg = _last_error(log) or f"exit code {proc.returncode}"
    return CellResult(cell, "failed", wall, f"{msg} (log: {log})")


def read_record(output_dir: str | Path, cell: AnyCell) -> dict[str, Any] | None:
    try:
        path = Path(output_dir) / cell.id / cell.record_file
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def needed_training(cell: AnyCell, trainings: Mapping[str, TrainCell]) -> str | None:
    """The id of the grid's training run whose checkpoint `cell` evaluates, if any: its
    model is `<folder>/<train id>/checkpoint`."""
    if cell.kind != "run" or not cell.model:
        return None
    parts = Path(cell.model).parts
    if len(parts) >= 2 and parts[-1] == CHECKPOINT_DIR and parts[-2] in trainings:
        return parts[-2]
    return None


def _wait_for_training(training: TrainCell, output_dir: str | Path, ran_here: bool,
                       on_event: EventFn | None, cell: AnyCell, wait_s: float) -> str:
    """'' once `training` is complete; an error message when it cannot become so.

    A training run of this process that is not complete has failed; one that another
    process (another shard) has started is waited for; one nobody has started is missing.
    """
    while (state := cell_state(output_dir, training)) != "done":
        if ran_here or state == "new":
            why = "did not complete" if ran_here else "has not been started (run its stage first)"
            return f"needs the checkpoint of training run {training.id}, which {why}"
        if on_event:
            on_event("waiting", cell, None, 0, None)
        time.sleep(wait_s)
    return ""


def run_sweep(cells: list[AnyCell], output_dir: str | Path, on_event: EventFn | None = None,
              env: Mapping[str, str] | None = None, fail_fast: bool = False,
              grid_cells: list[AnyCell] | None = None, wait_s: float = 10.0) -> list[CellResult]:
    """Run `cells` one after another, each in its own process; finished cells are skipped.

    A cell that evaluates the checkpoint of one of the grid's training runs
    (`grid_cells`: the whole grid, when `cells` is a shard or a stage of it) waits while
    another process trains it, and fails at once when that training failed here or was
    never started.

    Ctrl-C (KeyboardInterrupt) or SIGTERM stops the cell in flight the way Ctrl-C stops
    `pmbench run` (its finished groups are kept) and propagates; running the same sweep
    again resumes that cell and skips every complete one.
    """
    trainings = {c.id: c for c in (grid_cells or cells) if c.kind == "train"}
    mine = {c.id for c in cells}
    results: list[CellResult] = []
    for cell in cells:
        if on_event:
            on_event("start", cell, None, 0, cell.total)
        needed = needed_training(cell, trainings)
        missing = needed and _wait_for_training(trainings[needed], output_dir, needed in mine,
                                                on_event, cell, wait_s)
        if missing:
            result = CellResult(cell, "failed", message=missing)
        else:
            result = run_cell(cell, output_dir, on_event, env)
        results.append(result)
        if on_event:
            on_event("end", cell, result, 0, None)
        if fail_fast and result.status == "failed":
            break
    return results


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (Slurm's cancel, `kill`) raises KeyboardInterrupt, so it stops a sweep
    the way Ctrl-C does (main thread only; elsewhere a no-op)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def env_for_cells() -> dict[str, str]:
    """The environment of the cell processes: this one, with quiet tokenizers."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
