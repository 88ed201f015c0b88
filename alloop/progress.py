"""Progress reporting, injected by the caller (Rich in the CLI, silent in the library).

Library code never prints; long work takes a ``progress: Progress`` argument and calls::

    with progress.task("Encoding images", total=len(items)) as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, runtime_checkable


@runtime_checkable
class ProgressTask(Protocol):
    def advance(self, n: int = 1) -> None: ...


@runtime_checkable
class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> AbstractContextManager[ProgressTask]: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class NullProgress:
    """Reports nothing. The library default."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[ProgressTask]:
        yield _NullTask()


NULL_PROGRESS = NullProgress()


def progress_disabled() -> bool:
    return os.environ.get("ALLOOP_DISABLE_PROGRESS_BARS", "").lower() in {"1", "true", "yes"}
