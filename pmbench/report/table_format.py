"""Tables as text: Markdown (GitHub pipe tables), booktabs LaTeX (optionally a standalone
document that pdflatex compiles) and CSV, from a :class:`Table` of raw numbers.

A table keeps numbers, not strings, until it is rendered, so CSV holds the raw values and
Markdown / LaTeX the formatted ones; the builders (``tables``, ``table_training``) and
``compare`` never write markup themselves. Text from records (a model or suite name, a
note quoting one) may hold control characters: every format writes them escaped
(``errors.printable``: ESC as the text ``\\x1b``), so a table never drives a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pmbench.errors import BadInput, printable

DASH = "–"
FORMATS = ("markdown", "latex", "csv")


@dataclass
class Table:
    """A table as raw numbers: `data` columns are flat or a 2-level (group, name) index.

    `row_group` names a column of `data` (or a list of columns, joined by " · ") whose
    value heads a group of consecutive rows: Markdown and LaTeX write it once, as a line
    above its rows, and not as a column; CSV keeps it as ordinary columns on every row, so
    the file stays machine-readable.
    A `companion` (Tables 1, 2 and 5: paired differences) follows the table in every format.
    """

    number: int | None  # the paper's table number; None for other tables (compare)
    title: str
    data: pd.DataFrame
    formats: dict[Any, str]  # column -> format spec of its numbers; other columns are text
    notes: list[str] = field(default_factory=list)
    row_group: Any = None
    suffix: str = ""  # after the number: a companion is Table 1b
    companion: Table | None = None  # rendered right after this table (its paired figures)

    @property
    def name(self) -> str:
        """"1", or "1b" for the companion of Table 1; an unnumbered table its suffix."""
        return f"{self.number}{self.suffix}" if self.number is not None else self.suffix

    def shown(self) -> pd.DataFrame:
        """The cells as display strings, DASH where there is no value."""
        out = self.data.astype(object).copy()
        for col in out.columns:
            spec = self.formats.get(col, "")
            out[col] = [DASH if _missing(v) else printable(format(v, spec))
                        for v in self.data[col]]
        return out

    def grouped(self) -> tuple[pd.DataFrame, list[str | None]]:
        """The display cells without the row-group column, and per row the group heading
        to write above it (None where the row continues the group of the row above)."""
        shown = self.shown()
        if self.row_group is None:
            return shown, [None] * len(shown)
        columns = self.row_group if isinstance(self.row_group, list) else [self.row_group]
        groups = [" · ".join(v for v in values if v != DASH)
                  for values in shown[columns].itertuples(index=False)]
        heads = [g if i == 0 or g != groups[i - 1] else None for i, g in enumerate(groups)]
        return shown.drop(columns=columns), heads


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _flat(columns: pd.Index) -> list[str]:
    if isinstance(columns, pd.MultiIndex):
        return [printable(" ".join(str(p) for p in col if p)) for col in columns]
    return [printable(c) for c in columns]


def to_markdown(table: Table) -> str:
    """A GitHub pipe table (numbers right-aligned) with its title above and notes below;
    each row group starts with a line holding its name in bold."""
    shown, heads = table.grouped()
    header = _flat(shown.columns)
    rows = shown.to_numpy().tolist()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    right = [col in table.formats for col in shown.columns]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else ":" + "-" * (w + 1)
                          for w, r in zip(widths, right, strict=True)) + "|"
    title = printable(f"Table {table.name}: {table.title}" if table.number else table.title)
    body = []
    for head, row in zip(heads, rows, strict=True):
        if head is not None:
            body.append(line([f"**{head}**", *[""] * (len(header) - 1)]))
        body.append(line(row))
    lines = [title, "", line(header), rule, *body]
    if table.notes:
        lines += ["", *map(printable, table.notes)]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Raw numbers (accuracy in %), flat headers, empty cells where there is no record;
    text escaped as in every format."""
    data = table.data.map(lambda v: printable(v) if isinstance(v, str) else v)
    return data.set_axis(_flat(table.data.columns), axis=1).to_csv(
        index=False, float_format="%.10g", lineterminator="\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "Δ": r"\ensuremath{\Delta}",
                  "±": r"\ensuremath{\pm}"}


def latex_escape(text: str) -> str:
    """`text` with TeX's special characters escaped; "--" stays two hyphens (not a dash);
    control characters written out first (their backslash then escaped too)."""
    text = printable(text)
    return "".join("-{}" if c == "-" and text[i + 1:i + 2] == "-" else _LATEX_SPECIAL.get(c, c)
                   for i, c in enumerate(text))


def _cmidrules(columns: pd.Index) -> str:
    """\\cmidrule under each named column group of a 2-level header."""
    rules, start = [], 0
    groups = [c[0] for c in columns]
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            if groups[start]:
                rules.append(rf"\cmidrule(lr){{{start + 1}-{i}}}")
            start = i
    return " ".join(rules)


