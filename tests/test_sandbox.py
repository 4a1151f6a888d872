"""Sandbox for generated code: hostile programs fail, change nothing outside, never stall.

Each hostile program is shaped like a HumanEval problem whose check passes only if the
hostile action succeeded (so pass@1 of the hostile set must be 0), and the tests check on
their own that the side effect did not happen. The targets outside the sandbox are
world-writable or listening for anyone, so only OS-level isolation protects them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from pmbench.errors import BadInput
from pmbench.sandbox import (
    ENV_FLAG,
    TEMP_PREFIX,
    Isolation,
    check_isolation,
    code_execution_allowed,
    isolation,
    run_programs,
)
from pmbench.sandbox import cgroup as sandbox_cgroup

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0
TAG = uuid.uuid4().hex[:12]
NONCE = str(uuid.uuid4().int)[:9]
SECRET = f"pmbench-secret-{uuid.uuid4().hex}"
# `sleep 999.<n><nonce>`: a command line that only this test's hostile programs start.
SLEEP_MARKERS = {name: f"999.{n}{NONCE}" for n, name in
                 enumerate(["fork", "escape", "daemon", "orphan", "linger"], 1)}
TMP_TARGET = f"/tmp/pmbench-hostile-{TAG}"
HOME_TARGET = str(Path.home() / f".pmbench-hostile-{TAG}")
HOME_SECRET = Path.home() / f".pmbench-secret-{TAG}"
SHM_TARGET = f"/dev/shm/pmbench-hostile-{TAG}"
ABSTRACT_SOCKET = f"\0pmbench-hostile-{TAG}"
GONE = ("Read-only file system", "No such file or directory")  # why a write outside fails


# A child process has no audit hook: what it does meets the OS walls alone.
OUTSIDE_HOOK = textwrap.dedent("""
    def outside_hook(code):
        out = subprocess.run([sys.executable, '-I', '-S', '-c', code], capture_output=True,
                             text=True)
        if out.returncode:
            raise AssertionError((out.stderr.strip().splitlines() or ['failed'])[-1])
        return True
""")
NESTED_USERNS = textwrap.dedent("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000 | 0x00020000) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    assert libc.mount(b'tmpfs', b'/sandbox', b'tmpfs', 0, b'size=4g') == 0
""")


def ptrace_code(victim: int) -> str:
    return ("import ctypes, os\nlibc = ctypes.CDLL(None)\n"
            f"assert any(libc.ptrace(16, p, 0, 0) == 0 for p in (os.getppid(), 1, {victim}))")


def humaneval(completion: str) -> str:
    """Prompt + completion + test + check(entry_point), as the humaneval suite builds them."""
    return (
        "import os, signal, socket, subprocess, sys, time\n" + OUTSIDE_HOOK + "\n\n"
        "def candidate():\n" + textwrap.indent(textwrap.dedent(completion).strip(), "    ")
        + "\n\n\ndef check(candidate):\n    assert candidate() is True\n\n\n"
        "check(candidate)\n"
    )


def world_writable_dir() -> Path:
    """A directory outside any sandbox that anyone may write to: only isolation protects it.
    It lies in the checkout (git-ignored), which sandboxes do not see."""
    base = ROOT / ".pytest_cache"
    base.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="sandbox-outside-", dir=base))
    path.chmod(0o777)
    return path


def remove_world_writable_dir(path: Path) -> None:
    shutil.rmtree(path)
    try:
        path.parent.rmdir()  # .pytest_cache, if we made it and pytest keeps no cache
    except OSError:
        pass


