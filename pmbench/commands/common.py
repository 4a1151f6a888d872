"""What every command that loads a model does first, shared by the command modules."""

from __future__ import annotations

import os


def _quiet_libraries() -> None:
    """No tokenizer fork warnings, no transformers progress bars or info lines: a command's
    own output is what the user reads."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
