"""Every file pmbench writes or reads as a record: the one place for the rules.

Writes are atomic: a temporary file in the same folder, fsynced, then renamed over the
target, so a reader never sees half a file and a crash leaves the old one; the rename
replaces whatever the path was (a planted link too) and follows nothing. A write that
fails (full disk, quota, permissions) is one line of bad input naming the file.

Reads: a run folder, a sweep's cell folders and a results folder are shared, copied and
merged, so a file in them may be a link planted to make pmbench overwrite or read
something else, a FIFO or device that blocks a reader forever, or a record built to
exhaust memory or recursion. Every open here is `O_NOFOLLOW` (a link is refused, never
followed, unless the user named the file) and `O_NONBLOCK` (a FIFO cannot block the
open), is checked with `fstat` to be a regular file, and reads at most a cap
(pmbench.limits); a new file is created with `O_EXCL`. JSON is parsed with a nesting cap,
YAML with a cap on its size once aliases expand. JSON lines have one reader with two
policies: strict (a data file: every line an object, else bad input naming the line) and
lenient (an append-only record: a torn last line and lines that are not objects are left
out).

A file pmbench cannot use raises :class:`UnsafeFile` (bad input, one line, exit 2) where
the user named it; readers of folders turn it into a warning and skip the file
(:func:`skip`).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from pmbench.errors import BadInput, PmbenchWarning
from pmbench.limits import (
    MAX_GRID_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSONL_BYTES,
    MAX_LINE_BYTES,
    MAX_YAML_NODES,
)

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
          stat.S_IFDIR: "a folder", stat.S_IFLNK: "a link"}


class UnsafeFile(BadInput):
    """A file pmbench will not open or use: a link, not a regular file, over its size cap,
    nested too deeply."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class SkippedFile(PmbenchWarning):
    """A file found in a folder was not read (the message names it and says why)."""


def skip(path: str | Path, reason: str) -> None:
    """Warn that `path` was skipped, once per file and reason (the CLI prints one line)."""
    warnings.warn(f"skipping {path}: {reason}", SkippedFile, stacklevel=2)


