"""Typer options made from settings declarations (`pmbench.options`): a command's options
are its settings class's fields, with their defaults, help and flags as declared there,
so `run`, `train` and `attn` never restate a default. A deprecated flag (an alias) still
works and says so on stderr."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import MISSING
from typing import Annotated, Any

import typer

from pmbench.options import Option, list_item


def parameter(opt: Option) -> inspect.Parameter:
    """The Typer parameter of `opt`: a list option takes comma-separated text, a boolean
    one is a flag (with `--no-<flag>`, or its `off` flag, when it is on by default)."""
    hint, default = opt.hint, opt.flag_default
    if default is MISSING:
        default = None
    if list_item(hint) is not None:
        hint = str | None
        default = ",".join(map(str, default)) if default else None
    decls = [opt.cli]
    if hint is bool and default and not opt.negated:
        decls = [f"{opt.cli}/--{(opt.off or 'no_' + opt.flag).replace('_', '-')}"]
    info = typer.Option(*decls, help=opt.help)
    return inspect.Parameter(opt.flag, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[hint, info])


def alias_parameters(opts: Iterable[Option]) -> list[inspect.Parameter]:
    """A hidden parameter per deprecated flag of `opts` (unset: None)."""
    out = []
    for opt in opts:
        for alias in opt.aliases:
            info = typer.Option("--" + alias.replace("_", "-"), hidden=True,
                                help=f"Deprecated: {opt.cli}.")
            hint = bool if opt.hint is bool else opt.hint | None
            out.append(inspect.Parameter(alias, inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation=Annotated[hint, info]))
    return out


def resolve_aliases(options: dict[str, Any], opts: Iterable[Option]) -> dict[str, Any]:
    """`options` with each deprecated flag given moved to its option (a note on stderr)."""
    options = dict(options)
    for opt in opts:
        for alias in opt.aliases:
            value = options.pop(alias, None)
            if value is not None:
                flag = "--" + alias.replace("_", "-")
                sys.stderr.write(f"note: {flag} is deprecated; use {opt.cli}\n")
                options[opt.flag] = value
    return options


def declared_command(body: Callable[[dict[str, Any]], Any], opts: list[Option],
                     extra: Iterable[inspect.Parameter] = (), *, name: str,
                     doc: str) -> Callable[..., Any]:
    """A command function for Typer whose options are `opts` (then `extra`, parameters of
    its own); `body` gets every option by python name, deprecated flags resolved."""

    def command(**options: Any) -> Any:
        return body(resolve_aliases(options, opts))

    params = [parameter(o) for o in opts] + list(extra) + alias_parameters(opts)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {}
    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    return command


# Commands made when first used (`pmbench.cli` builds them): their options come from
# declarations whose modules take a while to import (every runner, for `run`; the
# attention analysis, for `attn`), which the other commands should not wait for.
LAZY: dict[str, Callable[[], Callable[..., Any]]] = {}


def lazy_command(app: typer.Typer, name: str, make: Callable[[], Callable[..., Any]],
                 doc: str) -> None:
    """Register command `name`, made by `make()` when it is used (until then its place
    in `pmbench --help` holds its `doc`)."""

    def placeholder() -> None:
        raise RuntimeError(f"command {name} was not made before use")

    LAZY[name] = make
    app.command(name=name, help=doc)(placeholder)
