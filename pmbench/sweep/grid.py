"""Sweeps: run every cell of a grid file, each cell in its own `pmbench` process.

Two kinds of grid (YAML), told apart by `kind`:

**kind: run** (the default) crosses axes into `pmbench run` cells:

    name: table5                 # used in cell ids; default: the file's stem
    models: [smollm2-135m-instruct, Qwen/Qwen2.5-1.5B-Instruct]   # default: the default model
    methods: [sequential, batch, rope2d]
    branches: [1, 2, 4, 8]       # --branch: questions per group
    suites: [squad]
    rope2d:                      # crossed with rope2d cells only; default: the model's own
      - {ratio: 0.5, mode: split, branch_freqs: interleaved, mask: isolated}
      - {}                       # {} = the model's config.json settings, or the defaults
    options:                     # any `pmbench run` option, by its long name
      limit: 64
      max_new_tokens: 32
      ignore_eos: true
      repeats: 3
    exclude:                     # drop cells matching every key given
      - {method: sequential, branch: 8}
    include:                     # add single cells (axis keys, rope2d, options)
      - {method: llamacpp, suite: squad, branch: 8}
    throughput:                  # makes every cell two runs: accuracy + throughput
      max_new_tokens: 64         # default 64
      repeats: 5                 # default: `pmbench run`'s for --ignore-eos (5)
      # any other `pmbench run` option, for the throughput runs only

An axis entry may be a mapping that carries options for its cells, e.g.
`suites: [squad, {name: mmlu, max_new_tokens: 1}]`; options merge in the order grid
`options` < model < suite < method < `--set` on the command line (strongest). A single
value may stand for a one-element list (`suites: squad`). A method entry may also carry
its own `branches`, which replace the grid's for that method, e.g.
`methods: [{name: sequential, branches: [1]}, {name: rope2d, branches: [2, 4, 8]}]`;
the top-level `branches` may then be left out if every method entry gives its own.

With a `throughput:` block every cell (after `exclude`, includes too) is two runs, as the
tables need (Acc from the first, tok/s from the second; the record's `ignore_eos` tells
them apart): the *accuracy run*, the grid's options as they are, with the suite's own
stopping and token budget (so they must not set ignore_eos), then the *throughput run*,
the same cell plus `ignore_eos: true` and the block's options (`--set` still wins).

Cell ids are readable and deterministic, `sweep-<grid>-<method>-<suite>-b<N>-<hash8>`, and
`sweep-<grid>-<method>-<suite>-b<N>-tp-<hash8>` for a throughput run, where the hash
covers every parameter of the cell, so an edited grid makes new cells instead of reusing
old records.

**kind: train** lists `pmbench train pretrain | finetune` runs (Tables 2 and 3):

    kind: train
    options: {branches: 4, seed: 0}          # shared by every run
    runs:
      - {id: table2-pre-r0.5, command: pretrain, size: cpu-tiny, rope_2d_ratio: 0.5}

An entry's keys (`pmbench train` long option names) override `options`; `id` is the run
id, used as given because evaluation grids name `results/<id>/checkpoint`.

**Staged grids** chain such grids, e.g. training and then evaluating the checkpoints
(the reference experiment, suites/grids/reference-cpu.yaml):

    name: reference-cpu
    output_dir: results/reference/cpu-smollm2    # the default --output-dir of this grid
    stages:
      - {stage: train, kind: train, options: {..}, runs: [{id: ft-r0.5, ..}]}
      - {stage: eval, models: [results/reference/cpu-smollm2/ft-r0.5/checkpoint], ..}

Each stage is a grid of either kind (without `name` or `output_dir`, which are the whole
grid's); cells run stage after stage and `--stage NAME` runs one stage. A run cell whose
model is `<folder>/<id>/checkpoint` of one of the grid's training runs waits while
another process (another shard) trains it, and fails at once when that training failed
or was never started. A run cell that an earlier stage already has runs once, there.
A model entry `{checkpoints: <folder>/<id>}` stands for every checkpoint training run
`<id>` of an earlier stage saves (`checkpoints/step-N` every `save_every` steps, then
`checkpoint`), its other keys options of each: the learning-curve points
(pmbench.report.curve).

In both kinds option names take "_" or "-", and every cell is checked before anything
runs, by the run spec's own validation (pmbench.jobs.spec) or the training settings'
(pmbench.train.settings): a bad grid is bad input, not a crash an hour in. A cell is
done when `<output-dir>/<id>/run.json` (train.json) exists with status "complete"; one
left "running" by an interruption is continued with `--resume <id>`
(pmbench.sweep.supervise runs the cells).

A grid of any kind may name the resources of each cell's Slurm job, for
`pmbench sweep --executor slurm` (pmbench.sweep.slurm; the command line's --partition,
--gpus-per-cell, ... win):

    slurm: {partition: gpu, gpus_per_cell: 1, cpus_per_cell: 8, mem: 64G, time: "4:00:00",
            options: {account: myproj}}     # options: any other sbatch option

`--shard I/N` keeps cells whose position in the expanded list is I-1 modulo N (a
throughput run counts with its accuracy run and goes to the same shard): shards are
disjoint, balanced and cover the grid, so a Slurm array, several GPUs or several
machines can split it, and their record folders merge by copying. The assignment
depends on the list order, so every shard must read the same grid file.

A grid may come from anyone, so reading it is bounded (pmbench.limits): at most
MAX_GRID_BYTES of YAML, at most MAX_YAML_NODES nodes once its aliases expand (anchors
are fine, an alias bomb is one line), and at most MAX_CELLS cells unless the caller says
more (`pmbench sweep --max-cells N`), counted from the axes' lengths before any cell is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from pmbench.errors import BadInput
from pmbench.limits import MAX_CELLS, MAX_GRID_BYTES
from pmbench.safe_io import load_yaml, read_regular
from pmbench.sweep.options import check_keys, safe_name, yaml_problem
from pmbench.sweep.run_cells import Cell, expand_run, planned_run_cells
from pmbench.sweep.train_cells import TrainCell, expand_train

KINDS = ("run", "train")
STAGED_KEYS = {"name", "description", "output_dir", "stages", "slurm"}
STAGE_KEY = "stage"  # a stage's own name (for --stage), not part of its cells' ids

AnyCell = Cell | TrainCell


def expand_grid(raw: Any, name: str, overrides: Mapping[str, Any] | None = None,
                max_cells: int | None = MAX_CELLS) -> list[AnyCell]:
    """Every cell of a parsed grid file, in a fixed order.

    `name` is the grid's name unless the file gives one; `overrides` are options applied
    to every cell, strongest of all (`--set`). A grid of more than `max_cells` cells (None:
    no cap) is bad input, found before any cell is made.
    """
    if not isinstance(raw, Mapping):
        raise BadInput("a grid file must hold a mapping (keys: models, methods, ...)")
    if max_cells is not None and (n := planned_cells(raw)) > max_cells:
        raise BadInput(f"the grid expands to {n:,} cells, over the cap of {max_cells:,} "
                       f"(a mistake, or a grid that runs for ever); pass --max-cells {n} "
                       "to run it anyway")
    grid = safe_name(str(raw.get("name") or name))
    if "stages" in raw:
        return _expand_stages(raw, grid, overrides)
    kind = raw.get("kind", "run")
    if kind not in KINDS:
        raise BadInput(f"grid kind {kind!r} is not supported; valid: {', '.join(KINDS)}")
    if kind == "train":
        return expand_train(raw, grid, overrides)
    return expand_run(raw, grid, overrides)


def _expand_stages(raw: Mapping[str, Any], grid: str,
                   overrides: Mapping[str, Any] | None) -> list[AnyCell]:
    """A staged grid: its stages' cells, stage after stage (each stage a train or run grid
    named by `stage:`; every cell id uses the grid's name). `--set` applies to the run
    stages only: train and run commands take different options."""
    check_keys(raw, STAGED_KEYS, "staged")
    stages = raw["stages"]
    if not isinstance(stages, list) or not stages or not all(isinstance(s, Mapping)
                                                             for s in stages):
        raise BadInput("grid stages: a list of grids (mappings), each with a `stage` name")
    cells: list[AnyCell] = []
    names: list[str] = []
    for k, stage in enumerate(stages, 1):
        stage = dict(stage)
        stage_name = safe_name(str(stage.pop(STAGE_KEY, f"stage{k}")))
        if stage_name in names:
            raise BadInput(f"grid stages: two stages named {stage_name!r}")
        names.append(stage_name)
        if {"stages", "name", "output_dir", "slurm"} & set(stage):
            raise BadInput(f"grid stage {stage_name}: 'stages', 'name', 'output_dir' and "
                           "'slurm' belong to the whole grid")
        train = stage.get("kind") == "train"
        if not train and isinstance(stage.get("models"), list):
            stage["models"] = checkpoint_models(stage["models"], cells, stage_name)
        stage_cells = expand_grid({**stage, "name": grid}, grid,
                                  None if train else overrides, max_cells=None)
        seen = {c.id for c in cells}
        for cell in stage_cells:
            if cell.id in seen and cell.kind == "train":
                raise BadInput(f"grid stages: training run {cell.id} is in two stages")
            if cell.id not in seen:  # a run cell an earlier stage has: it runs once, there
                cells.append(replace(cell, stage=stage_name))
    return cells


def checkpoint_models(models: list[Any], cells: list[AnyCell], stage: str) -> list[Any]:
    """A run stage's `models` with each `{checkpoints: <folder>/<train id>, ...}` entry
    replaced by that earlier training run's checkpoints, in step order: one every
    `save_every` steps (`<folder>/<id>/checkpoints/step-N`) and the final `checkpoint`.
    The entry's other keys are options of every one of them (as a model entry's are)."""
    trainings = {c.id: c for c in cells if c.kind == "train"}
    out: list[Any] = []
    for entry in models:
        if not isinstance(entry, Mapping) or "checkpoints" not in entry:
            out.append(entry)
            continue
        folder = Path(str(entry["checkpoints"]))
        training = trainings.get(folder.name)
        if training is None:
            raise BadInput(f"grid stage {stage}: checkpoints of {folder}: no earlier stage "
                           f"trains a run {folder.name!r}")
        rest = {k: v for k, v in entry.items() if k not in ("checkpoints", "name")}
        out += [{"name": str(path), **rest} for path in checkpoint_paths(folder, training)]
    return out


def checkpoint_paths(folder: Path, training: TrainCell) -> list[Path]:
    """The checkpoints training run `training` (in `folder`) leaves, in step order."""
    from pmbench.records.train import CHECKPOINT_DIR, checkpoint_path
    from pmbench.train.settings import from_options

    settings = from_options(training.command, {k: v for k, v in training.options.items()
                                               if k not in ("json_out", "quiet")})
    every, steps = settings.save_every, int(settings.steps or 0)
    saved = range(every, steps, every) if every else range(0)
    return [checkpoint_path(folder, step) for step in saved] + [folder / CHECKPOINT_DIR]


def planned_cells(raw: Mapping[str, Any]) -> int:
    """The cells a grid expands to at most (before `exclude`), from the lengths of its
    lists alone: cheap however large the grid, and not fooled by a malformed one (its
    expansion reports that)."""
    stages = raw.get("stages")
    if isinstance(stages, list):
        return sum(planned_cells(s) for s in stages if isinstance(s, Mapping))
    if raw.get("kind") == "train":
        runs = raw.get("runs")
        return len(runs) if isinstance(runs, list) else 1
    return planned_run_cells(raw)


def stage_names(cells: Iterable[AnyCell]) -> list[str]:
    """The stages of a grid's cells, in order (empty for a grid without stages)."""
    return list(dict.fromkeys(c.stage for c in cells if c.stage))


