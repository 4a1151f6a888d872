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
