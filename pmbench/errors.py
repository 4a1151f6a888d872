"""Errors the CLI turns into one line and exit code 2 (bad input), never a traceback."""


class PmbenchError(Exception):
    """Base class for expected, user-facing failures."""


class BadInput(PmbenchError):
    """Invalid option, unknown name, missing data or model: exit code 2."""


def require_positive(**options: int | None) -> None:
    """Raise BadInput for the first option (by its Python name) that is set and below 1."""
    for name, value in options.items():
        if value is not None and value < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