def hostile_programs(outside: Path, ports: dict[str, int], victim: int) -> dict[str, tuple]:
    """name -> (completion, expected status or statuses, pieces of the detail, one of which
    must show)."""
    sentinel, written, secret = outside / "sentinel", outside / "written", outside / "secret"
    marker = SLEEP_MARKERS
    return {
        # Writing and deleting outside the sandbox.
        "write_tmp": (f"open({TMP_TARGET!r}, 'w').write('x')\nreturn True", "failed", GONE),
        "write_home": (f"open({HOME_TARGET!r}, 'w').write('x')\nreturn True", "failed", GONE),
        "write_outside": (f"open('{written}', 'w').write('x')\nreturn True", "failed", GONE),
        "delete_sentinel": (f"os.remove('{sentinel}')\nreturn True", "failed", GONE),
        "write_dev_shm": (f"open({SHM_TARGET!r}, 'w').write('x')\nreturn True", "failed", GONE),
        "os_system": (f"return os.system('rm -f {sentinel} && touch {TMP_TARGET}') == 0",
                      "failed", ("AssertionError",)),
        "subprocess": (f"subprocess.run(['rm', '{sentinel}'], check=True)\n"
                       f"subprocess.run(['touch', '{written}'], check=True)\nreturn True",
                       "failed", ("CalledProcessError",)),
        # Reading secrets: a planted file, the parent's environment, any process's.
        "read_secret": (f"raise AssertionError(open('{secret}').read())", "failed", GONE),
        "read_home_secret": (f"raise AssertionError(open('{HOME_SECRET}').read())",
                             "failed", GONE),
        "read_environ": (f"""
            found = [p for p in os.listdir('/proc') if p.isdigit()
                     and b'{SECRET}' in open('/proc/' + p + '/environ', 'rb').read()]
            return bool(found) or '{SECRET}' in str(os.environ)""", "failed",
                         ("AssertionError", "Permission denied")),  # init is not dumpable
        # Exhausting the host: CPU, memory, processes, files, terminals, output.
        "infinite_loop": ("while True:\n    pass", "timeout", (f"{TIMEOUT:g} s",)),
        "allocate_8gb": ("block = bytearray(8 * 1024**3)\nreturn len(block) > 0",
                         "failed", ("MemoryError",)),
        "children_near_limit": ("""
            pids = []
            for _ in range(6):  # 6 x 512 MiB: each under the per-process limit, not together
                pid = os.fork()
                if pid == 0:
                    block = b'\\x01' * (1 << 29)
                    time.sleep(1.0)
                    os._exit(0 if len(block) else 1)
                pids.append(pid)
            return all(os.waitpid(p, 0)[1] == 0 for p in pids)""",  # on a busy machine the
                                ("failed", "timeout"),  # killed children may take longer
                                ("AssertionError", "killed by SIGKILL", f"{TIMEOUT:g} s")),
        "fork_200": (f"""
            children = []
            for _ in range(200):
                pid = os.fork()
                if pid == 0:
                    os.execvp('sleep', ['sleep', '{marker['fork']}'])
                children.append(pid)
            return len(children) == 200""", "failed", ("Resource temporarily unavailable",)),
        "open_files": ("return len([open('/dev/null') for _ in range(10000)]) == 10000",
                       "failed", ("Too many open files",)),
        "ptmx_loop": ("""
            fds = []
            while len(fds) < 1000:
                fds.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))
            return True""", "failed", ("No space left on device", "Too many open files")),
        "huge_file": ("open('big', 'wb').write(bytes(64 << 20))\nreturn True",
                      "failed", ("File too large",)),
        "stderr_flood": ("""
            chunk = b'x' * (1 << 20)
            for _ in range(100):
                os.write(2, chunk)
            return False""", "failed", ("AssertionError",)),
        "proof_flood": ("""
            for _ in range(1000):
                os.write(3, b'pass ' + b'0' * 32 + b'\\n' + b'x' * 10000)
            return False""", "failed", ("AssertionError", "before its check completed")),
        # Reaching out: TCP and IPv6 loopback, unix sockets planted or abstract.
        "network": (f"socket.create_connection(('127.0.0.1', {ports['tcp']}), timeout=2)\n"
                    "return True", "failed", ("Network is unreachable",)),
        "network_ipv6": (f"socket.create_connection(('::1', {ports['tcp6']}), timeout=2)\n"
                         "return True", "failed",
                         ("Network is unreachable", "Cannot assign requested address",
                          "Address family not supported")),
        "unix_socket": (f"s = socket.socket(socket.AF_UNIX)\ns.connect('{outside}/sock')\n"
                        "return True", "failed", GONE),
        "abstract_socket": (f"s = socket.socket(socket.AF_UNIX)\ns.connect({ABSTRACT_SOCKET!r})"
                            "\nreturn True", "failed", ("Connection refused",)),
        # Leaving the walls: new namespaces, mounts, tracing, killing.
        "nested_userns_tmpfs": (f"return outside_hook({NESTED_USERNS!r})", "failed",
                                ("Operation not permitted",)),
        "unshare_binary": ("return os.system('unshare -Urm true') == 0", "failed",
                           ("AssertionError",)),
        "ptrace_parent": (f"return outside_hook({ptrace_code(victim)!r})", "failed",
                          ("AssertionError",)),
        "read_harness_memory": ("return outside_hook('import os; "
                                "open(f\"/proc/{os.getppid()}/mem\", \"rb\")')",
                                "failed", ("Permission denied",)),
        # Socket families, memory files and executables a program has no use for.
        "vsock": ("socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\nreturn True",
                  "failed", ("Address family not supported",)),
        "packet_socket": ("socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\nreturn True",
                          "failed", ("Address family not supported",)),
        "netlink_audit": ("socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)\nreturn True",
                          "failed", ("Address family not supported",)),
        "memfd": ("os.memfd_create('x')\nreturn True", "failed", ("Operation not permitted",)),
        "exec_from_scratch": ("open('x.sh', 'w').write('#!/bin/sh\\ntrue\\n')\n"
                              "os.chmod('x.sh', 0o755)\n"
                              "return subprocess.run(['./x.sh']).returncode == 0",
                              "failed", ("Permission denied",)),
        "kill_everything": ("os.kill(-1, signal.SIGKILL)\nreturn False", "failed",
                            ("AssertionError", "No such process")),
        # Leaving processes behind: a new session, a daemon.
        "escape_session": (f"os.setsid()\nos.execvp('sleep', ['sleep', '{marker['escape']}'])",
                           "timeout", (f"{TIMEOUT:g} s",)),
        "daemon": (f"subprocess.Popen(['sleep', '{marker['daemon']}'], "
                   "start_new_session=True)\nreturn False", "failed", ("AssertionError",)),
        # Faking the pass: every way to end early with status 0, a guessed proof.
        "sys_exit_0": ("sys.exit(0)", "failed", ("SystemExit",)),
        "exit_builtin": ("exit()", "failed", ("SystemExit",)),
        "os_exit_0": ("os._exit(0)", "failed", ("before its check completed",)),
        "kill_harness": ("os.kill(os.getpid(), signal.SIGKILL)\nos._exit(0)", "failed",
                         ("before its check completed", "killed by SIGKILL")),
        "guessed_proof": ("os.write(3, b'pass ' + b'0' * 32 + b'\\n')\n"
                          "print('pass ' + '0' * 32)\nos._exit(0)", "failed",
                          ("before its check completed", "next to other output")),
        # Forging the pass from inside the interpreter.
        "patched_os_exit": ("os._exit = lambda *a, **k: None\nreturn False", "failed",
                            ("AssertionError",)),
        "patched_os_exit_passing": ("os._exit = lambda *a, **k: None\nreturn True", "failed",
                                    ("patched os._exit",)),
        "nonce_from_frames": ("""
            import re
            frame, found = sys._getframe(), []
            while frame is not None:
                found += [v for v in frame.f_locals.values()
                          if isinstance(v, bytes) and re.fullmatch(rb'[0-9a-f]{32}', v)]
                frame = frame.f_back
            for nonce in found:
                os.write(3, b'pass ' + nonce + bytes([10]))
                os._exit(0)
            return False""", "failed", ("AssertionError",)),
        "nonce_from_objects": ("import gc\n"
                               "return any(isinstance(o, bytes) for o in gc.get_objects())",
                               "failed", ("not allowed in the sandbox",)),
        "own_memory": ("open('/proc/self/mem', 'rb')\nreturn True", "failed",
                       ("not allowed in the sandbox",)),
        "ctypes": ("import ctypes\nreturn True", "failed", ("not allowed in the sandbox",)),
        "settrace_check": ("""
            def skip_check(frame, event, arg):
                return None if frame.f_code.co_name == 'check' else skip_check
            sys.settrace(skip_check)
            return False""", "failed", ("not allowed in the sandbox",)),
        "forged_done_event": ("sys.audit('pmbench.done')\nreturn False", "failed",
                              ("AssertionError",)),
    }


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def listener(family: int, address) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen()
    sock.setblocking(False)
    return sock


