"""Options in a grid file: names checked against a command's, values shaped for a command
line, layers merged, `--set KEY=VALUE` parsed. Shared by run and train cells."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from pmbench.errors import BadInput
from pmbench.safe_io import load_yaml

# options a sweep sets itself: never among a grid's options
SWEEP_SET = {"output_dir", "json_out", "resume", "run_id"}


def normalize_options(raw: Any, where: str, types: Mapping[str, Any],
                      reserved: set[str]) -> dict[str, Any]:
    """Check option names against `types` (option -> type of its value; '-' or '_'):
    boolean options take true/false, the others a value or a list of values."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BadInput(f"{where}: options must be a mapping, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in reserved:
            raise BadInput(f"{where}: {key} is set by the grid or the sweep, not by options")
        if name not in types:
            valid = ", ".join(sorted(set(types) - reserved))
            raise BadInput(f"{where}: unknown option {key!r}; valid: {valid}")
        if types[name] is bool and not isinstance(value, bool):
            raise BadInput(f"{where}: {name} is true or false, got {value!r}")
        if isinstance(value, Mapping) or (
                isinstance(value, list) and not all(isinstance(v, str | int | float)
                                                    for v in value)):
            raise BadInput(f"{where}: {name} takes a value or a list of values, got {value!r}")
        out[name] = value
    return out


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Options merged left to right (later wins), unset (None) ones dropped, sorted."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return {k: v for k, v in sorted(merged.items()) if v is not None}


def as_list(value: Any, key: str) -> list[Any]:
    """A grid value as a list (a single value stands for a one-element list)."""
    if value is None:
        raise BadInput(f"grid key {key!r} is empty")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadInput(f"grid key {key!r} is an empty list")
    return items


def safe_name(name: str) -> str:
    """`name` with only letters, digits, '.', '_' and '-' (it becomes part of folder names)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    if not clean:
        raise BadInput(f"grid name {name!r} has no usable characters")
    return clean


def check_keys(raw: Mapping[str, Any], valid: set[str], kind: str) -> None:
    unknown = set(raw) - valid
    if unknown:
        raise BadInput(f"unknown key(s) {sorted(unknown)} in a {kind} grid; "
                       f"valid: {', '.join(sorted(valid))}")


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (true, 8, 0.5, text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = load_yaml(value, "--set") if value.strip() else None
        except yaml.YAMLError as exc:
            raise BadInput(f"--set {item!r}: the value is not valid YAML "
                           f"({yaml_problem(exc)})") from None
    return out


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The gist of a YAML error in a few words (its first line and where)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0] or "invalid YAML"
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
