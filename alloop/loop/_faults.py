"""Crash points for the kill-and-resume tests.

``ALLOOP_TEST_KILL_AT="<round>:<point>"`` makes the process SIGKILL itself when round
``<round>`` reaches ``<point>``, e.g. ``2:before_commit:SELECTED`` (inside the transaction
that moves round 2 to SELECTED, just before it commits) or ``2:after_commit:SELECTED``.
Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("ALLOOP_TEST_KILL_AT")


def crash_point(round_number: int, point: str) -> None:
    if _TARGET and _TARGET == f"{round_number}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)
