"""Refuse the network in a test, and record every attempt to reach it.

"Fails fast when offline" is a matter of what the code does, not of how long it takes: code
that never tries the network has no retries or time-outs to sit through. A test calls
``refuse_network(monkeypatch)`` and asserts the returned list stayed empty.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Make name lookups and connections fail at once (OSError); returns the list of attempts."""
    attempts: list[tuple[str, Any]] = []

    def refuse(what: str, skip_self: bool = False):
        def call(*args: Any, **kwargs: Any) -> Any:
            attempts.append((what, args[1:] if skip_self else args))
            raise OSError(f"the network is refused in this test ({what})")

        return call

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect", skip_self=True))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex", skip_self=True))
    return attempts