def _size(n: int) -> str:
    """A cap in words: "16 MiB", "64 KiB"."""
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def make_folder(path: str | Path) -> Path:
    """`path` as a folder of its own, made when missing: a link planted in place of a run
    or cell folder would send every file written in it elsewhere, so it is refused (the
    folders above it, a results folder on another disk, may be links)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        mode = os.lstat(path).st_mode
    except OSError as exc:
        raise UnsafeFile(path, f"cannot create: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise UnsafeFile(path, f"{_KINDS.get(stat.S_IFMT(mode), 'not a folder')}, not a "
                               "folder: pmbench does not write through links")
    return path


def open_regular(path: str | Path, flags: int = os.O_RDONLY, *, create: bool = False,
                 follow: bool = False, mode: int = 0o644) -> int:
    """A file descriptor of `path`, which must be a regular file: a link is refused (unless
    `follow`: a file the user named), a FIFO or device never blocks the open and is
    refused. `create`: made with O_EXCL when missing, so a link planted meanwhile fails
    the open instead of being followed. FileNotFoundError when missing and not `create`."""
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = -1
        if create:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                pass
        if fd < 0:
            fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _refusal(path, exc) from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise UnsafeFile(path, f"{_KINDS.get(kind, 'not a regular file')}, not a regular "
                               "file: not opened")
    return fd


def _refusal(path: str | Path, exc: OSError) -> UnsafeFile:
    if exc.errno == errno.ELOOP:
        return UnsafeFile(path, "a link: pmbench does not follow links in run, cell and "
                                "results folders")
    if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened to write
        return UnsafeFile(path, "a FIFO, not a regular file: not opened")
    return UnsafeFile(path, f"cannot open: {exc.strerror or exc}")


def read_regular(path: str | Path, limit: int, *, follow: bool = False,
                 tail: bool = False) -> bytes | None:
    """The bytes of regular file `path` (None when it does not exist); UnsafeFile when it
    is a link, not a regular file, or larger than `limit` bytes. `tail`: its last `limit`
    bytes instead (a log, where the end is what matters)."""
    try:
        fd = open_regular(path, follow=follow)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if tail and size > limit:
            f.seek(size - limit)
        data = f.read(limit + 1)
    if len(data) > limit and not tail:
        raise UnsafeFile(path, f"{max(size, len(data)):,} bytes, over the {_size(limit)} "
                               "pmbench reads of such a file")
    return data[-limit:] if tail else data


def reason(exc: OSError) -> str:
    """What an OSError says, for a one-line message ("No space left on device")."""
    return exc.strerror or str(exc) or type(exc).__name__


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`: `os.write` may write only part of it."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[n:]


def atomic_write(path: str | Path, write: Callable[[int, Path], None], hint: str = "") -> None:
    """Fill a temporary file beside `path` with `write(fd, its path)`, fsync it and rename
    it over `path`: a reader sees the old file or the new one, never half of one.

    An OSError (full disk, quota, permissions) becomes one line of bad input naming
    `path`, with `hint` (what the user can do) after it; the old file stays as it was and
    no temporary file is left behind.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            write(fd, Path(tmp))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise BadInput(f"cannot write {path}: {reason(exc)}{hint}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, hint: str = "") -> None:
    """Write `data` to `path` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda fd, _: write_all(fd, data), hint)


def atomic_write_text(path: str | Path, text: str, hint: str = "") -> None:
    """Write `text` (UTF-8) to `path` atomically (:func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"), hint)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]], hint: str = "") -> None:
    """`rows` as JSON lines (UTF-8 text, not escaped), written atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                      hint)


def _unlink_quietly(path: str | None) -> None:
    if path is not None:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError:
            pass


def check_depth(value: Any, where: str | Path, limit: int = MAX_JSON_DEPTH) -> Any:
    """`value` (parsed JSON or YAML) unless it nests deeper than `limit`: code that walks
    records recursively (pandas, deepcopy) would crash on it."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise UnsafeFile(where, f"nested deeper than {limit} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return value


def parse_json(data: bytes | str, where: str | Path) -> Any:
    """JSON text parsed, with its nesting capped (UnsafeFile when too deep); a
    ValueError (JSONDecodeError, UnicodeDecodeError) when it is not JSON."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    try:
        value = json.loads(data)
    except RecursionError:
        raise UnsafeFile(where, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    brackets = data.count("[") + data.count("{")  # cheap: a flat record needs no walk
    return check_depth(value, where) if brackets > MAX_JSON_DEPTH else value


def read_jsonl(path: str | Path, *, lenient: bool = False, follow: bool = False
               ) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, read up to MAX_JSONL_BYTES.

    Strict (a data file): a missing or unreadable file, or a line that is not a JSON
    object, is bad input naming the file and line. Lenient (an append-only record, which
    an interruption may leave with a torn last line): [] when there is no file, and the
    torn line and lines that are not objects are left out. `follow`: the user named the
    file, so a link to it is followed.
    """
    try:
        data = read_regular(path, MAX_JSONL_BYTES, follow=follow)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {reason(exc)}") from None
    if data is None:
        if lenient:
            return []
        raise BadInput(f"cannot read {path}: {os.strerror(errno.ENOENT)}")
    return [row for row in parse_jsonl(data, path, lenient=lenient) if row is not None]


def parse_jsonl(data: bytes, path: str | Path, *, lenient: bool = False,
                spans: list[tuple[int, int]] | None = None) -> list[Any]:
    """Each non-blank line of JSON-lines `data` (from `path`) parsed, as :func:`read_jsonl`
    says; lenient: a line that is not a JSON object is None, and bytes after the last
    newline are no line. `spans` gets each parsed line's byte span, its newline included.
    A line over MAX_LINE_BYTES or nested too deeply is no torn write: UnsafeFile."""
    rows: list[Any] = []
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            if lenient:
                break
            end = len(data)
        number += 1
        line = data[start:end]
        if line.strip():
            rows.append(_jsonl_row(line, path, number, lenient))
            if spans is not None:
                spans.append((start, end + 1))
        start = end + 1
    return rows


def _jsonl_row(line: bytes, path: str | Path, number: int, lenient: bool) -> Any:
    """One line parsed: a dict, or None (lenient) / BadInput (strict) saying why not."""
    if len(line) > MAX_LINE_BYTES:
        raise UnsafeFile(f"{path} line {number}", f"over the {_size(MAX_LINE_BYTES)} a "
                                                  "line may hold")
    try:
        row = parse_json(line.decode("utf-8").strip(), f"{path} line {number}")
        why = None if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text ({exc.reason})"
    except json.JSONDecodeError as exc:
        why = f"not valid JSON ({exc.msg} at column {exc.colno})"
    if why is None:
        return row
    if lenient:
        return None
    raise BadInput(f"{path}, line {number}: {why}")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document whose node tree, with every alias
    expanded, exceeds MAX_YAML_NODES (a "billion laughs" of nested anchors): the grids
    use anchors legitimately, a few dozen nodes each, and pmbench walks the expanded tree."""

    def compose_document(self):
        node = super().compose_document()
        _count_nodes(node)
        return node


def _count_nodes(root: yaml.Node) -> None:
    """Raise yaml.YAMLError when `root` expands to more than MAX_YAML_NODES nodes or nests
    deeper than MAX_JSON_DEPTH once its aliases are resolved, computed over the shared
    nodes without expanding them (a cycle, `&a [*a]`, is too deep)."""
    seen: dict[int, tuple[int, int]] = {}  # node -> (nodes, height) of its expansion
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        children = _children(node)
        if done or not children:
            nodes = 1 + sum(seen[id(c)][0] for c in children)
            height = 1 + max((seen[id(c)][1] for c in children), default=0)
            if height > MAX_JSON_DEPTH or depth > MAX_JSON_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            if nodes > MAX_YAML_NODES:
                raise yaml.YAMLError(f"expands to more than {MAX_YAML_NODES:,} nodes once "
                                     "its aliases are resolved")
            seen[id(node)] = (nodes, height)
            continue
        if depth > MAX_JSON_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in seen)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str, where: str | Path) -> Any:
    """YAML text parsed safely, with its expanded size and nesting capped: a yaml.YAMLError
    (or UnsafeFile when over MAX_GRID_BYTES) rather than minutes and gigabytes."""
    if len(text) > MAX_GRID_BYTES:
        raise UnsafeFile(where, f"{len(text):,} characters, over the {_size(MAX_GRID_BYTES)} "
                                "pmbench reads of a YAML file")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise yaml.YAMLError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
