"""Errors the CLI turns into one line and exit code 2 (bad input), never a traceback, and
the text helpers that keep what a file says from reaching the terminal as it is."""

import re

from pmbench.limits import MAX_MESSAGE_CHARS


class PmbenchError(Exception):
    """Base class for expected, user-facing failures."""


class BadInput(PmbenchError):
    """Invalid option, unknown name, missing data or model: exit code 2."""


class PmbenchWarning(UserWarning):
    """Something was skipped and the user should know (the CLI prints it as one line)."""


# C0 and C1 controls, DEL, and the Unicode marks that reorder or hide text (bidi overrides,
# isolates, zero-width marks): a record or log that holds them could recolour, clear or
# rewrite the terminal, or make a table say something it does not.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e"
                          "\u2066-\u2069\ufeff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, keep: str = "") -> str:
    """`text` with every control character written out as its escape (ESC as the four
    characters `\\x1b`), except those in `keep` (a rendered table keeps its newlines).

    Record fields, log lines and file names come from files anyone may have written: this
    is the one place they are made safe for a terminal, Markdown or LaTeX."""
    text = str(text)
    if keep:
        return _UNPRINTABLE.sub(lambda m: m[0] if m[0] in keep else _escape_char(m), text)
    return _UNPRINTABLE.sub(_escape_char, text)


def one_line(message: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` as one printable line of at most about `limit` characters: an error that
    quotes a hostile value (a 200 MB grid entry, a log line full of escapes) stays one
    short line."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(message)[: 4 * limit]).strip()
    text = printable(text)
    if len(text) > limit:
        text = text[:limit].rstrip() + " […]"
    return text


def require_positive(**options: int | None) -> None:
    """Raise BadInput for the first option (by its Python name) that is set and below 1."""
    for name, value in options.items():
        if value is not None and value < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1 (got {value})")

