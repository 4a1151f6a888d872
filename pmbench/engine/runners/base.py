"""The runner interface and the plugin registry.

A runner answers one `Group` at a time. Runners are found through the entry-point
group `pmbench.engine.runners`, so another package can add one without touching pmbench:

    [project.entry-points."pmbench.runners"]
    mymethod = "mypkg.runner:MyRunner"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pmbench.types import GenerationConfig, Group, GroupOutput

ENTRY_POINT_GROUP = "pmbench.runners"


class RunnerUnavailable(RuntimeError):
    """Raised by a runner whose optional dependencies are not installed."""


@dataclass
class RunnerOptions:
    """Method-specific options from the command line; a runner reads what it needs."""

    branch: int = 1
    rope2d: dict[str, Any] = field(default_factory=dict)  # ratio, mode, branch_freqs, mask
    prefix_kv: str = "auto"  # prefix: share the context's KV by reference, or copy it
    model: str | None = None  # --model as given, for runners that load weights themselves
    compile: str = "auto"  # the decoding step: auto, on, static or off (engine/compile.py)


class Runner(ABC):
    """Answer groups of pre-tokenized questions with one decoding method.

    `model` is an HF causal LM (or None for runners with `needs_model = False`),
    `tokenizer` an HF tokenizer. Subclasses implement `run_group`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "method"  # "method" or "validation" (oracle)
    needs_model: ClassVar[bool] = True

    def __init__(self, model: Any, tokenizer: Any, options: RunnerOptions | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.options = options or RunnerOptions()

    @classmethod
    def check_available(cls) -> None:
        """Raise RunnerUnavailable with an install hint if optional deps are missing."""
        return None

    def record_options(self) -> dict[str, Any]:
        """The method's own blocks in run.json (e.g. `rope2d`); new keys only: a key the
        run already wrote (other than `rope2d`) is refused."""
        return {}

    def model_name(self) -> str | None:
        """The model's name for run.json, for runners that load it themselves (None: the
        name of the model the run loaded)."""
        return None

    @abstractmethod
    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        """Decode every question of `group`; outputs in question order."""


def available_runners() -> dict[str, type[Runner]]:
    """All registered runner classes by name (entry points; broken plugins are skipped)."""
    found: dict[str, type[Runner]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception:  # a broken third-party plugin must not break the CLI
            continue
        found[ep.name] = cls
    return dict(sorted(found.items()))


def get_runner(name: str) -> type[Runner]:
    runners = available_runners()
    if name not in runners:
        raise KeyError(f"unknown method {name!r}; valid: {', '.join(runners)}")
    return runners[name]
