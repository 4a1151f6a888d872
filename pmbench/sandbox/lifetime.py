"""How long the sandbox's processes live: each dies with pmbench, and init (or, unisolated,
the runner) ends the program's processes when its first one ends or its time is up.

Imported by the runner (pmbench/sandbox/runner.py, `python -I -S`, this folder on its
path), so stdlib only. Written by hand for the same reason as the runner: a pipe, a pidfd
and waitpid are all it takes.
"""

import ctypes
import json
import os
import select
import signal
import time

PR_SET_PDEATHSIG = 1
REAP_S = 0.5  # how often init reaps the zombies the program's orphans leave

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]


def die_with(parent_alive: int) -> None:
    """Get SIGKILL when the parent process dies, and exit now if it already has:
    `parent_alive` is a pipe that only reaches EOF once the parent is gone."""
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pdeathsig: {os.strerror(err)}")
    if select.select([parent_alive], [], [], 0)[0]:
        os._exit(1)


def watch(cfg: dict, pid: int, exit_now: bool = True) -> None:
    """Wait for the program's first process, reaping orphans on the way; say on the status
    pipe how it ended (or that its time ran out). Returns, or exits at once with
    `exit_now` (init: the kernel then kills what is left in the namespace), when the
    program ends, its time is up or pmbench is gone."""
    os.close(cfg["fd_proof"])
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + cfg["wall_s"]
    event = None
    while event is None:
        left = deadline - time.monotonic()
        if left <= 0:
            event = {"timeout": True}
            break
        ready = select.select([pidfd, cfg["fd_alive"]], [], [], min(left, REAP_S))[0]
        if cfg["fd_alive"] in ready:
            break  # pmbench is gone
        event = reap(pid)
    if event is not None:
        os.write(cfg["fd_status"], json.dumps(event).encode() + b"\n")
    if exit_now:
        os._exit(0)


def reap(pid: int) -> dict | None:
    """Collect every zombie child; the program's exit status once it is among them."""
    while True:
        try:
            done, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if done == 0:
            return None
        if done == pid:
            return {"exit": os.waitstatus_to_exitcode(status)}


def kill_descendants() -> None:
    """SIGKILL our children until none is left (as a subreaper, the orphans of the
    program, daemons included, are our children)."""
    me = str(os.getpid())
    while True:
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == me]
        if not children:
            return
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child in children:
            try:
                os.waitpid(child, 0)
            except ChildProcessError:
                pass


def _parent(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[1].decode()
    except (OSError, IndexError):
        return ""


def supervise(cfg: dict, pid: int) -> None:
    """Wait for `pid` (the keeper, or init); kill it (and so the namespace) if pmbench dies."""
    os.close(cfg["fd_proof"])
    pidfd = os.pidfd_open(pid)
    ready = select.select([pidfd, cfg["fd_alive"]], [], [])[0]
    if pidfd not in ready:  # pmbench is gone
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os._exit(0)
