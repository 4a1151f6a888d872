"""Child side of pmbench.sandbox: isolate, limit, drop privileges, then run one program.

Launched as `python -I -S pmbench/sandbox/runner.py CONFIG_JSON` by pmbench.sandbox, never imported
(stdlib only). It is a process of its own because unshare(CLONE_NEWUSER) refuses
multi-threaded callers and subprocess's preexec_fn is unsafe next to the parent's worker
threads. Why by hand: bubblewrap/nsjail are not Python packages and may be missing; the
few syscalls below (unshare, mount, pivot_root, a seccomp filter) are all it takes.

Isolated (the default), the runner joins the program's cgroups and forks a keeper, which
enters new user, mount, network, PID, IPC, UTS and cgroup namespaces and forks the
sandbox's init, PID 1 of the new PID namespace. Init is ours, not the program's: it builds
a new root, a read-only tmpfs holding only:

- the system's /usr, /bin, /lib* and the interpreter's prefix, bound read-only (nothing of
  the project, the user's home or the results);
- a private /dev (null, zero, full, random, urandom, and a new devpts instance of
  PTYS terminals), a /proc of the new PID namespace, an empty read-only /tmp;
- /sandbox, a size-limited noexec tmpfs owned by the program: its only writable place.

It pivots into that root, makes itself undumpable and forks the program (PID 2), which
sets rlimits, drops to an unprivileged uid (no capabilities, no_new_privs), installs a
seccomp filter and execs the harness (harness.py). Init then waits: when the program's
first process ends, when its time is up, or when pmbench or the keeper die (a pipe, and
PR_SET_PDEATHSIG), init exits, and the kernel kills every process left in the namespace,
whatever it did to its own death signal or session. The program cannot signal init (the
kernel drops signals to a namespace's init that it has no handler for) nor trace or read
it (seccomp, not dumpable).

Unisolated (opt-in), the runner is a child subreaper: whatever the program leaves behind,
daemons included, is reparented to it and killed when the program ends, times out, or
pmbench dies.

How each process lives and dies is in lifetime.py, the seccomp filter in seccomp.py. The
setup's own failures go to the status pipe (close-on-exec: the program never holds it).
"""

import ctypes
import json
import os
import resource
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for its siblings
from lifetime import die_with, kill_descendants, supervise, watch  # noqa: E402
from seccomp import PIVOT_ROOT, install_seccomp  # noqa: E402

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID = 0x08000000, 0x10000000, 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = {"user": CLONE_NEWUSER, "mount": CLONE_NEWNS, "network": CLONE_NEWNET,
              "pid": CLONE_NEWPID, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS,
              "cgroup": CLONE_NEWCGROUP}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 4, 38, 36
PTYS = 16  # pseudo-terminals of the private devpts instance
DEVICES = ("null", "zero", "full", "random", "urandom")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache",)  # the dynamic loader's index of /usr/lib*
NEW_ROOT = "/tmp"  # any existing directory: the new root's tmpfs is mounted over it
SCRATCH = "/sandbox"


# The harness, run as `python -I -S -c HARNESS` (the standard library only, as HumanEval
# needs; site's walk of site-packages would double the start-up).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")) as _f:
    HARNESS = _f.read()

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
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


def bind_readonly(source: str, target: str) -> None:
    """Bind `source` at `target`, read-only, nosuid, nodev (locked flags such as noexec are
    kept by the kernel's check below: a remount that would clear them fails)."""
    mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    if os.statvfs(target).f_flag & os.ST_NOEXEC:
        flags |= MS_NOEXEC
    mount(None, target, None, flags)


def add_path(root: str, path: str, kind: str, ref) -> None:
    """Recreate `path` of the host inside `root`: a symlink, or a read-only bind of a
    directory or file (`ref`: an O_PATH descriptor opened before the new root hid it)."""
    os.makedirs(root + os.path.dirname(path), mode=0o755, exist_ok=True)
    if kind == "link":
        os.symlink(ref, root + path)
        return
    if kind == "dir":
        os.makedirs(root + path, mode=0o755, exist_ok=True)
    else:
        open(root + path, "x").close()
    bind_readonly(f"/proc/self/fd/{ref}", root + path)
    os.close(ref)


