"""Runs one generated program in the sandbox and proves on fd 3 that its check returned.

Started by runner.py as `python -I -S -c <this file>` with the run's nonce on fd 0, the
proof pipe on fd 3 and program.py in its working directory; standard library only
(nothing of pmbench is visible in the sandbox). The program shares this interpreter, so
the harness assumes it patches whatever it can reach (SECURITY.md, "A pass is a proof"):

- Everything the harness calls once the program runs is bound before (default arguments
  and closures: a patched `os._exit`, `os.write`, builtin or harness global changes nothing
  here), and the pass is written only from the `else` of the `try` that ran the program:
  a failure never falls through to it. The supervisor rejects a pass after a `fail` line.
- The nonce lives only in the frame of a suspended generator. An audit hook (it cannot be
  removed) refuses what would reach it: that generator's frame, traceback frames of the
  hook, gc's object walks, other threads' frames, trace and profile functions, ctypes and
  the test extension modules, new code objects, bytecode loaded from files outside the
  system's Python, any `/proc/*/mem`. The process is not dumpable, so a child (which has
  no hook) cannot read it either. The generator writes the proof only when resumed by the
  hook for the `pmbench.done` event raised by the harness's own frame at the bottom of the
  main thread.
- After the program returns, builtins and the functions of modules loaded before it are
  compared with what they were, and no module may hold a function written in the
  program: a program that patched what its check calls fails.
- What cannot be prevented in-process (an object whose `__eq__` is always true, reading
  the expected values from the test's frame) is flagged on the proof pipe (`flag ...`
  lines) and stored with the sample.
"""

import os
import sys

PROGRAM = "program.py"
PROOF_FD = 3
MAX_FLAGS = 8
# Refused outright: walks that reach any object or frame, tracing, code objects built
# from bytes, native memory access.
BLOCKED = frozenset({
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
    "sys._current_exceptions", "sys.settrace", "sys.setprofile", "code.__new__",
    "sys.monitoring.register_callback", "cpython._PySys_ClearAuditHooks",
})
BLOCKED_MODULES = frozenset({
    "ctypes", "_ctypes", "_ctypes_test", "_testcapi", "_testinternalcapi", "_testbuffer",
    "_testmultiphase", "_testsinglephase", "_testimportmultiple", "_testclinic",
    "_xxtestfuzz", "_xxsubinterpreters",
})
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code"})
# What an object needs to pass `assert candidate(x) == y` or `abs(candidate(x) - y) < e`
# without being the answer.
FORGING_DUNDERS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__",
                   "__abs__", "__sub__", "__rsub__", "__float__")
LINK, FILE_TYPE = 0o120000, 0o170000


def _proof(nonce, codes, write=os.write, getframe=sys._getframe, fd=PROOF_FD):
    """Holds the nonce in its suspended frame; writes it once, when the hook resumes it for
    the harness's own `pmbench.done` (a thread, the program or a copy of the harness's
    code calling it gets nothing)."""
    yield
    hook = getframe(1)
    run = hook.f_back
    if (hook.f_code is codes["hook"] and run is not None and run.f_code is codes["run"]
            and run.f_back is not None and run.f_back.f_back is None
            and codes["thread"]() == codes["main"]):
        write(fd, b"pass " + nonce + b"\n")
    yield


def _flagger(write=os.write, len=len, fd=PROOF_FD, most=MAX_FLAGS):
    """`flag(what)`: one `flag` line on the proof pipe per kind, at most MAX_FLAGS."""
    flagged = set()

    def flag(what):
        if what not in flagged and len(flagged) < most:
            flagged.add(what)
            write(fd, b"flag " + what.encode("ascii", "replace")[:200] + b"\n")
    return flag


def _bytecode_check(codes, prefixes, os_open=os.open, read=os.read, fstat=os.fstat,
                    close=os.close, nofollow=os.O_RDONLY | os.O_NOFOLLOW, type=type,
                    str=str, bytes=bytes, memoryview=memoryview):
    """Whether marshal is loading a cached .pyc of the system's Python (read-only here)
    for importlib: the bytes are what that file holds, read again here."""
    def system_bytecode(frame, data):
        if frame is None or frame.f_code is not codes["bytecode"] or frame.f_back is None \
                or frame.f_back.f_code is not codes["get_code"]:
            return False
        path = frame.f_back.f_locals.get("bytecode_path")
        if type(path) is not str or "/../" in path or not path.startswith(prefixes) \
                or (type(data) is not bytes and type(data) is not memoryview):
            return False
        try:
            fd = os_open(path, nofollow)
        except OSError:
            return False
        try:
            content = read(fd, fstat(fd).st_size + 1)
        finally:
            close(fd)
        return content[16:] == data  # after the header: what importlib passed to marshal
    return system_bytecode


