"""Crash points for the kill-and-resume tests.

``ALLOOP_TEST_KILL_AT="<round>:<point>"`` makes the process SIGKILL itself when round
``<round>`` reaches ``<point>``, e.g. ``2:before_commit:SELECTED`` (inside the transaction
that moves round 2 to SELECTED, just before it commits) or ``2:after_commit:SELECTED``.

``ALLOOP_TEST_HOLD_AT="<round>:<point>=<path>"`` holds there instead, until the test allows it
to go on, so a test can act on a process in the middle of a transition (signal it, race another
process against it) - a handshake, not a guessed duration: the process logs a warning, writes its
pid to ``<path>.reached`` (atomically), then waits until the file ``<path>`` exists.

Unset (always, outside tests) they do nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import time

logger = logging.getLogger(__name__)

_TARGET = os.environ.get("ALLOOP_TEST_KILL_AT")
_HOLD = os.environ.get("ALLOOP_TEST_HOLD_AT")


def crash_point(round_number: int, point: str) -> None:
    if _TARGET and f"{round_number}:{point}" == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
    if _HOLD:
        where, _, path = _HOLD.partition("=")
        if where == f"{round_number}:{point}":
            _hold(path, f"round {round_number} {point}")


def _hold(path: str, where: str) -> None:
    """Announce this process at ``where`` (``<path>.reached`` holds its pid); wait for ``path``."""
    logger.warning("test hold at %s: waiting for %s", where, path)
    tmp = f"{path}.reached.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(tmp, f"{path}.reached")
    while not os.path.exists(path):
        time.sleep(0.01)
