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
- methods are listed in :data:`METHOD_ORDER`, then the others.

Each builder returns a :class:`Table` (raw numbers plus display formats) that
:func:`render` turns into Markdown, booktabs LaTeX (optionally a standalone document
that pdflatex compiles) or CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.results import (
    Records,
    accuracy_metric,
    canonical_model,
    merged_note,
    method_label,
    model_names,
    newest,
    run_purpose,
    suite_version,
    trained_by,
)
from pmbench.rope2d.settings import RECORD_COLUMNS

DASH = "–"
FORMATS = ("markdown", "latex", "csv")
SUITE_NAMES = {"mmlu": "MMLU", "ceval": "C-Eval", "gsm8k": "GSM8K", "humaneval": "HumanEval",
               "squad": "SQuAD", "squad_v2": "SQuAD v2.0", "multirc": "MultiRC"}
METRIC_NAMES = {"acc": "Acc", "exact_match": "EM", "pass@1": "pass@1", "f1": "F1", "em": "EM",
                "f1a": "F1a"}
# What each metric is, in words, for the note under Table 1's generic "Acc" columns.
METRIC_WORDS = {"acc": "accuracy", "exact_match": "exact match", "pass@1": "pass@1",
                "f1": "F1", "em": "exact match", "f1a": "F1a"}
METHOD_ORDER = ("sequential", "batch", "prefix", "rope2d")
CORE_SUITES = ("mmlu", "ceval", "gsm8k", "humaneval")  # Table 1's columns, always shown
SQUAD_SUITES = ("squad", "squad_v2")  # Table 5's default: one suite family
TRAINING_GROUPS = {"pretrain": "pre-trained from scratch", "finetune": "fine-tuned",
                   None: "as shipped"}  # Tables 2 and 3's row groups, in this order
TRAINED_WEIGHTS = {"pretrain": "pre-trained", "finetune": "fine-tuned"}  # Table 2's Weights
# Table 2's accuracy columns: (suite, frame column) of the accuracy run each comes from.
ABLATION_COLUMNS = {"SQuAD F1 (%)": ("squad", "acc"), "SQuAD EM (%)": ("squad", "em"),
                    "MMLU (%)": ("mmlu", "acc"), "C-Eval (%)": ("ceval", "acc")}
SCALING_SUITES = ("mmlu", "squad")  # Table 3's accuracy columns, whatever the row's suite


class NoRecords(BadInput):
    """No record fits a table: `pmbench table` without a number skips that table."""


@dataclass
class Table:
    """A table as raw numbers: `data` columns are flat or a 2-level (group, name) index.

    `row_group` names a column of `data` whose value heads a group of consecutive rows:
    Markdown and LaTeX write it once, as a line above its rows, and not as a column;
    CSV keeps it as an ordinary column on every row, so the file stays machine-readable.
    """

    number: int | None  # the paper's table number; None for other tables (compare)
    title: str
    data: pd.DataFrame
    formats: dict[Any, str]  # column -> format spec of its numbers; other columns are text
    notes: list[str] = field(default_factory=list)
    row_group: Any = None

    def shown(self) -> pd.DataFrame:
        """The cells as display strings, DASH where there is no value."""
        out = self.data.astype(object).copy()
        for col in out.columns:
            spec = self.formats.get(col, "")
            out[col] = [DASH if _missing(v) else format(v, spec) for v in self.data[col]]
        return out

    def grouped(self) -> tuple[pd.DataFrame, list[str | None]]:
        """The display cells without the row-group column, and per row the group heading
        to write above it (None where the row continues the group of the row above)."""
        shown = self.shown()
        if self.row_group is None:
            return shown, [None] * len(shown)
        groups = shown[self.row_group].tolist()
        heads = [g if i == 0 or g != groups[i - 1] else None for i, g in enumerate(groups)]
        return shown.drop(columns=[self.row_group]), heads


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


def _suite_rank(suite: str) -> int:
    """Known suites in the order of :data:`SUITE_NAMES`, then the others."""
    names = list(SUITE_NAMES)
    return names.index(suite) if suite in names else len(names)


