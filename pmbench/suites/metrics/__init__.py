"""pmbench's metrics, each an `evaluate` module in this folder, and the helpers suites share.

`squad.py`, `gsm8k.py`, `pass_at_k.py` and `multirc.py` are self-contained `evaluate.Metric`
scripts (`_info` names their inputs and citations). The hub's metric scripts are fetched at
run time, which fails offline; `evaluate.load` also takes a local script's path, and copies
it into its modules cache ($HF_MODULES_CACHE) without touching the network:

    import evaluate
    from pmbench.suites.metrics import path
    squad = evaluate.load(str(path("squad")))
    squad.compute(predictions=["Denver"], references=[["Denver Broncos"]])

Suites score through :func:`compute`, which loads each metric once per process (suites score
group by group) and keeps its inputs in memory (no cache files, so processes running side by
side never share one). There is one implementation of each metric: the script.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pmbench.errors import BadInput

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("squad", "gsm8k", "pass_at_k", "multirc")


def path(name: str) -> Path:
    """The `evaluate` script of metric `name` (what `evaluate.load` takes)."""
    if name not in NAMES:
        raise BadInput(f"unknown metric {name!r}; valid: {', '.join(NAMES)}")
    return METRICS_DIR / f"{name}.py"


@functools.cache
def load(name: str) -> Any:
    """Metric `name` as an `evaluate.EvaluationModule`, loaded once per process, offline."""
    import evaluate

    try:
        return evaluate.load(str(path(name)), keep_in_memory=True)
    except OSError as exc:  # an unwritable modules cache, a full disk
        raise BadInput(f"cannot load metric {name} through evaluate: {exc} "
                       "(set HF_MODULES_CACHE to a writable folder)") from None


def compute(name: str, **inputs: Any) -> dict[str, Any]:
    """`load(name).compute(**inputs)`."""
    return load(name).compute(**inputs)


# --- helpers the suites share (no metric of their own) ------------------------------------


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (as numpy.argmax)."""
    return int(np.argmax(np.asarray(values, dtype=np.float64)))


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the earliest stop string (lm-eval's `until`)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]
