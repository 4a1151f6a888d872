"""Run untrusted generated programs (HumanEval completions) under OS-level isolation.

Generated code is hostile. It runs only after an explicit opt-in, each program through
pmbench/sandbox/runner.py, which gives it (SECURITY.md has the threat model):

- new user, mount, network, PID, IPC, UTS and cgroup namespaces: no network device but a
  loopback that is down, its own process tree (when its first process dies, every process
  it started dies), no view of the host's processes;
- a minimal read-only root (pivot_root): the system's /usr and /lib and the interpreter,
  nothing of the project, the user's home, /tmp or the results; a private /dev with its own
  devpts instance; a size-limited tmpfs /sandbox as its only writable place;
- its own cgroup (memory, processes and tmpfs together; pids) where the cgroup tree is
  writable, else rlimits only; rlimits on CPU time, address space, file size, processes
  and open files; an unprivileged uid (as root, one per worker slot), no_new_privs;
- a seccomp filter that refuses namespace creation, mount, ptrace, kexec, bpf, perf,
  keyrings, userfaultfd and io_uring.

A pass is proven, not inferred from an exit code: the harness prints a per-program random
nonce on a private pipe only after the program (its tests and `check()`) returned.

Where full isolation is unavailable, `check_isolation` refuses with one line naming what is
missing, unless the user passes `--allow-unisolated-code-execution`; run.json records the
isolation applied either way. The runner dies with pmbench (a pipe and PR_SET_PDEATHSIG),
so a killed pmbench leaves no program behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import queue
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.sandbox import cgroup as sandbox_cgroup

ENV_FLAG = "PMBENCH_ALLOW_CODE_EXECUTION"
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
PROBE_TIMEOUTS = (30.0, 60.0, 120.0)  # the probe is retried, slower each time
TEMP_PREFIX = "pmbench-sandbox-"

log = logging.getLogger(__name__)


@dataclass
class ExecResult:
    """Outcome of one program: passed iff the harness proved that its check returned."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error" (the sandbox itself failed)
    detail: str  # short: exception type and message, how it ended, or why it timed out
    wall_s: float


@dataclass(frozen=True)
class Isolation:
    """What isolation programs get on this machine (stored in run.json)."""

    full: bool
    user: str  # who the programs run as
    missing: str  # what full isolation lacks here ("" when full)
    namespaces: tuple[str, ...] = ()
    cgroup: str = ""  # "v2" | "v1" | "none: why" (rlimits only)
    limits: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["namespaces"] = list(self.namespaces)
        out["root"] = "pivot_root: read-only system dirs + interpreter" if self.full else "host"
        out["seccomp"] = self.full
        out["pass_proof"] = "nonce"
        return out


def code_execution_allowed(flag: bool) -> bool:
    """True when the user opted in: `--allow-code-execution` or PMBENCH_ALLOW_CODE_EXECUTION."""
    return flag or os.environ.get(ENV_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}


def check_isolation(allow_unisolated: bool = False) -> dict[str, Any]:
    """The isolation programs will get here, for run.json; BadInput (one line naming what is
    missing) when it is not full and the user did not pass --allow-unisolated-code-execution."""
    if sys.platform != "linux":
        raise BadInput("sandboxed code execution needs Linux (namespaces, seccomp, pidfd)")
    iso = isolation()
    if not iso.full and not allow_unisolated:
        raise BadInput(f"refusing to run generated code without full isolation ({iso.missing});"
                       " pass --allow-unisolated-code-execution to run it anyway")
    if not iso.full:
        python = _interpreter()[0]
        if os.geteuid() == 0 and not _reachable_by_others(python):
            raise BadInput(f"cannot run generated code unisolated either: {python} is not "
                           "reachable by an unprivileged user (run pmbench with a Python "
                           "outside a private home directory)")
        log.warning("running generated code without full isolation: %s", iso.missing)
    return iso.record()


def _reachable_by_others(path: str) -> bool:
    """Whether an unprivileged uid can execute `path` (every directory above searchable)."""
    parts = Path(path).parents
    return os.stat(path).st_mode & 0o001 != 0 and all(
        os.stat(d).st_mode & 0o001 for d in parts)


def run_programs(
    programs: list[str], timeout_s: float = 10.0, workers: int | None = None,
    allow_unisolated: bool = False,
) -> list[ExecResult]:
    """Run each complete Python program in its own sandbox, `workers` at a time, in order."""
    if not programs:
        return []
    isolated = check_isolation(allow_unisolated)["full"]
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    slots: queue.SimpleQueue[tuple[int, list[str]]] = queue.SimpleQueue()
    made: list[list[str]] = []
    try:
        for slot in range(workers):  # a cgroup per slot, emptied after each program
            made.append(_slot_cgroup())
            slots.put((slot, made[-1]))

        def run(source: str) -> ExecResult:
            slot, cgroups = slots.get()
            try:
                return _run_one(source, timeout_s, slot, isolated, cgroups)
            finally:
                slots.put((slot, cgroups))

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            return list(pool.map(run, programs))
    finally:
        for cgroups in made:
            sandbox_cgroup.remove(cgroups)


def _slot_cgroup() -> list[str]:
    cgroup_tree, _ = sandbox_cgroup.tree()
    return sandbox_cgroup.create(cgroup_tree, MEMORY_BYTES, PROCESSES) if cgroup_tree else []


