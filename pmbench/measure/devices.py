"""`--device`: which devices a model runs on, and whether this machine has the one asked.

Parsing needs no hardware (a sweep checks its grid on a login node without GPUs); the
presence check runs where the run runs, before the model loads, so a bad `--device` costs
one line of bad input rather than a loaded model.
"""

from pmbench.errors import BadInput

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
