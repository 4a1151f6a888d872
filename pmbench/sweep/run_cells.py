"""Run cells of a grid (`kind: run`): the axes crossed into `pmbench run` cells.

A cell is the run spec it stands for (`pmbench.jobs.spec`): the spec's own validation
checks it before anything runs, and `to_argv` makes its command line. See
pmbench.sweep.grid for the grid format.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple

from pmbench.errors import BadInput
from pmbench.jobs.spec import RunSettings, from_options, option_types, to_argv
from pmbench.records.store import check_run_id
from pmbench.rope2d.settings import KEY as ROPE2D
from pmbench.rope2d.settings import NAMES as ROPE2D_NAMES
from pmbench.rope2d.settings import OPTIONS as ROPE2D_OPTIONS
from pmbench.sweep.options import SWEEP_SET, as_list, check_keys, merge, normalize_options

AXES = {"models": "model", "methods": "method", "branches": "branch", "suites": "suite"}
RUN_KEYS = {"name", "kind", "description", ROPE2D, "options", "include", "exclude",
            "throughput", "slurm", *AXES}
RUN_AXES_SET = {"method", "suite", "branch", "model", *ROPE2D_OPTIONS.values()}
PATTERN_KEYS = {"model", "method", "suite", "branch", ROPE2D, "options"}  # include, exclude
# what a `throughput:` block gives its runs unless it says otherwise
THROUGHPUT_DEFAULTS = {"max_new_tokens": 64}  # repeats: the run's own default for --ignore-eos


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
                  "suite": self.suite, "branch": self.branch, ROPE2D: self.rope2d,
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

    def spec(self) -> RunSettings:
        """The run this cell stands for (without id and output folder)."""
        rope = {ROPE2D_OPTIONS[k]: v for k, v in self.rope2d.items()}
        return from_options(method=self.method, suite=self.suite, branch=self.branch,
                            model=self.model, **rope, **self.options)

    def run_args(self) -> list[str]:
        """The `pmbench run` arguments of this cell (without id and output folder)."""
        return to_argv(self.spec())

    def command_args(self, state: str) -> list[str]:
        if state == "partial":
            return ["run", "--resume", self.id]
        return ["run", *to_argv(replace(self.spec(), run_id=self.id))]

    def check(self) -> None:
        """The spec's own validation (types, ranges, names), as `pmbench run` does it."""
        try:
            self.spec().validate()
        except (BadInput, TypeError, ValueError) as exc:
            raise BadInput(f"grid cell {self.label()}: {exc}") from None


class AxisEntry(NamedTuple):
    value: Any
    options: dict[str, Any]
    branches: list[int] | None = None  # a method entry's own `branches` (not a run option)


def _axis(raw: Mapping[str, Any], key: str, types: Mapping[str, Any],
          reserved: set[str]) -> list[AxisEntry]:
    """The entries of an axis; an entry is a scalar or {name: .., options..}."""
    singular = AXES[key]
    if key not in raw:
        if singular == "model":
            return [AxisEntry(None, {})]  # the default model
        raise BadInput(f"grid needs {key!r} (a list of {singular} names)")
    out = []
    for entry in as_list(raw[key], key):
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
            opts = normalize_options(entry, where, types, reserved)
        else:
            value = entry
        out.append(AxisEntry(_axis_value(singular, value, key), opts, branches))
    return out


def _branch_list(value: Any, key: str) -> list[int]:
    return [_axis_value("branch", b, key) for b in as_list(value, key)]


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
        unknown = set(entry) - set(ROPE2D_NAMES)
        if unknown:
            raise BadInput(f"grid rope2d: unknown key(s) {sorted(unknown)}; "
                           f"valid: {', '.join(ROPE2D_NAMES)}")
        out.append({k: entry[k] for k in ROPE2D_NAMES if entry.get(k) is not None})
    return out


def _matches(cell: Cell, pattern: Mapping[str, Any]) -> bool:
    for key, want in pattern.items():
        if key == ROPE2D:
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


def _throughput_block(raw: Mapping[str, Any], types: Mapping[str, Any],
                      reserved: set[str]) -> dict[str, Any] | None:
    """The options of the grid's throughput runs, or None without a `throughput:` block."""
    if "throughput" not in raw:
        return None
    # an empty block (`throughput:` with every key commented out) means the defaults
    block = merge(THROUGHPUT_DEFAULTS, normalize_options(
        raw["throughput"], "grid throughput", types, reserved | {"ignore_eos"}))
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
    options = merge(cell.options, block, forced, {"ignore_eos": True})
    return [cell, replace(cell, options=options, throughput=True)]


