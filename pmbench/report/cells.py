"""What `pmbench compare` matches between two folders: cells, and why none matched.

A cell is a model's suite, method (with its own settings), #branch, question limit, token
budget, EOS handling and dtype; in each folder the newest record of a cell stands for it.
Before any figure is judged, `check_inputs` makes sure there is something to judge: an
empty folder, an unreadable baseline record and two folders without a common cell are
each bad input with a message of their own (the last names the cells on each side and the
nearest pair's differing keys).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.results import Records, method_label, newest, runners


def method_keys() -> list[str]:
    """The settings of one method only (its runner's `record_columns`): they tell its runs
    apart, not the cell they measure."""
    return list(dict.fromkeys(c for r in runners().values() for c in r.record_columns))


def cell_keys() -> list[str]:
    """What a cell is: a model's suite, method (with its own settings), #branch, question
    limit, token budget, EOS handling and dtype."""
    return ["model", "suite", "method", *method_keys(), "branch", "limit", "max_new_tokens",
            "ignore_eos", "dtype"]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell_name(row: pd.Series) -> str:
    parts = [row["suite"], method_label(row), f"b{row['branch']}", row["model"]]
    for key, fmt in (("limit", "limit={}"), ("max_new_tokens", "T={}"), ("dtype", "{}")):
        if not _missing(row.get(key)):
            parts.append(fmt.format(row[key]))
    if row.get("ignore_eos") is True:
        parts.append("ignore-eos")
    return " ".join(str(p) for p in parts)


def cell_frame(records: Records) -> pd.DataFrame:
    """The newest run record of each cell, its `cell_keys` as columns and its `cell` name."""
    df = records.frame("runs")
    if df.empty:
        return df.assign(cell=pd.Series(dtype=object))
    keys = cell_keys()
    for key in keys:
        if key not in df:
            df[key] = None
    cells = newest(df, keys)
    return cells.assign(cell=[cell_name(r) for _, r in cells.iterrows()])


def _same(a: Any, b: Any) -> bool:
    return (_missing(a) and _missing(b)) or a == b


def _nearest(base: pd.DataFrame, cand: pd.DataFrame) -> str:
    """The baseline and candidate cells that differ in the fewest keys, and those keys."""
    best, keys = None, cell_keys()
    for _, b in base.iterrows():
        for _, c in cand.iterrows():
            diff = [k for k in keys if not _same(b.get(k), c.get(k))]
            if best is None or len(diff) < len(best[2]):
                best = (b["cell"], c["cell"], diff, b, c)
    b_name, c_name, diff, b, c = best
    keys = ", ".join(f"{k} {b.get(k)} vs {c.get(k)}" for k in diff)
    return f"nearest: baseline '{b_name}' and candidate '{c_name}' differ in {keys}"


def _listing(cells: pd.DataFrame, side: str) -> str:
    names = list(cells["cell"])
    shown = "; ".join(names[:4]) + (f"; and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{side}: {len(names)} cell{'s' * (len(names) != 1)} ({shown})"


def check_inputs(baseline: Records, candidate: Records, base_figs: dict,
                 cand_figs: dict) -> None:
    """BadInput (one line) unless the two record sets can be compared."""
    if baseline.skipped:
        path, problem = baseline.skipped[0]
        raise BadInput(f"unusable baseline: {path}: {problem}")
    for side, records in (("baseline", baseline), ("candidate", candidate)):
        if not records.runs:
            raise BadInput(f"the {side} holds no complete run record")
    if not any(k in cand_figs for k in base_figs):
        base, cand = cell_frame(baseline), cell_frame(candidate)
        raise BadInput(f"baseline and candidate have no cell in common: "
                       f"{_listing(base, 'baseline')}, {_listing(cand, 'candidate')}; "
                       f"{_nearest(base, cand)}")