@pytest.fixture(scope="module")
def hostile():
    """Run every hostile program in one parallel batch; yield what the checks need."""
    outside = world_writable_dir()
    (outside / "sentinel").write_text("keep me")
    (outside / "sentinel").chmod(0o666)
    for secret in (outside / "secret", HOME_SECRET):
        secret.write_text(SECRET)
        secret.chmod(0o644)
    listeners = {"tcp": listener(socket.AF_INET, ("127.0.0.1", 0)),
                 "tcp6": listener(socket.AF_INET6, ("::1", 0)),
                 "unix": listener(socket.AF_UNIX, str(outside / "sock")),
                 "abstract": listener(socket.AF_UNIX, ABSTRACT_SOCKET)}
    (outside / "sock").chmod(0o777)
    ports = {name: listeners[name].getsockname()[1] for name in ("tcp", "tcp6")}
    victim = subprocess.Popen(["sleep", "600"])
    cases = hostile_programs(outside, ports, victim.pid)
    os.environ["PMBENCH_TEST_SECRET"] = SECRET
    t0 = time.perf_counter()
    try:
        results = run_programs([humaneval(c) for c, _, _ in cases.values()],
                               timeout_s=TIMEOUT, workers=4)
    finally:
        del os.environ["PMBENCH_TEST_SECRET"]
    wall = time.perf_counter() - t0
    yield {"cases": cases, "results": dict(zip(cases, results, strict=True)),
           "outside": outside, "listeners": listeners, "wall": wall, "victim": victim}
    victim.kill()
    victim.wait()
    for sock in listeners.values():
        sock.close()
    remove_world_writable_dir(outside)
    for target in (TMP_TARGET, HOME_TARGET, SHM_TARGET, HOME_SECRET):
        Path(target).unlink(missing_ok=True)


