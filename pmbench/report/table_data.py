"""The run frame the tables and figures read, and the helpers every table builder shares:
sorting in the paper's order, record look-ups per cell, and the notes under a table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.results import (
    Records,
    canonical_model,
    merged_note,
    method_label,
    model_names,
    newest,
    run_purpose,
    runners,
)
from pmbench.report.table_format import DASH
from pmbench.rope2d.settings import RECORD_COLUMNS
from pmbench.suites import primary_metric, report_order


class NoRecords(BadInput):
    """No record fits a table: `pmbench table` without a number skips that table."""


def pct(values: pd.Series) -> pd.Series:
    """Fractions to % (rounded to kill float noise such as 28.999999999999996)."""
    return (pd.to_numeric(values, errors="coerce") * 100).round(10)


def col(df: pd.DataFrame, name: str) -> pd.Series:
    """Column `name`, or NaN everywhere when no record has that field."""
    return df[name] if name in df else pd.Series(float("nan"), index=df.index)


def method_rank(label: str) -> float:
    """A method's place among methods, by the first word of its label (its name): its
    runner's `order`, the methods without one after those with one."""
    runner = runners().get(label.split(" ")[0])
    return math.inf if runner is None or runner.order is None else runner.order


def suite_rank(suite: str) -> int:
    """Suites in the paper's order (their YAML's `order`), then the others."""
    order = report_order()
    return order.index(suite) if suite in order else len(order)


def sort_rows(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sorted by `by`; methods ("label") in their runners' order and suites in the order
    of their YAML's `order`, each followed by the others alphabetically."""
    ranks = {"label": method_rank, "suite": suite_rank}
    ranked = df.assign(**{f"_rank_{k}": df[k].map(f) for k, f in ranks.items() if k in by})
    keys = [k for b in by for k in ([f"_rank_{b}", b] if b in ranks else [b])]
    return ranked.sort_values(keys, kind="stable").drop(
        columns=[f"_rank_{k}" for k in ranks], errors="ignore")


def setting_cell(row: pd.Series, cols: Sequence[str] = RECORD_COLUMNS[1:]) -> str:
    """2D RoPE settings but the ratio in one short cell, mode/branch_freqs/mask (or the
    `cols` given)."""
    parts = [row.get(c) for c in cols]
    return "/".join(str(p) for p in parts if isinstance(p, str)) or DASH



def run_frame(records: Records, models: Sequence[str] | None, suites: Sequence[str] | None
              ) -> pd.DataFrame:
    """Run records with the columns the tables use: purpose ("throughput" or "accuracy"),
    label, tok_s, q_s, acc (%), n (questions), budget (new tokens per question) and env
    (dtype, threads and machine: runs that differ there are never compared)."""
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
    df["budget"] = col(df, "max_new_tokens")
    df["env"] = [environment(r) for r in df["record"]]
    df["acc"] = pct(pd.Series(
        [r.get(f"metrics.{primary_metric(r['suite'], r['record']['metrics'])}")
         for _, r in df.iterrows()], index=df.index, dtype=object))
    return df


def environment(record: dict[str, Any]) -> str:
    """What a run's speed depends on besides its method: dtype, CPU threads (on a CPU),
    machine."""
    env = record.get("env") or {}
    machine = env.get("gpu") or env.get("cpu") or "machine unknown"
    threads = None if env.get("gpu") else env.get("threads")
    parts = [record.get("dtype") or "dtype unknown",
             f"{threads} thread{'s' * (threads != 1)}" if isinstance(threads, int) else None,
             machine]
    return ", ".join(str(p) for p in parts if p)


def spread(values: Iterable[Any]) -> Any:
    """One number when `values` agree, else their range as text ("8–200"), NaN for none."""
    found = sorted({int(v) for v in pd.to_numeric(pd.Series(list(values)),
                                                   errors="coerce").dropna()})
    if not found:
        return float("nan")
    return found[0] if len(found) == 1 else f"{found[0]}–{found[-1]}"


def newest_runs(runs: pd.DataFrame, purpose: str, keys: list[str]) -> pd.DataFrame:
    """The newest run of one `purpose` per cell of `keys`: tok/s comes only from
    throughput runs and accuracy only from accuracy runs, so each kind has its own
    newest record."""
    return newest(runs[runs["purpose"] == purpose] if "purpose" in runs else runs, keys)


def require(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise NoRecords(f"no {what} records match (check --results, --model and --suite)")


def merged_notes(*frames: pd.DataFrame) -> list[str]:
    note = merged_note(*frames)
    return [note] if note else []


def alternatives(values: Iterable[Any]) -> str:
    """Distinct values, sorted, as "a", "a or b", "a, b or c"."""
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(set(values))]
    return " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)


def throughput_source(tput: pd.DataFrame) -> str:
    """Where tok/s comes from, naming the token budget(s) the throughput runs used."""
    budgets = [int(b) for b in pd.to_numeric(col(tput, "max_new_tokens")).dropna()]
    budget = f", {alternatives(budgets)} new tokens per question" if budgets else ""
    return (f"tok/s: output tokens per second of throughput runs (--ignore-eos{budget}, "
            "median over repeats)")


ACCURACY_SOURCE = "accuracy runs (each suite's own stop strings and token budget)"


def lookup(frame: pd.DataFrame, keys: list[str], value: str, rows: pd.DataFrame,
            **fixed: Any) -> pd.Series:
    """`value` of `frame`'s record per row of `rows` (matched on `keys`, with the keys in
    `fixed` set to one value), NaN where there is none."""
    index = frame.set_index(keys)[value] if not frame.empty else pd.Series(dtype=float)
    wanted = zip(*(rows[k] if k not in fixed else [fixed[k]] * len(rows) for k in keys),
                 strict=True)
    return pd.Series([index.get(k, float("nan")) for k in wanted], index=rows.index,
                     dtype=float)



PRIOR_ART = ("training-free position reuse with a mask, the construction of MultiDecode and "
             "Intra-Prompt Parallel Decoding: every branch continues the context from the "
             "same positions and sees only the context and its own tokens, so on a model as "
             "shipped its greedy tokens equal sequential's. What ratio > 0, the cross mask or "
             "training add is measured against this row, not against sequential.")


def prior_art_notes(ratio: pd.Series, mask: pd.Series, rows: str) -> list[str]:
    """The note that names the prior-art row, when a table shows one: rope2d at ratio 0
    with the isolated mask (`ratio` and `mask` per shown row; other methods' are NaN), so
    a reader credits ParallelMind only with what it adds over it. `rows` names those rows
    as the table shows them."""
    shown = (pd.to_numeric(ratio, errors="coerce") == 0) & (mask == "isolated")
    if not shown.any():
        return []
    return [f"Prior art: rope2d at ratio 0 with the isolated mask ({rows}) is {PRIOR_ART}"]
