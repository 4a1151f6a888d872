"""The paper's Tables 1-5, built with pandas from the records under a results folder.

Conventions, the same in every table:

- accuracy-type metrics (acc, exact_match, pass@1, F1, EM) are stored as fractions in
  [0, 1] and shown in % with one decimal; the header names the metric of each suite;
- tok/s is output tokens per second and Q/s questions per second, both the record's
  median over repeats;
- a cell with no record shows "–" (in CSV it is empty, so it reads back as NaN);
- when several records fit one cell (re-runs, merged shards) the newest by ``created``
  wins and a note under the table says how many records were merged.

Each builder returns a :class:`Table` (raw numbers plus display formats) that
:func:`render` turns into Markdown, booktabs LaTeX (optionally a standalone document
that pdflatex compiles) or CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.results import (
    PRIMARY_METRIC,
    Records,
    accuracy_metric,
    canonical_model,
    merged_note,
    method_label,
    model_names,
    newest,
    trained_by,
)

DASH = "–"
FORMATS = ("markdown", "latex", "csv")
SUITE_NAMES = {"mmlu": "MMLU", "ceval": "C-Eval", "gsm8k": "GSM8K", "humaneval": "HumanEval",
               "squad": "SQuAD", "multirc": "MultiRC"}
METRIC_NAMES = {"acc": "Acc", "exact_match": "EM", "pass@1": "pass@1", "f1": "F1", "em": "EM",
                "f1a": "F1a"}
METHOD_ORDER = ("sequential", "batch", "rope2d")
ROPE_COLS = ["rope2d.ratio", "rope2d.mode", "rope2d.branch_freqs", "rope2d.mask"]


@dataclass
class Table:
    """A table as raw numbers: `data` columns are flat or a 2-level (group, name) index."""

    number: int | None  # the paper's table number; None for other tables (compare)
    title: str
    data: pd.DataFrame
    formats: dict[Any, str]  # column -> format spec of its numbers; other columns are text
    notes: list[str] = field(default_factory=list)

    def shown(self) -> pd.DataFrame:
        """The cells as display strings, DASH where there is no value."""
        out = self.data.astype(object).copy()
        for col in out.columns:
            spec = self.formats.get(col, "")
            out[col] = [DASH if _missing(v) else format(v, spec) for v in self.data[col]]
        return out


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def suite_name(suite: str) -> str:
    return SUITE_NAMES.get(suite, suite)


def _pct(values: pd.Series) -> pd.Series:
    """Fractions to % (rounded to kill float noise such as 28.999999999999996)."""
    return (pd.to_numeric(values, errors="coerce") * 100).round(10)


def col(df: pd.DataFrame, name: str) -> pd.Series:
    """Column `name`, or NaN everywhere when no record has that field."""
    return df[name] if name in df else pd.Series(float("nan"), index=df.index)


def _method_rank(label: str) -> int:
    base = label.split(" ")[0]
    return METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)


def _sorted(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sorted by `by`, methods in the order sequential, batch, rope2d, others."""
    ranked = df.assign(_rank=df["label"].map(_method_rank)) if "label" in df else df
    keys = [k for b in by for k in (["_rank", b] if b == "label" else [b])]
    return ranked.sort_values(keys, kind="stable").drop(columns="_rank", errors="ignore")


def _setting(row: pd.Series) -> str:
    """2D RoPE settings in one short cell: mode/branch_freqs/mask."""
    parts = [row.get(c) for c in ROPE_COLS[1:]]
    return "/".join(str(p) for p in parts if isinstance(p, str)) or DASH


def run_frame(records: Records, models: Sequence[str] | None, suites: Sequence[str] | None
          ) -> pd.DataFrame:
    """Run records with the columns the tables use: label, tok_s, q_s, acc (%), n."""
    df = records.frame("runs")
    if df.empty:
        return df
    df["model"] = [canonical_model(r, records.train) for r in df["record"]]
    if models:
        df = df[[bool(set(models) & {m, *model_names(r)})
                 for m, r in zip(df["model"], df["record"], strict=True)]]
    if suites:
        df = df[df["suite"].isin(suites)]
    df = df.copy()
    df["label"] = [method_label(r) for _, r in df.iterrows()]
    df["tok_s"] = col(df, "throughput.output_tok_s")
    df["q_s"] = col(df, "throughput.q_s")
    df["n"] = col(df, "metrics.n")
    df["acc"] = _pct(pd.Series(
        [r.get(f"metrics.{accuracy_metric(r['suite'], r['record']['metrics'])}")
         for _, r in df.iterrows()], index=df.index, dtype=object))
    return df


