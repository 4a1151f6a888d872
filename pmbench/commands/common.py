"""What the command modules share: quiet libraries before a model loads, and text from
files made safe for rich."""

from __future__ import annotations

import os

from rich.markup import escape

from pmbench.errors import printable


def shown(value: object) -> str:
    """`value` (a record field, a log line, a file name) as text for a rich console: control
    characters escaped (errors.printable) and no markup, so a file cannot drive the
    terminal or restyle the output."""
    return escape(printable(value))


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
