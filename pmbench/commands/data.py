"""`pmbench data status` and `pmbench data download [SUITE]`: where suites read their data.

Status shows where data is looked for (`--data-dir` alone, else `$PMBENCH_DATA`, the
`shared/data` folder beside the project, the hub cache), then per suite the folder its
files would be read from, or that they would be fetched from the HF hub, or that they are
missing. Download saves the hub copy, in the local layout, into the
data folder (`--data-dir`, else `$PMBENCH_DATA`, else the cache).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pmbench.errors import BadInput

DATA_DIR = typer.Option(None, "--data-dir", help="Benchmark data folder (else $PMBENCH_DATA).")


def status(data_dir: Path | None = DATA_DIR) -> None:
    """Per suite: where its data comes from, and whether it is there."""
    from pmbench.suites import available_suites, suite_config
    from pmbench.suites.base import data_spec
    from pmbench.suites.data import find_local, hub_offline_reason, local_roots

    offline = hub_offline_reason()
    Console().print("looked in, in order: " + ", ".join(str(r) for r in local_roots(data_dir)),
                    highlight=False)
    table = Table("suite", "files", "source", "state")
    for name in available_suites():
        spec = data_spec(suite_config(name))
        root = find_local(spec, data_dir) if spec.files else None
        if not spec.files:
            source, state = "generated", "[green]ok[/] (no files)"
        elif root is not None:
            source, state = str(root), "[green]ok[/]"
        elif offline is None:
            source, state = f"hub {spec.hub}", "[yellow]fetched on first use[/]"
        else:
            source, state = f"hub {spec.hub}", f"[red]missing[/] (offline: {offline})"
        table.add_row(name, ", ".join(spec.files), source, state)
    Console().print(table)


def download(
    suite: str | None = typer.Argument(None, help="Suite to fetch (default: all)."),
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Save the HF hub copy of a suite's data (all suites by default) into the data folder."""
    from pmbench.suites import available_suites, suite_class, suite_config
    from pmbench.suites.base import data_spec
    from pmbench.suites.data import DATA_ENV, cache_data_dir, download, hub_offline_reason

    names = [suite] if suite else list(available_suites())
    configs = [suite_config(n) for n in names]  # unknown names fail before any download
    configs = [c for c in configs if data_spec(c).files]  # synthetic makes its own
    if not configs:
        raise BadInput(f"suite {suite} makes its questions: it has no data to download")
    offline = hub_offline_reason()
    if offline:
        raise BadInput(f"offline ({offline}): cannot download from the HF hub; copy the files "
                       f"into --data-dir or ${DATA_ENV} instead (layout of ../shared/data)")
    target = Path(data_dir or os.environ.get(DATA_ENV) or cache_data_dir())
    out = Console()
    for config in configs:
        spec = data_spec(config)
        cls = suite_class(config)
        download(spec, target, lambda root, cls=cls, config=config: cls.fetch(config, root))
        out.print(f"{config['name']}: {spec.hub} -> {target}", highlight=False)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Benchmark data: status per suite, and hub downloads.",
                           no_args_is_help=True)
    data_app.command("status")(status)
    data_app.command("download")(download)
    app.add_typer(data_app, name="data")
