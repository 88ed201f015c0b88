"""What one tick of the controller did."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TickResult"]


@dataclass(frozen=True)
class TickResult:
    """What one tick did.

    ``action`` is one of: created, trained, scored, selected, pushed, collecting, closed,
    waiting, finished, idle.
    """

    action: str
    round: int | None
    state: str | None
    message: str
    progressed: bool = True
    finished: bool = False
    waiting: bool = False