def test_namespaces_are_available_here():
    """The hostile tests below rely on full isolation; the probe checks it from the inside."""
    iso = isolation()
    assert iso.full, iso.missing
    assert set(iso.namespaces) >= {"user", "mount", "network", "pid", "ipc"}
    if os.geteuid() == 0:
        assert "uid" in iso.user
    # A cgroup needs a writable tree; without one the fallback (rlimits) is documented.
    assert iso.cgroup in ("v1", "v2") or iso.cgroup.startswith("none: "), iso.cgroup


@pytest.mark.parametrize("name", list(hostile_programs(Path("/x"), {"tcp": 1, "tcp6": 1}, 1)))
def test_hostile_program_fails_and_changes_nothing(hostile, name):
    _, status, details = hostile["cases"][name]
    result = hostile["results"][name]
    if name == "children_near_limit" and isolation().cgroup.startswith("none"):
        pytest.skip("no writable cgroup tree: memory is bounded per process only")
    assert result.status in ((status,) if isinstance(status, str) else status), result
    assert result.passed is False
    assert any(d in result.detail for d in details), result
    assert result.wall_s < TIMEOUT + 3, result
    assert len(result.detail) <= 300 and SECRET not in result.detail
    outside = hostile["outside"]
    assert sorted(os.listdir(outside)) == ["secret", "sentinel", "sock"]
    assert (outside / "sentinel").read_text() == "keep me"
    assert not any(map(os.path.exists, (TMP_TARGET, HOME_TARGET, SHM_TARGET)))
    for sock in hostile["listeners"].values():
        with pytest.raises(BlockingIOError):
            sock.accept()
    assert hostile["victim"].poll() is None, "a host process was killed"


def test_hostile_set_scores_zero(hostile):
    assert sum(r.passed for r in hostile["results"].values()) == 0


def test_no_process_outlives_its_program(hostile):
    deadline = time.monotonic() + 5
    while any(map(processes_with, SLEEP_MARKERS.values())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(processes_with, SLEEP_MARKERS.values()))


def test_hostile_batch_does_not_stall(hostile):
    # 37 programs on 4 workers, two of which run into the timeout.
    assert hostile["wall"] < 3 * TIMEOUT + 20, hostile["wall"]


def test_host_filesystem_stays_writable_for_us(hostile):
    """The read-only remounts live in the sandbox's mount namespace only."""
    probe = Path(tempfile.gettempdir()) / f"pmbench-host-{TAG}"
    probe.write_text("x")
    probe.unlink()


def test_correct_passes_wrong_fails_in_order():
    correct = humaneval("return sum([1, 2, 3]) == 6")
    wrong = humaneval("return sum([1, 2, 3]) == 7")
    crash = "raise SystemExit('bad completion')"
    results = run_programs([wrong, correct, crash, correct], timeout_s=TIMEOUT)
    assert [r.status for r in results] == ["failed", "passed", "failed", "passed"]
    assert [r.passed for r in results] == [False, True, False, True]
    assert results[0].detail == "AssertionError"
    assert results[2].detail == "SystemExit: bad completion"
    assert results[1].detail == "" and results[1].wall_s > 0


