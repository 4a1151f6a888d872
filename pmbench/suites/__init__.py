"""Task suites: one YAML file each in the top-level `suites/` folder, read here.

A YAML names its implementation (`module:Class`), data files (role -> path: `eval`, and
`shots` where the few-shot examples live elsewhere), split, prompt pieces, few-shot count
and delimiters, stop strings and default max_new_tokens, and what reports need:
`display_name`, `primary_metric` and `metrics` (the accuracies, fractions in [0, 1] over
`metrics.n`, each with a `label` for headers and `words` for notes), `order` (its place
among the paper's suites), `family` (suites one table shows together, e.g. SQuAD v1.1 and
v2.0), `core` (Table 1 shows it even without records) and `version` (of its data). Tables,
figures and `pmbench compare` read these through :func:`suite_info` and the functions
below, so a suite's knowledge lives in its YAML only. `training` says which split
`pmbench train finetune` may train on (`Suite.training_split` divides it).

`include: FILE` merges another YAML under this one, as lm-evaluation-harness's task
configs do: the including file's top-level keys win. FILE is looked up beside the
including file, then in `suites/`; a file named `_*.yaml` is such a template, not a suite
(`_multiple_choice.yaml`: mmlu, ceval, race and quality). Adding a suite whose data looks
like an existing one is a YAML file; a new data format adds one small module.
`$PMBENCH_SUITES` may name extra folders of YAML files (os.pathsep-separated).
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pmbench.errors import BadInput
from pmbench.limits import MAX_GRID_BYTES
from pmbench.safe_io import load_yaml, read_regular
from pmbench.suites.base import Suite, TextGroup, TextQuestion, TrainingSplit, data_files

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
SUITES_ENV = "PMBENCH_SUITES"
TEMPLATE_PREFIX = "_"  # `_name.yaml` is a template other YAMLs include, not a suite
INCLUDE = "include"

__all__ = [
    "Metric", "Suite", "SuiteInfo", "TextGroup", "TextQuestion", "TrainingSplit",
    "available_suites", "core_suites", "display_name", "family_suites", "load_suite",
    "locate_data", "metric", "metric_keys", "primary_metric", "report_order", "suite_config",
    "suite_info", "training_suites",
]


def _yaml_files() -> dict[str, Path]:
    extra = [Path(p) for p in os.environ.get(SUITES_ENV, "").split(os.pathsep) if p]
    folders = [SUITES_DIR, *extra]
    return {f.stem: f for folder in folders for f in sorted(folder.glob("*.yaml"))
            if not f.name.startswith(TEMPLATE_PREFIX)}


def suite_config(name: str) -> dict[str, Any]:
    files = _yaml_files()
    if name not in files:
        raise BadInput(f"unknown suite {name!r}; valid: {', '.join(sorted(files))}")
    config = copy.deepcopy(_merged(files[name]))
    config["name"] = name
    return config


def _merged(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML at `path` with what it includes merged under it (its own keys win)."""
    config = dict(_read_yaml(path, path.stat().st_mtime_ns))
    base = config.pop(INCLUDE, None)
    if base is None:
        return config
    found = _include_path(path, base)
    if found in seen or found == path:
        raise BadInput(f"{path}: include {base!r} includes itself")
    return {**_merged(found, (*seen, path)), **config}


def _include_path(path: Path, base: Any) -> Path:
    """Where `include: base` of the YAML at `path` points: beside it, else in `suites/`."""
    if not isinstance(base, str) or not base:
        raise BadInput(f"{path}: include takes a file name, got {base!r}")
    candidates = [path.parent / base, SUITES_DIR / base]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise BadInput(f"{path}: include {base!r} not found (looked in {path.parent} and "
                       f"{SUITES_DIR})")
    return found.resolve()