@functools.cache
def isolation() -> Isolation:
    """Probe once whether full isolation works here, with a program that checks it from the
    inside; a timeout or setup error is retried (a busy machine is not a missing feature)."""
    _remove_stale_temp_dirs()
    cgroup_tree, cgroup_why = sandbox_cgroup.tree()
    cgroup = cgroup_tree.version if cgroup_tree else f"none: {cgroup_why}"
    uid, _ = _identity(0)
    if os.geteuid() != 0:
        user = f"uid {uid}, the user running pmbench"
    elif uid == NOBODY:
        user = f"nobody (uid {NOBODY}), shared by all workers"
    else:
        user = f"one unprivileged uid per worker slot, from {uid}"
    limits = {"memory_bytes": MEMORY_BYTES, "file_bytes": FILE_BYTES, "processes": PROCESSES,
              "open_files": OPEN_FILES, "workdir_bytes": WORKDIR_BYTES}
    result = None
    for timeout in PROBE_TIMEOUTS:
        cgroups = _slot_cgroup()
        try:
            result = _run_one(_probe_source(), timeout, 0, True, cgroups)
        finally:
            sandbox_cgroup.remove(cgroups)
        if result.status not in ("timeout", "error"):
            break
        log.info("sandbox probe: %s (retrying)", result.detail)
    assert result is not None
    if result.passed:
        return Isolation(True, user, "", tuple(NAMESPACES), cgroup, limits)
    return Isolation(False, user, result.detail, (), cgroup, limits)


NAMESPACES = ("user", "mount", "network", "pid", "ipc", "uts", "cgroup")


def _hidden_paths() -> dict[str, list[str]]:
    """Host folders the sandbox must not show (home, the working folder, pmbench's own
    tree), each with the entries it may show: the way down to the interpreter. Folders
    inside the system directories the sandbox binds read-only are not secret."""
    _, keep = _interpreter()
    system = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", *keep)
    out = {}
    for path in (Path.home(), Path.cwd(), Path(__file__).resolve().parents[2]):
        p = os.path.realpath(path)
        if p == "/" or any(p == s or p.startswith(s + "/") for s in system):
            continue
        out[p] = sorted({k[len(p) + 1:].split("/")[0] for k in keep if k.startswith(p + "/")})
    return out


def _probe_source() -> str:
    """A program that returns only if the sandbox isolates it as intended."""
    hidden = _hidden_paths()
    return f"""
import ctypes, errno, os, resource, socket
assert os.getpid() == 1, "no PID namespace"
assert [name for _, name in socket.if_nameindex()] == ["lo"], "no network namespace"
if {os.geteuid() == 0}:
    assert os.geteuid() != 0 and os.getgroups() == [], "still root"
for path, allowed in {hidden!r}.items():
    if os.path.isdir(path) and sorted(os.listdir(path)) != allowed:
        raise AssertionError("can see " + path)
for outside in ("/", "/tmp", "/usr", "/dev"):
    try:
        open(os.path.join(outside, ".pmbench-probe"), "x").close()
    except OSError:
        continue
    raise AssertionError("could write to " + outside)
assert os.listdir("/dev/pts") == ["ptmx"], "no private /dev/pts"
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x10000000) != 0 and ctypes.get_errno() == errno.EPERM, "no seccomp"
assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] <= {OPEN_FILES}, "no open-file limit"
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


def _interpreter() -> tuple[str, list[str]]:
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
    python, keep = _interpreter()
    home = "/sandbox" if isolated else workdir
    return {
        "isolated": isolated, "workdir": workdir, "uid": uid, "gid": gid, "python": python,
        "keep": keep, "cgroups": cgroups, "cpu_s": math.ceil(timeout_s) + 1,
        "memory_bytes": MEMORY_BYTES, "file_bytes": FILE_BYTES, "processes": processes,
        "open_files": OPEN_FILES, "workdir_bytes": WORKDIR_BYTES, **fds,
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home,
                "LANG": "C.UTF-8"},
    }


def _run_one(source: str, timeout_s: float, slot: int, isolated: bool,
             cgroups: list[str]) -> ExecResult:
    t0 = time.perf_counter()
    nonce = secrets.token_hex(16)
    uid, gid = _identity(slot)
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
        proof, status, timed_out = _collect(proc, proof_r, status_r, timeout_s)
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


def _collect(proc: subprocess.Popen, proof_r: int, status_r: int,
             timeout_s: float) -> tuple[bytes, bytes, bool]:
    """Drain both pipes (keeping a bounded tail) until the runner exits or time runs out."""
    bufs = {proof_r: b"", status_r: b""}
    pidfd = os.pidfd_open(proc.pid)
    deadline = time.monotonic() + timeout_s
    exited = False
    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready = select.select([pidfd, *bufs], [], [], left)[0]
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
        with contextlib.suppress(ValueError, TypeError):
            events.update(json.loads(line))
    if timed_out:
        return ExecResult(False, "timeout", f"timed out after {timeout_s:g} s", wall)
    if "error" in events:
        return ExecResult(False, "error", f"sandbox setup failed: {events['error']}"
                          [:DETAIL_CHARS], wall)
    lines = proof.decode(errors="replace").splitlines()
    if lines and lines[-1] == f"pass {nonce}" and events.get("exit") == 0:
        return ExecResult(True, "passed", "", wall)
    failures = [line[5:] for line in lines if line.startswith("fail ")]
    code = events.get("exit")
    if failures and code == 1:  # the harness's own report
        detail = failures[-1]
    elif isinstance(code, int) and code < 0:
        detail = f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() \
            else f"killed by signal {-code}"
    elif code is None:
        detail = "the sandbox runner died"
    else:
        detail = f"exited with status {code} before its check completed"
    return ExecResult(False, "failed", _clean(detail), wall)


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


def _remove_stale_temp_dirs() -> None:
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
