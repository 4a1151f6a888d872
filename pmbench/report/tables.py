"""The paper's Tables 1-5, built with pandas from the records under a results folder.

Conventions, the same in every table:

- a cell has two kinds of run (:func:`pmbench.report.results.run_purpose`): the *throughput
  run* (``--ignore-eos``, a fixed token budget, repeats) gives tok/s and speedups from
  tok/s; the *accuracy run* (the suite's own stopping and budget) gives accuracy and
  Table 5's Q/s. A cell never shows a figure from the other kind of run: without its
  kind of run it shows "–", and the notes say which figure comes from which run;
- accuracy-type metrics (acc, exact_match, pass@1, F1, EM) are stored as fractions in
  [0, 1] and shown in % with one decimal; the header or a note names the metric;
- tok/s is output tokens per second and Q/s questions per second, both the record's
  median over repeats;
- a cell with no record shows "–" (in CSV it is empty, so it reads back as NaN);
- when several records of one kind fit one cell (re-runs, merged shards) the newest by
  ``created`` wins and a note under the table says how many records were merged;
- methods are listed in their runners' order (`order`), then the others.

Tables 1, 4 and 5 are built here, Tables 2 and 3 (which read training records) in
:mod:`pmbench.report.table_training`, from the run frame of :mod:`pmbench.report.table_data`.
Each builder returns a :class:`~pmbench.report.table_format.Table` (raw numbers plus
display formats) that :func:`pmbench.report.table_format.render` turns into Markdown,
booktabs LaTeX (optionally a standalone document that pdflatex compiles) or CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.paired import MARGIN
from pmbench.report.results import Records, newest, reference_method, suite_version
from pmbench.report.table_data import (
    ACCURACY_SOURCE,
    NoRecords,
    col,
    lookup,
    merged_notes,
    newest_runs,
    pct,
    prior_art_notes,
    require,
    run_frame,
    setting_cell,
    sort_rows,
    spread,
    suite_rank,
    throughput_source,
)
from pmbench.report.table_format import DASH, Table
from pmbench.report.table_paired import Pairing, companion, default_variant, reference_run
from pmbench.report.table_training import table2, table3
from pmbench.rope2d.settings import RECORD_COLUMNS
from pmbench.suites import (
    available_suites,
    core_suites,
    display_name,
    family_suites,
    metric,
    suite_config,
    suite_info,
)

TABLE5_FAMILY = "squad"  # Table 5's default suites: the family whose YAML says so


def _table1_pairings(accs: pd.DataFrame, rows: pd.DataFrame,
                     shown: Sequence[str]) -> list[Pairing]:
    """Each non-sequential row's accuracy run per suite, against the model's sequential run."""
    out, reference = [], reference_method()
    for row in rows.itertuples():
        for suite in shown:
            runs = accs[(accs["model"] == row.model) & (accs["env"] == row.env)
                        & (accs["label"] == row.label) & (accs["branch"] == row.branch)
                        & (accs["suite"] == suite)]
            if runs.empty or runs["method"].iloc[0] == reference:
                continue
            run = runs.iloc[0]
            ref = reference_run(accs, row.model, suite, row.branch, run["n"])
            if ref is not None:
                out.append(Pairing(
                    {"Model": row.model, "Method": row.label, "#branch": row.branch},
                    f"{display_name(suite)} {metric(suite).label}", metric(suite).key,
                    run["record"], ref, f"{reference} #branch {ref['branch']}"))
    return out


ROW_RUNS = ("Each row group is one model on one dtype, thread count and machine; per row, Q "
            "tok/s and T: questions and new tokens per question of its throughput runs, Q "
            "Acc: questions of its accuracy runs (a range where its suites differ). Rows "
            "whose Q or T differ measured different work: compare their tok/s with care.")


def _per_row(frame: pd.DataFrame, rows: pd.DataFrame, column: str) -> pd.Series:
    """Per row of `rows`, `column` over the row's runs in `frame` (all its suites): one
    number, a range as text, or NaN without runs."""
    keys = ["model", "env", "label", "branch"]
    by = {k: g[column] for k, g in frame.groupby(keys, dropna=False)} if not frame.empty else {}
    return pd.Series([spread(by.get(tuple(r), [])) for r in rows[keys].itertuples(index=False)],
                     index=rows.index, dtype=object)


def _prior_art(runs: pd.DataFrame) -> list[str]:
    """The prior-art note of a table whose rows are labelled by method (Tables 1, 3, 5)."""
    return prior_art_notes(col(runs, "rope2d.ratio"), col(runs, "rope2d.mask"),
                           'Method "rope2d r=0"')


def table1(records: Records, models=None, suites=None, margin: float | None = MARGIN
           ) -> Table:
    """Throughput and accuracy: rows model x method x #branch (a row group per model),
    columns suite x (tok/s, Acc): MMLU, C-Eval, GSM8K, HumanEval always, then the other
    suites with records (with --suite: those suites only). With a `margin` (points), its
    companion Table 1b pairs each row's accuracy with the model's sequential run."""
    runs = run_frame(records, models, suites)
    require(runs, "run")
    keys = ["model", "env", "label", "branch", "suite"]
    tput = newest_runs(runs, "throughput", keys)
    accs = newest_runs(runs, "accuracy", keys)
    shown = list(dict.fromkeys(suites or [*core_suites(), *runs["suite"]]))
    shown.sort(key=lambda s: (suite_rank(s), s))
    rows = sort_rows(pd.concat([tput, accs])[keys[:4]].drop_duplicates(), keys[:4])
    data = pd.DataFrame({("", "Model"): rows["model"], ("", "Env"): rows["env"],
                         ("", "Method"): rows["label"], ("", "#branch"): rows["branch"],
                         ("", "Q tok/s"): _per_row(tput, rows, "n"),
                         ("", "T"): _per_row(tput, rows, "budget"),
                         ("", "Q Acc"): _per_row(accs, rows, "n")})
    formats: dict[Any, str] = {("", "#branch"): "d", **{("", c): "" for c in (
        "Q tok/s", "T", "Q Acc")}}
    for suite in shown:
        tok, acc = (display_name(suite), "tok/s"), (display_name(suite), "Acc")
        data[tok] = lookup(tput, keys, "tok_s", rows, suite=suite)
        data[acc] = lookup(accs, keys, "acc", rows, suite=suite)
        formats.update({tok: ".1f", acc: ".1f"})
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    metrics = ", ".join(f"{display_name(s)} {metric(s).words}"
                        for s in shown)
    notes = [f"Acc (%): {metrics}.",
             f"{throughput_source(tput)}; Acc: {ACCURACY_SOURCE}. A cell without its kind "
             f"of run shows {DASH}.", ROW_RUNS, *_prior_art(pd.concat([tput, accs])),
             *merged_notes(tput, accs)]
    paired, note = None, None
    if margin is not None:
        paired, note = companion(1, _table1_pairings(accs, rows, shown), margin,
                                 records.train, "the same model's sequential accuracy run of "
                                 "the suite (the row's #branch where there is one)",
                                 {"#branch": "d"})
    return Table(1, "Throughput (output tok/s, throughput runs) and accuracy (%, accuracy "
                 "runs) by model, method and #branch", data.reset_index(drop=True), formats,
                 [*notes, *([note] if note else [])], row_group=[("", "Model"), ("", "Env")],
                 companion=paired)

def table4(records: Records, models=None, suites=None) -> Table:
    """Attention analysis: where branch tokens attend and how heads specialise."""
    att = records.frame("attention")
    require(att, "attention")
    if models:
        att = att[att["model"].isin(models)]
    if suites:
        att = att[col(att, "suite").isin(suites)]
    require(att, "attention")
    att = att.assign(suite=col(att, "suite"))
    cells = sort_rows(newest(att, ["model", "suite", "branch", *RECORD_COLUMNS]),
                    ["model", "suite", "branch", "rope2d.ratio"])
    summary = [r["summary"] for r in cells["record"]]
    heads = [s.get("heads") or {} for s in summary]
    mass, focus, count = "Attention mass (%)", "Focus score", "Heads"
    data = pd.DataFrame({
        ("", "Model"): cells["model"].to_numpy(),
        ("", "Suite"): [display_name(s) if isinstance(s, str) else None for s in cells["suite"]],
        ("", "#branch"): cells["branch"].to_numpy(),
        ("", "Ratio"): cells["rope2d.ratio"].to_numpy(),
        ("", "Setting"): [setting_cell(r) for _, r in cells.iterrows()],
        (mass, "context"): pct(pd.Series([s.get("context_mass") for s in summary])),
        (mass, "own"): pct(pd.Series([s.get("own_branch_mass") for s in summary])),
        (mass, "other"): pct(pd.Series([s.get("other_branch_mass") for s in summary])),
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
                 data, formats, prior_art_notes(cells["rope2d.ratio"], cells["rope2d.mask"],
                                                "Ratio 0.00, Setting .../isolated")
                 + merged_notes(cells) + figures)


def _reference_q_s(cells: pd.DataFrame) -> tuple[list[float], list[Any]]:
    """Per row of `cells`, the Q/s of sequential decoding on the same questions (the same
    model, suite and number scored, on the same dtype, threads and machine) and the
    #questions of the sequential row it comes from, so the table can name its divisor
    (by its label: "sequential" or "sequential no-cache"). Its record at the row's
    #questions is preferred, else its newest at any (with the context cached, a group's
    size sets how often the context is prefilled; without, it does not change its speed);
    of those, its default variant (the context cached) where there is one."""
    seq = cells[cells["method"] == reference_method()]
    seq = seq.assign(_default=default_variant(seq)).sort_values(["_default", "created"])
    q_s, divisor = [], []
    for row in cells.itertuples():
        same = seq[(seq["model"] == row.model) & (seq["suite"] == row.suite)
                   & (seq["n"] == row.n) & (seq["env"] == row.env)]
        own = same[same["branch"] == row.branch]
        pick = own if not own.empty else same
        q_s.append(pick["q_s"].iloc[-1] if not pick.empty else float("nan"))
        divisor.append(f"{pick['label'].iloc[-1]} {pick['branch'].iloc[-1]}"
                       if not pick.empty else None)
    return q_s, divisor


def _answer_latency(record: dict[str, Any], key: str) -> float:
    """A run's per-question time to its last token, percentile `key` (NaN for records
    made before per-question latencies were kept)."""
    block = ((record.get("question_latency") or {}).get("last_token_s") or {})
    value = block.get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def _table5_pairings(cells: pd.DataFrame) -> list[Pairing]:
    """Each non-sequential row's F1 and EM against the model's sequential run."""
    out, reference = [], reference_method()
    for _, row in cells.iterrows():
        if row["method"] == reference:
            continue
        ref = reference_run(cells, row["model"], row["suite"], row["branch"], row["n"])
        if ref is None:
            continue
        keys = {"Model": row["model"], "Version": suite_version(row["record"]),
                "Method": row["label"], "#questions": row["branch"]}
        declared = [m for m in suite_info(row["suite"]).metrics if m.key in ("f1", "em")]
        for m in declared or [metric(row["suite"])]:
            out.append(Pairing(keys, m.label, m.key, row["record"], ref,
                               f"{reference} #questions {ref['branch']}"))
    return out


def table5(records: Records, models=None, suites=None, margin: float | None = MARGIN
           ) -> Table:
    """Parallel QA (SQuAD v1.1 and v2.0 by default): per model (a row group), version,
    method and #questions answered together (the group size N), the accuracy run's Q/s,
    the time to each answer (p50 and p99 over questions), the speedup over sequential on
    the same questions, F1 and EM, and for v2.0 the HasAns / NoAns F1. Q/s comes from
    accuracy runs: real stopping is what a user waits for. With a `margin`, its
    companion Table 5b pairs F1 and EM with the model's sequential run."""
    family_members = family_suites(TABLE5_FAMILY)
    suites = list(dict.fromkeys(suites or family_members))
    if len(suites) > 1 and not set(suites) <= set(family_members):
        raise BadInput(f"table 5 shows one suite family: {' and/or '.join(family_members)}, "
                       "or one other suite; pass --suite accordingly")
    runs = run_frame(records, models, suites)
    family = display_name(TABLE5_FAMILY if set(suites) <= set(family_members) else suites[0])
    cells = newest_runs(runs, "accuracy", ["model", "env", "suite", "label", "branch", "n"])
    require(cells, f"{family} accuracy run")
    cells = sort_rows(cells, ["model", "env", "suite", "branch", "label"])
    f1 = col(cells, "metrics.f1").fillna(col(cells, "metrics.f1a"))
    reference_q_s, divisor = _reference_q_s(cells)
    data = pd.DataFrame({
        "Model": cells["model"], "Env": cells["env"],
        "Version": [suite_version(r) for r in cells["record"]],
        "Method": cells["label"], "#questions": cells["branch"],
        "Q": pd.to_numeric(cells["n"]), "Q/s": cells["q_s"],
        "Answer p50 (s)": [_answer_latency(r, "p50") for r in cells["record"]],
        "Answer p99 (s)": [_answer_latency(r, "p99") for r in cells["record"]],
        "Speedup (×)": cells["q_s"] / reference_q_s, "over": divisor,
        "F1 (%)": pct(f1), "EM (%)": pct(col(cells, "metrics.em")),
    }).reset_index(drop=True)
    formats = {"#questions": "d", "Q": ".0f", "Q/s": ".2f", "Answer p50 (s)": ".3g",
               "Answer p99 (s)": ".3g", "Speedup (×)": ".2f", "F1 (%)": ".1f", "EM (%)": ".1f"}
    notes = [f"Q/s: questions answered per second in {ACCURACY_SOURCE}, i.e. with real "
             "stopping; #questions: questions answered together (the group size N); Q: "
             "questions scored; Answer p50 / p99: each question's time from its group's "
             "start to its last token, percentiles over the run's questions (one at a time, "
             "a question also waits for those before it); Speedup: Q/s over the sequential "
             "row named in 'over', on the same questions (same model, suite, Q, dtype, "
             "threads and machine; '–' where there is none)."]
    if (data["Version"] == "v2.0").any():
        for name, key in (("HasAns F1 (%)", "has_ans_f1"), ("NoAns F1 (%)", "no_ans_f1")):
            data[name] = pct(col(cells, f"metrics.{key}")).to_numpy()
            formats[name] = ".1f"
        notes.append("HasAns / NoAns F1: SQuAD v2.0's answerable and unanswerable questions.")
    notes += _prior_art(cells)
    paired = None
    if margin is not None:
        paired, note = companion(5, _table5_pairings(cells), margin, records.train,
                                 "the same model's sequential accuracy run of the suite (the "
                                 "row's #questions where there is one)", {"#questions": "d"})
        notes.append(note)
    return Table(5, f"{family} parallel QA: Q/s (accuracy runs, real stopping) and speedup "
                 "over sequential decoding", data, formats,
                 [n for n in notes if n] + merged_notes(cells), row_group=["Model", "Env"],
                 companion=paired)


