"""`pmbench cache status` and `pmbench cache clean`: what pmbench keeps outside a checkout.

`$PMBENCH_CACHE` (default ~/.cache/pmbench) holds the default model converted from its GGUF
(`models/`, about 0.5 GB, named by the GGUF's content so every checkout shares it), hub
copies of benchmark data (`data/`) and this machine's measured peaks (`peaks/`). Nothing
there is a result: all of it is rebuilt on first use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.console import Console

from pmbench.errors import BadInput

PARTS = ("models", "data", "peaks")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def status() -> None:
    """Size of each part of the cache."""
    from pmbench.engine.models import cache_dir

    root = cache_dir()
    out = Console()
    out.print(f"cache: {root}", highlight=False)
    for part in PARTS:
        folder = root / part
        size = _size(folder) if folder.is_dir() else 0
        out.print(f"  {part}: {size / 2**20:.1f} MiB", highlight=False)


def clean(part: list[str] | None = typer.Argument(
        None, help=f"What to remove: {', '.join(PARTS)} (default: all three).")) -> None:
    """Remove the converted models, hub data copies and measured peaks (rebuilt on use)."""
    from pmbench.engine.models import cache_dir

    unknown = sorted(set(part or []) - set(PARTS))
    if unknown:
        raise BadInput(f"unknown cache part {unknown[0]!r}; parts are {', '.join(PARTS)}")
    root = cache_dir()
    for name in part or PARTS:
        folder = root / name
        if folder.is_dir() and not folder.is_symlink():
            size = _size(folder)
            shutil.rmtree(folder)
            Console().print(f"removed {folder} ({size / 2**20:.1f} MiB)", highlight=False)


def register(app: typer.Typer) -> None:
    cache_app = typer.Typer(help="pmbench's cache: converted models, hub data, peaks.",
                            no_args_is_help=True)
    cache_app.command("status")(status)
    cache_app.command("clean")(clean)
    app.add_typer(cache_app, name="cache")