def test_program_runs_isolated_unprivileged_in_a_minimal_root():
    check_root = os.geteuid() == 0
    program = humaneval(f"""
        import tempfile
        assert sys.flags.isolated
        assert os.listdir('.') == ['program.py'], os.listdir('.')
        assert tempfile.gettempdir() == os.getcwd() == os.environ['HOME'] == '/sandbox'
        open('scratch.txt', 'w').write('x' * 1000)
        tempfile.NamedTemporaryFile().close()
        assert not {check_root} or (os.getuid() != 0 and os.getgroups() == [])
        assert set(os.listdir('/')) <= {{'bin', 'dev', 'lib', 'lib32', 'lib64', 'libx32',
            'proc', 'root', 'sandbox', 'sbin', 'tmp', 'usr', 'etc', 'home', 'opt'}}, os.listdir('/')
        assert os.listdir('/etc') == ['ld.so.cache']
        assert not os.path.exists({str(ROOT)!r})
        assert os.listdir('/tmp') == []
        return os.getpid() == 2 and os.getppid() == 1  # under the sandbox's init""")
    (result,) = run_programs([program], timeout_s=TIMEOUT)
    assert result.passed, result


def test_isolated_runs_leave_no_temp_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    leave = humaneval("open('left.txt', 'w').write('x')\nreturn os.listdir('.') != []")
    results = run_programs([leave, leave], timeout_s=TIMEOUT, workers=2)
    assert all(r.passed for r in results), results
    assert list(tmp_path.iterdir()) == []


def test_programs_run_in_parallel():
    isolation()  # probe outside the timing
    nap = humaneval("time.sleep(1.0)\nreturn True")
    t0 = time.perf_counter()
    results = run_programs([nap] * 6, timeout_s=TIMEOUT, workers=6)
    wall = time.perf_counter() - t0
    assert all(r.passed for r in results), results
    assert all(r.wall_s >= 1.0 for r in results)
    assert wall < 3.0, f"6 x 1 s sleeps took {wall:.2f} s on 6 workers (6 s one by one)"


def test_no_programs():
    assert run_programs([]) == []


def test_partial_isolation_is_refused_unless_allowed(monkeypatch):
    partial = Isolation(False, "uid 0", "sandbox setup failed: unshare: Operation not permitted")
    monkeypatch.setattr("pmbench.sandbox.isolation", lambda: partial)
    with pytest.raises(BadInput, match="refusing .* unshare: Operation not permitted.*"
                                       "--allow-unisolated-code-execution"):
        check_isolation()
    monkeypatch.setattr("pmbench.sandbox._reachable_by_others", lambda path: True)
    record = check_isolation(allow_unisolated=True)
    assert record["full"] is False and record["missing"] == partial.missing
    if os.geteuid() == 0:  # programs run as another uid, which must reach the interpreter
        monkeypatch.setattr("pmbench.sandbox._reachable_by_others", lambda path: False)
        with pytest.raises(BadInput, match="not reachable by an unprivileged user"):
            check_isolation(allow_unisolated=True)


# A wrapper that refuses namespaces to what it runs, as a container's default seccomp
# profile does: the sandbox's own filter, installed before exec.
NO_NAMESPACES = textwrap.dedent("""
    import ctypes, os, runpy, sys
    sys.path.insert(0, {pmbench!r})
    sys.argv = sys.argv[1:]
    import importlib.util
    spec = importlib.util.spec_from_file_location("runner", {runner!r})
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    runner.libc.prctl(38, 1, 0, 0, 0)
    runner.install_seccomp()
    runpy.run_path(sys.argv[0], run_name="__main__")
""").format(pmbench=str(ROOT), runner=str(ROOT / "pmbench" / "sandbox" / "runner.py"))


