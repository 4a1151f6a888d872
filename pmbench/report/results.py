"""Read the records under a results folder, skipping what is not a valid record.

A results folder holds one sub-folder per run; folders from several shards (or a
committed baseline under ``results/baseline/``) merge by copying, so every record file
is found recursively. Three record files are read, by name:

- ``run.json`` (``pmbench run``): the DESIGN run record. Metrics are fractions in [0, 1]
  (tables show them in %); ``throughput`` and ``latency`` values are medians over
  repeats and ``throughput.repeats`` holds each repeat's value. ``ignore_eos`` tells a
  throughput run from an accuracy run (:func:`run_purpose`).
- ``train.json`` (``pmbench train``): ``run_id, created, kind ("pretrain"|"finetune"),
  model, rope2d {ratio, mode, branch_freqs, mask}, branches, steps, loss_curve
  [[step, loss], ...], heldout_loss {"<#branch>": loss}, data_split, wall_s, checkpoint``.
- ``attention.json`` (``pmbench attn``), the shape Table 4 reads::

      {"run_id", "created", "kind": "attention", "model", "suite", "branch",
       "rope2d": {ratio, mode, branch_freqs, mask},
       "summary": {
         "context_mass", "own_branch_mass", "other_branch_mass",
             # share of the attention of branch tokens that lands on the shared context,
             # on the token's own branch and on other branches; mean over layers, heads
             # and queries; the three sum to 1 (other is 0 under the isolated mask)
         "time_focus_mean", "branch_focus_mean",     # the two head scores, mean over heads
         "heads": {"time": n, "branch": n, "mixed": n, "context": n}},  # heads per label
       "per_layer": [{"layer", "context_mass", "own_branch_mass", "other_branch_mass",
                      "time_focus_mean", "branch_focus_mean"}, ...],
       "figures": ["heatmap_grid.png", ...]}      # paths relative to the record's folder

A file that does not parse, lacks the keys above (partial or foreign), or holds a run
whose ``status`` is not ``complete`` is skipped with a :class:`RecordWarning` naming the
file, so one bad file never stops a table from building; so is one that is a link, a FIFO
or a device, larger than MAX_RECORD_BYTES or nested too deeply (pmbench.records.safe_io:
never followed, never blocking, never a crash).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from numbers import Real  # numpy's integers too
from pathlib import Path
from typing import Any

import pandas as pd

from pmbench.errors import BadInput, PmbenchWarning
from pmbench.records.run_record import BadRunRecord, RunRecord
from pmbench.records.store import read_record
from pmbench.records.train import CHECKPOINTS_DIR
from pmbench.rope2d.settings import KEY as ROPE2D
from pmbench.rope2d.settings import RECORD_COLUMNS

RECORD_FILES = {"run.json": "run", "train.json": "train", "attention.json": "attention"}

# Keys without which a record cannot be placed in a table, with the type each must have.
# (A run record's are its dataclass's: records.run_record.RunRecord.)
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "train": {"run_id": str, "created": str, "kind": str, "model": str, ROPE2D: dict,
              "branches": int, "heldout_loss": dict},
    "attention": {"run_id": str, "created": str, "kind": str, "model": str, "branch": int,
                  "summary": dict},
}
_KINDS = {"train": ("pretrain", "finetune"), "attention": ("attention",)}



class RecordWarning(PmbenchWarning):
    """A file under the results folder was skipped; the message names it and says why."""


@dataclass
class Records:
    """Valid records by kind, each a dict with ``_path`` (its file) added."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    train: list[dict[str, Any]] = field(default_factory=list)
    attention: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    root: Path | None = None  # the folder (or file) they were read from
    left_out: dict[Path, int] = field(default_factory=dict)  # committed folder -> files

    def provenance(self) -> str:
        """Which folder and how many records a table or figure read, and what it left out."""
        n = len(self.runs) + len(self.train) + len(self.attention)
        line = f"Records: {n} read from {self.root}" if self.root else f"Records: {n}"
        if self.skipped:
            line += f" ({len(self.skipped)} unreadable file(s) skipped)"
        if self.left_out:
            folders = ", ".join(f"{p} ({k})" for p, k in sorted(self.left_out.items()))
            line += (f"; committed records left out: {folders} (point --results there, or "
                     "--include-committed)")
        return line + "."

    def frame(self, kind: str) -> pd.DataFrame:
        """Records of `kind` ("runs", "train", "attention") as a flat frame (``a.b`` columns).

        ``rope2d`` is made a dict everywhere (empty for methods without it) so its
        fields are columns; ``created`` becomes a UTC timestamp; ``record`` keeps each
        record as read, for fields keyed by data (``heldout_loss``, ``summary``).
        """
        records = getattr(self, kind)
        rows = [{**r, ROPE2D: r.get(ROPE2D) or {}} for r in records]
        df = pd.json_normalize(rows, sep=".") if rows else pd.DataFrame()
        df["record"] = pd.Series(records, index=df.index, dtype=object)
        for col in RECORD_COLUMNS:
            if col not in df:
                df[col] = None
        if "created" in df:
            df["created"] = pd.to_datetime(df["created"], utc=True, format="ISO8601")
        return df


