"""Tables 2 and 3, the tables that read training records: the rope_2d_ratio ablation
(held-out loss and accuracy before and after training) and branch scaling (throughput,
speedup, loss and accuracy per #branch). Conventions as in :mod:`pmbench.report.tables`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from pmbench.errors import BadInput
from pmbench.report.paired import MARGIN
from pmbench.report.results import (
    Records,
    method_label,
    model_names,
    newest,
    nonzero_seed,
    reference_method,
    trained_by,
)
from pmbench.report.table_data import (
    ACCURACY_SOURCE,
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
    throughput_source,
)
from pmbench.report.table_format import Table
from pmbench.report.table_paired import Pairing, companion
from pmbench.rope2d.settings import RECORD_COLUMNS
from pmbench.suites import display_name, metric, primary_metric

TRAINING_GROUPS = {"pretrain": "pre-trained from scratch", "finetune": "fine-tuned",
                   None: "as shipped"}  # Tables 2 and 3's row groups, in this order
TRAINED_WEIGHTS = {"pretrain": "pre-trained", "finetune": "fine-tuned"}  # Table 2's Weights
# Table 2's accuracy columns: (suite, metric), None for the suite's primary metric unnamed.
ABLATION_COLUMNS = (("squad", "f1"), ("squad", "em"), ("mmlu", None), ("ceval", None))
SCALING_SUITES = ("mmlu", "squad")  # Table 3's accuracy columns, whatever the row's suite


def _header(suite: str, key: str | None) -> str:
    """"SQuAD EM (%)" for a named metric, "MMLU (%)" for the suite's primary one unnamed."""
    named = f" {metric(suite, key).label}" if key else ""
    return f"{display_name(suite)}{named} (%)"


def _column(suite: str, key: str | None) -> str:
    """The run-frame column of (suite, metric): "acc" holds each suite's primary metric."""
    return "acc" if key in (None, primary_metric(suite)) else key


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


def _trained_cells(records: Records, models) -> pd.DataFrame:
    """The newest training run per (kind, base model, 2D RoPE settings, #branch), in
    table order: pre-trained then fine-tuned, by base model, mask, ratio."""
    train = records.frame("train")
    require(train, "training")
    if models:
        train = train[train["model"].isin(models)]
        require(train, "training")
    if "settings.seed" not in train:
        train = train.assign(**{"settings.seed": None})
    cells = newest(train, ["kind", "model", *RECORD_COLUMNS, "branches", "settings.seed"])
    cells = cells.assign(_kind=cells["kind"].map(_training_rank))
    return sort_rows(cells, ["_kind", "model", "rope2d.mask", "rope2d.ratio", "rope2d.mode",
                           "rope2d.branch_freqs", "branches"]).drop(columns="_kind")


def _weights_runs(records: Records) -> pd.DataFrame:
    """Table 2's accuracy run per (weights, variant, #branch, suite): the one with the most
    questions, the newest of those.

    `weights` is the training run id for a checkpoint's runs and the model name for the
    others; `variant` is the method for a checkpoint (it runs with the 2D RoPE settings
    it was trained with) and for the reference (sequential, with its context cached or
    not: the same tokens), the method label otherwise, so an as-shipped row finds the
    base model's runs at its training run's ratio, mask, mode and branch_freqs.
    """
    suites = list(dict.fromkeys(suite for suite, _ in ABLATION_COLUMNS))
    runs = run_frame(records, None, suites)
    runs = runs[runs["purpose"] == "accuracy"].copy()  # before the trained_by look-ups
    keys = ["weights", "variant", "branch", "suite"]
    if runs.empty:
        return runs.assign(**{k: pd.Series(dtype=object) for k in keys})
    trained = [trained_by(model_names(r), records.train) for r in runs["record"]]
    runs["weights"] = [t["run_id"] if t else m for t, m in zip(trained, runs["model"],
                                                                 strict=True)]
    reference = reference_method()  # its variants give the same tokens: one variant here
    runs["variant"] = [m if t or m == reference else label for t, m, label in zip(
        trained, runs["method"], runs["label"], strict=True)]
    for column in {_column(s, k) for s, k in ABLATION_COLUMNS} - {"acc"}:
        runs[column] = pct(col(runs, f"metrics.{column}"))
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
    reference = reference_method()
    for (kind, base), runs in cells.groupby(["kind", "model"], sort=False):
        shipped = {"group": f"{TRAINING_GROUPS.get(kind, kind)}: {base}", "model": base,
                   "stage": "as shipped", "weights": base}
        if kind == "finetune":
            rows += [{**shipped, "variant": reference, "setting": reference, "branch": b}
                     for b in sorted(runs["branches"].unique())]
        for _, run in runs.iterrows():
            rec, branch = run["record"], run["branches"]
            rope = {"ratio": run["rope2d.ratio"], "mask": run["rope2d.mask"],
                    "setting": _setting(run), "branch": branch}
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


