"""Rich output for the CLI: console, progress bars, tables. The library never imports this."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from alloop.progress import NullProgress, progress_disabled

# Piped output (logs, CI) is not cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


class _Task:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._p, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._id, n)


class RichProgress:
    """Progress bars on stderr (hidden when not a terminal or when disabled)."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_Task]:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as p:
            yield _Task(p, p.add_task(description, total=total))


def make_progress() -> Any:
    if progress_disabled() or not sys.stderr.isatty() or os.environ.get("CI"):
        return NullProgress()
    return RichProgress()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, header_style="bold")
    for c in columns:
        text = c in ("strategy", "state", "key", "reason", "project")
        t.add_column(c, justify="left" if text else "right", no_wrap=c in ("strategy", "state"))
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t
