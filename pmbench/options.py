"""An option declared once: a settings field with its default, help, valid values and flag.

A settings dataclass (a run spec, a training run, a runner's own options, the 2D RoPE
settings) marks each field that a command line or a grid sets with :func:`option`. The
commands build their options from these declarations, grids check their keys against
them, and specs turn them back into command lines, so a default, a help text or a list of
valid values is written in one place, beside the setting it belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from pmbench.errors import BadInput

METADATA_KEY = "pmbench.option"


@dataclass(frozen=True)
class Option:
    """One declared option: `--flag` (or `--no-flag` when `negated`) sets field `name`."""

    name: str  # the settings field
    flag: str  # the option's python name: `--flag-with-dashes`, and the key in grids
    hint: Any  # the field's type
    default: Any  # MISSING: the field has no default (the command line leaves it unset)
    help: str
    choices: tuple[str, ...] = ()
    negated: bool = False  # a flag that turns the field off (--no-warmup sets warmup False)
    off: str | None = None  # the flag that sets a true-by-default field false (--full)
    aliases: tuple[str, ...] = ()  # deprecated flags that still work, with a note
    only: tuple[str, ...] = ()  # the commands that take it (empty: every one)

    @property
    def cli(self) -> str:
        return "--" + self.flag.replace("_", "-")

    @property
    def flag_default(self) -> Any:
        """The default as the flag reads it (a negated flag is off by default)."""
        return (not self.default) if self.negated else self.default


def option(default: Any = MISSING, *, help: str, flag: str | None = None,
           choices: tuple[str, ...] = (), negated: bool = False, off: str | None = None,
           aliases: tuple[str, ...] = (), only: tuple[str, ...] = (),
           default_factory: Any = MISSING) -> Any:
    """A dataclass field that a command line sets (`flag`: its name there, else the
    field's own; with `negated`, `--no-<field>` turns it off)."""
    meta = {"help": help, "flag": flag, "choices": tuple(choices), "negated": negated,
            "off": off, "aliases": tuple(aliases), "only": tuple(only)}
    return field(default=default, default_factory=default_factory,
                 metadata={METADATA_KEY: meta})


def default_of(f: Field) -> Any:
    """A dataclass field's default (MISSING when it has none)."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


def declared(cls: type) -> list[Option]:
    """The options a settings dataclass declares, in field order."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata.get(METADATA_KEY)
        if meta is None:
            continue
        flag = meta["flag"] or (f"no_{f.name}" if meta["negated"] else f.name)
        out.append(Option(f.name, flag, hints[f.name], default_of(f), meta["help"],
                          meta["choices"], meta["negated"], meta["off"], meta["aliases"],
                          meta["only"]))
    return out


def unset(opts: list[Option]) -> list[Option]:
    """`opts` without defaults: each unset unless given (a setting that then comes from
    elsewhere, such as a model's config)."""
    return [replace(o, hint=o.hint | None, default=None) for o in opts]


def check_choices(settings: Any) -> None:
    """BadInput for the first declared option whose value is not one of its choices."""
    for opt in declared(type(settings)):
        value = getattr(settings, opt.name)
        if opt.choices and value is not None and value not in opt.choices:
            raise BadInput(f"unknown {opt.cli} {value!r}; valid: {', '.join(opt.choices)}")


def build(cls: type, given: Mapping[str, Any], where: str) -> Any:
    """An instance of settings dataclass `cls` from option values by field name: each
    value typed and among its choices, an unknown name refused (BadInput)."""
    hints = get_type_hints(cls)
    unknown = sorted(set(given) - set(hints))
    if unknown:
        raise BadInput(f"{where}: unknown option(s) {', '.join(unknown)}")
    for name, value in given.items():
        if not fits(value, hints[name]):
            raise BadInput(f"{name} = {value!r} is not {type_name(hints[name])}")
    settings = cls(**given)
    check_choices(settings)
    return settings


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


def list_item(hint: Any) -> Any:
    """The item type of a list option (`list[int] | None` -> int), None for other options."""
    for arg in (hint, *get_args(hint)):
        if get_origin(arg) is list:
            return get_args(arg)[0]
    return None


def split_list(value: Any, hint: Any, flag: str) -> Any:
    """A list option's value as a list of its items: comma-separated text (as a command
    line gives it) split, integers given as numbers or text read as integers; other
    values are returned as they are."""
    item = list_item(hint)
    if item is None or not isinstance(value, str | list):
        return value
    parts = [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value
    if item is int:
        try:
            parts = [int(str(x)) for x in parts]  # 2 and "2", not 2.5 or true
        except ValueError:
            raise BadInput(f"--{flag.replace('_', '-')} takes comma-separated integers, "
                           f"got {value!r}") from None
    return parts or (None if fits(None, hint) else parts)