def _sorted(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sorted by `by`; methods ("label") in :data:`METHOD_ORDER` and suites in the order
    of :data:`SUITE_NAMES`, each followed by the others alphabetically."""
    ranks = {"label": _method_rank, "suite": _suite_rank}
    ranked = df.assign(**{f"_rank_{k}": df[k].map(f) for k, f in ranks.items() if k in by})
    keys = [k for b in by for k in ([f"_rank_{b}", b] if b in ranks else [b])]
    return ranked.sort_values(keys, kind="stable").drop(
        columns=[f"_rank_{k}" for k in ranks], errors="ignore")


def _setting(row: pd.Series, cols: Sequence[str] = RECORD_COLUMNS[1:]) -> str:
    """2D RoPE settings but the ratio in one short cell, mode/branch_freqs/mask (or the
    `cols` given)."""
    parts = [row.get(c) for c in cols]
    return "/".join(str(p) for p in parts if isinstance(p, str)) or DASH


def _training_rank(kind: str | None) -> int:
    """Training kinds in the order of :data:`TRAINING_GROUPS`, then the others."""
    order = list(TRAINING_GROUPS)
    return order.index(kind) if kind in order else len(order)


def _loss_at(loss: Any, branch: int) -> float | None:
    """A training record's held-out loss at `branch`: `loss` is a number (the loss at the
    trained #branch, as ``heldout_loss_start``) or a {"<#branch>": loss} dict."""
    if isinstance(loss, dict):
        loss = loss.get(str(branch))
    return float(loss) if isinstance(loss, int | float) and not isinstance(loss, bool) else None


def run_frame(records: Records, models: Sequence[str] | None, suites: Sequence[str] | None
              ) -> pd.DataFrame:
    """Run records with the columns the tables use: purpose ("throughput" or "accuracy"),
    label, tok_s, q_s, acc (%), n."""
    df = records.frame("runs")
    if df.empty:
        return df.assign(purpose=pd.Series(dtype=object))
    df["model"] = [canonical_model(r, records.train) for r in df["record"]]
    if models:
        df = df[[bool(set(models) & {m, *model_names(r)})
                 for m, r in zip(df["model"], df["record"], strict=True)]]
    if suites:
        df = df[df["suite"].isin(suites)]
    df = df.copy()
    df["purpose"] = [run_purpose(r) for r in df["record"]]
    df["label"] = [method_label(r) for _, r in df.iterrows()]
    df["tok_s"] = col(df, "throughput.output_tok_s")
    df["q_s"] = col(df, "throughput.q_s")
    df["n"] = col(df, "metrics.n")
    df["acc"] = _pct(pd.Series(
        [r.get(f"metrics.{accuracy_metric(r['suite'], r['record']['metrics'])}")
         for _, r in df.iterrows()], index=df.index, dtype=object))
    return df


def newest_runs(runs: pd.DataFrame, purpose: str, keys: list[str]) -> pd.DataFrame:
    """The newest run of one `purpose` per cell of `keys`: tok/s comes only from
    throughput runs and accuracy only from accuracy runs, so each kind has its own
    newest record."""
    return newest(runs[runs["purpose"] == purpose] if "purpose" in runs else runs, keys)


def _require(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise NoRecords(f"no {what} records match (check --results, --model and --suite)")


def _notes(*frames: pd.DataFrame) -> list[str]:
    note = merged_note(*frames)
    return [note] if note else []


def _alternatives(values: Iterable[Any]) -> str:
    """Distinct values, sorted, as "a", "a or b", "a, b or c"."""
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(set(values))]
    return " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)


def _throughput_source(tput: pd.DataFrame) -> str:
    """Where tok/s comes from, naming the token budget(s) the throughput runs used."""
    budgets = [int(b) for b in pd.to_numeric(col(tput, "max_new_tokens")).dropna()]
    budget = f", {_alternatives(budgets)} new tokens per question" if budgets else ""
    return (f"tok/s: output tokens per second of throughput runs (--ignore-eos{budget}, "
            "median over repeats)")


ACCURACY_SOURCE = "accuracy runs (each suite's own stop strings and token budget)"


def _lookup(frame: pd.DataFrame, keys: list[str], value: str, rows: pd.DataFrame,
            **fixed: Any) -> pd.Series:
    """`value` of `frame`'s record per row of `rows` (matched on `keys`, with the keys in
    `fixed` set to one value), NaN where there is none."""
    index = frame.set_index(keys)[value] if not frame.empty else pd.Series(dtype=float)
    wanted = zip(*(rows[k] if k not in fixed else [fixed[k]] * len(rows) for k in keys),
                 strict=True)
    return pd.Series([index.get(k, float("nan")) for k in wanted], index=rows.index,
                     dtype=float)


def table1(records: Records, models=None, suites=None) -> Table:
    """Throughput and accuracy: rows model x method x #branch (a row group per model),
    columns suite x (tok/s, Acc): MMLU, C-Eval, GSM8K, HumanEval always, then the other
    suites with records (with --suite: those suites only)."""
    runs = run_frame(records, models, suites)
    _require(runs, "run")
    keys = ["model", "label", "branch", "suite"]
    tput = newest_runs(runs, "throughput", keys)
    accs = newest_runs(runs, "accuracy", keys)
    shown = list(dict.fromkeys(suites or [*CORE_SUITES, *runs["suite"]]))
    shown.sort(key=lambda s: (_suite_rank(s), s))
    rows = _sorted(pd.concat([tput, accs])[keys[:3]].drop_duplicates(), keys[:3])
    data = pd.DataFrame({("", "Model"): rows["model"], ("", "Method"): rows["label"],
                         ("", "#branch"): rows["branch"]})
    formats: dict[Any, str] = {("", "#branch"): "d"}
    for suite in shown:
        tok, acc = (suite_name(suite), "tok/s"), (suite_name(suite), "Acc")
        data[tok] = _lookup(tput, keys, "tok_s", rows, suite=suite)
        data[acc] = _lookup(accs, keys, "acc", rows, suite=suite)
        formats.update({tok: ".1f", acc: ".1f"})
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    metrics = ", ".join(f"{suite_name(s)} {METRIC_WORDS.get(accuracy_metric(s), 'accuracy')}"
                        for s in shown)
    notes = [f"Acc (%): {metrics}.",
             f"{_throughput_source(tput)}; Acc: {ACCURACY_SOURCE}. A cell without its kind "
             f"of run shows {DASH}.", *_notes(tput, accs)]
    return Table(1, "Throughput (output tok/s, throughput runs) and accuracy (%, accuracy "
                 "runs) by model, method and #branch", data.reset_index(drop=True), formats,
                 notes, row_group=("", "Model"))


def _trained_cells(records: Records, models) -> pd.DataFrame:
    """The newest training run per (kind, base model, 2D RoPE settings, #branch), in
    table order: pre-trained then fine-tuned, by base model, mask, ratio."""
    train = records.frame("train")
    _require(train, "training")
    if models:
        train = train[train["model"].isin(models)]
        _require(train, "training")
    cells = newest(train, ["kind", "model", *RECORD_COLUMNS, "branches"])
    cells = cells.assign(_kind=cells["kind"].map(_training_rank))
    return _sorted(cells, ["_kind", "model", "rope2d.mask", "rope2d.ratio", "rope2d.mode",
                           "rope2d.branch_freqs", "branches"]).drop(columns="_kind")


def _weights_runs(records: Records) -> pd.DataFrame:
    """Table 2's accuracy run per (weights, variant, #branch, suite): the one with the most
    questions, the newest of those.

    `weights` is the training run id for a checkpoint's runs and the model name for the
    others; `variant` is the method for a checkpoint (it runs with the 2D RoPE settings
    it was trained with) and the method label otherwise, so an as-shipped row finds the
    base model's runs at its training run's ratio, mask, mode and branch_freqs.
    """
    suites = list(dict.fromkeys(suite for suite, _ in ABLATION_COLUMNS.values()))
    runs = run_frame(records, None, suites)
    runs = runs[runs["purpose"] == "accuracy"].copy()  # before the trained_by look-ups
    keys = ["weights", "variant", "branch", "suite"]
    if runs.empty:
        return runs.assign(**{k: pd.Series(dtype=object) for k in keys})
    trained = [trained_by(model_names(r), records.train) for r in runs["record"]]
    runs["weights"] = [t["run_id"] if t else m for t, m in zip(trained, runs["model"],
                                                                 strict=True)]
    runs["variant"] = [m if t else label for t, m, label in zip(
        trained, runs["method"], runs["label"], strict=True)]
    runs["em"] = _pct(col(runs, "metrics.em"))
    # the run with the most questions: a shorter run of the same cell (Table 3's) is a
    # noisier estimate, however new
    most = pd.to_numeric(runs["n"]).fillna(0)
    runs = runs[most == most.groupby([runs[k] for k in keys], dropna=False).transform("max")]
    return newest(runs, keys)


def _ablation_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """Table 2's rows, a group per (training kind, base model). A fine-tune group starts
    with the base model's sequential reference at each trained #branch, then per training
    run the base model as shipped at the run's 2D RoPE settings (before) and the
    fine-tuned checkpoint (after); a pre-training group has the checkpoints only, as a
    random init is not a model anyone ships.

    `weights` and `variant` find each row's accuracy runs in :func:`_weights_runs`.
    """
    rows: list[dict[str, Any]] = []
    for (kind, base), runs in cells.groupby(["kind", "model"], sort=False):
        shipped = {"group": f"{TRAINING_GROUPS.get(kind, kind)}: {base}", "model": base,
                   "stage": "as shipped", "weights": base}
        if kind == "finetune":
            rows += [{**shipped, "variant": "sequential", "setting": "sequential", "branch": b}
                     for b in sorted(runs["branches"].unique())]
        for _, run in runs.iterrows():
            rec, branch = run["record"], run["branches"]
            rope = {"ratio": run["rope2d.ratio"], "mask": run["rope2d.mask"],
                    "setting": _setting(run, RECORD_COLUMNS[1:3]), "branch": branch}
            if kind == "finetune":
                label = method_label({**rec, "method": "rope2d"})  # its settings, as runs
                rows.append({**shipped, **rope, "variant": label,
                             "loss": _loss_at(rec.get("heldout_loss_start"), branch)})
            rows.append({**shipped, **rope, "model": str(rec.get("checkpoint") or run["run_id"]),
                         "stage": TRAINED_WEIGHTS.get(kind, kind), "weights": run["run_id"],
                         "variant": "rope2d", "loss": _loss_at(rec["heldout_loss"], branch)})
    return pd.DataFrame(rows).reindex(columns=[
        "group", "model", "stage", "weights", "variant", "mask", "ratio", "setting", "branch",
        "loss"])


def table2(records: Records, models=None, suites=None) -> Table:
    """rope_2d_ratio ablation: held-out loss and accuracy before and after training.

    A row group per training kind and base model (see :func:`_ablation_rows`). Each row's
    accuracy is the accuracy run of its weights at the trained #branch with the most
    questions (the newest of those): a checkpoint's other #branch runs, or shorter runs
    (Table 3's), never stand in for it.
    """
    if suites:
        raise BadInput("table 2 has fixed suites (SQuAD, MMLU, C-Eval); drop --suite")
    cells = _trained_cells(records, models)
    rows = _ablation_rows(cells)
    accs = _weights_runs(records)
    keys = ["weights", "variant", "branch", "suite"]
    data = pd.DataFrame({
        "Training": rows["group"], "Model": rows["model"], "Weights": rows["stage"],
        "Mask": rows["mask"], "Ratio": pd.to_numeric(rows["ratio"]),
        "Setting": rows["setting"], "#branch": rows["branch"],
        "Loss": pd.to_numeric(rows["loss"]),
        **{name: _lookup(accs, keys, value, rows, suite=suite)
           for name, (suite, value) in ABLATION_COLUMNS.items()},
    })
    formats = {"Ratio": ".2f", "#branch": "d", "Loss": ".3f",
               **{name: ".1f" for name in ABLATION_COLUMNS}}
    used = accs.merge(rows[keys[:3]].drop_duplicates())  # the records shown, for the notes
    notes = ["Weights: as shipped is the base model before training (its sequential row, "
             "decoding one question at a time, is the reference); fine-tuned / pre-trained "
             "is the training run's checkpoint. Loss: held-out loss on the training run's "
             "held-out split at the trained #branch: for a checkpoint after training, for "
             "as shipped before the first step (heldout_loss_start: the base model at the "
             "same 2D RoPE settings). SQuAD F1 / EM, MMLU and C-Eval: the row's weights at "
             f"that #branch in {ACCURACY_SOURCE}, as shipped at the training run's ratio, "
             "mask and setting; of several runs, the one with the most questions.",
             *_notes(cells, used)]
    return Table(2, "rope_2d_ratio ablation: held-out loss and accuracy before and after "
                 "training", data, formats, notes, row_group="Training")


def _scaling_rows(tput: pd.DataFrame, accs: pd.DataFrame, keys: list[str],
                  suites: Sequence[str] | None) -> pd.DataFrame:
    """Table 3's rows: one per throughput cell of the shown suites, plus one for each
    (model, method, #branch) that has accuracy runs but no such row, under its first
    suite, so an accuracy-only cell shows once and not once per suite."""
    shown = [df[df["suite"].isin(suites)] if suites else df for df in (tput, accs)]
    runs, scored = (df[keys] for df in shown)
    cell = [k for k in keys if k != "suite"]
    extra = scored.merge(runs[cell].drop_duplicates(), how="left", indicator=True)
    extra = _sorted(extra[extra["_merge"] == "left_only"].drop(columns="_merge"), ["suite"])
    return pd.concat([runs, extra.drop_duplicates(cell)], ignore_index=True)


def table3(records: Records, models=None, suites=None) -> Table:
    """Branch scaling, in row groups by training mode (pre-trained from scratch,
    fine-tuned, as shipped): per model, method, suite and #branch the throughput, the
    speedup over #branch 1 of the same model, method and suite, the held-out loss of the
    model's training run at that #branch, and MMLU accuracy and SQuAD F1. Rows come from
    throughput runs; a (model, method, #branch) with accuracy runs only shows once.
    --suite keeps the rows of those suites; MMLU accuracy and SQuAD F1 are the model's
    whatever the row's suite."""
    runs = run_frame(records, models, None)
    _require(runs, "run")
    keys = ["model", "label", "suite", "branch"]
    tput = newest_runs(runs, "throughput", keys)
    accs = newest_runs(runs[runs["suite"].isin(SCALING_SUITES)], "accuracy", keys)
    rows = _scaling_rows(tput, accs, keys, suites)
    _require(rows, "run")
    trained = {m: trained_by(m, records.train) for m in rows["model"].unique()}
    kinds = [(trained[m] or {}).get("kind") for m in rows["model"]]
    rows = rows.assign(group=[TRAINING_GROUPS.get(k, "trained") for k in kinds],
                       _group=[_training_rank(k) for k in kinds])
    rows = _sorted(rows, ["_group", *keys])
    cell = ["model", "label", "branch"]
    used = [tput.merge(rows[keys]),  # the records shown, for the notes
            accs.merge(rows[cell].drop_duplicates())]
    tok_s = _lookup(tput, keys, "tok_s", rows)
    data = pd.DataFrame({
        "Training": rows["group"],
        "Model": rows["model"], "Method": rows["label"], "Suite": rows["suite"].map(suite_name),
        "#branch": rows["branch"], "tok/s": tok_s,
        "Speedup (×)": tok_s / _lookup(tput, keys, "tok_s", rows, branch=1),
        "Loss": [_loss_at((trained[m] or {}).get("heldout_loss"), b)
                 for m, b in zip(rows["model"], rows["branch"], strict=True)],
        "MMLU Acc (%)": _lookup(accs, keys, "acc", rows, suite="mmlu"),
        "SQuAD F1 (%)": _lookup(accs, keys, "acc", rows, suite="squad"),
    }).reset_index(drop=True)
    formats = {"#branch": "d", "tok/s": ".1f", "Speedup (×)": ".2f", "Loss": ".3f",
               "MMLU Acc (%)": ".1f", "SQuAD F1 (%)": ".1f"}
    notes = [f"{_throughput_source(used[0])}; Speedup: tok/s over #branch 1 of the same "
             "model, method and suite; Loss: held-out loss of the model's training run at "
             f"that #branch; MMLU Acc and SQuAD F1: from {ACCURACY_SOURCE} of the same "
             "model, method and #branch, whatever the row's suite (a row without a "
             "throughput run has accuracy runs only).", *_notes(*used)]
    return Table(3, "Branch scaling: throughput, speedup over #branch 1, loss, MMLU and SQuAD",
                 data, formats, notes, row_group="Training")


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
    cells = _sorted(newest(att, ["model", "suite", "branch", *RECORD_COLUMNS]),
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


def _sequential_q_s(cells: pd.DataFrame) -> list[float]:
    """Per row of `cells`, the Q/s of sequential decoding on the same questions: the same
    model, suite and number scored. Sequential answers one question at a time, so its
    group size does not change its speed: its record at the row's #branch is preferred,
    else its newest record at any #branch."""
    seq = cells[cells["method"] == "sequential"].sort_values("created")
    out = []
    for row in cells.itertuples():
        same = seq[(seq["model"] == row.model) & (seq["suite"] == row.suite)
                   & (seq["n"] == row.n)]
        own = same[same["branch"] == row.branch]
        pick = own if not own.empty else same
        out.append(pick["q_s"].iloc[-1] if not pick.empty else float("nan"))
    return out


def _scored_note(cells: pd.DataFrame) -> str | None:
    """How many questions each row is scored on: one number, or one per suite/model."""
    n = pd.to_numeric(cells["n"], errors="coerce")
    if n.dropna().empty:
        return None
    if n.nunique() == 1:
        return f"Each row is scored on {int(n.dropna().iloc[0])} questions."
    by = ["suite"] + (["model"] if cells["model"].nunique() > 1 else [])
    parts = [f"{_alternatives(map(int, g.dropna()))} on {' '.join([suite_name(k[0]), *k[1:]])}"
             for k, g in n.groupby([cells[c] for c in by], sort=False)]
    return f"Questions scored per row: {', '.join(parts)}."


def table5(records: Records, models=None, suites=None) -> Table:
    """Parallel QA (SQuAD v1.1 and v2.0 by default): per model (a row group), version,
    method and #questions answered together (the group size N), the accuracy run's Q/s,
    the speedup over sequential on the same questions, F1 and EM, and for v2.0 the
    HasAns / NoAns F1. Q/s comes from accuracy runs: real stopping is what a user waits for.
    """
    suites = list(dict.fromkeys(suites or SQUAD_SUITES))
    if len(suites) > 1 and not set(suites) <= set(SQUAD_SUITES):
        raise BadInput("table 5 shows one suite family: squad and/or squad_v2, or one other "
                       "suite; pass --suite accordingly")
    runs = run_frame(records, models, suites)
    family = "SQuAD" if set(suites) <= set(SQUAD_SUITES) else suite_name(suites[0])
    cells = newest_runs(runs, "accuracy", ["model", "suite", "label", "branch", "n"])
    _require(cells, f"{family} accuracy run")
    cells = _sorted(cells, ["model", "suite", "branch", "label"])
    f1 = col(cells, "metrics.f1").fillna(col(cells, "metrics.f1a"))
    data = pd.DataFrame({
        "Model": cells["model"], "Version": [suite_version(r) for r in cells["record"]],
        "Method": cells["label"], "#questions": cells["branch"], "Q/s": cells["q_s"],
        "Speedup (×)": cells["q_s"] / _sequential_q_s(cells),
        "F1 (%)": _pct(f1), "EM (%)": _pct(col(cells, "metrics.em")),
    }).reset_index(drop=True)
    formats = {"#questions": "d", "Q/s": ".2f", "Speedup (×)": ".2f", "F1 (%)": ".1f",
               "EM (%)": ".1f"}
    notes = [f"Q/s: questions answered per second in {ACCURACY_SOURCE}, i.e. with real "
             "stopping; #questions: questions answered together (the group size N); "
             "Speedup: Q/s over sequential on the same questions (same model, suite and "
             "number scored).", _scored_note(cells)]
    if (data["Version"] == "v2.0").any():
        for name, key in (("HasAns F1 (%)", "has_ans_f1"), ("NoAns F1 (%)", "no_ans_f1")):
            data[name] = _pct(col(cells, f"metrics.{key}")).to_numpy()
            formats[name] = ".1f"
        notes.append("HasAns / NoAns F1: SQuAD v2.0's answerable and unanswerable questions.")
    return Table(5, f"{family} parallel QA: Q/s (accuracy runs, real stopping) and speedup "
                 "over sequential decoding", data, formats,
                 [n for n in notes if n] + _notes(cells), row_group="Model")


BUILDERS: dict[int, Callable[..., Table]] = {1: table1, 2: table2, 3: table3, 4: table4,
                                             5: table5}


def build(number: int, records: Records, models: Sequence[str] | None = None,
          suites: Sequence[str] | None = None) -> Table:
    """Table `number` (1-5) from `records`, keeping only `models` and `suites` when given."""
    if number not in BUILDERS:
        raise BadInput(f"no table {number}; tables are 1-5")
    return BUILDERS[number](records, models, suites)


def build_all(records: Records, models: Sequence[str] | None = None,
              suites: Sequence[str] | None = None) -> tuple[list[Table], dict[int, str]]:
    """Every table that `records` (after the filters) can fill, Table 1 first, and for
    each other table why it was left out (no matching records, or the filters do not
    apply to it, e.g. --suite for Table 2). Raises NoRecords when no table is left."""
    built, skipped = [], {}
    for number, builder in BUILDERS.items():
        try:
            built.append(builder(records, models, suites))
        except BadInput as exc:
            skipped[number] = str(exc)
    if not built:
        raise NoRecords("no records match any table (check --results, --model and --suite)")
    return built, skipped


# ---- rendering ---------------------------------------------------------------------

def _flat(columns: pd.Index) -> list[str]:
    if isinstance(columns, pd.MultiIndex):
        return [" ".join(p for p in col if p) for col in columns]
    return [str(c) for c in columns]


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
    title = f"Table {table.number}: {table.title}" if table.number else table.title
    body = []
    for head, row in zip(heads, rows, strict=True):
        if head is not None:
            body.append(line([f"**{head}**", *[""] * (len(header) - 1)]))
        body.append(line(row))
    lines = [title, "", line(header), rule, *body]
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
    """`text` with TeX's special characters escaped; "--" stays two hyphens (not a dash)."""
    text = str(text)
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
            f"\\caption{{{latex_escape(table.title)}}}\\label{{tab:pmbench-{table.number}}}\n"
            f"{fit}\n{tabular}}}\n{notes}\\end{{table}}\n")
    return _latex_document([(table.number, body)]) if standalone else body


def render(table: Table, fmt: str = "markdown", standalone: bool = False) -> str:
    """`table` as text in `fmt` (markdown, latex or csv)."""
    if fmt == "markdown":
        return to_markdown(table)
    if fmt == "latex":
        return to_latex(table, standalone)
    if fmt == "csv":
        return to_csv(table)
    raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_all(built: Sequence[Table], fmt: str = "markdown", standalone: bool = False) -> str:
    """Several tables as one text, a blank line between them: CSV puts a ``# Table N``
    line above each table's rows; standalone LaTeX is one document holding them all."""
    if fmt == "latex" and standalone:
        return _latex_document([(t.number, to_latex(t)) for t in built])
    if fmt == "csv":
        return "\n".join(f"# Table {t.number}\n{to_csv(t)}" for t in built)
    return "\n".join(render(t, fmt) for t in built)
