"""A Progress that remembers every task: ``tasks`` holds ``[description, total, advanced]``."""

from __future__ import annotations

from contextlib import contextmanager


class RecordingProgress:
    def __init__(self) -> None:
        self.tasks: list[list] = []

    @contextmanager
    def task(self, description: str, total: int | None = None):
        record = [description, total, 0]
        self.tasks.append(record)

        class Bar:
            def advance(self, n: int = 1) -> None:
                record[2] += n

        yield Bar()
