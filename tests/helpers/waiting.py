"""Waiting for an event in a test: poll a condition until it holds.

The deadline is a safety net against a hang - generous, and never what a test measures: a test
that needs "it happened" waits for it here, a test that needs "it happened before that" proves
the order with a handshake (a file, a line on a pipe, a row in the database).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

#: seconds before a wait gives up; far above what any wait needs on a loaded 2-core machine
SAFETY_NET_S = 120.0


def wait_until(
    cond: Callable[[], Any],
    what: str,
    *,
    timeout: float = SAFETY_NET_S,
    every: float = 0.02,
    alive: Callable[[], str | None] | None = None,
) -> Any:
    """Return the first truthy ``cond()``; fail the test after ``timeout`` seconds.

    ``alive`` is called between polls: a returned string (e.g. "the process exited with 1: <log>")
    fails the test at once with that reason, since the event can no longer happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if alive is not None:
            dead = alive()
            if dead:
                pytest.fail(f"{dead}\n(while waiting for {what})")
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} did not happen within the {timeout:g} s safety net")
        time.sleep(every)