def run_without_namespaces(script: str, *args: str, python: str = sys.executable,
                           env: dict | None = None) -> subprocess.CompletedProcess:
    path = Path(tempfile.mkdtemp()) / "script.py"
    path.write_text(script)
    try:
        return subprocess.run([python, "-c", NO_NAMESPACES, str(path), *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    finally:
        shutil.rmtree(path.parent)


def system_python() -> str:
    """A Python that an unprivileged uid can run (this venv's may live in /root) and that
    imports pmbench.sandbox from this checkout (stdlib only); skip the test if none."""
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        probe = subprocess.run([python, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                                "import pmbench.sandbox", str(ROOT)], capture_output=True)
        if probe.returncode == 0:
            return python
    pytest.skip("no system python3 that imports pmbench.sandbox")


def test_no_namespaces_refuses_then_runs_only_when_allowed():
    """Where namespaces are refused, the probe says so, pmbench refuses, and the explicit
    opt-in runs programs with limits and the pass proof still in force."""
    script = textwrap.dedent(f"""
        import json
        from pmbench.errors import BadInput
        from pmbench.sandbox import check_isolation, run_programs
        try:
            check_isolation()
            print(json.dumps({{"refused": None}}))
        except BadInput as exc:
            programs = [{humaneval("return True")!r}, {humaneval("sys.exit(0)")!r},
                        {humaneval("return False")!r}]
            results = run_programs(programs, timeout_s=10, allow_unisolated=True)
            print(json.dumps({{"refused": str(exc), "record": check_isolation(True),
                              "status": [r.status for r in results]}}))
    """)
    out = run_without_namespaces(script, python=system_python())
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "refusing to run generated code without full isolation" in report["refused"]
    assert "unshare" in report["refused"] and "Operation not permitted" in report["refused"]
    assert report["record"]["full"] is False and report["record"]["namespaces"] == []
    assert report["status"] == ["passed", "failed", "failed"]


def test_cli_refuses_humaneval_without_namespaces(tmp_path):
    cli = "from pmbench.cli import main; main()"
    out = run_without_namespaces(cli, "run", "--method", "oracle", "--suite", "humaneval",
                                 "--limit", "2", "--allow-code-execution",
                                 "--output-dir", str(tmp_path))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "--allow-unisolated-code-execution" in lines[0]
    assert list(tmp_path.iterdir()) == []


ORPHAN_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from pmbench.sandbox import run_programs
    program = "import os\\nos.execvp('sleep', ['sleep', '{marker}'])\\n"
    run_programs([program, program], timeout_s=60, workers=2,
                 allow_unisolated={unisolated})
""")


@pytest.mark.parametrize("unisolated", [False, True], ids=["isolated", "unisolated"])
def test_kill_9_of_pmbench_leaves_no_process_and_no_temp_folder(tmp_path, unisolated):
    marker = f"{SLEEP_MARKERS['orphan']}{int(unisolated)}"
    script = ORPHAN_SCRIPT.format(root=str(ROOT), marker=marker, unisolated=unisolated)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    if unisolated:  # namespaces refused, so the programs run in a work folder on the host
        path = tmp_path / "script.py"
        path.write_text(script)
        command = [system_python(), "-c", NO_NAMESPACES, str(path)]
    else:
        command = [sys.executable, "-c", script]
    pmbench = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    sleeping = lambda: [p for p in processes_with(marker) if p != pmbench.pid]  # noqa: E731
    while len(sleeping()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sleeping()) == 2, "the programs never started"
    os.kill(pmbench.pid, signal.SIGKILL)
    pmbench.wait()
    runners = lambda: [p for p in processes_with("pmbench/sandbox/runner.py")  # noqa: E731
                       if p != os.getpid()]
    deadline = time.monotonic() + 5  # the runners see pmbench die, kill, reap, then exit
    while (processes_with(marker) or runners()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_with(marker) and not runners()
    tree, _ = sandbox_cgroup.tree()
    if tree is not None:  # pmbench's cgroups, empty now, go at the next start-up
        sandbox_cgroup.cleanup_stale(tree)
        assert not [e for parent in tree.parents for e in os.listdir(parent)
                    if e.startswith(f"{sandbox_cgroup.PREFIX}{pmbench.pid}-")]
    left = [p.name for p in tmp_path.iterdir() if p.name != "script.py"]
    if unisolated:  # a work folder on the host: removed by the next pmbench's start-up
        assert all(n.startswith(f"{TEMP_PREFIX}{pmbench.pid}-") for n in left), left
        assert left, "the unisolated programs had no work folder"
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                        "from pmbench.sandbox.process import remove_stale_temp_dirs as r; r()",
                        str(ROOT)], env=env, check=True)
        left = [p.name for p in tmp_path.iterdir() if p.name != "script.py"]
    assert left == []


# A program that leaves processes with no tie to it but the sandbox: a child interpreter
# (which the audit hook does not follow) clears its death signal, leaves the session and
# forks; both halves sleep. Only the PID namespace's init (isolated) or the runner's
# subreaping (unisolated) can end them, with or without a cgroup to empty.
LINGER_CHILD = textwrap.dedent("""
    import ctypes, os, sys
    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
    os.setsid()
    os.fork()
    os.execvp('sleep', ['sleep', sys.argv[1] + sys.argv[2]])
""")
LINGER_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from pmbench.sandbox import isolation, run_programs
    print(json.dumps(isolation().cgroup), flush=True)
    results = run_programs({programs!r}, timeout_s={timeout}, workers=2,
                           allow_unisolated={unisolated})
    print(json.dumps([r.status for r in results]), flush=True)
""")
READ_ONLY_CGROUPS = ("for m in $(awk '$3 ~ /^cgroup/ {print $2}' /proc/self/mounts); do "
                     'mount -o remount,bind,ro "$m" || exit 3; done; exec "$@"')


def lingering_program(marker: str) -> str:
    """The program tries the same itself (ctypes is refused in the harness now; the first
    process of the sandbox used to be the program), then sleeps."""
    head, tail = marker[:4], marker[4:]  # only the sleeps carry the whole marker
    return ("import os, subprocess, sys, time\n"
            "try:\n    import ctypes\n    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\n"
            "except PermissionError:\n    pass\nos.setsid()\n"
            f"subprocess.Popen([sys.executable, '-I', '-S', '-c', {LINGER_CHILD!r}, "
            f"{head!r}, {tail!r}])\ntime.sleep(600)\n")


def linger_command(script: str, tmp_path: Path, unisolated: bool, cgroups: str) -> list[str]:
    """pmbench running `script`: without namespaces for `unisolated`, and in a private
    mount namespace whose cgroup mounts are read-only (no writable cgroup tree) unless
    `cgroups` is "writable"."""
    if unisolated:
        path = tmp_path / "script.py"
        path.write_text(script)
        command = [system_python(), "-c", NO_NAMESPACES, str(path)]
    else:
        command = [sys.executable, "-c", script]
    if cgroups == "writable":
        return command
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only cgroup mount needs root and unshare")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_CGROUPS,
            "sh", *command]


