"""Progress you can follow on a terminal and in a log file alike.

On a terminal `progress_bar` is rich's live bar. Elsewhere (nohup, CI, `> log`) a live bar
prints nothing until the end, so the same calls print plain lines instead: one when a
task's description changes (a phase: loading, warm-up, a repeat) and one when a task's
count moves (a group of a run, a cell of a sweep), each stamped with the seconds since
the start. Tasks added with `lines=False` print their phases only.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.text import Text


class PlainProgress:
    """The part of rich's Progress the commands use, as plain lines on `console`."""

    def __init__(self, console: Console):
        self.console = console
        self._tasks: dict[int, dict[str, Any]] = {}
        self._t0 = time.perf_counter()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _line(self, text: str) -> None:
        plain = Text.from_markup(text).plain  # the bar's markup and escapes, as text
        self.console.print(f"[{time.perf_counter() - self._t0:6.1f} s] {plain}", markup=False,
                           highlight=False, soft_wrap=True)

    def add_task(self, description: str, total: float | None = None, visible: bool = True,
                 lines: bool = True, unit: str = "", **_: Any) -> int:
        """`unit` names what the count counts ("questions"); the first description, up to
        a colon, names the task in its count lines."""
        task = len(self._tasks)
        self._tasks[task] = {"description": description, "total": total, "completed": 0,
                             "visible": visible, "lines": lines, "unit": unit,
                             "name": description.split(":")[0].strip()}
        if visible and description.strip():
            self._line(description.strip())
        return task

    def update(self, task: int, *, description: str | None = None,
               completed: float | None = None, total: float | None = None,
               visible: bool | None = None, advance: float | None = None, **_: Any) -> None:
        t = self._tasks[task]
        if visible is not None:
            t["visible"] = visible
        if total is not None:
            t["total"] = total
        if description is not None and description != t["description"]:
            t["description"] = description
            if t["visible"] and description.strip():
                self._line(description.strip())
        moved = completed if completed is not None else (
            t["completed"] + advance if advance else None)
        if moved is not None and moved != t["completed"]:
            t["completed"] = moved
            if t["visible"] and t["lines"]:
                of = f"/{t['total']:g}" if t["total"] else ""
                name = t["name"] or t["description"].strip()
                self._line(f"{name}: {moved:g}{of} {t['unit']} done".replace("  ", " "))

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)


def progress_bar(console: Console, *columns: Any, **options: Any) -> Progress | PlainProgress:
    """rich's live bar with `columns` (and Progress `options`) on a terminal, plain lines
    otherwise."""
    if console.is_terminal:
        return Progress(*columns, console=console, **options)
    return PlainProgress(console)