@functools.lru_cache(maxsize=64)
def _read_yaml(path: Path, mtime_ns: int) -> dict[str, Any]:
    """A parsed YAML file, cached until the file changes (reports ask per row); bounded as
    every YAML pmbench reads (pmbench.safe_io), a mapping or bad input naming the file."""
    text = (read_regular(path, MAX_GRID_BYTES, follow=True) or b"").decode("utf-8")
    try:
        config = load_yaml(text, path)
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{path}: a suite's YAML is a mapping of keys")
    return config


def available_suites() -> dict[str, str]:
    """Suite name -> one-line description, from the YAML files."""
    return {name: suite_config(name).get("description", "") for name in sorted(_yaml_files())}


def suite_class(config: dict[str, Any]) -> type[Suite]:
    module, _, cls = config["implementation"].partition(":")
    return getattr(importlib.import_module(module), cls)


def locate_data(name: str, data_dir: str | Path | None = None, split: str | None = None
                ) -> Path | None:
    """The folder suite `name` reads its data from (`pmbench.suites.data.resolve`: the hub
    copy is fetched when nothing local has it and the hub is reachable), or BadInput:
    the check a run makes before anything slow. None for a suite that reads no files
    (synthetic makes its questions)."""
    from pmbench.suites import data as data_mod
    from pmbench.suites.base import data_spec

    config = suite_config(name)
    split = split or config["split"]
    if split not in config["splits"]:  # as the suite says it, before looking for its files
        raise BadInput(f"suite {name} has no split {split!r}; valid: {', '.join(config['splits'])}")
    spec = data_spec(config, split)
    if not spec.files:
        return None
    return data_mod.resolve(spec, data_dir, lambda root: suite_class(config).fetch(config, root))


def load_suite(name: str, tokenizer: Any, **options: Any) -> Suite:
    """Read suite `name` into token-level groups (see `Suite.__init__` for the options)."""
    config = suite_config(name)
    return suite_class(config)(config, tokenizer, **options)


# --- what reports need to know about a suite ------------------------------------------


REDUCERS = ("mean", "min")  # how a metric's unit folds its samples' values


@dataclass(frozen=True)
class Metric:
    """One accuracy-type metric of a suite: its key in run.json's `metrics`, its `label`
    in table headers and figure legends, and its `words` in the notes under a table.

    `sample` names the samples.jsonl field that scores one question for it (None: the
    metric is not a mean over questions, and has no paired test); the metric is the mean
    over units of that field, a unit being a question or, with `unit`, the samples that
    share that field's value, folded by `reduce` (HumanEval: a problem's samples, mean).
    """

    key: str
    label: str
    words: str
    sample: str | None = None
    unit: str | None = None
    reduce: str = "mean"


@dataclass(frozen=True)
class SuiteInfo:
    """A suite's YAML as reports and data look-ups read it (no tokenizer, no data)."""

    name: str
    display_name: str
    primary_metric: str
    metrics: tuple[Metric, ...]  # in the order `pmbench compare` lists them
    data_files: dict[str, str]  # role -> path under the data folder, `{split}` filled in
    hub: str
    split: str
    answer: str = "prediction"  # the samples.jsonl field holding the extracted answer
    order: int | None = None  # its place among the paper's suites (None: after them)
    family: str = ""  # the suites one table shows together share it (default: its name)
    core: bool = False  # Table 1 shows its column even when no record has it
    version: str | None = None  # of its data, where a suite has several (SQuAD 1.1, 2.0)

    def metric(self, key: str | None = None) -> Metric:
        """Metric `key` (default: the primary one)."""
        key = key or self.primary_metric
        return next((m for m in self.metrics if m.key == key), Metric(key, key, key))


def suite_info(name: str, split: str | None = None) -> SuiteInfo:
    """What suite `name`'s YAML says (its data files for `split`, default its own)."""
    config = suite_config(name)
    metrics = tuple(_metric(name, key, m) for key, m in (config.get("metrics") or {}).items())
    primary = config.get("primary_metric") or (metrics[0].key if metrics else "acc")
    version = config.get("version")
    return SuiteInfo(name, config.get("display_name", name), primary, metrics,
                     data_files(config, split), config["data"]["hub"], split or config["split"],
                     str(config.get("answer", "prediction")), _order(name, config.get("order")),
                     str(config.get("family") or name), config.get("core") is True,
                     None if version is None else str(version))


