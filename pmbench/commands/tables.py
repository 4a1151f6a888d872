"""`pmbench table`, `plot` and `compare`: the paper's tables and figures from run records,
and the regression check CI runs. Heavy imports (pandas, matplotlib) wait for the command."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from pmbench.commands.common import shown
from pmbench.errors import BadInput, one_line, printable

RESULTS = typer.Option(Path("results"), "--results", help="Folder of run records (searched "
                       "recursively).")
MODELS = typer.Option(None, "--model", help="Keep only this model (repeatable).")
SUITES = typer.Option(None, "--suite", help="Keep only this suite (repeatable).")


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


COMMITTED = typer.Option(False, "--include-committed",
                         help="Also read the records the repository ships (folders holding "
                              "a COMMITTED file: the CI baseline, the reference experiment).")


def _load(path: Path, include_committed: bool = False):
    """Records under `path`; each skipped file is reported on stderr, naming it."""
    from pmbench.report.results import RecordWarning, load

    if not path.exists():
        raise BadInput(f"results folder {path} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordWarning)
        records = load(path, include_committed=include_committed)
    for w in caught:
        if issubclass(w.category, RecordWarning):
            _stderr().print(f"[yellow]warning:[/] {escape(one_line(w.message))}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return records


def _write(text: str, output: Path | None, json_text: bool = False) -> None:
    """Write a rendered table or report; text from records was escaped as it was rendered,
    and once more here (newlines kept), so no control character reaches a terminal or a
    Markdown or LaTeX file. JSON escapes its own."""
    if not json_text:
        text = printable(text, keep="\n")
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {output}: {exc.strerror or exc}") from None
    _stderr().print(f"wrote {escape(str(output))}")


def _table_number(number: str) -> tuple[int, bool]:
    """(N, companion only) from "N" or "Nb" (the paired companion of Tables 1, 2 and 5)."""
    from pmbench.report.tables import BUILDERS, PAIRED

    digits, suffix = number[:-1], number[-1:]
    if suffix != "b":
        digits, suffix = number, ""
    if not digits.isdigit() or int(digits) not in BUILDERS or (suffix and int(digits)
                                                               not in PAIRED):
        raise BadInput(f"no table {number}; tables are 1-5, 1b, 2b, 5b (paired), crossover, "
                       "curve and loss")
    return int(digits), bool(suffix)


def _crossover(records, models, suites) -> list:
    from pmbench.report import crossover

    return crossover.tables(records, models, suites)


def _curve(records, models, suites) -> list:
    from pmbench.report import curve

    return [curve.table(records, models, suites)]


def _loss(records, models, suites) -> list:
    from pmbench.report import branch_loss

    return [branch_loss.table(records, models, suites)]


# tables beside the paper's 1-5
UNNUMBERED = {"crossover": _crossover, "curve": _curve, "loss": _loss}


def table(
    number: str | None = typer.Argument(None, help="Table number, 1-5, or 1b, 2b, 5b (their "
                                        "paired companions alone), crossover (the "
                                        "synthetic suite's map), curve (learning "
                                        "curves per checkpoint) or loss (held-out "
                                        "loss by #branch); without it, every "
                                        "numbered table that has records, Table 1 first."),
    fmt: str = typer.Option("markdown", "--format", "-f", help="markdown, latex or csv."),
    results: Path = RESULTS,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
    model: list[str] | None = MODELS,
    suite: list[str] | None = SUITES,
    standalone: bool = typer.Option(False, "--standalone",
                                    help="LaTeX: a whole document pdflatex compiles."),
    margin: float = typer.Option(1.0, "--margin", help="Non-inferiority margin, in points "
                                 "of accuracy, of the paired Tables 1b, 2b and 5b."),
    paired: bool = typer.Option(True, "--paired/--no-paired",
                                help="Tables 1, 2 and 5 with their paired companion (1b, 2b, "
                                     "5b: each row against its reference, question by "
                                     "question)."),
    include_committed: bool = COMMITTED,
) -> None:
    """Build the paper's Tables 1-5 from the records under --results.

    Without a number, every table with matching records is written (tables without are
    named in one line on stderr), a blank line between tables, all into one file with
    --output; in CSV each table's rows follow a "# Table N" line (and a companion's a
    "# Table Nb" line). One table in CSV is that table alone (its companion: `pmbench
    table Nb`). Notes go to stderr in CSV, which has no room for them.
    """
    from pmbench.report import table_format, tables

    if standalone and fmt != "latex":
        raise BadInput("--standalone applies to --format latex")
    if fmt not in table_format.FORMATS:
        raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(table_format.FORMATS)}")
    records = _load(results, include_committed)
    margin_or_none = margin if paired else None
    if number in UNNUMBERED:
        built = UNNUMBERED[number](records, model, suite)
        text = (table_format.render(built[0], fmt, standalone) if len(built) == 1 else
                table_format.render_all(built, fmt, standalone))
    elif number is None:
        built, skipped = tables.build_all(records, model, suite, margin_or_none)
        if skipped:
            _stderr().print("tables not shown (no records match, or --suite does not "
                            f"apply): {', '.join(map(str, skipped))}")
        text = table_format.render_all(built, fmt, standalone)
    else:
        n, companion_only = _table_number(number)
        built = [tables.build(n, records, model, suite, margin if companion_only else
                              margin_or_none)]
        if companion_only:
            if built[0].companion is None:
                why = next((x for x in built[0].notes if x.startswith("Paired Δ")), "")
                raise BadInput(f"no Table {n}b here: {why}")
            built = [built[0].companion]
        text = table_format.render(built[0], fmt, standalone)
    _write(text, output)
    if fmt == "csv":  # CSV has no room for notes: they go to stderr
        companions = [t.companion for t in built if t.companion and number is None]
        for t in [*built, *companions]:
            for note in t.notes:
                _stderr().print(shown(note))


def plot(
    kind: str = typer.Argument(..., help="throughput, accuracy, ratio, latency, crossover or "
                                          "learning-curve."),
    results: Path = RESULTS,
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="FILE.png or FILE.pdf; both are written "
                                            "(default: figures/KIND.png)."),
    model: list[str] | None = MODELS,
    suite: list[str] | None = SUITES,
    include_committed: bool = COMMITTED,
) -> None:
    """Draw a figure from the records under --results, as PNG and PDF."""
    from pmbench.report import plots

    if kind not in plots.KINDS:
        raise BadInput(f"unknown plot {kind!r}; kinds are {', '.join(plots.KINDS)}")
    records = _load(results, include_committed)
    fig = plots.plot(kind, records, model, suite)
    target = output or Path("figures") / f"{kind}.png"
    try:
        paths = plots.save(fig, target)
    except OSError as exc:
        raise BadInput(f"cannot write {exc.filename or target}: {exc.strerror or exc}") from None
    for path in paths:
        typer.echo(f"wrote {printable(path)}")
    typer.echo(printable(records.provenance()))


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
    margin: float = typer.Option(1.0, "--margin", help="Non-inferiority margin in points of "
                                 "accuracy, fixed before looking at the results."),
) -> None:
    """Compare two runs question by question, or two results folders cell by cell.

    Two runs (run folders or run ids) of the same suite and model: paired accuracy
    statistics with a non-inferiority verdict at --margin, agreement, speed and latency;
    exit 1 when B is inferior beyond the margin. Two results folders: the regression check
    CI runs; exit 1 when a regression is flagged, which includes a figure of the baseline
    missing from the candidate and a broken one (NaN, inf, a speed <= 0); exit 2 when the
    baseline itself has a broken figure."""
    from pmbench.report import compare as cmp
    from pmbench.report import compare_format as show

    if fmt not in ("markdown", "json"):
        raise BadInput(f"unknown format {fmt!r}; use markdown or json")
    paths = [cmp.resolve(spec, results) for spec in (baseline, candidate)]
    if any(cmp.is_run(p) for p in paths):
        if machine_independent or exact_accuracy:
            raise BadInput("--machine-independent and --exact-accuracy apply to two results "
                           "folders, not two runs")
        _compare_runs(paths, results, margin, fmt, output)
        return
    result = cmp.compare(_load(paths[0]), _load(paths[1]), threshold, machine_independent,
                         exact_accuracy, margin)
    text = (show.to_markdown_report(result) if fmt == "markdown" else
            json.dumps(show.to_benchmark_json(result), indent=2, ensure_ascii=False) + "\n")
    _write(text, output, json_text=fmt == "json")
    if fmt == "json":  # JSON has no place for a missing or non-finite figure: name them here
        for row in show.unshown(result):
            _stderr().print(f"{row.status}: {shown(row.cell)} {shown(row.metric)} "
                            f"({shown(row.test)})", highlight=False)
    if result.regressions:
        _stderr().print(f"[red]{len(result.regressions)} regression(s) flagged[/]")
        raise typer.Exit(1)


def _compare_runs(paths: list[Path], results: Path, margin: float, fmt: str,
                  output: Path | None) -> None:
    """`compare RUN_A RUN_B`: B against A on the questions both scored."""
    from pmbench.report import compare as cmp
    from pmbench.report import compare_format as show
    from pmbench.report.compare_runs import compare_runs
    from pmbench.report.results import load

    if not all(cmp.is_run(p) for p in paths):
        raise BadInput("compare two runs (run folders or run ids) or two results folders, "
                       "not one of each")
    runs = []
    for path in paths:
        found = _load(path).runs
        if len(found) != 1:
            raise BadInput(f"{path} holds no complete run record")
        runs.append(found[0])
    with warnings.catch_warnings():  # training records, to find a fine-tune's base model
        warnings.simplefilter("ignore")
        train = load(results, ("train",)).train if results.is_dir() else []
    result = compare_runs(runs[0], runs[1], margin, train)
    text = (show.runs_markdown(result) if fmt == "markdown" else
            json.dumps(show.runs_json(result), indent=2, ensure_ascii=False) + "\n")
    _write(text, output, json_text=fmt == "json")
    if result.inferior:
        names = ", ".join(m.label for m in result.inferior)
        _stderr().print(f"[red]B is inferior to A beyond ±{margin:g} pt on: "
                        f"{shown(names)}[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("table")(table)
    app.command("plot")(plot)
    app.command("compare")(compare)