def _require(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise BadInput(f"no {what} records match (check --results, --model and --suite)")


def _notes(*frames: pd.DataFrame) -> list[str]:
    note = merged_note(*frames)
    return [note] if note else []


def table1(records: Records, models=None, suites=None) -> Table:
    """Throughput and accuracy: rows model x method x #branch, columns suite x (tok/s, Acc)."""
    runs = run_frame(records, models, suites)
    _require(runs, "run")
    cells = newest(runs, ["model", "label", "branch", "suite"])
    order = [s for s in [*SUITE_NAMES, *sorted(cells["suite"].unique())] if s in set(
        cells["suite"])]
    wide = cells.pivot(index=["model", "label", "branch"], columns="suite",
                       values=["tok_s", "acc"]).reset_index()
    wide = _sorted(wide.set_axis([a if not b else f"{a}|{b}" for a, b in wide.columns],
                                 axis=1), ["model", "label", "branch"])
    data = pd.DataFrame({("", "Model"): wide["model"], ("", "Method"): wide["label"],
                         ("", "#branch"): wide["branch"]})
    formats: dict[Any, str] = {("", "#branch"): "d"}
    for suite in dict.fromkeys(order):
        metric = METRIC_NAMES.get(PRIMARY_METRIC.get(suite, ""), "Acc")
        tok, acc = (suite_name(suite), "tok/s"), (suite_name(suite), f"{metric} (%)")
        data[tok], data[acc] = wide[f"tok_s|{suite}"], wide[f"acc|{suite}"]
        formats.update({tok: ".1f", acc: ".1f"})
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    return Table(1, "Throughput (output tok/s) and accuracy (%) by model, method and #branch",
                 data.reset_index(drop=True), formats, _notes(cells))


def _trained_cells(records: Records, models) -> pd.DataFrame:
    train = records.frame("train")
    _require(train, "training")
    if models:
        train = train[train["model"].isin(models)]
        _require(train, "training")
    return newest(train, ["kind", "model", *ROPE_COLS, "branches"])


def table2(records: Records, models=None, suites=None) -> Table:
    """rope_2d_ratio ablation: one row per training run, with the checkpoint's accuracy.

    Loss is the held-out loss at the #branch the run trained with; MMLU and C-Eval are
    the newest rope2d run records whose model is that run's checkpoint (see
    :func:`pmbench.results.trained_by`).
    """
    if suites:
        raise BadInput("table 2 has fixed suites (MMLU, C-Eval); drop --suite")
    cells = _sorted(_trained_cells(records, models), ["kind", "model", "rope2d.ratio",
                                                      "branches"])
    runs = run_frame(records, None, ["mmlu", "ceval"])
    used = pd.DataFrame()
    if not runs.empty:
        runs = runs[runs["method"] == "rope2d"].copy()
        runs["trained"] = [(trained_by(model_names(r), records.train) or {}).get("run_id")
                           for r in runs["record"]]
        used = newest(runs[runs["trained"].isin(cells["run_id"])], ["trained", "suite"])
    acc = {(r.trained, r.suite): r.acc for r in used.itertuples()}
    data = pd.DataFrame({
        "Training": cells["kind"], "Model": cells["model"], "Ratio": cells["rope2d.ratio"],
        "Setting": [_setting(r) for _, r in cells.iterrows()], "#branch": cells["branches"],
        "Loss": [r["heldout_loss"].get(str(r["branches"])) for r in cells["record"]],
        "MMLU (%)": [acc.get((i, "mmlu")) for i in cells["run_id"]],
        "C-Eval (%)": [acc.get((i, "ceval")) for i in cells["run_id"]],
    }).reset_index(drop=True)
    formats = {"Ratio": ".2f", "#branch": "d", "Loss": ".3f", "MMLU (%)": ".1f",
               "C-Eval (%)": ".1f"}
    return Table(2, "rope_2d_ratio ablation: held-out loss and accuracy of trained checkpoints",
                 data, formats, _notes(cells, used))


def _loss_at(model: str, branch: int, records: Records) -> float | None:
    rec = trained_by(model, records.train)
    return rec["heldout_loss"].get(str(branch)) if rec else None


def table3(records: Records, models=None, suites=None) -> Table:
    """Branch scaling: throughput, speedup over #branch 1 (same model, method, suite),
    held-out loss of the model's training run at that #branch, and MMLU accuracy."""
    runs = run_frame(records, models, None)
    _require(runs, "run")
    cells = newest(runs, ["model", "label", "suite", "branch"])
    rows = cells[cells["suite"].isin(suites)] if suites else cells
    _require(rows, "run")
    rows = _sorted(rows, ["model", "label", "suite", "branch"])
    single = rows[rows["branch"] == 1].set_index(["model", "label", "suite"])["tok_s"]
    mmlu = cells[cells["suite"] == "mmlu"].set_index(["model", "label", "branch"])
    mmlu_keys = [(m, lab, b) for m, lab, b in zip(rows["model"], rows["label"], rows["branch"],
                                                 strict=True) if (m, lab, b) in mmlu.index]
    data = pd.DataFrame({
        "Model": rows["model"], "Method": rows["label"],
        "Suite": rows["suite"].map(suite_name), "#branch": rows["branch"], "tok/s": rows["tok_s"],
        "Speedup (×)": [t / single.get((m, lab, s), float("nan")) for t, m, lab, s in
                        zip(rows["tok_s"], rows["model"], rows["label"], rows["suite"],
                            strict=True)],
        "Loss": [_loss_at(m, b, records) for m, b in zip(rows["model"], rows["branch"],
                                                         strict=True)],
        "MMLU (%)": [mmlu["acc"].get(k) for k in zip(rows["model"], rows["label"],
                                                     rows["branch"], strict=True)],
    }).reset_index(drop=True)
    used = pd.concat([rows, mmlu.loc[mmlu_keys].reset_index()]).drop_duplicates("_path")
    formats = {"#branch": "d", "tok/s": ".1f", "Speedup (×)": ".2f", "Loss": ".3f",
               "MMLU (%)": ".1f"}
    return Table(3, "Branch scaling: throughput, speedup over #branch 1, loss and MMLU",
                 data, formats, _notes(used))


def table4(records: Records, models=None, suites=None) -> Table:
    """Attention analysis: where branch tokens attend and how heads specialise."""
    att = records.frame("attention")
    _require(att, "attention")
    if models:
        att = att[att["model"].isin(models)]
    if suites:
        att = att[col(att, "suite").isin(suites)]
    _require(att, "attention")
    att = att.assign(suite=col(att, "suite"))
    cells = _sorted(newest(att, ["model", "suite", "branch", *ROPE_COLS]),
                    ["model", "suite", "branch", "rope2d.ratio"])
    summary = [r["summary"] for r in cells["record"]]
    heads = [s.get("heads") or {} for s in summary]
    mass, focus, count = "Attention mass (%)", "Focus score", "Heads"
    data = pd.DataFrame({
        ("", "Model"): cells["model"].to_numpy(),
        ("", "Suite"): [suite_name(s) if isinstance(s, str) else None for s in cells["suite"]],
        ("", "#branch"): cells["branch"].to_numpy(),
        ("", "Ratio"): cells["rope2d.ratio"].to_numpy(),
        ("", "Setting"): [_setting(r) for _, r in cells.iterrows()],
        (mass, "context"): _pct(pd.Series([s.get("context_mass") for s in summary])),
        (mass, "own"): _pct(pd.Series([s.get("own_branch_mass") for s in summary])),
        (mass, "other"): _pct(pd.Series([s.get("other_branch_mass") for s in summary])),
        (focus, "time"): [s.get("time_focus_mean") for s in summary],
        (focus, "branch"): [s.get("branch_focus_mean") for s in summary],
        **{(count, k): [h.get(k) for h in heads] for k in ("time", "branch", "mixed", "context")},
    })
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    formats = {("", "#branch"): "d", ("", "Ratio"): ".2f",
               **{(mass, k): ".1f" for k in ("context", "own", "other")},
               **{(focus, k): ".2f" for k in ("time", "branch")},
               **{(count, k): ".0f" for k in ("time", "branch", "mixed", "context")}}
    figures = [f"Figures of {r['run_id']}: "
               + ", ".join(str(Path(r["_path"]).parent / f) for f in r["figures"])
               for r in cells["record"] if r.get("figures")]
    return Table(4, "Attention of branch tokens: mass by target and head specialisation",
                 data, formats, _notes(cells) + figures)


def table5(records: Records, models=None, suites=None) -> Table:
    """Parallel QA: Q/s and speedup over sequential with the same model, #questions and
    #branch, with F1 and EM."""
    suites = list(suites or ["squad"])
    if len(suites) != 1:
        raise BadInput("table 5 shows one suite; pass a single --suite")
    runs = run_frame(records, models, suites)
    _require(runs, f"{suites[0]} run")
    cells = _sorted(newest(runs, ["model", "label", "branch", "n"]),
                    ["model", "branch", "n", "label"])
    seq = cells[cells["method"] == "sequential"].set_index(["model", "branch", "n"])["q_s"]
    keys = list(zip(cells["model"], cells["branch"], cells["n"], strict=True))
    f1 = col(cells, "metrics.f1").fillna(col(cells, "metrics.f1a"))
    data = pd.DataFrame({
        "Model": cells["model"], "Method": cells["label"], "#branch": cells["branch"],
        "#questions": cells["n"], "Q/s": cells["q_s"],
        "Speedup (×)": [q / seq.get(k, float("nan")) for q, k in zip(cells["q_s"], keys,
                                                                      strict=True)],
        "F1 (%)": _pct(f1), "EM (%)": _pct(col(cells, "metrics.em")),
    }).reset_index(drop=True)
    formats = {"#branch": "d", "#questions": ".0f", "Q/s": ".2f", "Speedup (×)": ".2f",
               "F1 (%)": ".1f", "EM (%)": ".1f"}
    return Table(5, f"{suite_name(suites[0])} parallel QA: speedup over sequential decoding",
                 data, formats, _notes(cells))


BUILDERS: dict[int, Callable[..., Table]] = {1: table1, 2: table2, 3: table3, 4: table4,
                                             5: table5}


def build(number: int, records: Records, models: Sequence[str] | None = None,
          suites: Sequence[str] | None = None) -> Table:
    """Table `number` (1-5) from `records`, keeping only `models` and `suites` when given."""
    if number not in BUILDERS:
        raise BadInput(f"no table {number}; tables are 1-5")
    return BUILDERS[number](records, models, suites)


# ---- rendering ---------------------------------------------------------------------

def _flat(columns: pd.Index) -> list[str]:
    if isinstance(columns, pd.MultiIndex):
        return [" ".join(p for p in col if p) for col in columns]
    return [str(c) for c in columns]


def to_markdown(table: Table) -> str:
    """A GitHub pipe table (numbers right-aligned) with its title above and notes below."""
    shown = table.shown()
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
    title = f"Table {table.number}: {table.title}" if table.number else table.title
    lines = [title, "", line(header), rule,
             *(line(r) for r in rows)]
    if table.notes:
        lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Raw numbers (accuracy in %), flat headers, empty cells where there is no record."""
    return table.data.set_axis(_flat(table.data.columns), axis=1).to_csv(
        index=False, float_format="%.10g", lineterminator="\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


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


def to_latex(table: Table, standalone: bool = False) -> str:
    """A booktabs table float, shrunk to the line width when wider (needs booktabs and
    graphicx); `standalone` wraps it in a document that pdflatex compiles."""
    shown = table.shown().map(latex_escape)
    columns = shown.columns
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
    notes = "".join(rf"\par\smallskip{{\footnotesize {latex_escape(n)}}}" + "\n"
                    for n in table.notes)
    fit = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
    body = (f"\\begin{{table}}[ht]\n\\centering\\small\n"
            f"\\caption{{{latex_escape(table.title)}}}\\label{{tab:pmbench-{table.number}}}\n"
            f"{fit}\n{tabular}}}\n{notes}\\end{{table}}\n")
    if not standalone:
        return body
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
            "\\usepackage{lmodern}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
            "\\usepackage[landscape,margin=1.5cm]{geometry}\n\\pagestyle{empty}\n"
            f"\\begin{{document}}\n\\setcounter{{table}}{{{table.number - 1}}}\n{body}"
            "\\end{document}\n")


def render(table: Table, fmt: str = "markdown", standalone: bool = False) -> str:
    """`table` as text in `fmt` (markdown, latex or csv)."""
    if fmt == "markdown":
        return to_markdown(table)
    if fmt == "latex":
        return to_latex(table, standalone)
    if fmt == "csv":
        return to_csv(table)
    raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