def _setting(run: pd.Series) -> str:
    """Mode/branch_freqs, and the seed when not 0 (a second seed of a setting is the
    yardstick of training's chance, its own row, paired with its own seed's control)."""
    seeded = f", seed {seed:g}" if (seed := nonzero_seed(run)) is not None else ""
    return setting_cell(run, RECORD_COLUMNS[1:3]) + seeded


def _reference(rows: pd.DataFrame, row: pd.Series) -> tuple[tuple[Any, str], str] | None:
    """(weights, variant) of the run Table 2 judges `row` against, and its name: an
    untrained row's sequential run; a trained row's ratio-0 control of the same kind, mask
    and setting. None for the references themselves and rows without one."""
    reference = reference_method()
    if row["variant"] == reference:
        return None
    if row["stage"] == "as shipped":
        return (row["weights"], reference), f"{reference}, as shipped"
    if row["ratio"] == 0:
        return None
    same = rows[(rows["group"] == row["group"]) & (rows["stage"] == row["stage"])
                & (rows["mask"] == row["mask"]) & (rows["setting"] == row["setting"])
                & (rows["branch"] == row["branch"]) & (pd.to_numeric(rows["ratio"]) == 0)]
    if same.empty:
        return None
    return (same["weights"].iloc[-1], "rope2d"), f"ratio-0 {row['mask']} control"


def _ablation_pairings(rows: pd.DataFrame, accs: pd.DataFrame) -> list[Pairing]:
    """Each row's accuracy runs against its reference's, per accuracy column."""
    runs = {(r["weights"], r["variant"], r["branch"], r["suite"]): r["record"]
            for _, r in accs.iterrows()}
    out = []
    for _, row in rows.iterrows():
        found = _reference(rows, row)
        if found is None:
            continue
        (weights, variant), name = found
        keys = {"Model": row["model"], "Weights": row["stage"], "Mask": row["mask"],
                "Ratio": pd.to_numeric(row["ratio"]), "#branch": row["branch"]}
        for suite, key in ABLATION_COLUMNS:
            run = runs.get((row["weights"], row["variant"], row["branch"], suite))
            ref = runs.get((weights, variant, row["branch"], suite))
            if run is not None and ref is not None:
                out.append(Pairing(keys, _header(suite, key).removesuffix(" (%)"),
                                   key or primary_metric(suite), run, ref, name))
    return out


