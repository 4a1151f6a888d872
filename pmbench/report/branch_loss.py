"""Held-out loss by #branch against the ratio-0 control (issue 31): `pmbench table loss`.

Pre-trained from scratch, a model this small answers at chance, so held-out loss carries
the ratio comparison. Every training run records its final held-out loss per example at
each #branch it was asked for (train.json `heldout_examples`: {"<#branch>": [[summed
loss, tokens], ...]}); the examples at one #branch are the same for every run of the same
data, so a run and its control (the run of the same setting at ratio 0, see
:data:`pmbench.report.curve.SETTING`) pair example by example, and the paired bootstrap
over examples gives Δ loss an interval, at the trained #branch and at every other one.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.curve import (
    SETTING,
    loss_units,
    newest_settings,
    paired_loss,
    setting_key,
    setting_label,
    with_controls,
)
from pmbench.report.results import Records
from pmbench.report.table_data import NoRecords
from pmbench.report.table_format import Table


def final_losses(records: Records, models=None) -> pd.DataFrame:
    """One row per (newest training run of each setting and ratio, #branch evaluated):
    its setting, ratio, held-out loss and per-example losses at that #branch."""
    train = records.frame("train")
    if train.empty or "heldout_examples" not in {k for r in records.train for k in r}:
        raise NoRecords("no training runs with per-example held-out losses here "
                        "(`pmbench train` records them)")
    rows = []
    for _, run in newest_settings(train, models).iterrows():
        per_branch = run["record"].get("heldout_examples")
        for n, recorded in (per_branch.items() if isinstance(per_branch, dict) else ()):
            examples = loss_units(recorded)
            if examples and str(n).isdigit():
                rows.append({**{c: run[c] for c in SETTING}, "ratio": run["rope2d.ratio"],
                             "run_id": run["run_id"], "eval_branch": int(n),
                             "examples": examples,
                             "loss": sum(s for s, _ in examples) / sum(t for _, t in examples)})
    if not rows:
        raise NoRecords("no training run here recorded per-example held-out losses")
    return seed_controls(with_controls(pd.DataFrame(rows)))


def seed_controls(frame: pd.DataFrame) -> pd.DataFrame:
    """A ratio-0 run of a seed other than the lowest gets that seed's ratio-0 run as its
    control: the Δ between two seeds of one setting is the yardstick for a Δ between
    ratios, whose interval covers the held-out examples but not the training's chance."""
    other = [c for c in SETTING if c != "settings.seed"]
    key = lambda r: setting_key(r, other)  # noqa: E731
    zero = frame[frame["ratio"] == 0].sort_values("settings.seed", kind="stable")
    first = {}
    for _, r in zero.iterrows():
        first.setdefault(key(r), r)
    frame = frame.copy()
    frame["control"] = [
        first[key(r)]["run_id"] if r["ratio"] == 0 and key(r) in first
        and first[key(r)]["settings.seed"] != r["settings.seed"] else r["control"]
        for _, r in frame.iterrows()]
    return frame


def branch_delta(frame: pd.DataFrame, row: pd.Series) -> dict[str, float] | None:
    """Δ held-out loss of `row` against its control at the same #branch, paired over the
    same held-out examples, or None (no control, or not the same examples)."""
    if not row["control"]:
        return None
    ctrl = frame[(frame["run_id"] == row["control"])
                 & (frame["eval_branch"] == row["eval_branch"])]
    if ctrl.empty:
        return None
    return paired_loss(ctrl["examples"].iloc[0], row["examples"])


def table(records: Records, models=None, suites=None) -> Table:
    """`pmbench table loss`: per training run and evaluated #branch, the final held-out
    loss and its paired Δ against the ratio-0 control at that #branch."""
    if suites:
        raise BadInput("table loss reads training records, which have no suites; drop --suite")
    frame = final_losses(records, models).sort_values(
        ["kind", "model", "branches", "rope2d.mask", "ratio", "settings.seed", "eval_branch"],
        kind="stable")
    rows: list[dict[str, Any]] = []
    for _, r in frame.iterrows():
        found = branch_delta(frame, r) or {}
        rows.append({"group": f"{r['kind']} · {r['model']} · trained at #branch "
                              f"{r['branches']}",
                     "Setting": setting_label(r), "#branch": r["eval_branch"],
                     "Examples": len(r["examples"]),
                     "Tokens": sum(t for _, t in r["examples"]), "Loss": r["loss"],
                     "Δ": found.get("delta"), "low": found.get("low"),
                     "high": found.get("high")})
    data = pd.DataFrame(rows)
    formats = {"#branch": "d", "Examples": "d", "Tokens": ",d", "Loss": ".3f", "Δ": "+.3f",
               "low": "+.3f", "high": "+.3f"}
    notes = [
        "Loss: token-weighted cross-entropy of the final checkpoint on the run's held-out "
        "examples at that #branch (train.json heldout_examples): the same held-out tokens "
        "at every #branch when pre-training, grouped #branch at a time behind a shared "
        "context. Examples: the groups, the units of the bootstrap.",
        "Δ: this run minus its control, the run of the same setting (kind, model, mask, "
        "mode, branch frequencies, trained #branch, LoRA, steps, seed) at rope_2d_ratio 0, at "
        "the same #branch (a ratio-0 run of another seed: the lowest seed's ratio-0 run, "
        "the yardstick of training's chance); low, high: its 95% paired-bootstrap (BCa) "
        "interval over the same examples. Δ < 0: ratio > 0 predicts the held-out text "
        "better. – where a run has no control here.",
        records.provenance()]
    return Table(None, "Held-out loss by #branch, against the ratio-0 control", data,
                 formats, notes, row_group="group", suffix="loss")