def _order(suite: str, order: Any) -> int | None:
    if order is not None and (not isinstance(order, int) or isinstance(order, bool)):
        raise BadInput(f"suite {suite}: order {order!r} is not an integer")
    return order


def _metric(suite: str, key: str, spec: dict[str, Any]) -> Metric:
    """A `metrics:` entry of suite `suite`'s YAML; a bad `reduce` is the YAML's fault."""
    reduce = str(spec.get("reduce", "mean"))
    if reduce not in REDUCERS:
        raise BadInput(f"suite {suite}: metric {key}: reduce {reduce!r} is not one of "
                       f"{', '.join(REDUCERS)}")
    optional = {k: str(spec[k]) for k in ("sample", "unit") if spec.get(k) is not None}
    label = str(spec.get("label", key))
    return Metric(key, label, str(spec.get("words", label)), reduce=reduce, **optional)


def _known(name: str) -> SuiteInfo | None:
    """`suite_info(name)`, or None for a suite no YAML describes (a record from elsewhere)."""
    return suite_info(name) if isinstance(name, str) and name in _yaml_files() else None


def _all_metrics() -> list[str]:
    """Every declared metric key: the suites' primary metrics first, then the others."""
    infos = [suite_info(n) for n in sorted(_yaml_files())]
    keys = [i.primary_metric for i in infos] + [m.key for i in infos for m in i.metrics]
    return list(dict.fromkeys(keys))


def display_name(name: str) -> str:
    """The suite as tables and figures name it ("C-Eval"); an unknown suite by its name."""
    info = _known(name)
    return info.display_name if info else name


def primary_metric(name: str, metrics: Mapping[str, Any] | None = None) -> str:
    """The suite's headline accuracy (Table 1's "Acc"). For a suite no YAML describes:
    the first metric of `metrics` (a record's) that some suite declares, else "acc"."""
    info = _known(name)
    if info:
        return info.primary_metric
    return next((k for k in _all_metrics() if metrics and k in metrics), "acc")


def metric_keys(name: str) -> tuple[str, ...]:
    """The suite's accuracies over all its questions, which `pmbench compare` checks; for
    a suite no YAML describes, every metric key some suite declares."""
    info = _known(name)
    return tuple(m.key for m in info.metrics) if info else tuple(_all_metrics())


def metric(name: str, key: str | None = None) -> Metric:
    """Metric `key` of suite `name` (default its primary) with its label and words; for a
    suite no YAML describes, a generic "Acc" / "accuracy"."""
    info = _known(name)
    return info.metric(key) if info else Metric(key or "acc", "Acc", "accuracy")


def report_order() -> tuple[str, ...]:
    """The suites that have an `order`, in it: the paper's order of suites (Table 1's
    columns, every table's rows); reports put the others after them."""
    infos = [suite_info(n) for n in _yaml_files()]
    return tuple(i.name for i in sorted((i for i in infos if i.order is not None),
                                        key=lambda i: (i.order, i.name)))


def _in_report_order(names: list[str]) -> tuple[str, ...]:
    order = report_order()
    return tuple(sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n)))


def core_suites() -> tuple[str, ...]:
    """The suites Table 1 always shows (YAML `core: true`), in report order."""
    return _in_report_order([n for n in _yaml_files() if suite_info(n).core])


def family_suites(family: str) -> tuple[str, ...]:
    """The suites of `family` (YAML `family`, default the suite's name), in report order."""
    return _in_report_order([n for n in _yaml_files() if suite_info(n).family == family])


def training_suites() -> tuple[str, ...]:
    """The suites that offer a training split (YAML `training`), in name order."""
    return tuple(n for n in sorted(_yaml_files()) if suite_config(n).get("training"))
