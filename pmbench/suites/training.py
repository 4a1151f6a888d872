"""What a suite offers `pmbench train finetune` (pmbench.train.sources): the split it trains
on, and how that split's questions divide between training and held out.

Its YAML says which split trains and how many held-out questions are scored (`training:
{split, heldout_questions, heldout_first}`); its class says which questions are held out
(`Suite.training_split`, a hook a suite overrides where its data asks for it: SQuAD holds
out whole articles, GSM8K its last problems; by default every question trains). Examples
are built from the suite's own groups, so their prompts and token ids are those the
evaluation feeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pmbench.errors import BadInput
from pmbench.types import Group, Question

TRAIN, HELDOUT = "train", "heldout"  # the two sides of a training split


@dataclass(frozen=True)
class TrainingSplit:
    """How a suite's training split divides: `side(group, question)` is TRAIN, HELDOUT
    (never trained on, scored instead) or None (neither: a few-shot example every prompt
    shows); `record` is what train.json keeps of the split (files, held-out documents)."""

    side: Callable[[Group, Question], str | None]
    record: dict[str, Any]


@dataclass(frozen=True)
class TrainingPlan:
    """A suite's YAML `training` block."""

    split: str  # the split trained on (it may be one the suite does not evaluate)
    heldout_questions: int = 0  # held-out questions scored at every #branch (0: none)
    heldout_first: bool = False  # they come first in the data, so a --limit reaches them


def training_plan(config: dict[str, Any]) -> TrainingPlan | None:
    """The `training` block of suite `config`; None when it offers no training split."""
    block = config.get("training")
    if not block:
        return None
    try:
        plan = TrainingPlan(**block)
    except TypeError as exc:  # an unknown key
        raise BadInput(f"suite {config['name']}: training: {exc}") from None
    if not isinstance(plan.split, str) or not isinstance(plan.heldout_questions, int) or (
            plan.heldout_questions < 0):
        raise BadInput(f"suite {config['name']}: training: needs a split name and "
                       f"heldout_questions >= 0, got {block!r}")
    return plan
