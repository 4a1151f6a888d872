"""The runner interface, what a runner declares about its method, and the registry.

A runner answers one `Group` at a time. A method is one module of this package: its
runner class declares, besides how it decodes, everything the rest of pmbench needs to
know about the method, and is read there generically:

- `Options`: a dataclass of the method's own options (`pmbench.options.option` fields:
  default, help, choices). `pmbench run`, grids and the run spec take them by name, a
  value for another method is refused, and the runner reads them as `self.own`;
- `uses_rope2d`: whether the 2D RoPE settings (`--rope-2d-ratio`, ..., a grid's `rope2d`
  axis) apply to it;
- `record_columns` and `label`: the fields of the block `record_options` adds to run.json
  that tell its runs apart, and its name in tables built from them;
- `order`, `color`, `baseline`: its place among methods in tables, its colour in figures,
  whether it is the reference every other method is judged against;
- `ratios_over`: the methods `compare` divides its throughput by.

The package's own modules are found without being declared anywhere (a new method needs
no reinstall); another package adds one through the entry-point group
`pmbench.runners`, without touching pmbench:

    [project.entry-points."pmbench.runners"]
    mymethod = "mypkg.runner:MyRunner"
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

from pmbench.engine.kvcache import BufferPool, bucket
from pmbench.errors import BadInput, PmbenchWarning
from pmbench.options import Option, build, declared
from pmbench.types import GenerationConfig, Group, GroupOutput

ENTRY_POINT_GROUP = "pmbench.runners"


class RunnerUnavailable(RuntimeError):
    """Raised by a runner whose optional dependencies are not installed."""


class RunnerOptions:
    """What a run gives its runner: the settings every method may read, and the method's
    own options by name (`method`, checked against the runner's `Options`)."""

    def __init__(self, branch: int = 1, rope2d: Mapping[str, Any] | None = None,
                 model: str | None = None, compile: str = "auto", **method: Any):
        self.branch = branch
        self.rope2d = dict(rope2d or {})  # ratio, mode, branch_freqs, mask; None: unset
        self.model = model  # --model as given, for runners that load weights themselves
        self.compile = compile  # the decoding step: auto, on, static or off (engine/compile.py)
        self.method = method


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none of its own."""


class Runner(ABC):
    """Answer groups of pre-tokenized questions with one decoding method.

    `model` is an HF causal LM (or None for runners with `needs_model = False`),
    `tokenizer` an HF tokenizer. Subclasses implement `run_group`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "method"  # "method" or "validation" (oracle)
    needs_model: ClassVar[bool] = True
    Options: ClassVar[type] = NoOptions
    uses_rope2d: ClassVar[bool] = False
    record_columns: ClassVar[tuple[str, ...]] = ()  # a nested block's field as "block.field"
    order: ClassVar[int | None] = None  # lower first; None: after the methods that have one
    color: ClassVar[str | None] = None  # None: a colour of the figures' spare palette
    baseline: ClassVar[bool] = False
    # how a decoding step reads the KV cache, for the roof (measure/roofline.step_roof):
    # "rows", every live row its own context (a batch); "shared", the shared context once
    # for all rows (prefix, rope2d); "one", one question at a time (sequential)
    step_reads: ClassVar[str] = "rows"
    ratios_over: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: Any, tokenizer: Any, options: RunnerOptions | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.options = options or RunnerOptions()
        self.own = own_options(type(self), self.options.method)
        self.pool = BufferPool()  # static decoding's buffers, reused per (rows, bucket)

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """Its name in tables, from a record's `record_columns` (`values`: column -> value,
        None or NaN where a record lacks one). It starts with the method's name, which
        tables sort by."""
        return cls.name

    def static_pool(self, mode: str) -> BufferPool | None:
        """The pool a group's cache and static step take their buffers from under the
        resolved compile `mode` (None: eager decoding allocates per group, as before)."""
        return None if mode == "off" else self.pool

    def warmup_key(self, group: Group, gen: GenerationConfig) -> Hashable:
        """What fixes the shapes a static step records for `group`: by default its rows
        and its reservation's bucket (one forward pass over context + questions; the
        runners whose layout differs say so; a frozenset: several, one per pass). A run
        with a static step warms up on every group that brings a key not seen before,
        so no CUDA graph is recorded while timed."""
        width = max(len(q.prompt_ids) for q in group.questions) + len(group.context_ids)
        return len(group.questions), bucket(width + gen.max_new_tokens)

    @classmethod
    def check_available(cls) -> None:
        """Raise RunnerUnavailable with an install hint if optional deps are missing."""
        return None

    def record_options(self) -> dict[str, Any]:
        """The method's own blocks in run.json (e.g. `rope2d`); new keys only: a key the
        run already wrote (other than `rope2d`) is refused. `record_columns` names the
        fields that tell its runs apart."""
        return {}

    def model_name(self) -> str | None:
        """The model's name for run.json, for runners that load it themselves (None: the
        name of the model the run loaded)."""
        return None

    @abstractmethod
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        """Decode every question of `group`; outputs in question order."""


def warmup_groups(runner: Runner, groups: list[Group], gen: GenerationConfig,
                  static: bool) -> list[Group]:
    """The groups a run warms up on, untimed: the first, and with a `static` step the
    first of each `warmup_key` (each bucket's graph is then recorded before timing)."""
    if not static:
        return groups[:1]
    seen: set[Hashable] = set()
    picked = []
    for group in groups:
        key = runner.warmup_key(group, gen.for_group(group))
        keys = key if isinstance(key, frozenset) else {key}
        if not keys <= seen:
            seen |= keys
            picked.append(group)
    return picked


def own_options(runner: type[Runner], given: Mapping[str, Any]) -> Any:
    """The runner's `Options` from option values by flag; a flag the method does not
    declare, a wrong type or a value outside its choices is bad input."""
    names = {opt.flag: opt.name for opt in declared(runner.Options)}
    return build(runner.Options, {names.get(flag, flag): value for flag, value in given.items()},
                 f"--method {runner.name}")


def method_options() -> dict[str, Option]:
    """Every method's own options by flag, for the command line, grids and specs. Two
    methods may share an option only with the same type and default."""
    out: dict[str, Option] = {}
    for name, runner in available_runners().items():
        for opt in declared(runner.Options):
            seen = out.setdefault(opt.flag, opt)
            if (seen.hint, seen.default) != (opt.hint, opt.default):
                raise BadInput(f"runner {name!r} declares option {opt.flag!r} with another "
                               "type or default than a method before it: fix or remove it")
    return out


def methods_of(flag: str) -> list[str]:
    """The methods that take option `flag`."""
    return [name for name, runner in available_runners().items()
            if flag in {opt.flag for opt in declared(runner.Options)}]


def baseline_method() -> str | None:
    """The method every other is judged against (its runner's `baseline`)."""
    return next((name for name, r in available_runners().items() if r.baseline), None)


def _in_tree() -> dict[str, type[Runner]]:
    """The runner classes defined in the modules of this package (its `__path__`)."""
    package = sys.modules[__name__.rpartition(".")[0]]
    found: dict[str, type[Runner]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception as exc:  # one broken module must not take every method with it
            warnings.warn(PmbenchWarning(f"runner module {info.name} skipped: "
                                         f"{type(exc).__name__}: {exc}"), stacklevel=2)
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Runner) and obj.name
                    and obj.__module__ == module.__name__):
                found[obj.name] = obj
    return found


