"""One program through the sandbox runner: its pipes, its deadline, its verdict.

pmbench.sandbox decides whether and how programs run; this module starts the runner
(pmbench/sandbox/runner.py) for one program, feeds it the program and a fresh nonce,
collects the proof and status pipes with a bounded tail until the runner exits or the
timeout passes, kills the runner's process group either way, and turns what came back
into an ExecResult.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pmbench.sandbox import cgroup as sandbox_cgroup

RUNNER = str(Path(__file__).with_name("runner.py"))

# Limits per program, besides CPU seconds = ceil(timeout) + 1. Memory: plain Python needs
# < 100 MiB; 2 GiB leaves room for big test inputs while an 8 GB allocation fails. With a
# cgroup it bounds all of the program's processes and its tmpfs together; without one it
# bounds each process's address space.
MEMORY_BYTES = 2 << 30
FILE_BYTES = 16 << 20  # largest file
PROCESSES = 32  # the program's processes at once (cgroup pids.max; RLIMIT_NPROC too)
OPEN_FILES = 64
WORKDIR_BYTES = 64 << 20  # size of the /sandbox tmpfs
SANDBOX_UID_BASE = 1_500_000_000  # root: uids BASE + (pid % 4096) * 1024 + slot, unnamed
NOBODY = 65534
DETAIL_CHARS = 300
PROOF_BYTES = 4096  # the tail of the proof pipe that is kept
GRACE_S = 1.0  # after the runner's own deadline, before pmbench kills the runner
POLL_S = 0.1  # how often a wait looks whether the run was interrupted
TEMP_PREFIX = "pmbench-sandbox-"


@dataclass
class ExecResult:
    """Outcome of one program: passed iff the harness proved that its check returned."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error" (the sandbox itself failed)
    detail: str  # short: exception type and message, how it ended, or why it timed out
    wall_s: float
    flags: tuple[str, ...] = ()  # what the harness saw that a forged pass would need



def identity(slot: int) -> tuple[int, int]:
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


def interpreter() -> tuple[str, list[str]]:
    """The base interpreter (not a venv's wrapper) and the directories it needs."""
    python = os.path.realpath(sys.executable)
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    dirs.add(os.path.dirname(python))
    return python, sorted(d for d in dirs if not any(d != o and d.startswith(o + "/")
                                                     for o in dirs))


_ALIVE_PIPE: list[tuple[int, int]] = []


def _parent_alive_fd() -> int:
    """Read end of a pipe whose write end only this process holds (never closed): it reaches
    EOF in every runner the moment pmbench dies, however it dies."""
    if not _ALIVE_PIPE:
        _ALIVE_PIPE.append(os.pipe())
    return _ALIVE_PIPE[0][0]


def _config(uid: int, gid: int, timeout_s: float, isolated: bool, workdir: str,
            cgroups: list[str], fds: dict[str, int]) -> dict:
    processes = PROCESSES
    if os.geteuid() != 0:  # RLIMIT_NPROC counts all of the user's processes (cgroup: exact)
        processes += _processes_of(os.getuid())
    python, keep = interpreter()
    home = "/sandbox" if isolated else workdir
    return {
        "isolated": isolated, "workdir": workdir, "uid": uid, "gid": gid, "python": python,
        "keep": keep, "cgroups": cgroups, "cpu_s": math.ceil(timeout_s) + 1, "wall_s": timeout_s,
        "memory_bytes": MEMORY_BYTES, "file_bytes": FILE_BYTES, "processes": processes,
        "open_files": OPEN_FILES, "workdir_bytes": WORKDIR_BYTES, **fds,
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home,
                "LANG": "C.UTF-8"},
    }


def run_one(source: str, timeout_s: float, slot: int, isolated: bool,
            cgroups: list[str], stop: threading.Event | None = None) -> ExecResult:
    """Run one program; `stop` (set on Ctrl-C) ends the wait early and kills it."""
    t0 = time.perf_counter()
    nonce = secrets.token_hex(16)
    uid, gid = identity(slot)
    workdir = "" if isolated else _make_workdir(uid, gid)
    proof_r, proof_w = os.pipe()
    status_r, status_w = os.pipe()
    alive = _parent_alive_fd()
    fds = {"fd_proof": proof_w, "fd_status": status_w, "fd_alive": alive}
    cfg = _config(uid, gid, timeout_s, isolated, workdir, cgroups, fds)
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", RUNNER, json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(proof_w, status_w, alive), env={"PATH": cfg["env"]["PATH"]},
            start_new_session=True,
        )
        os.close(proof_w)
        os.close(status_w)
        proof_w = status_w = -1
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps({"source": source, "nonce": nonce}).encode())
            proc.stdin.close()
        proof, status, timed_out = _collect(proc, proof_r, status_r, timeout_s + GRACE_S,
                                            stop or threading.Event())
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):  # the runner's group, stragglers too
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for fd in (proof_r, status_r, proof_w, status_w):
            if fd >= 0:
                os.close(fd)
        sandbox_cgroup.empty(cgroups)
        if workdir:
            shutil.rmtree(os.path.dirname(workdir), ignore_errors=True)
    return _outcome(proof, status, timed_out, nonce, timeout_s, time.perf_counter() - t0)


