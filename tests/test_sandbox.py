"""Sandbox for generated code: hostile programs fail, change nothing outside, never stall.

Each hostile program is shaped like a HumanEval problem whose check passes only if the
hostile action succeeded, and the test checks on its own that the side effect did not
happen. The targets outside the sandbox are world-writable, so only OS-level isolation
(read-only mounts, namespaces, limits), not file permissions, protects them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from pmbench.sandbox import (
    ENV_FLAG,
    _hidden_dirs,
    code_execution_allowed,
    isolation,
    run_programs,
)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0
TAG = uuid.uuid4().hex[:12]
NONCE = str(uuid.uuid4().int)[:9]
# `sleep 999.<n><nonce>`: a command line that only this test's hostile programs start.
SLEEP_MARKERS = {name: f"999.{n}{NONCE}" for n, name in enumerate(["fork", "escape", "daemon"], 1)}
TMP_TARGET = f"/tmp/pmbench-hostile-{TAG}"
HOME_TARGET = str(Path.home() / f".pmbench-hostile-{TAG}")
SHM_TARGET = f"/dev/shm/pmbench-hostile-{TAG}"


def humaneval(completion: str) -> str:
    """Prompt + completion + test + check(entry_point), as the humaneval suite builds them."""
    return (
        "import os, socket, subprocess, time\n\n\n"
        "def candidate():\n" + textwrap.indent(textwrap.dedent(completion).strip(), "    ")
        + "\n\n\ndef check(candidate):\n    assert candidate() is True\n\n\n"
        "check(candidate)\n"
    )


def world_writable_dir() -> Path:
    """A directory outside any sandbox that anyone may write to: only isolation protects it.
    It lies in the checkout (git-ignored), which sandboxes see read-only, not under /tmp,
    which they do not see at all."""
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


# Why a write to world_writable_dir() fails: read-only mount, or hidden if the checkout lies
# under a directory the sandbox covers (the home directory, /tmp).
OUTSIDE_REASON = (
    "No such file or directory" if any(ROOT.is_relative_to(d) for d in _hidden_dirs())
    else "Read-only file system"
)


def hostile_programs(outside: Path, port: int) -> dict[str, tuple[str, str, str]]:
    """name -> (completion, expected status, expected piece of the detail)."""
    sentinel, written = outside / "sentinel", outside / "written"
    marker = SLEEP_MARKERS
    return {
        "write_tmp": (f"open({TMP_TARGET!r}, 'w').write('x')\nreturn True",
                      "failed", "Read-only file system"),
        "write_home": (f"open({HOME_TARGET!r}, 'w').write('x')\nreturn True",
                       "failed", "Read-only file system"),
        "write_outside": (f"open('{written}', 'w').write('x')\nreturn True",
                          "failed", OUTSIDE_REASON),
        "delete_sentinel": (f"os.remove('{sentinel}')\nreturn True",
                            "failed", OUTSIDE_REASON),
        "os_system": (f"return os.system('rm -f {sentinel} && touch {TMP_TARGET}') == 0",
                      "failed", "AssertionError"),
        "subprocess": (f"subprocess.run(['rm', '{sentinel}'], check=True)\n"
                       f"subprocess.run(['touch', '{written}'], check=True)\nreturn True",
                       "failed", "CalledProcessError"),
        "infinite_loop": ("while True:\n    pass", "timeout", f"{TIMEOUT:g} s"),
        "allocate_8gb": ("block = bytearray(8 * 1024**3)\nreturn len(block) > 0",
                         "failed", "MemoryError"),
        "fork_200": (f"""
            children = []
            for _ in range(200):
                pid = os.fork()
                if pid == 0:
                    os.execvp('sleep', ['sleep', '{marker['fork']}'])
                children.append(pid)
            return len(children) == 200""", "failed", "Resource temporarily unavailable"),
        "network": (f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\nreturn True",
                    "failed", "Network is unreachable"),
        # Leaves the process group, so killing the group misses it; the PID namespace does not.
        "escape_session": (f"os.setsid()\nos.execvp('sleep', ['sleep', '{marker['escape']}'])",
                           "timeout", f"{TIMEOUT:g} s"),
        "huge_file": ("open('big', 'wb').write(bytes(64 << 20))\nreturn True",
                      "failed", "File too large"),
        # Passes its check (its own /dev/shm is writable), but nothing reaches the host's.
        "dev_shm": (f"open({SHM_TARGET!r}, 'w').write('x')\nreturn True", "passed", ""),
        # Passes its check, but its background process must not outlive it.
        "daemon": (f"subprocess.Popen(['sleep', '{marker['daemon']}'], "
                   "start_new_session=True)\nreturn True", "passed", ""),
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


@pytest.fixture(scope="module")
def hostile():
    """Run every hostile program in one parallel batch; yield what the checks need."""
    outside = world_writable_dir()
    (outside / "sentinel").write_text("keep me")
    (outside / "sentinel").chmod(0o666)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    cases = hostile_programs(outside, listener.getsockname()[1])
    t0 = time.perf_counter()
    results = run_programs([humaneval(completion) for completion, _, _ in cases.values()],
                           timeout_s=TIMEOUT, workers=4)
    wall = time.perf_counter() - t0
    yield {"cases": cases, "results": dict(zip(cases, results, strict=True)),
           "outside": outside, "listener": listener, "wall": wall}
    listener.close()
    remove_world_writable_dir(outside)
    for target in (TMP_TARGET, HOME_TARGET, SHM_TARGET):
        Path(target).unlink(missing_ok=True)


def test_namespaces_are_available_here():
    """The hostile tests below rely on namespaces; the probe checks them from the inside."""
    iso = isolation()
    assert iso.namespaces, iso.detail
    if os.geteuid() == 0:
        assert "uid" in iso.user


@pytest.mark.parametrize("name", list(hostile_programs(Path("/x"), 1)))
def test_hostile_program_fails_and_changes_nothing(hostile, name):
    _, status, detail = hostile["cases"][name]
    result = hostile["results"][name]
    assert result.status == status, result
    assert result.passed is (status == "passed")
    assert detail in result.detail, result
    assert result.wall_s < TIMEOUT + 3, result
    outside = hostile["outside"]
    assert sorted(os.listdir(outside)) == ["sentinel"]
    assert (outside / "sentinel").read_text() == "keep me"
    assert not any(map(os.path.exists, (TMP_TARGET, HOME_TARGET, SHM_TARGET)))
    with pytest.raises(BlockingIOError):
        hostile["listener"].accept()


def test_no_process_outlives_its_program(hostile):
    deadline = time.monotonic() + 5
    while any(map(processes_with, SLEEP_MARKERS.values())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(processes_with, SLEEP_MARKERS.values()))


def test_hostile_batch_does_not_stall(hostile):
    # 14 programs on 4 workers, two of which run into the timeout.
    assert hostile["wall"] < 2 * TIMEOUT + 5


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
    assert results[2].detail == "bad completion"
    assert results[1].detail == "" and results[1].wall_s > 0


def test_program_runs_isolated_unprivileged_in_fresh_dir():
    check_root = os.geteuid() == 0
    program = humaneval(f"""
        import sys, tempfile
        assert sys.flags.isolated
        assert os.listdir('.') == ['program.py'], os.listdir('.')
        assert tempfile.gettempdir() == os.getcwd() == os.environ['HOME']
        open('scratch.txt', 'w').write('x' * 1000)
        tempfile.NamedTemporaryFile().close()
        assert not {check_root} or (os.getuid() != 0 and os.getgroups() == [])
        return os.getpid() == 1""")
    (result,) = run_programs([program], timeout_s=TIMEOUT)
    assert result.passed, result


def test_work_directory_is_fresh_and_removed(monkeypatch, tmp_path):
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
        print(json.dumps({{"namespaces": isolation().namespaces,
                          "status": dict(zip(programs, [r.status for r in results]))}}))
    """)
    try:
        out = subprocess.run([*cmd, "-c", script], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["namespaces"] is True
        expected = {name: "failed" for name in programs} | {"correct": "passed"}
        assert report["status"] == expected
        assert not os.path.exists(f"{TMP_TARGET}-nobody") and list(outside.iterdir()) == []
    finally:
        remove_world_writable_dir(outside)
        Path(f"{TMP_TARGET}-nobody").unlink(missing_ok=True)
