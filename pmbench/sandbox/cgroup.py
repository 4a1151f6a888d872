"""One cgroup per sandboxed program: a memory budget that covers all of its processes and
its tmpfs together, and a cap on how many processes it may have at once.

rlimits cannot do this (they count per process, or per user), so where the cgroup tree is
writable (root, or a delegated subtree) each program gets its own cgroup; where it is not,
the sandbox falls back to rlimits and the size-capped tmpfs (see SECURITY.md), and says so
in run.json. Both cgroup v2 and the v1 memory + pids controllers are handled. Written by
hand: the few file writes below are all there is to it, and no maintained library covers
both versions without a daemon (systemd) that may not be running.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "pmbench-sandbox-"
CONTROLLERS = ("memory", "pids")
_counter = itertools.count()


@dataclass(frozen=True)
class Tree:
    """Where this process may create cgroups: one directory per controller (one shared
    directory for v2)."""

    version: str  # "v2" | "v1"
    parents: tuple[str, ...]


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fstype, _, options = right.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            out.append((left.split()[4], fstype, set(options.split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _candidates() -> list[Tree]:
    mounts, own = _mounts(), _own_paths()
    trees = []
    v2 = next((m for m, fstype, _ in mounts if fstype == "cgroup2"), None)
    if v2 is not None and "" in own:
        directory = os.path.join(v2, own[""].lstrip("/"))
        trees.append(Tree("v2", (directory,)))
    v1 = []
    for name in CONTROLLERS:
        mount = next((m for m, fstype, opts in mounts if fstype == "cgroup" and name in opts),
                     None)
        if mount is None or name not in own:
            break
        v1.append(os.path.join(mount, own[name].lstrip("/")))
    if len(v1) == len(CONTROLLERS):
        trees.append(Tree("v1", tuple(v1)))
    return trees


def _enable_v2(directory: str) -> None:
    available = Path(directory, "cgroup.controllers").read_text().split()
    if not set(CONTROLLERS) <= set(available):
        raise OSError(f"controllers {available} at {directory}")
    enabled = Path(directory, "cgroup.subtree_control").read_text().split()
    missing = [c for c in CONTROLLERS if c not in enabled]
    if missing:  # refused (EBUSY) when this cgroup holds processes and is not the root
        Path(directory, "cgroup.subtree_control").write_text(
            " ".join(f"+{c}" for c in missing))


@functools.cache
def tree() -> tuple[Tree | None, str]:
    """The usable cgroup tree here, or None and why not. Checked by creating one."""
    reasons = []
    for candidate in _candidates():
        try:
            if candidate.version == "v2":
                _enable_v2(candidate.parents[0])
            cleanup_stale(candidate)
            dirs = create(candidate, memory_bytes=64 << 20, processes=4)
            remove(dirs)
            return candidate, ""
        except OSError as exc:
            reasons.append(f"{candidate.version}: {exc.strerror or exc}")
    return None, "; ".join(reasons) or "no cgroup memory and pids controllers mounted"


def create(t: Tree, memory_bytes: int, processes: int) -> list[str]:
    """A new cgroup (one directory per v1 controller) with the limits set."""
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    dirs = []
    try:
        for parent in t.parents:
            dirs.append(os.path.join(parent, name))
            os.mkdir(dirs[-1])
        if t.version == "v2":
            _write(dirs[0], "memory.max", memory_bytes)
            _write(dirs[0], "memory.swap.max", 0, optional=True)
            _write(dirs[0], "memory.oom.group", 1, optional=True)
            _write(dirs[0], "pids.max", processes)
        else:
            memory, pids = dirs
            _write(memory, "memory.limit_in_bytes", memory_bytes)
            _write(memory, "memory.memsw.limit_in_bytes", memory_bytes, optional=True)
            _write(pids, "pids.max", processes)
    except OSError:
        remove(dirs)
        raise
    return dirs


def _write(directory: str, name: str, value: int, optional: bool = False) -> None:
    path = os.path.join(directory, name)
    if optional and not os.path.exists(path):
        return
    Path(path).write_text(str(value))


def empty(dirs: list[str]) -> None:
    """Kill whatever is left in the cgroup and wait until it is gone (normally nothing is:
    a program's PID namespace dies with its first process)."""
    deadline = time.monotonic() + 5
    for directory in dirs:
        while time.monotonic() < deadline:
            try:
                pids = Path(directory, "cgroup.procs").read_text().split()
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.01)


def remove(dirs: list[str]) -> None:
    """Empty the cgroup, then remove it (retrying while the kernel frees dead processes)."""
    empty(dirs)
    deadline = time.monotonic() + 5
    for directory in dirs:
        while os.path.isdir(directory):
            try:
                os.rmdir(directory)
            except OSError as exc:  # EBUSY while dead processes are freed; else give up
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    break
                time.sleep(0.01)


def _owner_alive(name: str) -> bool:
    try:
        os.kill(int(name[len(PREFIX):].split("-")[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(t: Tree) -> None:
    """Remove the cgroups of pmbench processes that are gone (killed before cleaning up)."""
    for parent in t.parents:
        with contextlib.suppress(OSError):
            for entry in os.scandir(parent):
                if entry.name.startswith(PREFIX) and not _owner_alive(entry.name):
                    remove([entry.path])
