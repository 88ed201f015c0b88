"""What every round step works with: the project, its pool data, its models, the transition.

A step (:mod:`~alloop.loop.train`, :mod:`~alloop.loop.score`, :mod:`~alloop.loop.select`,
:mod:`~alloop.loop.push`, :mod:`~alloop.loop.collect`) reads what it needs, works outside a
transaction, then writes its results and the state change together through
:attr:`StepEnv.transition` (one transaction, compare-and-set on the round's state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlmodel import Session

from alloop.loop.data import PoolData
from alloop.loop.models import RoundModels
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.protocols import StreamPresenter
from alloop.store.models import Project, Round
from alloop.strategies.base import Strategy

if TYPE_CHECKING:
    from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["StepEnv", "Transition", "result"]


class Transition(Protocol):
    """Moves a round to a new state inside a session and commits (the controller's compare-and-set)."""

    def __call__(self, s: Session, rnd: Round, new: RoundState, *, note: str | None = None,
                 **values: Any) -> None: ...


@dataclass
class StepEnv:
    """One project's loop, as the steps see it."""

    ws: Workspace
    transition: Transition
    data: PoolData
    models: RoundModels
    current: Project | None = None
    """The project row the controller read for this tick (steps read it instead of querying again)."""

    def project(self) -> Project:
        """The project as of this tick."""
        return self.current if self.current is not None else self.ws.project()

    @classmethod
    def create(cls, ws: Workspace, transition: Transition, *, sole_writer: bool = False) -> StepEnv:
        data = PoolData(ws, sole_writer=sole_writer)
        return cls(ws, transition, data, RoundModels(ws, data))

    def stream_factor(self) -> int | None:
        """The connector's stream factor (:class:`~alloop.protocols.StreamPresenter`): a round
        selects that many times its budget and closes at its budget; None in batch mode."""
        conn = self.ws.connector
        return conn.stream_factor() if isinstance(conn, StreamPresenter) else None

    def strategy_for(self, rnd: Round, has_model: bool) -> tuple[Strategy, str]:
        """The round's strategy: the cold start in round 0, or when no model could be trained yet
        for a strategy that needs one."""
        if rnd.number == 0:
            return self.ws.cold_start, self.ws.config.cold_start.name
        strategy = self.ws.strategy
        if strategy.requires & {"proba"} and not has_model:
            logger.warning(
                "round %d: strategy %s needs a model, none could be trained yet; using cold start %s",
                rnd.number, self.ws.config.strategy.name, self.ws.config.cold_start.name,
            )
            return self.ws.cold_start, self.ws.config.cold_start.name
        return strategy, self.ws.config.strategy.name


def result(action: str, rnd: Round, state: RoundState, message: str, **kw: Any) -> TickResult:
    """The TickResult of a step that moved ``rnd`` to ``state``."""
    return TickResult(action, rnd.number, state.value, message, **kw)
