"""Warnings raised by user code (estimators, encoders, teachers) are shown once each, per run.

A scikit-learn estimator that warns on every ``fit`` would otherwise print the same lines once
per round and seed: a 30-seed simulation printed tens of thousands of identical warnings
(libraries that use :func:`warnings.catch_warnings` internally reset Python's own
once-per-location memory). While the loop works inside :func:`collecting`, every warning
that passes the warning filters goes to a :class:`WarningLog` instead of stderr; the log
keeps the first occurrence of each distinct (category, message), with where it appeared
(``"round 3, training"``), and reports it once through :mod:`logging`.

Warning filters still apply first: a warning turned into an error (``-W error``, pytest's
``filterwarnings``) raises as before, an ignored one stays ignored. Outside
:func:`collecting`, warnings are shown the usual way.

The hook replaces :func:`warnings.showwarning` (process-wide) when a block starts; which log
receives a warning is a context variable, so the threads of ``alloop serve`` each report to
their own project's log.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["SeenWarning", "WarningLog", "collecting"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeenWarning:
    """The first occurrence of one distinct warning."""

    category: str
    message: str
    where: str
    """Where it first appeared, e.g. ``"round 3, training"``."""
    source: str
    """``file:line`` that issued it."""

    @property
    def key(self) -> tuple[str, str]:
        return self.category, self.message


class WarningLog:
    """Distinct warnings of one run, each reported once.

    Parameters
    ----------
    report : bool
        Log each new warning at WARNING level (the CLI shows it); False only collects them
        (a worker process hands them back to its parent, which reports them).
    """

    def __init__(self, *, report: bool = True) -> None:
        self.report = report
        self._seen: dict[tuple[str, str], SeenWarning] = {}
        self._lock = threading.Lock()

    @property
    def seen(self) -> list[SeenWarning]:
        """Every distinct warning so far, in the order they first appeared."""
        with self._lock:
            return list(self._seen.values())

    def add(self, warning: SeenWarning) -> bool:
        """Record ``warning``; True (and reported) when its (category, message) is new."""
        with self._lock:
            if warning.key in self._seen:
                return False
            self._seen[warning.key] = warning
        if self.report:
            logger.warning("%s (first seen in %s; shown once): %s [%s]", warning.category, warning.where,
                           " ".join(warning.message.split()), warning.source)
        return True

    def merge(self, warnings_: list[SeenWarning]) -> None:
        """Add warnings collected elsewhere (e.g. by a worker process)."""
        for w in warnings_:
            self.add(w)


_current: ContextVar[tuple[WarningLog, str] | None] = ContextVar("alloop_warning_log", default=None)
_install_lock = threading.Lock()
_original_showwarning: Any = None


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    entry = _current.get()
    if entry is None:
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    log, where = entry
    log.add(SeenWarning(category.__name__, str(message), where, f"{filename}:{lineno}"))


def _install() -> None:
    """Route warnings through :func:`_showwarning` (again, if a ``catch_warnings`` block that was
    open when it was installed has since put the previous function back)."""
    global _original_showwarning
    with _install_lock:
        current = warnings.showwarning
        if current is not _showwarning:
            _original_showwarning = current
            warnings.showwarning = _showwarning


@contextmanager
def collecting(log: WarningLog, where: str) -> Iterator[WarningLog]:
    """Send the warnings raised inside the block to ``log``, as first seen at ``where``."""
    _install()
    token = _current.set((log, where))
    try:
        yield log
    finally:
        _current.reset(token)