@pytest.mark.parametrize("how", ["timeout", "SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("unisolated, cgroups", [(False, "writable"), (False, "read-only"),
                                                 (True, "read-only")],
                         ids=["isolated", "isolated-no-cgroup", "unisolated-no-cgroup"])
def test_nothing_outlives_a_run(tmp_path, how, unisolated, cgroups):
    case = ["timeout", "SIGKILL", "SIGTERM"].index(how) * 3 + 2 * unisolated + (
        cgroups == "read-only")
    marker = f"{SLEEP_MARKERS['linger']}{case}"
    script = LINGER_SCRIPT.format(root=str(ROOT), programs=[lingering_program(marker)] * 2,
                                  timeout=3 if how == "timeout" else 60, unisolated=unisolated)
    command = linger_command(script, tmp_path, unisolated, cgroups)
    pmbench = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        cgroup = json.loads(pmbench.stdout.readline())
        if cgroups == "writable" and cgroup.startswith("none"):
            pytest.skip(f"no writable cgroup tree here ({cgroup})")
        assert cgroup.startswith("none") == (cgroups == "read-only"), cgroup
        deadline, most = time.monotonic() + 30, 0
        while most < 4 and pmbench.poll() is None and time.monotonic() < deadline:
            most = max(most, len(processes_with(marker)))
            time.sleep(0.05)
        assert most == 4, "the lingering processes never started"
        if how == "timeout":
            assert json.loads(pmbench.stdout.readline()) == ["timeout", "timeout"]
        else:
            pmbench.send_signal(getattr(signal, how))
        pmbench.wait(timeout=30)
        deadline = time.monotonic() + 5
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes_with(marker), f"processes outlived the run ({how})"
    finally:
        pmbench.kill()
        pmbench.wait()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_opt_in(monkeypatch):
    monkeypatch.delenv(ENV_FLAG, raising=False)
    assert code_execution_allowed(False) is False
    assert code_execution_allowed(True) is True
    for value in ("1", "true", "YES", " on "):
        monkeypatch.setenv(ENV_FLAG, value)
        assert code_execution_allowed(False) is True
    for value in ("", "0", "no", "false"):
        monkeypatch.setenv(ENV_FLAG, value)
        assert code_execution_allowed(False) is False