def host_paths(paths: list[str]) -> list[tuple[str, str, object]]:
    """(path, kind, symlink target or O_PATH fd) for the host paths that exist."""
    out = []
    for path in dict.fromkeys(paths):
        if os.path.islink(path):
            out.append((path, "link", os.readlink(path)))
        elif os.path.exists(path):
            kind = "dir" if os.path.isdir(path) else "file"
            out.append((path, kind, os.open(path, os.O_PATH)))
    return out


def build_dev(root: str) -> None:
    dev = root + "/dev"
    os.mkdir(dev, 0o755)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64")
    for name in DEVICES:
        open(f"{dev}/{name}", "x").close()
        mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/pts", 0o755)
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          f"newinstance,ptmxmode=0666,mode=0620,max={PTYS}")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def build_root(cfg: dict, source: bytes) -> list[str]:
    """Build the new root and pivot into it; return what could not be provided."""
    missing = []
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host
    root = NEW_ROOT
    paths = host_paths([*SYSTEM_DIRS, *SYSTEM_FILES, *cfg["keep"]])
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=1024")
    for path, kind, ref in paths:
        if os.path.lexists(root + path):  # already inside a bound directory
            if kind != "link":
                os.close(ref)
            continue
        add_path(root, path, kind, ref)
    build_dev(root)
    os.mkdir(root + "/proc", 0o555)
    try:  # a /proc of the new PID namespace; refused where the host's /proc is masked
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:
        missing.append(f"/proc ({exc.strerror})")
    os.mkdir(root + "/tmp", 0o755)
    os.mkdir(root + SCRATCH, 0o700)
    mount("tmpfs", root + SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"mode=0700,uid={cfg['uid']},gid={cfg['gid']},size={cfg['workdir_bytes']},"
          "nr_inodes=4096")
    program = f"{root}{SCRATCH}/program.py"
    with open(program, "wb") as f:
        f.write(source)
    os.chown(program, cfg["uid"], cfg["gid"])
    os.mkdir(root + "/.old", 0o700)
    _check(libc.syscall(PIVOT_ROOT[os.uname().machine], root.encode(), (root + "/.old").encode()),
           "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return missing


def set_limits(cfg: dict) -> None:
    limits = {resource.RLIMIT_CPU: cfg["cpu_s"], resource.RLIMIT_AS: cfg["memory_bytes"],
              resource.RLIMIT_FSIZE: cfg["file_bytes"], resource.RLIMIT_NPROC: cfg["processes"],
              resource.RLIMIT_NOFILE: cfg["open_files"], resource.RLIMIT_CORE: 0}
    for which, value in limits.items():
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU, then SIGKILL
        resource.setrlimit(which, (value, hard))


def drop_privileges(cfg: dict) -> None:
    if os.getuid() != cfg["uid"] or os.getgid() != cfg["gid"]:
        try:
            os.setgroups([])
        except PermissionError:  # setgroups is denied in a user namespace of a non-root user
            pass
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # no setuid binaries


def join_cgroups(cfg: dict) -> None:
    for directory in cfg["cgroups"]:
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def write_id_maps(pid: int, cfg: dict) -> None:
    """Map, in the new user namespace of `pid`, the runner's own uid (root: 0, which builds
    the root) and the program's uid, each to itself; nothing else exists there. Written from
    the parent namespace: only there may root map more than its own uid."""
    uid, gid = os.getuid(), os.getgid()
    uids = sorted({uid, cfg["uid"]}) if uid == 0 else [uid]
    gids = sorted({gid, cfg["gid"]}) if uid == 0 else [gid]
    files = [("uid_map", "".join(f"{u} {u} 1\n" for u in uids)),
             ("gid_map", "".join(f"{g} {g} 1\n" for g in gids))]
    if uid != 0:  # required before gid_map; root keeps setgroups to drop its own groups
        files.insert(0, ("setgroups", "deny"))
    for name, text in files:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)


def exec_harness(cfg: dict, nonce: bytes, python: str) -> None:
    """fd 0: the nonce, fd 3: the proof pipe, 1 and 2: /dev/null; then exec the harness."""
    r, w = os.pipe()
    os.write(w, nonce + b"\n")
    os.close(w)
    os.dup2(r, 0)
    os.dup2(cfg["fd_proof"], 3)
    status = cfg["fd_status"]  # close-on-exec: open until exec, to report its failure
    top = max(cfg["fd_proof"], status, cfg["fd_alive"], r) + 1
    os.closerange(4, status)
    os.closerange(status + 1, top)
    os.execve(python, [python, "-I", "-S", "-c", HARNESS], cfg["env"])


