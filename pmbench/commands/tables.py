"""`pmbench table`, `plot` and `compare`: the paper's tables and figures from run records,
and the regression check CI runs. Heavy imports (pandas, matplotlib) wait for the command."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from pmbench.errors import BadInput

RESULTS = typer.Option(Path("results"), "--results", help="Folder of run records (searched "
                       "recursively).")
MODELS = typer.Option(None, "--model", help="Keep only this model (repeatable).")
SUITES = typer.Option(None, "--suite", help="Keep only this suite (repeatable).")


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _load(path: Path):
    """Records under `path`; each skipped file is reported on stderr, naming it."""
    from pmbench.report.results import RecordWarning, load

    if not path.exists():
        raise BadInput(f"results folder {path} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordWarning)
        records = load(path)
    for w in caught:
        if issubclass(w.category, RecordWarning):
            _stderr().print(f"[yellow]warning:[/] {escape(str(w.message))}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return records


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {output}: {exc.strerror or exc}") from None
    _stderr().print(f"wrote {escape(str(output))}")


def table(
    number: int | None = typer.Argument(None, help="Table number, 1-5; without it, every "
                                        "table that has records, Table 1 first."),
    fmt: str = typer.Option("markdown", "--format", "-f", help="markdown, latex or csv."),
    results: Path = RESULTS,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
    model: list[str] | None = MODELS,
    suite: list[str] | None = SUITES,
    standalone: bool = typer.Option(False, "--standalone",
                                    help="LaTeX: a whole document pdflatex compiles."),
) -> None:
    """Build the paper's Tables 1-5 from the records under --results.

    Without a number, every table with matching records is written (tables without are
    named in one line on stderr), a blank line between tables, all into one file with
    --output; in CSV each table's rows follow a "# Table N" line. Notes go to stderr in
    CSV, which has no room for them.
    """
    from pmbench.report import table_format, tables

    if standalone and fmt != "latex":
        raise BadInput("--standalone applies to --format latex")
    if fmt not in table_format.FORMATS:
        raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(table_format.FORMATS)}")
    records = _load(results)
    if number is None:
        built, skipped = tables.build_all(records, model, suite)
        if skipped:
            _stderr().print("tables not shown (no records match, or --suite does not "
                            f"apply): {', '.join(map(str, skipped))}")
        text = table_format.render_all(built, fmt, standalone)
    else:
        built = [tables.build(number, records, model, suite)]
        text = table_format.render(built[0], fmt, standalone)
    _write(text, output)
    if fmt == "csv":  # CSV has no room for notes: they go to stderr
        for t in built:
            for note in t.notes:
                _stderr().print(escape(note))


def plot(
    kind: str = typer.Argument(..., help="throughput, accuracy, ratio or latency."),
    results: Path = RESULTS,
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="FILE.png or FILE.pdf; both are written "
                                            "[default: figures/KIND.png]."),
    model: list[str] | None = MODELS,
    suite: list[str] | None = SUITES,
) -> None:
    """Draw a figure from the records under --results, as PNG and PDF."""
    from pmbench.report import plots

    if kind not in plots.KINDS:
        raise BadInput(f"unknown plot {kind!r}; kinds are {', '.join(plots.KINDS)}")
    fig = plots.plot(kind, _load(results), model, suite)
    target = output or Path("figures") / f"{kind}.png"
    try:
        paths = plots.save(fig, target)
    except OSError as exc:
        raise BadInput(f"cannot write {exc.filename or target}: {exc.strerror or exc}") from None
    for path in paths:
        typer.echo(f"wrote {path}")


def compare(
    baseline: str = typer.Argument(..., help="Baseline: a results folder or a run id."),
    candidate: str = typer.Argument(..., help="Candidate: a results folder or a run id."),
    threshold: float = typer.Option(0.10, "--threshold", help="Throughput drop that counts, "
                                    "as a fraction (repeat ranges must not overlap too)."),
    fmt: str = typer.Option("markdown", "--format", "-f",
                            help="markdown (CI logs) or json (github-action-benchmark)."),
    results: Path = typer.Option(Path("results"), "--results",
                                 help="Where run ids are looked up."),
    machine_independent: bool = typer.Option(
        False, "--machine-independent",
        help="Flag only throughput ratios between methods and accuracy; absolute "
             "throughput is reported, not judged (baseline from another machine)."),
    exact_accuracy: bool = typer.Option(False, "--exact-accuracy",
                                        help="Flag any accuracy change (fixed greedy subset)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
) -> None:
    """Compare two sets of run records; exit 1 when a regression is flagged, which includes
    a figure of the baseline missing from the candidate and a broken one (NaN, inf, a
    speed <= 0); exit 2 when the baseline itself has a broken figure."""
    from pmbench.report import compare as cmp

    if fmt not in ("markdown", "json"):
        raise BadInput(f"unknown format {fmt!r}; use markdown or json")
    result = cmp.compare(_load(cmp.resolve(baseline, results)),
                         _load(cmp.resolve(candidate, results)),
                         threshold, machine_independent, exact_accuracy)
    text = (cmp.to_markdown_report(result) if fmt == "markdown" else
            json.dumps(cmp.to_benchmark_json(result), indent=2, ensure_ascii=False) + "\n")
    _write(text, output)
    if fmt == "json":  # JSON has no place for a missing or non-finite figure: name them here
        for row in cmp.unshown(result):
            _stderr().print(f"{row.status}: {escape(row.cell)} {escape(row.metric)} "
                            f"({escape(row.test)})", highlight=False)
    if result.regressions:
        _stderr().print(f"[red]{len(result.regressions)} regression(s) flagged[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("table")(table)
    app.command("plot")(plot)
    app.command("compare")(compare)