def _system_python_as_nobody() -> list[str] | None:
    """A command prefix running a system interpreter as `nobody` that can import pmbench
    from this checkout, or None (not root, no setpriv, or nothing readable by nobody)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-I"]
        probe = subprocess.run(
            [*cmd, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import pmbench.sandbox"],
            capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
        if probe.returncode == 0:
            return cmd
    return None


def test_unprivileged_caller_gets_the_same_isolation():
    """pmbench not run as root: a user namespace builds the same walls (and RLIMIT_NPROC
    binds). Run as `nobody` with a system interpreter, since this venv's lives in /root."""
    cmd = _system_python_as_nobody()
    if cmd is None:
        pytest.skip("needs root, setpriv and a system python3 that nobody can run")
    outside = world_writable_dir()
    programs = {
        "correct": humaneval("return True"),
        "write_tmp": humaneval(f"open('{TMP_TARGET}-nobody', 'w')\nreturn True"),
        "write_outside": humaneval(f"open('{outside}/x', 'w')\nreturn True"),
        "network": humaneval("socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
                             "return True"),
        "fork_200": humaneval("return all(os.fork() or os._exit(0) for _ in range(200))"),
        "allocate_8gb": humaneval("return len(bytearray(8 * 1024**3)) > 0"),
    }
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pmbench.sandbox import isolation, run_programs
        programs = {json.dumps(programs)}
        results = run_programs(list(programs.values()), timeout_s={TIMEOUT})
        print(json.dumps({{"full": isolation().full,
                          "status": dict(zip(programs, [r.status for r in results]))}}))
    """)
    try:
        out = subprocess.run([*cmd, "-c", script], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["full"] is True
        expected = {name: "failed" for name in programs} | {"correct": "passed"}
        assert report["status"] == expected
        assert not os.path.exists(f"{TMP_TARGET}-nobody") and list(outside.iterdir()) == []
    finally:
        remove_world_writable_dir(outside)
        Path(f"{TMP_TARGET}-nobody").unlink(missing_ok=True)


def forged(patch: str, check: str, body: str = "return 5") -> str:
    """A completion that patches at module level (a completion may dedent), then a check."""
    return (f"import os, sys\n\ndef candidate():\n    {body}\n{patch}\n\n"
            f"def check(candidate):\n    {check}\n\ncheck(candidate)\n")


def test_in_process_forgeries():
    """Patches of what the check calls fail; what no harness can prevent is flagged."""
    near = "assert abs(candidate() - 1) < 1e-6"
    isclose = "import math\n    assert math.isclose(candidate(), 1)"
    fake_math = ("import types\nm = types.ModuleType('math')\n"
                 "m.isclose = lambda *a, **k: True\nsys.modules['math'] = m")
    programs = {
        "builtins_copy": forged("__builtins__['abs'] = lambda x: 0", near),
        "builtins_module": forged("import builtins\nbuiltins.abs = lambda x: 0", near),
        "module_function": forged("import math\nmath.isclose = lambda *a, **k: True", isclose),
        "sys_modules": forged(fake_math, isclose),
        "always_equal": forged("", "assert candidate() == 1",
                               "return type('A', (), {'__eq__': lambda s, o: True})()"),
        "expected_from_frame": forged("", "assert candidate() == 1",
                                      "return sys._getframe(1).f_code.co_consts[1]"),
    }
    results = dict(zip(programs, run_programs(list(programs.values()), timeout_s=TIMEOUT),
                       strict=True))
    assert results["builtins_copy"].detail == "patched builtins.abs"
    assert results["builtins_module"].detail == "AssertionError"  # the program has a copy
    assert results["module_function"].detail == "patched math.isclose"
    assert results["sys_modules"].detail == "patched math.isclose"
    assert not any(results[n].passed for n in list(programs)[:4])
    assert results["always_equal"].passed  # no harness can tell: flagged, not refused
    assert results["always_equal"].flags == ("class A defines __eq__",)
    assert "frame introspection (sys._getframe)" in results["expected_from_frame"].flags


def test_os_exit_patch_forges_no_pass_on_real_humaneval_problems():
    """The reported forgery: `return None` bodies that patch os._exit scored pass@1 = 1.0."""
    rows = [json.loads(line) for line in (Path(os.environ["PMBENCH_DATA"]) / "humaneval"
                                          / "HumanEval.jsonl").read_text().splitlines()[:8]]
    completion = "    import os\n    os._exit = lambda *a, **k: None\n    return None\n"
    programs = [r["prompt"] + completion + "\n" + r["test"] + f"\ncheck({r['entry_point']})\n"
                for r in rows]
    results = run_programs(programs, timeout_s=TIMEOUT)
    assert [r.status for r in results] == ["failed"] * len(rows), results
