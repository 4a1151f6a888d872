"""Child side of pmbench.sandbox: isolate, limit, drop privileges, then exec one program.

Launched as `python -I -S sandbox_runner.py CONFIG_JSON` by pmbench.sandbox, never imported
(stdlib only). It is a process of its own because unshare(CLONE_NEWUSER) refuses
multi-threaded callers and subprocess's preexec_fn is unsafe next to the parent's worker
threads.

With namespaces the runner enters new network, mount, IPC and PID namespaces (plus a user
namespace when not root) and forks the program's process, PID 1 of the new PID namespace:
when it exits or is killed, the kernel kills every process it left behind. In the new mount
namespace every mount is read-only, except a private size-limited tmpfs on the work
directory and on /dev/shm; the home directory, /tmp, /var/tmp and /run are covered by empty
read-only tmpfs (keeping only the interpreter and the work directory reachable).

Exit status 125 with a "pmbench-sandbox:" line on stderr means the sandbox itself failed.
"""

import ctypes
import json
import os
import re
import resource
import select
import signal
import sys

SETUP_FAILED = 125

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
# Per-mount options that a bind remount must repeat (the kernel refuses to clear locked ones).
MOUNT_OPTIONS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                 "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                 "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
KERNEL_TREES = ("/proc", "/sys")  # permission-checked by the kernel; remounting may fail

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target: str, fstype, flags: int, data: str = "") -> None:
    enc = lambda s: s.encode() if s else None  # noqa: E731
    _check(libc.mount(enc(source), target.encode(), enc(fstype), flags, enc(data)),
           f"mount {target}")


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def mount_points() -> list[tuple[str, int]]:
    """(mount point, per-mount flags to keep) for every mount, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            flags = sum(MOUNT_OPTIONS.get(opt, 0) for opt in fields[5].split(","))
            out.append((point, flags))
    return out


def make_everything_readonly() -> None:
    """Bind-remount every mount read-only (per mount: the host's mounts stay writable),
    then check each mount point really is read-only for this namespace."""
    points = mount_points()
    for point, flags in points:
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:
            pass  # checked below
    for point, _ in points:
        if any(under(point, t) for t in KERNEL_TREES):
            continue
        try:
            writable = not os.statvfs(point).f_flag & os.ST_RDONLY
        except OSError:
            continue  # not reachable from here, so not writable either
        if writable:
            raise OSError(f"could not make {point} read-only")


def hide(directory: str, keep: list[str]) -> None:
    """Cover `directory` with an empty read-only tmpfs, binding back the `keep` paths under it."""
    if not os.path.isdir(directory) or os.path.islink(directory):
        return
    kept = [(k, os.open(k, os.O_PATH)) for k in keep if under(k, directory)]
    mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=256")
    for path, fd in kept:
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    mount(None, directory, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def build_filesystem(cfg: dict) -> None:
    work = cfg["workdir"]
    program = os.path.join(work, "program.py")
    with open(program, "rb") as f:
        source = f.read()
    make_everything_readonly()
    mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
          f"mode=0700,uid={cfg['uid']},gid={cfg['gid']},size={cfg['workdir_bytes']},"
          "nr_inodes=4096")
    with open(program, "wb") as f:
        f.write(source)
    os.chown(program, cfg["uid"], cfg["gid"])
    for directory in cfg["hide"]:
        hide(directory, cfg["keep"] + [work])
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
              "mode=1777,size=16m,nr_inodes=1024")
    try:  # a /proc of the new PID namespace hides the host's processes; nice, not vital
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass


def set_limits(cfg: dict) -> None:
    limits = {resource.RLIMIT_CPU: cfg["cpu_s"], resource.RLIMIT_AS: cfg["memory_bytes"],
              resource.RLIMIT_FSIZE: cfg["file_bytes"], resource.RLIMIT_NPROC: cfg["processes"],
              resource.RLIMIT_CORE: 0}
    for which, value in limits.items():
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU, then SIGKILL
        resource.setrlimit(which, (value, hard))


def drop_privileges(cfg: dict) -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # no setuid binaries


def die_with_runner(runner_alive: int) -> None:
    """Get SIGKILL when the runner dies (the parent's timeout kills it), and exit now if it
    already has: `runner_alive` is a pipe that only reaches EOF once the runner is gone."""
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    if select.select([runner_alive], [], [], 0)[0]:
        os._exit(SETUP_FAILED)


def exec_program(cfg: dict) -> None:
    os.chdir(cfg["workdir"])
    os.execve(cfg["python"], [cfg["python"], "-I", "program.py"], cfg["env"])


def enter_namespaces(cfg: dict) -> None:
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        flags |= CLONE_NEWUSER  # gives an unprivileged user the right to build the mounts
    _check(libc.unshare(flags), "unshare")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host


def run_isolated(cfg: dict) -> None:
    enter_namespaces(cfg)
    runner_alive, keep_open = os.pipe()
    pid = os.fork()
    if pid == 0:  # PID 1 of the new PID namespace
        try:
            os.close(keep_open)
            die_with_runner(runner_alive)
            build_filesystem(cfg)
            set_limits(cfg)
            drop_privileges(cfg)
            die_with_runner(runner_alive)  # a change of uid clears the death signal
            exec_program(cfg)
        except BaseException as exc:  # noqa: BLE001 - report anything, then exit
            fail(exc)
    os.close(runner_alive)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        sys.stderr.write(f"killed by {signal.Signals(sig).name}\n")
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def run_basic(cfg: dict) -> None:
    """No namespaces available: limits and privilege drop only."""
    set_limits(cfg)
    drop_privileges(cfg)
    exec_program(cfg)


def fail(exc: BaseException) -> None:
    sys.stderr.write(f"pmbench-sandbox: setup failed: {exc}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        (run_isolated if cfg["namespaces"] else run_basic)(cfg)
    except BaseException as exc:  # noqa: BLE001
        fail(exc)


if __name__ == "__main__":
    main()
