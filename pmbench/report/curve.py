"""Learning curves (issue 31): does 2D RoPE's cost close with training?

A training run saves a checkpoint every `--save-every` steps, each with its held-out loss
per example (train.json `checkpoints`), and a grid stage evaluates them (`models:
[{checkpoints: <folder>/<run>}]`). Here each checkpoint is a point: training tokens
against held-out loss and against each evaluated suite's headline metric.

Every point is also set against its *control*: the run that differs only in
`rope_2d_ratio`, at ratio 0 (same kind, base model, mask, mode, branch frequencies,
#branch, LoRA or not, steps, seed and data), at the same step. The question is whether
ratio > 0 costs anything once trained, so the figure that matters is the paired
difference and its interval: Δ held-out loss bootstrapped over the same held-out examples
(stats.paired_weighted_difference), Δ metric over the same questions (report.paired, as
`pmbench compare` pairs two runs). A point without a control shows its values alone.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pmbench.measure.stats import paired_weighted_difference
from pmbench.report.paired import MARGIN, pair_runs
from pmbench.report.results import (
    Records,
    checkpoint_step,
    is_number,
    model_names,
    newest,
    nonzero_seed,
    trained_by,
)
from pmbench.report.table_data import NoRecords, run_frame
from pmbench.report.table_format import Table
from pmbench.suites import display_name, metric

# what a run and its control share: all but the ratio (and the run's own id and time)
SETTING = ["kind", "model", "rope2d.mask", "rope2d.mode", "rope2d.branch_freqs", "branches",
           "settings.lora", "steps", "settings.seed"]


def checkpoint_frame(records: Records, models=None) -> pd.DataFrame:
    """One row per checkpoint of the newest training run of each setting and ratio:
    the run's setting, its ratio, step, tokens and held-out loss (mean and per example)."""
    train = records.frame("train")
    if train.empty or "checkpoints" not in train:
        raise NoRecords("no training runs with checkpoints here (`pmbench train ... "
                        "--save-every K` records them)")
    rows = []
    for _, run in newest_settings(train, models).iterrows():
        for point in run["checkpoints"] if isinstance(run["checkpoints"], list) else []:
            if not isinstance(point, dict) or not _is_number(point.get("step")):
                continue  # a hand-edited entry: not a checkpoint
            rows.append({**{c: run[c] for c in SETTING}, "ratio": run["rope2d.ratio"],
                         "run_id": run["run_id"], "step": int(point["step"]),
                         "tokens": _number(point.get("tokens")),
                         "loss": _number(point.get("heldout_loss")),
                         "examples": loss_units(point.get("heldout_examples"))})
    if not rows:
        raise NoRecords("no training run here recorded checkpoints")
    return pd.DataFrame(rows)


def newest_settings(train: pd.DataFrame, models=None) -> pd.DataFrame:
    """The newest training run of each setting and ratio (of `models`, when given); a
    setting column older records lack is None."""
    if models:
        train = train[train["model"].isin(models)]
    train = train.assign(**{c: None for c in SETTING if c not in train})
    return newest(train, [*SETTING, "rope2d.ratio"])


def _is_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return value if _is_number(value) else None


def loss_units(value: Any) -> list[list[float]] | None:
    """Per-example held-out losses as train.json records them, [[summed loss, tokens], ...],
    or None where a results file holds anything else (files there are hostile: a bad one
    leaves its Δ out, it never stops a table)."""
    if not isinstance(value, list) or not value:
        return None
    ok = all(isinstance(u, list) and len(u) == 2 and all(map(_is_number, u)) and u[1] > 0
             for u in value)
    return [[float(a), float(b)] for a, b in value] if ok else None


def _checkpoint_of(run: dict[str, Any], train: list[dict[str, Any]]) -> tuple[str, int] | None:
    """(training run id, step) of the checkpoint an evaluation run's model is, if any."""
    rec = trained_by(model_names(run), train, intermediate=True)
    if rec is None:
        return None
    steps = [s for s in map(checkpoint_step, model_names(run)) if s is not None]
    if steps:
        return rec["run_id"], steps[0]
    return rec["run_id"], int(rec.get("completed_steps") or rec.get("steps") or 0)


def _questions(run: dict[str, Any]) -> int:
    return (run.get("metrics") or {}).get("n") or 0


def evaluations(records: Records, suites=None) -> dict[tuple[str, int, str], dict[str, Any]]:
    """(training run id, step, suite) -> the accuracy run of that checkpoint on that suite:
    the one with the most questions, the newest of those."""
    runs = run_frame(records, None, suites)
    if runs.empty:
        return {}
    runs = runs[runs["purpose"] == "accuracy"]
    found: dict[tuple[str, int, str], dict[str, Any]] = {}
    for _, row in runs.sort_values("created", kind="stable").iterrows():
        where = _checkpoint_of(row["record"], records.train)
        if where is None:
            continue
        key = (*where, row["suite"])
        if key not in found or _questions(row["record"]) >= _questions(found[key]):
            found[key] = row["record"]
    return found


