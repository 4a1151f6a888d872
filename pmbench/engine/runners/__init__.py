"""Decoding methods as plugins (see `base.Runner`)."""

from pmbench.engine.runners.base import Runner, RunnerOptions, available_runners, get_runner

__all__ = ["Runner", "RunnerOptions", "available_runners", "get_runner"]
