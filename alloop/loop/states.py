"""The round state machine: one table of legal moves.

    CREATED -> TRAINED -> SCORED -> SELECTED -> PUSHED -> COLLECTING -> CLOSED
    any open state -> FAILED  (after ``loop.max_attempts`` failed tries; ``alloop retry`` resumes)
"""

from __future__ import annotations

from enum import Enum

from alloop.errors import InvalidTransitionError


class RoundState(str, Enum):
    CREATED = "CREATED"
    TRAINED = "TRAINED"
    SCORED = "SCORED"
    SELECTED = "SELECTED"
    PUSHED = "PUSHED"
    COLLECTING = "COLLECTING"
    CLOSED = "CLOSED"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value


ORDER = [
    RoundState.CREATED,
    RoundState.TRAINED,
    RoundState.SCORED,
    RoundState.SELECTED,
    RoundState.PUSHED,
    RoundState.COLLECTING,
    RoundState.CLOSED,
]

#: Legal moves. FAILED can go back to the state it failed from (``alloop retry``).
TRANSITIONS: dict[RoundState, frozenset[RoundState]] = {
    RoundState.CREATED: frozenset({RoundState.TRAINED, RoundState.FAILED}),
    RoundState.TRAINED: frozenset({RoundState.SCORED, RoundState.FAILED}),
    RoundState.SCORED: frozenset({RoundState.SELECTED, RoundState.FAILED}),
    RoundState.SELECTED: frozenset({RoundState.PUSHED, RoundState.FAILED}),
    RoundState.PUSHED: frozenset({RoundState.COLLECTING, RoundState.FAILED}),
    RoundState.COLLECTING: frozenset({RoundState.CLOSED, RoundState.FAILED}),
    RoundState.CLOSED: frozenset(),
    RoundState.FAILED: frozenset(set(ORDER[:-1])),
}


def check_transition(round_number: int, current: str, new: str) -> None:
    cur, nxt = RoundState(current), RoundState(new)
    if nxt not in TRANSITIONS[cur]:
        raise InvalidTransitionError(round_number, cur.value, nxt.value)
