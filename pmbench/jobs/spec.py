"""The run spec: everything `pmbench run` is asked to do, in one typed record.

The command line builds it (`from_options`), a sweep builds it from a grid cell and
turns it back into a command line (`to_argv`), run.json stores it (`settings`) and
`--resume` reads it back (`resumed_settings`). Its `validate` is the one check of
a run's settings, whoever made them, and it needs no model, data or device.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from pmbench.errors import BadInput, require_positive
from pmbench.measure.devices import parse_device
from pmbench.records.store import check_run_id
from pmbench.rope2d.settings import OPTIONS as ROPE2D_OPTIONS
from pmbench.rope2d.settings import Rope2DSettings, resolve_settings

# Timed repeats of a throughput run unless --repeats says: with 5, the median's bootstrap
# interval over repeats is [min, max], a 94% interval (pmbench.measure.stats).
THROUGHPUT_REPEATS = 5


@dataclass
class RunSettings:
    """Everything `pmbench run` was asked to do (recorded in run.json)."""

    method: str | None
    suite: str | None
    branch: int = 1
    model: str | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    ignore_eos: bool = False
    repeats: int | None = None  # timed repeats; unset: timed_repeats
    warmup: bool = True
    seed: int = 0
    dtype: str | None = None
    device: str | None = None
    device_map: str | None = None
    data_dir: str | None = None
    output_dir: str = "results"
    num_fewshot: int | None = None
    split: str | None = None
    subjects: list[str] | None = None
    samples_per_task: int = 1
    apply_chat_template: bool = False
    truncate_documents: bool = False  # cut a document past the model's context, else refuse
    allow_code_execution: bool = False
    allow_unisolated_code_execution: bool = False  # run it even where isolation is partial
    rope2d: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    attn_implementation: str = "sdpa"
    cpu_prepack: bool = True  # see pmbench/engine/cpu_linear.py; same for every method
    prefix_kv: str = "auto"  # prefix method: share the context's KV by reference, or copy
    compile: str = "auto"  # the decoding step: auto | on | static | off (engine/compile.py)
    run_id: str | None = None
    resume: str | None = None

    @property
    def timed_repeats(self) -> int:
        """--repeats, else THROUGHPUT_REPEATS for a throughput run (--ignore-eos: its
        figure's interval is over repeats) and one for an accuracy run."""
        return self.repeats or (THROUGHPUT_REPEATS if self.ignore_eos else 1)

    def validate(self) -> None:
        """Cheap checks that need no model, data or device (a sweep runs them on every
        cell of a grid before anything starts)."""
        hints = get_type_hints(RunSettings)
        for f in fields(self):
            value = getattr(self, f.name)
            if not fits(value, hints[f.name]):
                raise BadInput(f"{f.name} = {value!r} is not {type_name(hints[f.name])}")
        require_positive(branch=self.branch, limit=self.limit, repeats=self.repeats,
                         max_new_tokens=self.max_new_tokens,
                         samples_per_task=self.samples_per_task, threads=self.threads)
        if self.run_id is not None:
            check_run_id(self.run_id, "--run-id")
        if self.resume is not None:
            check_run_id(self.resume, "--resume")
        parse_device(self.device)  # its availability is checked where the run runs
        from pmbench.engine.models import DTYPES
        from pmbench.engine.random_models import check_random_run

        check_random_run(self.model, self.ignore_eos, self.device_map)

        if self.dtype is not None and self.dtype not in DTYPES:
            raise BadInput(f"unknown --dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        resolve_settings(None, self.rope2d)  # rope2d owns its option names and ranges
        from pmbench.engine.runners.prefix import KV_MODES  # loads transformers: only when checking

        if self.prefix_kv not in KV_MODES:
            raise BadInput(f"unknown --prefix-kv {self.prefix_kv!r}; "
                           f"valid: {', '.join(KV_MODES)}")
        from pmbench.engine.compile import MODES

        if self.compile not in MODES:
            raise BadInput(f"unknown --compile {self.compile!r}; valid: {', '.join(MODES)}")
        self._check_applies()

    def _check_applies(self) -> None:
        """An option of one method given to another is refused, not silently ignored."""
        given = [ROPE2D_OPTIONS[k] for k, v in self.rope2d.items() if v is not None]
        if given and self.method not in (None, "rope2d"):
            raise BadInput(f"--{given[0].replace('_', '-')} applies to --method rope2d only, "
                           f"not {self.method}")
        if self.prefix_kv != "auto" and self.method not in (None, "prefix"):
            raise BadInput(f"--prefix-kv applies to --method prefix only, not {self.method}")


# ------------------------------------------------------------ the command line

# `pmbench run` options (by python name) that are not a field of the same name.
NEGATED = {"no_warmup": "warmup"}  # --no-warmup sets warmup = False
NAMING = ("method", "suite", "branch")  # always on a command line: they name the run


def option_types() -> dict[str, Any]:
    """Every `pmbench run` option that sets a spec field (python name) -> its value's type."""
    rope = get_type_hints(Rope2DSettings)
    negated = {name: option for option, name in NEGATED.items()}
    types: dict[str, Any] = {}
    for name, hint in get_type_hints(RunSettings).items():
        if name == "rope2d":
            types.update({option: rope[setting] for setting, option in ROPE2D_OPTIONS.items()})
        else:
            types[negated.get(name, name)] = hint
    return types


def from_options(**options: Any) -> RunSettings:
    """The spec that `pmbench run` options describe, as the command line gives them:
    `no_warmup`, `subjects` as comma-separated text (or a list), the rope-2d options,
    numbers for text options (a grid's `split: 1`). Unknown names: TypeError."""
    given = dict(options)
    for option, name in NEGATED.items():
        if option in given:
            given[name] = not given.pop(option)
    if isinstance(given.get("subjects"), str):
        given["subjects"] = [x.strip() for x in given["subjects"].split(",") if x.strip()] or None
    given["rope2d"] = {name: given.pop(option, None) for name, option in ROPE2D_OPTIONS.items()}
    hints = get_type_hints(RunSettings)
    given = {k: command_line_value(v, hints[k]) if k in hints else v for k, v in given.items()}
    return RunSettings(**given)


def to_argv(spec: RunSettings) -> list[str]:
    """The `pmbench run` arguments that make `spec`: the naming fields, then every
    field that differs from its default (unset ones left out)."""
    argv: list[str] = []
    for f in fields(spec):
        value = getattr(spec, f.name)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if value is None or (value == default and f.name not in NAMING):
            continue
        if f.name == "rope2d":
            for name, option in ROPE2D_OPTIONS.items():
                if value.get(name) is not None:
                    argv += [_flag(option), str(value[name])]
        elif isinstance(value, bool):
            argv.append(_flag(f.name) if value else _flag(f"no_{f.name}"))
        elif isinstance(value, list):
            argv += [_flag(f.name), ",".join(map(str, value))]
        else:
            argv += [_flag(f.name), str(value)]
    return argv


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------- stored specs

# Settings that the command line of a --resume gives, never the stored record: where the
# records are, and the opt-ins to run generated code, which must be asked again.
FROM_COMMAND_LINE = ("resume", "output_dir", "allow_code_execution",
                     "allow_unisolated_code_execution")


def fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass field's annotation."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, UnionType):
        return any(fits(value, arg) for arg in get_args(hint))
    if hint is NoneType:
        return value is None
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(hint, type) and isinstance(value, hint)


def command_line_value(value: Any, hint: Any) -> Any:
    """A number given for a text option (a grid's `split: 1`) becomes text, as it would
    on a command line."""
    if isinstance(value, int | float) and not isinstance(value, bool) and fits("", hint):
        return str(value)
    return value


def type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def resumed_settings(previous: dict[str, Any], current: RunSettings,
                     where: Any) -> RunSettings:
    """The stored settings of a run being resumed, checked field by field, with the
    FROM_COMMAND_LINE ones taken from `current` (the code-execution opt-ins are never
    inherited). A field the record lacks takes its default (records of older versions);
    an unknown field or a wrong type is a corrupt record, one line."""
    stored = previous.get("settings")
    if not isinstance(stored, dict):
        raise BadInput(f"corrupt run record: {where} (no settings)")
    hints = get_type_hints(RunSettings)
    unknown = sorted(str(k) for k in stored if k not in hints)
    if unknown:
        raise BadInput(f"corrupt run record: {where} (unknown settings: {', '.join(unknown)})")
    for name in ("method", "suite"):
        if not isinstance(stored.get(name), str):
            raise BadInput(f"corrupt run record: {where} (settings.{name} is missing)")
    for name, value in stored.items():
        if not fits(value, hints[name]):
            raise BadInput(f"corrupt run record: {where} (settings.{name} = {value!r} is not "
                           f"{type_name(hints[name])})")
    given = {k: v for k, v in stored.items() if k not in FROM_COMMAND_LINE}
    _check_no_conflict(given, current, where)
    return RunSettings(**given, **{k: getattr(current, k) for k in FROM_COMMAND_LINE})


def _check_no_conflict(stored: dict[str, Any], current: RunSettings, where: Any) -> None:
    """A --resume continues the stored run as it was asked: an option given with it (one
    that differs from its default) must say what the run already says, or it is refused
    (it would otherwise be ignored without a word)."""
    for f in fields(RunSettings):
        if f.name in FROM_COMMAND_LINE:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        default = None if default is MISSING else default  # method, suite: unset is None
        value = getattr(current, f.name)
        if f.name == "rope2d":
            value = {k: v for k, v in value.items() if v is not None}
            default, had = {}, {k: v for k, v in stored.get(f.name, {}).items()
                                if v is not None and k in value}
        else:
            had = stored.get(f.name, default)
        if value != default and value != had:
            raise BadInput(f"--{f.name.replace('_', '-')} {value!r} conflicts with the run "
                           f"being resumed ({had!r} in {where}): --resume continues a run as "
                           "it was started")