def _collect(proc: subprocess.Popen, proof_r: int, status_r: int, timeout_s: float,
             stop: threading.Event) -> tuple[bytes, bytes, bool]:
    """Drain both pipes (keeping a bounded tail) until the runner exits, time runs out (the
    runner keeps its own deadline; this one is the backstop) or the run is stopped."""
    bufs = {proof_r: b"", status_r: b""}
    pidfd = os.pidfd_open(proc.pid)
    deadline = time.monotonic() + timeout_s
    exited = False
    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0 or stop.is_set():
                break
            ready = select.select([pidfd, *bufs], [], [], min(left, POLL_S))[0]
            exited = pidfd in ready
            for fd in bufs:
                for _ in range(64 if exited else 1 if fd in ready else 0):  # at exit: the rest
                    if not _drain(fd, bufs):
                        break
    finally:
        os.close(pidfd)
    return bufs[proof_r], bufs[status_r], not exited


def _drain(fd: int, bufs: dict[int, bytes]) -> bool:
    """One read (a program that floods its pipe must not keep us from the deadline);
    False once nothing more is there."""
    os.set_blocking(fd, False)
    try:
        chunk = os.read(fd, 1 << 20)
    except BlockingIOError:
        return False
    bufs[fd] = (bufs[fd] + chunk)[-PROOF_BYTES:]
    return bool(chunk)


def _outcome(proof: bytes, status: bytes, timed_out: bool, nonce: str, timeout_s: float,
             wall: float) -> ExecResult:
    events = {}
    for line in status.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            events.update(json.loads(line))
    lines = proof.decode(errors="replace").splitlines()
    flags = tuple(dict.fromkeys(_clean(line[5:]) for line in lines
                                if line.startswith("flag ")))[:8]
    if timed_out or events.get("timeout"):
        return ExecResult(False, "timeout", f"timed out after {timeout_s:g} s", wall, flags)
    if "error" in events:
        return ExecResult(False, "error", f"sandbox setup failed: {events['error']}"
                          [:DETAIL_CHARS], wall, flags)
    proofs = [line for line in lines if not line.startswith("flag ")]
    if proofs == [f"pass {nonce}"] and events.get("exit") == 0:
        return ExecResult(True, "passed", "", wall, flags)
    return ExecResult(False, "failed", _clean(_failure(proofs, events.get("exit"))), wall, flags)


def _failure(proofs: list[str], code: object) -> str:
    """Why a program failed: the harness's report, or how its first process ended. A pass
    line next to anything else (a failure before it, text after it) is no pass."""
    failures = [line[5:] for line in proofs if line.startswith("fail ")]
    if failures and code == 1:  # the harness's own report
        return failures[0]
    if isinstance(code, int) and code < 0:
        return f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() \
            else f"killed by signal {-code}"
    if code is None:
        return "the sandbox runner died"
    if code == 0 and any(line.startswith("pass ") for line in proofs):
        return "a pass line next to other output on the proof pipe"
    return f"exited with status {code} before its check completed"


def _clean(text: str) -> str:
    """Printable, one line, short: a record must not carry what a program chose to dump."""
    return re.sub(r"[^\x20-\x7e]", "?", text)[:DETAIL_CHARS]


def _make_workdir(uid: int, gid: int) -> str:
    """Work directory on the host, for --allow-unisolated-code-execution only. Its name
    carries our pid, so a later pmbench removes it if we die before cleaning up."""
    top = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    os.chmod(top, 0o711)
    workdir = os.path.join(top, "work")
    os.mkdir(workdir, 0o700)
    if os.geteuid() == 0:
        os.chown(workdir, uid, gid)
    return workdir


def remove_stale_temp_dirs() -> None:
    """Remove work directories left by pmbench processes that are gone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(tempfile.gettempdir()):
            match = re.fullmatch(rf"{TEMP_PREFIX}(\d+)-\w+", entry.name)
            if match and entry.is_dir(follow_symlinks=False) and not _alive(int(match[1])):
                shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