def _source_tree_runners() -> list[EntryPoint]:
    """pmbench's own runners as its pyproject.toml declares them, for a source tree run
    without being installed (the GPU machine gets the tree on PYTHONPATH, no metadata)."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        declared = project["entry-points"][ENTRY_POINT_GROUP]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return []
    return [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in declared.items()]


@functools.cache
def _discover() -> dict[str, type[Runner]]:
    found = _in_tree()
    installed = list(entry_points(group=ENTRY_POINT_GROUP))
    names = {ep.name for ep in installed}
    for ep in [*installed, *(e for e in _source_tree_runners() if e.name not in names)]:
        if ep.name in found:
            continue
        try:
            cls = ep.load()
        except Exception:  # a broken third-party plugin must not break the CLI
            continue
        found[ep.name] = cls
    return dict(sorted(found.items()))


def available_runners() -> dict[str, type[Runner]]:
    """All runner classes by name: this package's modules, then entry points (broken
    plugins are skipped; where pmbench itself is not installed, the entry points its
    pyproject declares). Found once per process (`forget_runners` looks again)."""
    return dict(_discover())


def forget_runners() -> None:
    """Look for runners again at the next call (a module or plugin added since)."""
    _discover.cache_clear()


def get_runner(name: str) -> type[Runner]:
    runners = available_runners()
    if name not in runners:
        raise KeyError(f"unknown method {name!r}; valid: {', '.join(runners)}")
    return runners[name]