def pick_stage(cells: list[AnyCell], stage: str | None) -> list[AnyCell]:
    """Only the cells of `stage` (None: all)."""
    if stage is None:
        return cells
    names = stage_names(cells)
    if stage not in names:
        raise BadInput(f"no stage {stage!r} in this grid; stages: {', '.join(names) or 'none'}")
    return [c for c in cells if c.stage == stage]


def load_grid(path: str | Path, overrides: Mapping[str, Any] | None = None,
              max_cells: int | None = MAX_CELLS) -> list[AnyCell]:
    """Read, validate and expand a grid file."""
    return expand_grid(read_grid(path), Path(path).stem, overrides, max_cells)


def grid_output_dir(raw: Any) -> str | None:
    """The grid's own `output_dir` (where its records belong), if it names one."""
    value = raw.get("output_dir") if isinstance(raw, Mapping) else None
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise BadInput(f"grid output_dir: expected a folder name, got {value!r}")
    return value


def grid_slurm(raw: Any) -> Any:
    """The grid's `slurm:` block (the resources of each cell's job; checked by
    pmbench.sweep.slurm.slurm_resources), or None."""
    return raw.get("slurm") if isinstance(raw, Mapping) else None


def read_grid(path: str | Path) -> Any:
    """The parsed YAML of a grid file (bad input when missing, not a regular file, over
    MAX_GRID_BYTES, not YAML, or larger than MAX_YAML_NODES once its aliases expand).
    The user named it, so a link to a grid is followed."""
    path = Path(path)
    try:
        data = read_regular(path, MAX_GRID_BYTES, follow=True)
        if data is None:
            raise FileNotFoundError(path)
        raw = load_yaml(data.decode("utf-8"), path)
    except FileNotFoundError:
        raise BadInput(f"grid file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"grid file {path} is not UTF-8 text ({exc.reason} at byte "
                       f"{exc.start})") from None
    except OSError as exc:
        raise BadInput(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"grid file {path} is not valid YAML: {yaml_problem(exc)}") from None
    return raw


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' (1-based) -> (I, N)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise BadInput(f"--shard expects I/N like 1/4, got {text!r}")
    i, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= i <= n:
        raise BadInput(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def shard(cells: list[AnyCell], which: tuple[int, int] | None) -> list[AnyCell]:
    """The I-th of N disjoint round-robin slices of `cells`; a throughput run stays with
    the accuracy run before it (else, with N even, some shards would get only one kind)."""
    if which is None:
        return list(cells)
    i, n = which
    out, position = [], -1
    for cell in cells:
        if not getattr(cell, "throughput", False):
            position += 1
        if position % n == i - 1:
            out.append(cell)
    return out