def _problem(kind: str, record: Any) -> str | None:
    """Why `record` is not a usable record of `kind`, or None when it is."""
    if not isinstance(record, dict):
        return f"not a pmbench {kind} record (a JSON {type(record).__name__})"
    if record.get("status", "complete") != "complete":
        return f"incomplete run (status {record['status']!r})"
    missing = [k for k in _REQUIRED[kind] if k not in record]
    if missing:
        return f"not a complete pmbench {kind} record (missing {', '.join(missing)})"
    for key, typ in _REQUIRED[kind].items():
        if not isinstance(record[key], typ) or isinstance(record[key], bool):
            return f"field {key!r} has the wrong type ({type(record[key]).__name__})"
    if kind in _KINDS and record["kind"] not in _KINDS[kind]:
        return f"kind {record['kind']!r} is not one of {', '.join(_KINDS[kind])}"
    if problem := _bad_figures(kind, record):
        return problem
    try:
        datetime.fromisoformat(record["created"])
    except ValueError:
        return f"created {record['created']!r} is not an ISO time"
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def nonzero_seed(row: Any) -> Real | None:
    """A training run's seed (its `settings.seed` column) when a label must name it: a
    number other than 0 (numpy's integers too); None for seed 0, a missing one, or NaN."""
    seed = row.get("settings.seed")
    return seed if isinstance(seed, Real) and seed == seed and seed else None


def _bad_figures(kind: str, record: dict[str, Any]) -> str | None:
    """Why the figures tables read are unusable (None when they are fine): each held-out
    loss must be a number (a run record's figures: RunRecord.from_dict)."""
    if kind == "train":
        for key, value in record["heldout_loss"].items():
            if not is_number(value):
                return f"heldout_loss.{key} {value!r} is not a number"
    return None


COMMITTED = "COMMITTED"  # a folder holding this file holds records committed to the repo


def _committed(path: Path, root: Path) -> Path | None:
    """The committed folder below `root` that holds `path`, if any."""
    for folder in path.parents:
        if folder == root:
            return None
        if (folder / COMMITTED).is_file():
            return folder
    return None


