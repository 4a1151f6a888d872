"""The runner interface and the plugin registry.

A runner answers one `Group` at a time. Runners are found through the entry-point
group `pmbench.engine.runners`, so another package can add one without touching pmbench:

    [project.entry-points."pmbench.runners"]
    mymethod = "mypkg.runner:MyRunner"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

from pmbench.engine.kvcache import BufferPool, bucket
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
        self.pool = BufferPool()  # static decoding's buffers, reused per (rows, bucket)

    def static_pool(self, mode: str) -> BufferPool | None:
        """The pool a group's cache and static step take their buffers from under the
        resolved compile `mode` (None: eager decoding allocates per group, as before)."""
        return None if mode == "off" else self.pool

    def warmup_key(self, group: Group, gen: GenerationConfig) -> Hashable:
        """What fixes the shapes a static step records for `group`: by default its rows
        and its reservation's bucket (one forward pass over context + questions; the
        runners whose layout differs say so; a frozenset: several, one per pass). A run
        with a static step warms up on every group that brings a key not seen before,
        so no CUDA graph is recorded while timed."""
        width = max(len(q.prompt_ids) for q in group.questions) + len(group.context_ids)
        return len(group.questions), bucket(width + gen.max_new_tokens)

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


def warmup_groups(runner: Runner, groups: list[Group], gen: GenerationConfig,
                  static: bool) -> list[Group]:
    """The groups a run warms up on, untimed: the first, and with a `static` step the
    first of each `warmup_key` (each bucket's graph is then recorded before timing)."""
    if not static:
        return groups[:1]
    seen: set[Hashable] = set()
    picked = []
    for group in groups:
        key = runner.warmup_key(group, gen)
        keys = key if isinstance(key, frozenset) else {key}
        if not keys <= seen:
            seen |= keys
            picked.append(group)
    return picked


def _source_tree_runners() -> list[EntryPoint]:
    """pmbench's own runners as its pyproject.toml declares them, for a source tree run
    without being installed (the GPU machine gets the tree on PYTHONPATH, no metadata)."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        declared = project["entry-points"][ENTRY_POINT_GROUP]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return []
    return [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in declared.items()]


def available_runners() -> dict[str, type[Runner]]:
    """All registered runner classes by name (entry points; broken plugins are skipped).
    Where pmbench itself is not installed, its own runners come from its pyproject."""
    found: dict[str, type[Runner]] = {}
    installed = list(entry_points(group=ENTRY_POINT_GROUP))
    names = {ep.name for ep in installed}
    for ep in [*installed, *(e for e in _source_tree_runners() if e.name not in names)]:
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
