"""The four 2D RoPE settings, their defaults, and where they come from.

A model trained with 2D RoPE carries its settings in a `rope2d` section of its
config.json (`{"ratio": 0.5, "mode": "split", "branch_freqs": "interleaved",
"mask": "cross"}`), so it is always run the way it was trained. Explicit options
(the command line) override that section; anything left unset falls back to the
defaults below.

Defaults for a model without a `rope2d` section: `ratio = 0.0`. An untrained model
has never seen a branch coordinate, and ratio 0 is plain RoPE, under which the
isolated mask reproduces sequential decoding exactly: the parallel speed-up comes
with no change of the model's answers. `mode = "split"` and `mask = "isolated"` are
the DESIGN defaults. `branch_freqs = "interleaved"` gives the branch coordinate
pairs spread over the whole spectrum, so time keeps both its short- and long-range
frequencies (taking only `high` or only `low` pairs would leave time without one end).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from pmbench.errors import BadInput
from pmbench.options import Option, declared, option

MODES = ("split", "additive")
BRANCH_FREQS = ("high", "low", "interleaved")
MASKS = ("isolated", "cross")
# The settings block's name wherever it is kept: a model's config.json section, the
# `rope2d` block of run, training and attention records, a run spec's field, a grid's axis.
KEY = "rope2d"
CONFIG_KEY = KEY


@dataclass(frozen=True)
class Rope2DSettings:
    """How (t, b) positions are turned into rotations, and which tokens a branch sees.

    ratio: fraction of the rotary frequency pairs that encode the branch b (0 = vanilla RoPE).
    mode: "split" (branch pairs rotate by b*theta, time pairs by t*theta) or "additive"
        (branch pairs rotate by (t + b)*theta; b = 0 is vanilla RoPE).
    branch_freqs: which pairs encode the branch: "high" (fastest-rotating, lowest index),
        "low" (slowest) or "interleaved" (evenly spread).
    mask: "isolated" (a branch sees the context and itself) or "cross" (also the other
        branches' tokens of earlier steps).
    """

    ratio: float = option(0.0, flag="rope_2d_ratio",
                          help="Fraction of rotary pairs for the branch axis.")
    mode: str = option("split", flag="rope_2d_mode", choices=MODES, help="split | additive.")
    branch_freqs: str = option("interleaved", choices=BRANCH_FREQS,
                               help="high | low | interleaved.")
    mask: str = option("isolated", choices=MASKS, help="isolated | cross.")

    def __post_init__(self) -> None:
        try:
            ratio = float(self.ratio)
        except (TypeError, ValueError):
            msg = f"rope-2d ratio must be a number in [0, 1], got {self.ratio!r}"
            raise BadInput(msg) from None
        if not 0.0 <= ratio <= 1.0:
            raise BadInput(f"rope-2d ratio must be in [0, 1], got {self.ratio}")
        object.__setattr__(self, "ratio", ratio)
        for name, value, valid in (
            ("mode", self.mode, MODES),
            ("branch_freqs", self.branch_freqs, BRANCH_FREQS),
            ("mask", self.mask, MASKS),
        ):
            if value not in valid:
                raise BadInput(f"unknown rope-2d {name} {value!r}; valid: {', '.join(valid)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_section(config: Any) -> dict[str, Any]:
    """The `rope2d` section of an HF config (attribute or dict entry), or {} if absent."""
    section = getattr(config, CONFIG_KEY, None)
    if section is None and isinstance(config, Mapping):
        section = config.get(CONFIG_KEY)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise BadInput(f"model config's {CONFIG_KEY!r} section must be a mapping, got {section!r}")
    unknown = set(section) - set(Rope2DSettings.__dataclass_fields__)
    if unknown:
        raise BadInput(f"unknown keys in the model's {CONFIG_KEY!r} section: {sorted(unknown)}")
    return dict(section)


def resolve_settings(
    config: Any = None, overrides: Mapping[str, Any] | None = None
) -> Rope2DSettings:
    """Defaults, then the model config's `rope2d` section, then explicit overrides.

    An override of None means "not given" (the config or default applies).
    """
    settings = Rope2DSettings(**config_section(config)) if config is not None else Rope2DSettings()
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(Rope2DSettings.__dataclass_fields__)
    if unknown:
        raise BadInput(f"unknown rope-2d options: {sorted(unknown)}")
    return replace(settings, **given)


# Every other form of the settings derives from the dataclass above, so a new setting or a
# new default is written once: the names, the command-line options (and grid keys) that set
# them, and the record columns (`rope2d.<name>`) the tables and compare group by.
NAMES: tuple[str, ...] = tuple(Rope2DSettings.__dataclass_fields__)
DECLARED: dict[str, Option] = {opt.name: opt for opt in declared(Rope2DSettings)}
OPTIONS: dict[str, str] = {name: opt.flag for name, opt in DECLARED.items()}
RECORD_COLUMNS: tuple[str, ...] = tuple(f"{KEY}.{name}" for name in NAMES)
DEFAULTS: dict[str, Any] = Rope2DSettings().as_dict()
assert tuple(OPTIONS) == NAMES, "one option per setting"


def setting_option(name: str, default: Any) -> Any:
    """A field of another settings class that holds 2D RoPE setting `name` under its
    option, with a default of its own (training: ratio 0.5; a run: None, unset)."""
    opt = DECLARED[name]
    return option(default, flag=opt.flag, choices=opt.choices, help=opt.help)