def _open_check(lstat=os.lstat, readlink=os.readlink, type=type, str=str, bytes=bytes):
    """Why opening `path` is refused ("" if not): any process's memory, through symlinks
    too, or a path object whose `__fspath__` could say one thing now and another later."""
    def open_refused(path):
        if type(path) is int:
            return ""
        if type(path) is not str and type(path) is not bytes:
            return "open of a path that is not str or bytes"
        name = path if type(path) is str else path.decode("utf-8", "replace")
        for _ in range(8):  # a symlink to /proc/self/mem, or to one, ...
            if name.rstrip("/").rpartition("/")[2] == "mem":
                return "open of a process's memory"
            try:
                if lstat(name).st_mode & FILE_TYPE != LINK:
                    return ""
                target = readlink(name)
            except OSError:
                return ""
            name = target if target.startswith("/") else name.rpartition("/")[0] + "/" + target
        return "open of a chain of symbolic links"
    return open_refused


def _guard(proof, codes, prefixes, flag, getframe=sys._getframe, type=type, str=str,
           PermissionError=PermissionError, blocked=BLOCKED, modules=BLOCKED_MODULES,
           attributes=FRAME_ATTRIBUTES, program=PROGRAM):
    """The audit hook: refuses what would reach the nonce, flags what a forgery needs."""
    busy = [False]
    open_refused, system_bytecode = _open_check(), _bytecode_check(codes, prefixes)

    def from_program(frame):
        """The frame that raised the event, or its caller (inspect, traceback), is the
        program's own code."""
        return frame is not None and (frame.f_code.co_filename == program or (
            frame.f_back is not None and frame.f_back.f_code.co_filename == program))

    def hook(event, args):
        if busy[0] or type(event) is not str:
            return  # the hook's own lookups below; a str subclass could run code here
        why = ""
        busy[0] = True
        try:
            if event == "pmbench.done":
                next(proof, None)
            elif event in blocked or event.startswith("ctypes."):
                why = event
            elif event == "import":
                name = args[0]
                if type(name) is not str or name.rpartition(".")[2] in modules:
                    why = "import of " + (name if type(name) is str else "a non-str name")
            elif event == "open":
                why = open_refused(args[0])
            elif event == "marshal.loads" and not system_bytecode(getframe(1), args[0]):
                why = "marshal.loads of bytes not from the system's Python"
            elif event == "sys._getframe" and from_program(getframe(1)):
                flag("frame introspection (sys._getframe)")
            elif event == "object.__getattr__" and args[1] in attributes:
                obj, name = args
                code = obj.tb_frame.f_code if name == "tb_frame" else None
                if obj is proof or code is codes["hook"] or code is proof.gi_code:
                    why = "reading the harness's frame"
                elif from_program(getframe(1)):
                    flag(f"frame introspection ({name})")
        finally:
            busy[0] = False
        if why:
            flag("blocked " + why)
            raise PermissionError(f"{why} is not allowed in the sandbox")

    codes["hook"] = hook.__code__
    return hook


def _undumpable():
    """No other process (a child of the program has no audit hook) may read this one's
    memory through /proc: prctl(PR_SET_DUMPABLE, 0), called through _ctypes alone (the
    ctypes package would cost four times as long); then _ctypes is forgotten, so that
    importing it again goes through the hook."""
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_, _restype_ = _ctypes.FUNCFLAG_CDECL, Int

    class Libc:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)

    if Function(("prctl", Libc()))(4, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE, 0) failed")
    del sys.modules["_ctypes"]


def _check_class(cls, prefixes, flag, type=type, vars=vars, function=type(_proof),
                 dunders=FORGING_DUNDERS):
    """Flag a class whose comparison or truth dunders are Python functions written
    outside the system's Python: the program's own always-equal objects."""
    names = vars(cls)
    for dunder in dunders:
        f = names.get(dunder)
        if type(f) is function and not f.__code__.co_filename.startswith(prefixes):
            flag(f"class {cls.__name__} defines {dunder}")
            return


def _forging_classes(prefixes, flag, check=_check_class, type=type, id=id, vars=vars,
                     dunders=frozenset(FORGING_DUNDERS)):
    """Every class alive now (made with `type()` too), checked as `_check_class` does."""
    todo, seen = [object], set()
    while todo:
        for sub in type.__subclasses__(todo.pop()):
            if id(sub) not in seen:
                seen.add(id(sub))
                todo.append(sub)
                if not dunders.isdisjoint(vars(sub)):
                    check(sub, prefixes, flag)


