"""The controller: ``tick()`` advances a project by at most one round transition.

Each step does its work (training, scoring, a push) *outside* any transaction, then writes
its results together with the state change in one short transaction guarded by the state it
expects (compare-and-set). Files are written atomically before that commit, so a process
killed anywhere repeats only the unfinished step:

- a step that did not commit is redone with the same derived randomness, so it produces
  the same result;
- samples are pushed once: tasks already recorded are skipped, tasks the tool has but the
  database lacks (crash between push and commit) are found by sample key and adopted;
- annotations are upserted by the tool's annotation id: re-pulled labels are not counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import Session

from alloop.errors import (
    AlloopError,
    ConfigError,
    ConnectorUnavailableError,
    ExecutionUnavailableError,
    PoolError,
    StoreError,
    UnknownComponentError,
)
from alloop.loop import _faults
from alloop.loop.collect import collect
from alloop.loop.env import StepEnv
from alloop.loop.ingest import open_leftovers
from alloop.loop.lock import ProjectLease
from alloop.loop.policies import round_budget, stop_reason
from alloop.loop.push import push
from alloop.loop.result import TickResult
from alloop.loop.score import score
from alloop.loop.select import select
from alloop.loop.states import RoundState, check_transition
from alloop.loop.train import finish, train
from alloop.store.engine import session_scope
from alloop.store.models import Project, Round, table, utcnow
from alloop.store.queries import (
    current_round,
    get_project,
    latest_model,
    recent_model_metrics,
    round_count,
)
from alloop.userwarnings import WarningLog, collecting
from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

#: errors the user must fix; they never count as a failed attempt
USER_ERRORS = (ConfigError, PoolError, UnknownComponentError)


_ROUND = table(Round)
#: the compare-and-set of a round's state; the columns set are the parameters' other keys
_CAS_ROUND = update(_ROUND).where(_ROUND.c.id == bindparam("cas_id"), _ROUND.c.state == bindparam("cas_state"))

#: the work of each state (PUSHED and COLLECTING both pull labels)
STEPS: dict[RoundState, Callable[[StepEnv, Round], TickResult]] = {
    RoundState.CREATED: train,
    RoundState.TRAINED: score,
    RoundState.SCORED: select,
    RoundState.SELECTED: push,
    RoundState.PUSHED: collect,
    RoundState.COLLECTING: collect,
}
STEP_NAMES = {RoundState.CREATED: "training", RoundState.TRAINED: "scoring", RoundState.SCORED: "selecting",
              RoundState.SELECTED: "pushing", RoundState.PUSHED: "collecting", RoundState.COLLECTING: "collecting"}


class Controller:
    """Drives one project's rounds through the state machine.

    Parameters
    ----------
    workspace : Workspace
    use_lock : bool
        Hold the project lease while ticking (always, except for in-memory simulations).
    warnings : WarningLog, optional
        Where warnings raised by user code during the steps go (each distinct one reported once;
        default: a new log, reporting through :mod:`logging`).
    sole_writer : bool
        The database is this controller's alone (a simulation's private in-memory store): the
        project row and the current round are kept in memory between ticks, updated with each
        transition this controller commits, instead of read again at every tick; so are the pool's
        sample arrays and the training labels, until this controller quarantines a sample or
        stores an annotation. Everything is still written as usual. Never for a shared database
        (``alloop run``, ``alloop serve``), where other processes advance, retry or finish the
        project between ticks.
    """

    def __init__(
        self, workspace: Workspace, *, use_lock: bool = True, warnings: WarningLog | None = None,
        sole_writer: bool = False,
    ) -> None:
        self.ws = workspace
        self.use_lock = use_lock
        self.sole_writer = sole_writer
        self.env = StepEnv.create(workspace, self._transition, sole_writer=sole_writer)
        self.warnings = warnings if warnings is not None else WarningLog()
        self._lease: ProjectLease | None = None
        #: sole writer: (project row, current round) as last read or written by this controller
        self._known: tuple[Project, Round | None] | None = None

    # -- locking ---------------------------------------------------------------------------
    def __enter__(self) -> Controller:
        if self.use_lock and self._lease is None:
            project = self.ws.project()
            lease = ProjectLease(self.ws.engine, project.id, project.name)  # type: ignore[arg-type]
            lease.acquire()  # may raise LockedError: then this controller holds nothing (and can try again)
            self._lease = lease
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    # -- transitions -------------------------------------------------------------------------
    def _transition(
        self, s: Session, rnd: Round, new: RoundState, *, note: str | None = None, **values: object
    ) -> None:
        """Compare-and-set the round's state inside ``s`` and commit; crash points around it.

        ``note`` (why, e.g. an early close) is added to the one log line of the transition.
        """
        check_transition(rnd.number, rnd.state, new.value)
        written: dict[str, Any] = dict(state=new.value, updated_at=utcnow(), attempt=0, last_error=None, **values)
        # a Core UPDATE in the session's transaction (the SET columns are the keys of ``written``)
        res = s.connection().execute(_CAS_ROUND, {"cas_id": rnd.id, "cas_state": rnd.state, **written})
        if res.rowcount != 1:
            raise StoreError(
                f"Round {rnd.number} changed state while this process worked on it "
                "(another process advanced the project?). Nothing was written; run again."
            )
        _faults.crash_point(rnd.number, f"before_commit:{new.value}")
        s.commit()
        old = rnd.state
        if self._known is not None and self._known[1] is rnd:  # sole writer: the kept round, as now stored
            rnd.sqlmodel_update(written)
        _faults.crash_point(rnd.number, f"after_commit:{new.value}")
        logger.info("project %s round %d: %s -> %s%s", self.ws.name, rnd.number, old, new.value,
                    f" ({note})" if note else "")

    # -- the tick ------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        """Perform at most one transition (or one label pull) and report it."""
        if self.use_lock and self._lease is None:
            with self:
                return self._tick()
        return self._tick()

    def _tick(self) -> TickResult:
        if self._known is not None:
            project, rnd = self._known
        else:
            with session_scope(self.ws.engine) as s:
                project = get_project(s, self.ws.name)
                rnd = current_round(s, project.id)  # type: ignore[arg-type]
            if self.sole_writer:
                self._known = (project, rnd)
        try:
            return self._tick_with(project, rnd)
        except BaseException:
            self._known = None  # read again after a failure (a counted attempt, a FAILED round)
            self.env.data.forget()
            raise

    def _tick_with(self, project: Project, rnd: Round | None) -> TickResult:
        if project.status == "finished":
            return TickResult(
                "idle", None, None, f"finished: {project.finished_reason}", progressed=False, finished=True
            )
        if rnd is None or rnd.state == RoundState.CLOSED:
            return self._between_rounds(project, rnd)
        if rnd.state == RoundState.FAILED:
            raise StoreError(
                f"Round {rnd.number} FAILED in state {rnd.failed_from} after {rnd.attempt} attempts: "
                f"{rnd.last_error}. Fix the cause, then run `alloop retry` to resume it."
            )
        state = RoundState(rnd.state)
        self.env.current = project
        try:
            with collecting(self.warnings, f"round {rnd.number}, {STEP_NAMES[state]}"):
                return STEPS[state](self.env, rnd)
        except USER_ERRORS:
            raise
        except (ConnectorUnavailableError, ExecutionUnavailableError) as exc:  # not the round's fault
            self._record_error(rnd, exc, count=False)
            raise
        except Exception as exc:
            self._record_error(rnd, exc, count=True)
            raise
        finally:
            self.env.current = None

    def _record_error(self, rnd: Round, exc: BaseException, *, count: bool) -> None:
        message = f"{type(exc).__name__}: {exc}"[:2000]
        with session_scope(self.ws.engine) as s:
            row = s.get(Round, rnd.id)
            if row is None or row.state != rnd.state:
                return
            row.last_error = message
            if count:
                row.attempt += 1
                limit = self.ws.config.loop.max_attempts
                if row.attempt >= limit:
                    row.failed_from, row.state = row.state, RoundState.FAILED.value
                    logger.error("project %s round %d FAILED: %s", self.ws.name, row.number, message)
                    exc.add_note(f"Round {row.number} failed {row.attempt} times and is now FAILED: fix the cause, "
                                 "then run `alloop retry` and `alloop run`.")
                else:
                    exc.add_note(f"Round {row.number}, attempt {row.attempt} of {limit} ([loop] max_attempts): "
                                 "fix the cause and run `alloop run` again to retry the step.")
            row.updated_at = utcnow()
            s.add(row)

    def _between_rounds(self, project: Project, rnd: Round | None) -> TickResult:
        loop = self.ws.config.loop
        model = None
        if self._known is not None:  # sole writer: rounds are numbered 0, 1, ... up to the kept one
            n_rounds, last = (0, None) if rnd is None else (rnd.number + 1, rnd.number)
        if self._known is None or loop.target_accuracy is not None:
            with session_scope(self.ws.engine) as s:
                if self._known is None:
                    n_rounds, last = round_count(s, project.id)  # type: ignore[arg-type]
                if loop.target_accuracy is not None:  # the latest model matters only for a target accuracy
                    model = latest_model(s, project.id)  # type: ignore[arg-type]
        recent: list[dict[str, Any]] = []
        if loop.stop_kappa is not None or loop.stop_uncertainty is not None:
            with session_scope(self.ws.engine) as s:
                recent = recent_model_metrics(s, project.id, loop.stop_window)  # type: ignore[arg-type]
        n_chosen, n_candidates = self.env.data.candidate_counts(project.id)  # type: ignore[arg-type]
        if self.env.stream_factor() is not None:  # stream: earlier rounds' unlabeled tasks can be picked again
            with session_scope(self.ws.engine) as s:
                n_candidates += len(open_leftovers(s, project.id, self.ws.connector.name))  # type: ignore[arg-type]
        reason = stop_reason(loop, n_rounds, n_chosen, n_candidates, model, recent)
        if reason is not None:
            self._known = None  # the project row changes
            with collecting(self.warnings, "the final model"):
                return finish(self.env, project, reason)
        number = last + 1 if last is not None else 0
        budget = round_budget(loop, number, n_chosen, n_candidates)
        strategy = self.ws.cold_start if number == 0 else self.ws.strategy
        comp = self.ws.config.cold_start if number == 0 else self.ws.config.strategy
        with session_scope(self.ws.engine) as s:
            rnd = Round(
                project_id=project.id,  # type: ignore[arg-type]
                number=number,
                state=RoundState.CREATED.value,
                strategy=comp.name,
                strategy_params=strategy.model_dump(mode="json"),
                budget=budget,
            )
            s.add(rnd)
            _faults.crash_point(number, "before_commit:CREATED")
        if self._known is not None:
            self._known = (project, rnd)
        _faults.crash_point(number, "after_commit:CREATED")
        logger.info("project %s round %d: created (%s, budget %d)", self.ws.name, number, comp.name, budget)
        return TickResult(
            "created", number, RoundState.CREATED.value, f"round {number} created: {comp.name}, {budget} samples"
        )

    # -- driving -------------------------------------------------------------------------------
    def run(
        self,
        *,
        rounds_to_close: int | None = None,
        on_tick: Callable[[TickResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[TickResult]:
        """Tick until finished, waiting for labels, ``rounds_to_close`` rounds closed, or - checked
        after each tick, so a transition is never cut short - ``should_stop()`` is true."""
        results: list[TickResult] = []
        closed = 0
        with self:
            while True:
                r = self._tick()
                results.append(r)
                if on_tick is not None:
                    on_tick(r)
                closed += r.action == "closed"
                if r.finished or r.waiting or not r.progressed:
                    break
                if rounds_to_close is not None and closed >= rounds_to_close:
                    break
                if should_stop is not None and should_stop():
                    break
        return results

    def retry(self) -> Round:
        """Move a FAILED round back to the state it failed in."""
        self._known = None
        with session_scope(self.ws.engine) as s:
            project = get_project(s, self.ws.name)
            rnd = current_round(s, project.id)  # type: ignore[arg-type]
            if rnd is None or rnd.state != RoundState.FAILED:
                raise AlloopError(
                    f"Nothing to retry: the current round is {rnd.state if rnd else 'absent'}, not FAILED."
                )
            rnd.state, rnd.attempt, rnd.failed_from = rnd.failed_from or RoundState.CREATED.value, 0, None
            s.add(rnd)
            return rnd

