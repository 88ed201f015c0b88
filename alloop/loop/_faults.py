"""Crash points for the kill-and-resume tests.

``ALLOOP_TEST_KILL_AT="<round>:<point>"`` makes the process SIGKILL itself when round
``<round>`` reaches ``<point>``, e.g. ``2:before_commit:SELECTED`` (inside the transaction
that moves round 2 to SELECTED, just before it commits) or ``2:after_commit:SELECTED``.

``ALLOOP_TEST_PAUSE_AT="<round>:<point>=<seconds>"`` sleeps there instead (logging a warning
first), so a test can signal a process in the middle of a transition.

``ALLOOP_TEST_HOLD_AT="<round>:<point>=<path>"`` holds there until the test allows it to go
on - a handshake instead of a guessed duration: the process writes its pid to
``<path>.reached`` (atomically), then waits until the file ``<path>`` exists.

Unset (always, outside tests) they do nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import time

logger = logging.getLogger(__name__)

_TARGET = os.environ.get("ALLOOP_TEST_KILL_AT")
_PAUSE = os.environ.get("ALLOOP_TEST_PAUSE_AT")
_HOLD = os.environ.get("ALLOOP_TEST_HOLD_AT")


def crash_point(round_number: int, point: str) -> None:
    if _TARGET and _TARGET == f"{round_number}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)
    if _PAUSE:
        where, _, seconds = _PAUSE.rpartition("=")
        if where == f"{round_number}:{point}":
            logger.warning("test pause: %s s at round %d %s", seconds, round_number, point)
            time.sleep(float(seconds))
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