def _class_builder(build, prefixes, flag, check=_check_class):
    """`__build_class__` for the program: checks its classes as they are made (they may
    be gone by the time it returns)."""
    def build_class(func, name, *bases, **kwds):
        cls = build(func, name, *bases, **kwds)
        check(cls, prefixes, flag)
        return cls
    return build_class


def _snapshot(program_builtins):
    """What the program's check may call: builtins (the module's and the program's copy)
    and the functions of every module loaded before the program."""
    import builtins
    callables = (type(_proof), type(len))
    modules = {name: {k: v for k, v in vars(m).items() if type(v) in callables}
               for name, m in list(sys.modules.items()) if type(m) is type(sys)}
    return {"builtins": (vars(builtins), dict(vars(builtins))),
            "program": (program_builtins, dict(program_builtins)), "modules": modules}


def _tampered(namespace, snap, modules=sys.modules, type=type, vars=vars, list=list,
              function=type(_proof), module=type(sys), program=PROGRAM):
    """The first thing the program patched that its check may have called, or ""."""
    if namespace.get("__builtins__") is not snap["program"][0]:
        return "__builtins__"
    for label in ("builtins", "program"):
        now, before = snap[label]
        for key, value in before.items():
            if now.get(key) is not value:
                return f"builtins.{key}"
    for name, before in snap["modules"].items():
        mod = modules.get(name)
        if type(mod) is not module:
            return f"sys.modules[{name!r}]"
        now = vars(mod)
        for key, value in before.items():
            if now.get(key) is not value:
                return f"{name}.{key}"
    for name, mod in list(modules.items()):
        if type(mod) is module:
            for key, value in list(vars(mod).items()):
                if type(value) is function and value.__code__.co_filename == program:
                    return f"{name}.{key}"
    return ""


def _describe(exc, type=type, str=str, BaseException=BaseException):
    """`fail <exception type>: <message>`, one line, at most 300 characters."""
    try:
        message = str(exc)
    except BaseException:
        message = ""
    line = type(exc).__name__ + (": " + message if message else "")
    return b"fail " + line[:300].encode("utf-8", "replace").replace(b"\n", b" ") + b"\n"


def _setup():
    """Read the nonce and the program, lock the process down, install the hook; return
    what `_run` needs (the nonce stays behind, in the generator)."""
    import _thread
    import site
    site.setquit()  # exit() and quit(), as in a normal interpreter (-S skips site)
    nonce = os.read(0, 64).strip()
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    with open(PROGRAM, encoding="utf-8") as f:
        source = f.read()
    _undumpable()
    prefixes = tuple(dict.fromkeys(os.path.realpath(p) + "/" for p in
                                   (sys.base_prefix, sys.base_exec_prefix)))
    importlib = sys.modules["_frozen_importlib_external"]
    codes = {"run": _run.__code__, "bytecode": importlib._compile_bytecode.__code__,
             "get_code": importlib.SourceLoader.get_code.__code__,
             "thread": _thread.get_ident, "main": _thread.get_ident()}
    proof = _proof(nonce, codes)
    next(proof)
    del nonce
    flag = _flagger()
    hook = _guard(proof, codes, prefixes, flag)
    system = (*prefixes, "<frozen ")  # where the code of the system's classes comes from
    program_builtins = dict(vars(sys.modules["builtins"]))
    program_builtins["__build_class__"] = _class_builder(
        program_builtins["__build_class__"], system, flag)
    snap = _snapshot(program_builtins)
    namespace = {"__name__": "__main__", "__builtins__": program_builtins}
    sys.addaudithook(hook)
    return source, namespace, snap, system, flag


def _run(source, namespace, snap, prefixes, flag, compile=compile, exec=exec,
         audit=sys.audit, write=os.write, exit=os._exit, describe=_describe,
         tampered=_tampered, forging=_forging_classes, BaseException=BaseException,
         fd=PROOF_FD):
    """Run the program; `pass` only from the `else` (through the hook), `fail` otherwise."""
    try:
        exec(compile(source, "program.py", "exec"), namespace)
    except BaseException as exc:
        write(fd, describe(exc))
        exit(1)
    else:
        forging(prefixes, flag)  # first: classes the program made may soon be collected
        what = tampered(namespace, snap)
        if what:
            write(fd, b"fail patched " + what.encode("ascii", "replace")[:200] + b"\n")
            exit(1)
        audit("pmbench.done")
        exit(0)


_run(*_setup())