def run_isolated(cfg: dict, source: bytes, nonce: bytes) -> None:
    """runner -> keeper (enters the namespaces) -> init (PID 1 there) -> the program."""
    unshared_r, unshared_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    keeper = os.fork()
    if keeper == 0:
        try:
            die_with(cfg["fd_alive"])
            _check(libc.unshare(sum(NAMESPACES.values())), "unshare")
            os.write(unshared_w, b"1")
            if os.read(mapped_r, 1) != b"1":
                raise OSError("no uid map")
            start_init(cfg, source, nonce)
        except BaseException as exc:  # noqa: BLE001 - report anything, then exit
            fail(cfg, exc)
    os.close(unshared_w)
    if os.read(unshared_r, 1) == b"1":
        write_id_maps(keeper, cfg)
        os.write(mapped_w, b"1")
    supervise(cfg, keeper)


def start_init(cfg: dict, source: bytes, nonce: bytes) -> None:
    pid = os.fork()
    if pid == 0:  # PID 1 of the new PID namespace: the sandbox's init
        try:
            die_with(cfg["fd_alive"])
            _check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # no handler: signals from inside
            missing = build_root(cfg, source)            # the namespace never reach it
            program = os.fork()
            if program == 0:
                start_program(cfg, nonce, missing)
            watch(cfg, program)
        except BaseException as exc:  # noqa: BLE001
            fail(cfg, exc)
    supervise(cfg, pid)


def start_program(cfg: dict, nonce: bytes, missing: list[str]) -> None:
    """The program's first process: limits, an unprivileged uid, seccomp, the harness."""
    try:
        os.chdir(SCRATCH)
        set_limits(cfg)
        drop_privileges(cfg)
        install_seccomp()
        os.write(cfg["fd_status"], json.dumps({"ready": True, "missing": missing})
                 .encode() + b"\n")
        exec_harness(cfg, nonce, cfg["python"])
    except BaseException as exc:  # noqa: BLE001
        fail(cfg, exc)


def run_unisolated(cfg: dict, source: bytes, nonce: bytes) -> None:
    """The user opted into running without namespaces: limits, privilege drop, the harness,
    in a work directory on the host; the runner, a child subreaper, kills what is left."""
    _check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(cfg["workdir"])
            with open("program.py", "wb") as f:
                f.write(source)
            os.chown("program.py", cfg["uid"], cfg["gid"])
            set_limits(cfg)
            drop_privileges(cfg)
            os.write(cfg["fd_status"], json.dumps({"ready": True, "missing": []}).encode()
                     + b"\n")
            exec_harness(cfg, nonce, cfg["python"])
        except BaseException as exc:  # noqa: BLE001
            fail(cfg, exc)
    try:
        watch(cfg, pid, exit_now=False)
    finally:
        kill_descendants()
    os._exit(0)


def fail(cfg: dict, exc: BaseException) -> None:
    """Report a setup failure with the function that failed (e.g. `build_dev: ...`)."""
    tb, steps = exc.__traceback__, []
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        if tb.tb_frame.f_code.co_filename == __file__ and name not in ("main", "_check"):
            steps.append(name)
        tb = tb.tb_next
    try:
        os.write(cfg["fd_status"], json.dumps({"error": f"{' > '.join(steps)}: {exc}"})
                 .encode() + b"\n")
    finally:
        os._exit(125)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read())
    source, nonce = payload["source"].encode("utf-8"), payload["nonce"].encode()
    try:
        os.set_inheritable(cfg["fd_status"], False)  # closed by exec: the program never has it
        if cfg["isolated"]:  # unisolated, the runner outlives pmbench long enough to clean up
            die_with(cfg["fd_alive"])
        join_cgroups(cfg)
        (run_isolated if cfg["isolated"] else run_unisolated)(cfg, source, nonce)
    except BaseException as exc:  # noqa: BLE001
        fail(cfg, exc)


if __name__ == "__main__":
    main()