def _not_excluded(cells: list[Cell], excludes: Any) -> list[Cell]:
    """`cells` without those an `exclude` pattern matches."""
    if not isinstance(excludes, list) or not all(isinstance(p, Mapping) for p in excludes):
        raise BadInput("grid exclude: a list of mappings like {method: batch, branch: 1}")
    for pattern in excludes:
        if set(pattern) - PATTERN_KEYS:
            raise BadInput(f"grid exclude: unknown key(s) {sorted(set(pattern) - PATTERN_KEYS)}")
    return [c for c in cells if not any(_matches(c, p) for p in excludes)]


def expand_run(raw: Mapping[str, Any], grid: str,
                overrides: Mapping[str, Any] | None) -> list[Cell]:
    """Run cells in the order model, suite, branch, method, rope2d setting (with a
    `throughput:` block, each accuracy run followed by its throughput run)."""
    check_keys(raw, RUN_KEYS, "run")
    types = option_types()
    reserved = SWEEP_SET | RUN_AXES_SET
    common = normalize_options(raw.get("options"), "grid options", types, reserved)
    forced = normalize_options(overrides, "--set", types, reserved)
    throughput = _throughput_block(raw, types, reserved)
    rope2d = _rope2d_entries(as_list(raw[ROPE2D], ROPE2D)) if ROPE2D in raw else [{}]
    crossed = rope2d_methods()

    def make(model, suite, branch, method, r2d, *opts) -> Cell:
        return Cell(grid=grid, model=model, method=method, suite=suite, branch=branch,
                    rope2d=r2d if method in crossed else {},
                    options=merge(common, *opts, forced))

    models, suites, methods = (_axis(raw, key, types, reserved)
                               for key in ("models", "suites", "methods"))
    order, per_method = _branches(raw, methods)
    cells: list[Cell] = []
    for model, suite, branch, (method, branches) in itertools.product(
            models, suites, order, zip(methods, per_method, strict=True)):
        if branch not in branches:
            continue
        for r2d in rope2d if method.value in crossed else [{}]:
            cells.append(make(model.value, suite.value, branch, method.value, r2d,
                              model.options, suite.options, method.options))

    cells = _not_excluded(cells, raw.get("exclude") or [])
    for extra in raw.get("include") or []:
        if not isinstance(extra, Mapping) or set(extra) - PATTERN_KEYS:
            raise BadInput(f"grid include: each entry is a mapping of {sorted(PATTERN_KEYS)}; "
                           f"got {extra!r}")
        for key in ("method", "suite"):
            if key not in extra:
                raise BadInput(f"grid include: entry {dict(extra)} needs {key!r}")
        model = _axis_value("model", extra["model"], "include") if extra.get("model") else None
        r2d = _rope2d_entries([extra[ROPE2D]])[0] if ROPE2D in extra else {}
        cells.append(make(model, _axis_value("suite", extra["suite"], "include"),
                          _axis_value("branch", extra.get("branch", 1), "include"),
                          _axis_value("method", extra["method"], "include"), r2d,
                          normalize_options(extra.get("options"), "grid include options",
                                            types, reserved)))

    if throughput is not None:
        cells = [run for c in cells for run in _accuracy_and_throughput(c, throughput, forced)]
    # one cell per id: an include that repeats a crossed cell runs once
    unique = list({c.id: c for c in cells}.values())
    if not unique:
        raise BadInput("the grid has no cells (everything excluded?)")
    _check_names(unique)
    for cell in unique:
        check_run_id(cell.id, f"grid cell {cell.label()}: its id")
        cell.check()
    return unique


def planned_run_cells(raw: Mapping[str, Any]) -> int:
    """The cells a run grid expands to at most: models x suites x (each method's #branch
    values, x the rope2d settings for rope2d) + includes, twice with a `throughput:` block;
    from the lengths of its lists, before any cell is made."""
    def length(value: Any) -> int:
        return len(value) if isinstance(value, list) else 1

    methods = raw.get("methods")
    crossed = rope2d_methods()
    per_method = 0
    for entry in methods if isinstance(methods, list) else [methods]:
        own = entry.get("branches") if isinstance(entry, Mapping) else None
        name = entry.get("name") if isinstance(entry, Mapping) else entry
        branches = length(own if own is not None else raw.get("branches"))
        per_method += branches * (length(raw.get(ROPE2D)) if name in crossed else 1)
    crossed = length(raw.get("models")) * length(raw.get("suites")) * per_method
    includes = raw.get("include")
    total = crossed + (len(includes) if isinstance(includes, list) else 0)
    return total * (2 if "throughput" in raw else 1)


def rope2d_methods() -> set[str]:
    """The methods whose cells are crossed with a grid's rope2d settings: those the 2D
    RoPE settings apply to (their runner's `uses_rope2d`)."""
    from pmbench.engine.runners.base import available_runners

    return {name for name, runner in available_runners().items() if runner.uses_rope2d}


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


