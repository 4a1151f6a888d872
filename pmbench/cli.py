"""The `pmbench` command line (Typer + rich).

Every module in `pmbench.commands` adds its own commands through `register(app)`
(`run`, the main one, first); `run` and `attn` are made when first used, since their
options come from modules that take a while to import. Expected failures
(`PmbenchError`) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import pkgutil
import warnings
from typing import Annotated

# Before anything starts OpenMP (torch): idle worker threads sleep instead of spinning,
# which on a shared 2-core machine made small ops many times slower (README.md, last
# section; benchmarks/README.md, "Thread policy"). A value the user set wins; run.json
# records it (env.omp_wait_policy).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
import typer.main
from rich.console import Console
from typer.core import TyperGroup

from pmbench import __version__
from pmbench.commands.options import LAZY
from pmbench.errors import PmbenchError, PmbenchWarning, one_line


class _Commands(TyperGroup):
    """pmbench's commands; those registered with `commands.options.lazy_command` are made
    when first used, in their place."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.made: set[str] = set()

    def get_command(self, ctx, name):
        make = LAZY.get(name)
        if make is not None and name not in self.made:
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            one.command(name=name)(_guard(_guard(make)()))  # its making fails as it would
            self.commands[name] = typer.main.get_command(one)
            self.made.add(name)
        return super().get_command(ctx, name)


app = typer.Typer(
    cls=_Commands,
    name="pmbench",
    help="Benchmark parallel inference in LLMs: sequential vs batch vs 2D-RoPE branches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        out.print(f"pmbench {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """pmbench: honest, reproducible numbers for parallel decoding."""


def _last_resort(exc: BaseException) -> str | None:
    """One line for a file-system or file-format failure that no command turned into a
    PmbenchError (commands give more specific messages where they can), else None."""
    import yaml

    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not valid UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, yaml.YAMLError):
        return f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc}"
    if isinstance(exc, RecursionError):  # a reader that missed a nesting check
        return "input nested too deeply to read"
    return None


@contextlib.contextmanager
def _one_line_warnings():
    """Print each PmbenchWarning (a skipped file, say) at once as one `warning:` line, once
    per message; other warnings go where they went."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PmbenchWarning):
            err.print(f"warning: {one_line(message)}", highlight=False, markup=False,
                      soft_wrap=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("default", PmbenchWarning)
        warnings.showwarning = show
        yield


def _guard(fn):
    """Turn expected failures into one line and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _one_line_warnings():
                return fn(*args, **kwargs)
        except PmbenchError as exc:
            err.print(f"error: {one_line(exc)}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # a last line of defence; anything unexpected re-raises
            message = _last_resort(exc)
            if message is None:
                raise
            err.print(f"error: {one_line(message)}", highlight=False, markup=False,
                      soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished groups are saved; continue with --resume RUN_ID")
            raise typer.Exit(130) from None

    return wrapper


def _guard_all(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_pm_guarded", False):
            info.callback = _guard(info.callback)
            info.callback._pm_guarded = True
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _guard_all(group.typer_instance)


def _register_commands() -> None:
    import pmbench.commands as commands

    names = sorted((m.name for m in pkgutil.iter_modules(commands.__path__)),
                   key=lambda name: name != "run")  # `run` heads --help
    for name in names:
        module = importlib.import_module(f"pmbench.commands.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    _guard_all(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
