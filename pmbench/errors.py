"""Errors the CLI turns into one line and exit code 2 (bad input), never a traceback."""


class PmbenchError(Exception):
    """Base class for expected, user-facing failures."""


class BadInput(PmbenchError):
    """Invalid option, unknown name, missing data or model: exit code 2."""