def setting_key(row: pd.Series, columns: list[str] = SETTING) -> tuple[str, ...]:
    """A run's setting as a hashable key: the runs a control is looked up among share it."""
    return tuple(str(row[c]) for c in columns)


def with_controls(points: pd.DataFrame) -> pd.DataFrame:
    """`points` with `control`: the run id of the ratio-0 run of the same setting (None for
    a ratio-0 run itself, or where no such run is here)."""
    zero = points[points["ratio"] == 0].drop_duplicates(SETTING)
    controls = {setting_key(r): r["run_id"] for _, r in zero.iterrows()}
    points = points.copy()
    points["control"] = [None if r["ratio"] == 0 else controls.get(setting_key(r))
                         for _, r in points.iterrows()]
    return points


def paired_loss(control: list | None, run: list | None) -> dict[str, float] | None:
    """Δ held-out loss of `run` against `control` (per-example [summed loss, tokens], see
    :func:`loss_units`) with its paired-bootstrap interval, or None unless both hold the
    same examples (the same examples have the same tokens)."""
    if not control or not run or [n for _, n in control] != [n for _, n in run]:
        return None
    diff = paired_weighted_difference(control, run)
    return {"delta": diff.delta, "low": diff.low, "high": diff.high, "n": diff.n}


def loss_delta(points: pd.DataFrame, row: pd.Series) -> dict[str, float] | None:
    """Δ held-out loss of `row` against its control at the same step, paired over the same
    held-out examples, or None (no control, no such step, or different examples)."""
    if not row["control"]:
        return None
    ctrl = points[(points["run_id"] == row["control"]) & (points["step"] == row["step"])]
    if ctrl.empty:
        return None
    return paired_loss(ctrl["examples"].iloc[0], row["examples"])


def metric_delta(evals: dict, row: pd.Series, suite: str,
                 train: list[dict[str, Any]]) -> dict[str, float] | None:
    """Δ of `suite`'s headline metric (points) of `row`'s checkpoint against its control's
    at the same step, paired over the questions both answered, or None."""
    mine = evals.get((row["run_id"], row["step"], suite))
    theirs = evals.get((row["control"], row["step"], suite)) if row["control"] else None
    if mine is None or theirs is None:
        return None
    pair = pair_runs(theirs, mine, MARGIN, train)
    headline = metric(suite).key
    found = next((m for m in pair.metrics if m.key == headline), None)
    if found is None:
        return None
    return {"delta": found.delta, "low": found.low, "high": found.high, "n": found.n}


def metric_value(evals: dict, row: pd.Series, suite: str) -> float | None:
    """`suite`'s headline metric (%) of `row`'s checkpoint, if evaluated."""
    run = evals.get((row["run_id"], row["step"], suite))
    value = (run or {}).get("metrics", {}).get(metric(suite).key)
    return 100 * value if isinstance(value, int | float) else None


def curve_points(records: Records, models=None, suites=None) -> tuple[pd.DataFrame, list[str]]:
    """Every checkpoint with its values and paired Δs, and the suites evaluated."""
    points = with_controls(checkpoint_frame(records, models))
    evals = evaluations(records, suites)
    evaluated = sorted({s for (run, _, s) in evals if run in set(points["run_id"])})
    rows = []
    for _, row in points.iterrows():
        out = row.to_dict()
        out["loss_delta"] = loss_delta(points, row)
        for suite in evaluated:
            out[f"{suite}.value"] = metric_value(evals, row, suite)
            out[f"{suite}.delta"] = metric_delta(evals, row, suite, records.train)
        rows.append(out)
    frame = pd.DataFrame(rows).sort_values(["kind", "model", "rope2d.mask", "ratio", "step"],
                                           kind="stable")
    return frame.reset_index(drop=True), evaluated


def setting_label(row: pd.Series | dict[str, Any]) -> str:
    """"cross r0.25" (the mask and ratio a curve is drawn for), "full" when not LoRA, the
    seed when not 0."""
    lora = row.get("settings.lora")
    full = " full" if row.get("kind") == "finetune" and lora is False else ""
    seeded = f" seed {seed:g}" if (seed := nonzero_seed(row)) is not None else ""
    return f"{row['rope2d.mask']} r{row['ratio']:g}{full}{seeded}"


def _interval_columns(row: dict, prefix: Any, found: dict | None) -> None:
    for part in ("delta", "low", "high"):
        row[(prefix, {"delta": "Δ", "low": "low", "high": "high"}[part])] = (
            found or {}).get(part)