def load(root: str | Path, kinds: tuple[str, ...] = tuple(RECORD_FILES.values()),
         include_committed: bool = False) -> Records:
    """All valid records of `kinds` ("run", "train", "attention") under `root` (a folder,
    searched recursively, or one record file).

    Records the repository ships (folders holding a COMMITTED file: the CI baseline, the
    reference experiment) are the user's only when asked for: read when `root` is such a
    folder or inside one, or with `include_committed`; else left out and counted."""
    root = Path(root)
    names = [name for name, kind in RECORD_FILES.items() if kind in kinds]
    if root.is_file():
        files = [root] if root.name in names else []
    else:
        # a link or a FIFO by a record's name is listed, to be skipped with a warning
        files = sorted(p for name in names for p in root.rglob(name)
                       if p.is_symlink() or not p.is_dir())
    records = Records(root=root)
    asked = include_committed or any((p / COMMITTED).is_file() for p in [root, *root.parents])
    for path in files:
        folder = None if asked else _committed(path, root)
        if folder is not None:
            records.left_out[folder] = records.left_out.get(folder, 0) + 1
            continue
        kind = RECORD_FILES[path.name]
        try:
            record = read_record(path, f"{kind} record")
            if kind == "run":  # read through its type, as the run wrote it
                record = RunRecord.from_dict(record, complete=True).to_dict()
            problem = None if kind == "run" else _problem(kind, record)
        except (BadInput, BadRunRecord) as exc:  # unreadable, unsafe, a newer schema, invalid
            problem = getattr(exc, "reason", None) or str(exc)
        if problem:
            records.skipped.append((path, problem))
            warnings.warn(f"skipped {path}: {problem}", RecordWarning, stacklevel=2)
            continue
        record["_path"] = str(path)
        {"run": records.runs, "train": records.train, "attention": records.attention}[
            kind
        ].append(record)
    return records


def repeat_range(run: dict[str, Any], metric: str) -> tuple[float, float] | None:
    """[min, max] of throughput `metric` over a run's repeats (None when not measured)."""
    tp = run.get("throughput") or {}
    values = [v for v in (tp.get("repeats") or {}).get(metric) or []
              if isinstance(v, int | float)]
    if values:
        return min(values), max(values)
    lo, hi, median = tp.get(f"{metric}_min"), tp.get(f"{metric}_max"), tp.get(metric)
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        return lo, hi
    return (median, median) if isinstance(median, int | float) else None


def newest(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per cell of `keys`: the newest record by ``created``.

    Adds ``n_records``: how many records fitted the cell (1 when nothing was merged).
    """
    if df.empty:
        return df.assign(n_records=pd.Series(dtype=int))
    df = df.sort_values("created", kind="stable")
    counts = df.groupby(keys, dropna=False, sort=False)["created"].transform("size")
    return df.assign(n_records=counts).drop_duplicates(keys, keep="last")


def merged_note(*frames: pd.DataFrame) -> str | None:
    """A line saying how many cells merged several records, or None when none did."""
    counts = [n for df in frames if "n_records" in df for n in df["n_records"] if n > 1]
    if not counts:
        return None
    cells = "1 cell" if len(counts) == 1 else f"{len(counts)} cells"
    return (f"Merged: {cells} had several records ({sum(counts)} in all); "
            "each shows its newest record.")


def run_purpose(record: pd.Series | dict[str, Any]) -> str:
    """"throughput" for a run made with ``--ignore-eos``, else "accuracy".

    A throughput run generates a fixed token budget per question whatever the model
    says, so its tok/s compares methods at equal token volume but its accuracy is not
    the suite's; an accuracy run stops where the suite stops, so its accuracy (and its
    questions per second) is the real one. Records without the key are accuracy runs.
    A model with random weights (``--model random:NAME``) only ever makes throughput runs.
    """
    if record.get("ignore_eos") is True or record.get("weights") == "random":
        return "throughput"
    return "accuracy"


def suite_version(record: pd.Series | dict[str, Any]) -> str | None:
    """The SQuAD version a run scored ("v1.1" or "v2.0"), None for other suites.

    The suite name says it (``squad``, ``squad_v2``); for a renamed suite the data file
    in ``suite_info`` does.
    """
    suite = record.get("suite")
    files = " ".join(map(str, (record.get("suite_info") or {}).get("data_files") or []))
    if suite == "squad_v2" or "v2.0" in files:
        return "v2.0"
    if suite == "squad" or "v1.1" in files:
        return "v1.1"
    return None


def runners() -> dict[str, Any]:
    """The runner classes by method name: what each method declares about how it shows up
    in tables, figures and compare (`pmbench.engine.runners.base`)."""
    from pmbench.engine.runners.base import available_runners

    return available_runners()


def reference_method() -> str | None:
    """The method every other is judged against: its runner's `baseline` (sequential)."""
    from pmbench.engine.runners.base import baseline_method

    return baseline_method()