BUILDERS: dict[int, Callable[..., Table]] = {1: table1, 2: table2, 3: table3, 4: table4,
                                             5: table5}
PAIRED = (1, 2, 5)  # the tables whose builders take a margin and add a paired companion


def build(number: int, records: Records, models: Sequence[str] | None = None,
          suites: Sequence[str] | None = None, margin: float | None = MARGIN) -> Table:
    """Table `number` (1-5) from `records`, keeping only `models` and `suites` when given;
    Tables 1, 2 and 5 with their paired companion at `margin` points (None: without)."""
    if number not in BUILDERS:
        raise BadInput(f"no table {number}; tables are 1-5")
    if margin is not None and margin < 0:
        raise BadInput(f"--margin must be >= 0 points, got {margin:g}")
    extra = {"margin": margin} if number in PAIRED else {}
    records = _without_workloads(records)
    try:
        table = BUILDERS[number](records, models, suites, **extra)
    except NoRecords as exc:
        if records.left_out:  # say what was not read, and how to read it
            raise NoRecords(f"{exc}; {records.provenance()}") from None
        raise
    table.notes.append(records.provenance())
    return table


def _without_workloads(records: Records) -> Records:
    """`records` without runs of a throughput-only suite (synthetic: a workload, not a
    test, which `pmbench table crossover` reads): the paper's tables show benchmarks."""
    def workload(run: dict[str, Any]) -> bool:
        name = run.get("suite")
        return name in available_suites() and bool(suite_config(name).get("throughput_only"))

    return replace(records, runs=[r for r in records.runs if not workload(r)])


def build_all(records: Records, models: Sequence[str] | None = None,
              suites: Sequence[str] | None = None, margin: float | None = MARGIN
              ) -> tuple[list[Table], dict[int, str]]:
    """Every table that `records` (after the filters) can fill, Table 1 first, and for
    each other table why it was left out (no matching records, or the filters do not
    apply to it, e.g. --suite for Table 2). Raises NoRecords when no table is left."""
    built, skipped = [], {}
    for number in BUILDERS:
        try:
            built.append(build(number, records, models, suites, margin))
        except BadInput as exc:
            skipped[number] = str(exc)
    if not built:
        raise NoRecords("no records match any table (check --results, --model and --suite)")
    return built, skipped
