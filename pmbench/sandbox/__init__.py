"""Run untrusted generated programs (HumanEval completions) under OS-level isolation.

Generated code is hostile. It runs only after an explicit opt-in, each program through
pmbench/sandbox/runner.py, which gives it (SECURITY.md has the threat model):

- new user, mount, network, PID, IPC, UTS and cgroup namespaces: no network device but a
  loopback that is down, its own process tree under a trusted init (when the program
  ends, times out, or pmbench dies, init exits and the kernel kills every process left),
  no view of the host's processes;
- a minimal read-only root (pivot_root): the system's /usr and /lib and the interpreter,
  nothing of the project, the user's home, /tmp or the results; a private /dev with its own
  devpts instance; a size-limited noexec tmpfs /sandbox as its only writable place;
- its own cgroup (memory, processes and tmpfs together; pids) where the cgroup tree is
  writable, else rlimits only; rlimits on CPU time, address space, file size, processes
  and open files; an unprivileged uid (as root, one per worker slot), no_new_privs;
- a seccomp filter that refuses namespace creation, mount, ptrace, kexec, bpf, perf,
  keyrings, userfaultfd, io_uring, memfd and every socket family but unix, inet and
  netlink-route.

A pass is proven, not inferred from an exit code: the harness (harness.py) prints a
per-program random nonce on a private pipe only after the program (its tests and
`check()`) returned, from references the program cannot patch, behind an audit hook that
keeps the nonce out of its reach; what a forgery would need is flagged per program.

Where full isolation is unavailable, `check_isolation` refuses with one line naming what is
missing, unless the user passes `--allow-unisolated-code-execution`; run.json records the
isolation applied either way. The sandbox dies with pmbench (a pipe and PR_SET_PDEATHSIG),
so a killed pmbench leaves no program behind.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.sandbox import cgroup as sandbox_cgroup
from pmbench.sandbox.process import (
    FILE_BYTES,
    MEMORY_BYTES,
    NOBODY,
    OPEN_FILES,
    PROCESSES,
    TEMP_PREFIX,
    WORKDIR_BYTES,
    ExecResult,
    identity,
    interpreter,
    remove_stale_temp_dirs,
    run_one,
)

__all__ = ["ExecResult", "Isolation", "TEMP_PREFIX", "check_isolation", "code_execution_allowed",
           "isolation", "run_programs"]

ENV_FLAG = "PMBENCH_ALLOW_CODE_EXECUTION"
PROBE_TIMEOUTS = (30.0, 60.0, 120.0)  # the probe is retried, slower each time


log = logging.getLogger(__name__)


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
        out["pass_proof"] = "nonce, audit hook, patch check" if self.full else "nonce"
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
        python = interpreter()[0]
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

        stop = threading.Event()  # Ctrl-C: the programs in flight are killed, not awaited

        def run(source: str) -> ExecResult:
            slot, cgroups = slots.get()
            try:
                return run_one(source, timeout_s, slot, isolated, cgroups, stop)
            finally:
                slots.put((slot, cgroups))

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            try:
                return list(pool.map(run, programs))
            except BaseException:
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
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
    remove_stale_temp_dirs()
    cgroup_tree, cgroup_why = sandbox_cgroup.tree()
    cgroup = cgroup_tree.version if cgroup_tree else f"none: {cgroup_why}"
    uid, _ = identity(0)
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
            result = run_one(_probe_source(), timeout, 0, True, cgroups)
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
    _, keep = interpreter()
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
import errno, os, resource, socket, subprocess, sys
assert os.getpid() == 2 and os.getppid() == 1, "no PID namespace under the sandbox's init"
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
assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] <= {OPEN_FILES}, "no open-file limit"
if os.path.exists("/proc/self/status"):
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    assert int(status["CapEff"], 16) == 0, "capabilities left"
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
try:
    import ctypes
except PermissionError:
    pass
else:
    raise AssertionError("no audit hook")
child = subprocess.run([sys.executable, "-I", "-S", "-c", {_PROBE_CHILD!r}],
                       capture_output=True, text=True)
assert child.returncode == 0, (child.stderr.strip().splitlines() or ["no seccomp"])[-1]
open("inside", "x").close()
"""


# What the probe checks in a child process, which has no audit hook: the seccomp filter.
_PROBE_CHILD = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x10000000) != 0 and ctypes.get_errno() == errno.EPERM, "no seccomp"
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
except OSError as exc:
    assert exc.errno == errno.EAFNOSUPPORT, "vsock: " + str(exc)
else:
    raise AssertionError("could create a vsock socket")
"""