def _latex_groups(tabular: str, heads: list[str | None], ncols: int) -> str:
    """`tabular` with a line naming each row group above its first row (a rule above it,
    except under the header's own rule)."""
    lines = tabular.splitlines()
    first = lines.index(r"\midrule") + 1  # the body: one line per row
    for i in reversed(range(len(heads))):
        if heads[i] is not None:
            name = rf"\multicolumn{{{ncols}}}{{l}}{{\textit{{{heads[i]}}}}} \\"
            lines[first + i:first + i] = [name] if i == 0 else [r"\midrule", name]
    return "\n".join(lines) + "\n"


def _latex_document(floats: list[tuple[int | None, str]]) -> str:
    """A document pdflatex compiles, holding each (table number, table float) in turn,
    numbered as in the paper."""
    body = "".join((f"\\setcounter{{table}}{{{n - 1}}}\n" if n else "") + text
                   for n, text in floats)
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n"
            "\\usepackage[utf8]{inputenc}\n\\usepackage{lmodern}\n\\usepackage{booktabs}\n"
            "\\usepackage{graphicx}\n\\usepackage[landscape,margin=1.5cm]{geometry}\n"
            f"\\pagestyle{{empty}}\n\\begin{{document}}\n{body}\\end{{document}}\n")


def _latex_number(table: Table) -> str:
    """A companion shares its table's number: the caption's counter is stepped back and
    printed with the suffix (inside the float, so \\thetable changes there only)."""
    if not table.suffix or table.number is None:  # unnumbered: the suffix is its name
        return ""
    return (f"\\addtocounter{{table}}{{-1}}\\renewcommand{{\\thetable}}"
            f"{{\\arabic{{table}}{latex_escape(table.suffix)}}}\n")


def to_latex(table: Table, standalone: bool = False) -> str:
    """A booktabs table float, shrunk to the line width when wider (needs booktabs and
    graphicx); `standalone` wraps it in a document that pdflatex compiles."""
    shown, heads = table.grouped()
    columns = shown.columns
    shown = shown.map(latex_escape)
    if isinstance(columns, pd.MultiIndex):
        shown.columns = pd.MultiIndex.from_tuples([tuple(map(latex_escape, c)) for c in columns])
    else:
        shown.columns = [latex_escape(c) for c in columns]
    align = "".join("r" if c in table.formats else "l" for c in columns)
    tabular = shown.style.hide(axis="index").to_latex(
        hrules=True, column_format=align, multicol_align="c")
    if isinstance(columns, pd.MultiIndex):
        lines = tabular.splitlines()
        at = lines.index(r"\toprule") + 2
        tabular = "\n".join([*lines[:at], _cmidrules(columns), *lines[at:]]) + "\n"
    tabular = _latex_groups(tabular, [h if h is None else latex_escape(h) for h in heads],
                            len(columns))
    notes = "".join(rf"\par\smallskip{{\footnotesize {latex_escape(n)}}}" + "\n"
                    for n in table.notes)
    fit = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
    body = (f"\\begin{{table}}[ht]\n\\centering\\small\n"
            f"{_latex_number(table)}\\caption{{{latex_escape(table.title)}}}"
            f"\\label{{tab:pmbench-{table.name}}}\n"
            f"{fit}\n{tabular}}}\n{notes}\\end{{table}}\n")
    return _latex_document([(table.number, body)]) if standalone else body


def _parts(table: Table) -> list[Table]:
    return [table] if table.companion is None else [table, table.companion]


def _csv_section(table: Table) -> str:
    return f"# Table {table.name}\n{to_csv(table)}"


def render(table: Table, fmt: str = "markdown", standalone: bool = False) -> str:
    """`table` as text in `fmt` (markdown, latex or csv); in Markdown and LaTeX its
    companion follows it, while CSV stays one table a program can read (the companion is
    its own table: ``pmbench table Nb``)."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if table.companion is not None and fmt != "csv":
        return render_all([table], fmt, standalone)
    if fmt == "markdown":
        return to_markdown(table)
    return to_latex(table, standalone) if fmt == "latex" else to_csv(table)


def render_all(built: Sequence[Table], fmt: str = "markdown", standalone: bool = False) -> str:
    """Several tables as one text, a blank line between them: CSV puts a ``# Table N``
    line above each table's rows; standalone LaTeX is one document holding them all."""
    parts = [p for t in built for p in _parts(t)]
    if fmt == "latex" and standalone:
        return _latex_document([(None if t.suffix else t.number, to_latex(t)) for t in parts])
    if fmt == "csv":
        return "\n".join(_csv_section(t) for t in parts)
    return "\n".join(to_markdown(t) if fmt == "markdown" else to_latex(t) for t in parts)