def table(records: Records, models=None, suites=None) -> Table:
    """`pmbench table curve`: per checkpoint, tokens, held-out loss and each evaluated
    suite's metric, each with its paired Δ against the ratio-0 control and interval."""
    frame, evaluated = curve_points(records, models, suites)
    rows = []
    for _, p in frame.iterrows():
        row: dict[Any, Any] = {("", "group"): f"{p['kind']} · {p['model']} · #branch "
                               f"{p['branches']}", ("", "Setting"): setting_label(p),
                               ("", "Step"): p["step"], ("", "Tokens"): p["tokens"],
                               ("Held-out loss", "value"): p["loss"]}
        _interval_columns(row, "Held-out loss", p["loss_delta"])
        for suite in evaluated:
            label = f"{display_name(suite)} {metric(suite).label} (%)"
            row[(label, "value")] = p[f"{suite}.value"]
            _interval_columns(row, label, p[f"{suite}.delta"])
        rows.append(row)
    data = pd.DataFrame(rows)
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    formats = {c: (".3f" if c[0] == "Held-out loss" else ".1f") for c in data.columns if c[0]}
    formats[("", "Tokens")] = ",.0f"
    notes = [
        "One row per checkpoint (train.json `checkpoints`, every --save-every steps and the "
        "last). Tokens: training tokens fed up to it. Held-out loss: token-weighted "
        "cross-entropy on the run's held-out examples at its trained #branch.",
        "Δ: this run minus its control, the run of the same setting at rope_2d_ratio 0, at "
        "the same step; low, high: its 95% paired-bootstrap interval, over the same "
        "held-out examples (loss) or the same questions (metric, in points). Δ loss < 0 "
        "and Δ metric > 0: ratio > 0 is better. – where a run has no control here.",
        records.provenance()]
    return Table(None, "Learning curves: held-out loss and accuracy per checkpoint, against "
                 "the ratio-0 control", data, formats, notes, row_group=[("", "group")],
                 suffix="curve")


def figure(records: Records, models=None, suites=None):
    """`pmbench plot learning-curve`: per training group (kind, base model, #branch) with
    the most checkpoints, a column per measure (held-out loss, each evaluated suite's
    metric): its value against training tokens (top) and its paired Δ to the ratio-0
    control with the 95% interval as error bars (bottom), a line per setting."""
    import matplotlib.pyplot as plt

    from pmbench.report.plot_style import style_context

    frame, evaluated = curve_points(records, models, suites)
    group = frame.groupby(["kind", "model", "branches"]).size().idxmax()
    frame = frame[(frame["kind"] == group[0]) & (frame["model"] == group[1])
                  & (frame["branches"] == group[2])]
    measures = [("loss", "loss_delta", "held-out loss")] + [
        (f"{s}.value", f"{s}.delta", f"{display_name(s)} {metric(s).label} (%)")
        for s in evaluated]
    with style_context():
        fig, axes = plt.subplots(2, len(measures), squeeze=False, sharex=True,
                                 figsize=(4.2 * len(measures), 6.4))
        for k, (value, delta, label) in enumerate(measures):
            _draw_measure(axes[0][k], axes[1][k], frame, value, delta, label)
        fig.suptitle(f"Learning curves: {group[0]} of {group[1]}, #branch {group[2]}")
        axes[0][0].legend(fontsize="small")
    return fig


def _draw_measure(top, bottom, frame: pd.DataFrame, value: str, delta: str,
                  label: str) -> None:
    """One measure: values per setting (top), Δ to control with intervals (bottom)."""
    settings = frame.groupby(["rope2d.mask", "ratio", "settings.lora", "settings.seed"],
                             dropna=False, sort=True)
    # intervals of settings at the same step side by side, not on top of each other
    dodge = 0.012 * pd.to_numeric(frame["tokens"], errors="coerce").max()
    for k, (_, runs) in enumerate(settings):  # a setting keeps its colour in every panel
        runs = runs.sort_values("step")
        name, color = setting_label(runs.iloc[0]), f"C{k}"
        top.plot(runs["tokens"], pd.to_numeric(runs[value], errors="coerce"), marker="o",
                 label=name, color=color)
        found = [(t, d) for t, d in zip(runs["tokens"], runs[delta], strict=True)
                 if isinstance(d, dict)]
        if found:
            x = [t + (k - (settings.ngroups - 1) / 2) * dodge for t, _ in found]
            y = [d["delta"] for _, d in found]
            err = [[d["delta"] - d["low"] for _, d in found],
                   [d["high"] - d["delta"] for _, d in found]]
            bottom.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name, color=color)
    top.set_ylabel(label)
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel(f"Δ {label}\nvs ratio 0 (95% CI)")
    bottom.set_xlabel("training tokens")