def method_label(row: pd.Series | dict[str, Any]) -> str:
    """A run's method as its runner labels it from the run's own settings (its
    `record_columns`; a method no runner declares reads as its name): "rope2d r=0",
    "prefix copied".

    `row` is a record (``rope2d`` a dict) or a row of :meth:`Records.frame` (flat
    ``rope2d.mode`` ... columns)."""
    runner = runners().get(row["method"])
    if runner is None:
        return row["method"]
    return runner.label({column: record_field(row, column) for column in runner.record_columns})


def record_field(row: pd.Series | dict[str, Any], column: str) -> Any:
    """A record's field by its table column (``block.field`` for a nested block's field),
    from a record or a frame row; None where it has none."""
    if column in row.keys():
        return row[column]
    block, _, name = column.partition(".")
    nested = row.get(block) if name else None
    return nested.get(name) if isinstance(nested, dict) else None


def model_names(run: dict[str, Any]) -> list[str]:
    """Every spelling of a run's model: ``model`` (for a local folder, only its name) and
    the path as given on the command line (``settings.model``, ``model_path``)."""
    names = [run.get("model"), (run.get("settings") or {}).get("model"), run.get("model_path")]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint saved during training, `<run>/checkpoints/step-N`
    (pmbench.records.train.checkpoint_path); None for anything else (a run's final
    `checkpoint` included)."""
    parts = Path(name).parts
    found = re.fullmatch(r"step-(\d+)", parts[-1]) if len(parts) >= 2 else None
    return int(found[1]) if found and parts[-2] == CHECKPOINTS_DIR else None


def intermediate_checkpoint(name: str) -> bool:
    """Whether `name` is a checkpoint saved during training, not the run's final one."""
    return checkpoint_step(name) is not None


def trained_by(names: str | list[str], train_records: list[dict[str, Any]],
               intermediate: bool = False) -> dict[str, Any] | None:
    """The training record whose checkpoint a run's model is (`names`: its spellings).

    A name matches a training run when it equals the checkpoint or the training run_id,
    when the training run_id is one of its path's folders, or when both paths resolve
    to the same folder. The newest matching training run wins. A checkpoint saved during
    training (`intermediate_checkpoint`) matches only with `intermediate`: the tables of
    trained models read the final one, the learning curves (report.curve) every one.
    """
    names = [names] if isinstance(names, str) else names
    if not intermediate:
        names = [n for n in names if not intermediate_checkpoint(n)]
    for rec in sorted(train_records, key=lambda r: r["created"], reverse=True):
        checkpoint = str(rec.get("checkpoint") or "")
        for name in names:
            if name in (checkpoint, rec["run_id"]) or rec["run_id"] in Path(name).parts:
                return rec
            if checkpoint and Path(name).exists() and Path(name).resolve() == Path(
                checkpoint
            ).resolve():
                return rec
    return None


def canonical_model(run: dict[str, Any], train_records: list[dict[str, Any]]) -> str:
    """The checkpoint of the training run a run's model comes from, else its ``model``.

    One checkpoint spelled two ways (relative and absolute path, or only the folder name
    ``checkpoint`` in ``model``) is then one table row.
    """
    rec = trained_by(model_names(run), train_records)
    return str(rec.get("checkpoint") or run["model"]) if rec else run["model"]
