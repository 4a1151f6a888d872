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


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def parse_device(device: str | None) -> tuple[str, int | None] | None:
    """(type, index) of a `--device` value, BadInput when torch cannot parse it or it is
    not a device a model runs on; None for unset. Needs no hardware (sweeps check grids
    on a login node)."""
    if device is None:
        return None
    import torch

    valid = "cpu, cuda, cuda:N, mps, xpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise BadInput(f"unknown --device {device!r}; valid: {valid}") from None
    if parsed.type not in DEVICE_TYPES:
        raise BadInput(f"--device {device!r} is not a device to run a model on; valid: {valid}")
    return parsed.type, parsed.index


def check_device(device: str | None) -> None:
    """BadInput unless `device` parses and is present on this machine, so a bad
    `--device` fails before the model loads rather than after."""
    parsed = parse_device(device)
    if parsed is None or parsed[0] == "cpu":
        return
    import torch

    kind, index = parsed
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise BadInput(f"--device {device}: MPS is not available on this machine")
        return
    backend = getattr(torch, kind)
    if not backend.is_available():
        raise BadInput(f"--device {device}: {kind.upper()} is not available on this machine")
    count = backend.device_count()
    if index is not None and index >= count:
        raise BadInput(f"--device {device}: this machine has {count} {kind.upper()} "
                       f"device(s) (indices 0-{count - 1})")