def table2(records: Records, models=None, suites=None, margin: float | None = MARGIN
           ) -> Table:
    """rope_2d_ratio ablation: held-out loss and accuracy before and after training.

    A row group per training kind and base model (see :func:`_ablation_rows`). Each row's
    accuracy is the accuracy run of its weights at the trained #branch with the most
    questions (the newest of those): a checkpoint's other #branch runs, or shorter runs
    (Table 3's), never stand in for it. With a `margin`, its companion Table 2b pairs a
    trained row with its ratio-0 control of the same mask, an untrained one with the base
    model's sequential run.
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
        **{_header(suite, key): lookup(accs, keys, _column(suite, key), rows, suite=suite)
           for suite, key in ABLATION_COLUMNS},
    })
    formats = {"Ratio": ".2f", "#branch": "d", "Loss": ".3f",
               **{_header(suite, key): ".1f" for suite, key in ABLATION_COLUMNS}}
    used = accs.merge(rows[keys[:3]].drop_duplicates())  # the records shown, for the notes
    notes = ["Weights: as shipped is the base model before training (its sequential row, "
             "decoding one question at a time, is the reference); fine-tuned / pre-trained "
             "is the training run's checkpoint. Loss: held-out loss on the training run's "
             "held-out split at the trained #branch: for a checkpoint after training, for "
             "as shipped before the first step (heldout_loss_start: the base model at the "
             "same 2D RoPE settings). SQuAD F1 / EM, MMLU and C-Eval: the row's weights at "
             f"that #branch in {ACCURACY_SOURCE}, as shipped at the training run's ratio, "
             "mask and setting; of several runs, the one with the most questions.",
             *prior_art_notes(rows["ratio"], rows["mask"], "Ratio 0.00, Mask isolated"),
             *merged_notes(cells, used)]
    paired = None
    if margin is not None:
        paired, note = companion(
            2, _ablation_pairings(rows, accs), margin, records.train,
            "for a trained checkpoint, the ratio-0 checkpoint of the same training kind, mask "
            "and setting (its control); for the base model as shipped, its sequential run",
            {"Ratio": ".2f", "#branch": "d"})
        notes.append(note)
    return Table(2, "rope_2d_ratio ablation: held-out loss and accuracy before and after "
                 "training", data, formats, notes, row_group="Training", companion=paired)


def _scaling_rows(tput: pd.DataFrame, accs: pd.DataFrame, keys: list[str],
                  suites: Sequence[str] | None) -> pd.DataFrame:
    """Table 3's rows: one per throughput cell of the shown suites, plus one for each
    (model, method, #branch) that has accuracy runs but no such row, under its first
    suite, so an accuracy-only cell shows once and not once per suite."""
    shown = [df[df["suite"].isin(suites)] if suites else df for df in (tput, accs)]
    runs, scored = (df[keys] for df in shown)
    cell = [k for k in keys if k != "suite"]
    extra = scored.merge(runs[cell].drop_duplicates(), how="left", indicator=True)
    extra = sort_rows(extra[extra["_merge"] == "left_only"].drop(columns="_merge"), ["suite"])
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
    require(runs, "run")
    keys = ["model", "env", "label", "suite", "branch"]
    tput = newest_runs(runs, "throughput", keys)
    accs = newest_runs(runs[runs["suite"].isin(SCALING_SUITES)], "accuracy", keys)
    rows = _scaling_rows(tput, accs, keys, suites)
    require(rows, "run")
    trained = {m: trained_by(m, records.train) for m in rows["model"].unique()}
    kinds = [(trained[m] or {}).get("kind") for m in rows["model"]]
    rows = rows.assign(group=[TRAINING_GROUPS.get(k, "trained") for k in kinds],
                       _group=[_training_rank(k) for k in kinds])
    rows = sort_rows(rows, ["_group", *keys])
    cell = ["model", "env", "label", "branch"]
    used = [tput.merge(rows[keys]),  # the records shown, for the notes
            accs.merge(rows[cell].drop_duplicates())]
    tok_s = lookup(tput, keys, "tok_s", rows)
    # the same work at #branch 1: same questions and token budget, or no speedup
    rows = rows.assign(n=lookup(tput, keys, "n", rows), budget=lookup(tput, keys, "budget", rows))
    data = pd.DataFrame({
        "Training": rows["group"], "Env": rows["env"], "Model": rows["model"],
        "Method": rows["label"], "Suite": rows["suite"].map(display_name),
        "#branch": rows["branch"], "Q": rows["n"], "T": rows["budget"], "tok/s": tok_s,
        "Speedup (×)": tok_s / lookup(tput, [*keys, "n", "budget"], "tok_s", rows, branch=1),
        "Loss": [_loss_at((trained[m] or {}).get("heldout_loss"), b)
                 for m, b in zip(rows["model"], rows["branch"], strict=True)],
        **{_header(s, primary_metric(s)): lookup(accs, keys, "acc", rows, suite=s)
           for s in SCALING_SUITES},
    }).reset_index(drop=True)
    formats = {"#branch": "d", "Q": ".0f", "T": ".0f", "tok/s": ".1f", "Speedup (×)": ".2f",
               "Loss": ".3f", **{_header(s, primary_metric(s)): ".1f" for s in SCALING_SUITES}}
    notes = [f"{throughput_source(used[0])}; Q and T: questions and new tokens per question "
             "of the row's throughput run; Speedup: tok/s over #branch 1 of the same model, "
             "method and suite on the same Q, T, dtype, threads and machine ('–' where no "
             "such run exists); Loss: held-out loss of the model's training run at "
             f"that #branch; MMLU Acc and SQuAD F1: from {ACCURACY_SOURCE} of the same "
             "model, method and #branch, whatever the row's suite (a row without a "
             "throughput run has accuracy runs only).",
             *prior_art_notes(pd.concat([col(u, "rope2d.ratio") for u in used]),
                              pd.concat([col(u, "rope2d.mask") for u in used]),
                              'Method "rope2d r=0"'), *merged_notes(*used)]
    return Table(3, "Branch scaling: throughput, speedup over #branch 1, loss, MMLU and SQuAD",
                 data, formats, notes, row_group=["Training", "Env"])

