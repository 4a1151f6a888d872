"""Task suites: one YAML file each in the top-level `suites/` folder, read here.

A YAML names its implementation (`module:Class`), data files, split, prompt pieces,
few-shot count, stop strings and default max_new_tokens. Adding a suite whose data
looks like an existing one is a YAML file; a new data format adds one small module.
`$PMBENCH_SUITES` may name extra folders of YAML files (os.pathsep-separated).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import yaml

from pmbench.errors import BadInput
from pmbench.suites.base import Suite, TextGroup, TextQuestion

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
SUITES_ENV = "PMBENCH_SUITES"

__all__ = [
    "Suite", "TextGroup", "TextQuestion", "available_suites", "load_suite", "suite_config",
]


def _yaml_files() -> dict[str, Path]:
    extra = [Path(p) for p in os.environ.get(SUITES_ENV, "").split(os.pathsep) if p]
    folders = [SUITES_DIR, *extra]
    return {f.stem: f for folder in folders for f in sorted(folder.glob("*.yaml"))}


def suite_config(name: str) -> dict[str, Any]:
    files = _yaml_files()
    if name not in files:
        raise BadInput(f"unknown suite {name!r}; valid: {', '.join(sorted(files))}")
    config = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    config["name"] = name
    return config


def available_suites() -> dict[str, str]:
    """Suite name -> one-line description, from the YAML files."""
    return {name: suite_config(name).get("description", "") for name in sorted(_yaml_files())}


def suite_class(config: dict[str, Any]) -> type[Suite]:
    module, _, cls = config["implementation"].partition(":")
    return getattr(importlib.import_module(module), cls)


def load_suite(name: str, tokenizer: Any, **options: Any) -> Suite:
    """Read suite `name` into token-level groups (see `Suite.__init__` for the options)."""
    config = suite_config(name)
    return suite_class(config)(config, tokenizer, **options)
