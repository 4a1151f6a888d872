"""How many positions a model reads, known before its weights load.

A run checks its groups against this before the model runs (pmbench.suites.window): a
document longer than the model's context is refused with one line, or cut to fit under
--truncate-documents, rather than read past the positions the model was trained on.
"""

from __future__ import annotations

from typing import Any

# The config fields transformers' architectures use for their trained context length.
_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_window(model: str | None) -> int | None:
    """The model's context length from its config (config.json only, no weights); None when
    the config cannot be read here (a hub id offline: its load fails later, in one line)."""
    from pmbench.engine.random_models import is_random, random_config

    if is_random(model):
        return window_of(random_config(model))
    from transformers import AutoConfig

    from pmbench.engine.models import NO_REMOTE_CODE, resolve_model_path

    path, _ = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path, **NO_REMOTE_CODE)
    except (OSError, ValueError, KeyError):
        return None
    return window_of(config)


def window_of(config: Any) -> int | None:
    """The first context-length field the (text) config sets."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _FIELDS:
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None

