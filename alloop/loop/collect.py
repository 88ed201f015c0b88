"""PUSHED/COLLECTING -> COLLECTING/CLOSED: labels come in; the round closes when a rule fires.

Every annotation of every task of the project is ingested (late labels of closed rounds too),
upserted by the tool's annotation id, so pulling twice counts nothing twice. A connector whose
annotations are final (:class:`~alloop.protocols.FinalAnnotations`, the simulated annotator) is
asked only about the tasks it has not answered yet. A connector with
a complete pull (:class:`~alloop.protocols.CompletePull`) also tells what was deleted in the tool.
A connector with an incremental pull (:class:`~alloop.protocols.IncrementalPull`) reads only what
changed since its last pull (with a full reconciliation now and then); its cursor is stored in
:class:`~alloop.store.models.ConnectorState`, in the transaction that stores the annotations, so
a crash before the commit repeats the pull from the old cursor.

In stream mode (:class:`~alloop.protocols.StreamPresenter`) the round's view holds
``stream_factor x budget`` tasks and the round closes once ``budget`` of them are resolved
(``close_reason``'s ``target``).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, literal, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from alloop.loop import _faults
from alloop.loop.env import StepEnv, result
from alloop.loop.ingest import ingest, new_labels_since, resolved_tasks
from alloop.loop.policies import close_reason
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.protocols import AnnotationRecord, CompletePull, IncrementalPull, TaskRef
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, ConnectorState, ModelVersion, Round, Sample, Task, utcnow

logger = logging.getLogger(__name__)

__all__ = ["collect"]


def _final(conn: object) -> bool:
    return getattr(conn, "final_annotations", False) is True


def _answered() -> ColumnElement[bool]:
    return sa_select(col(Annotation.id)).where(col(Annotation.task_id) == col(Task.id)).exists()


def _tasks_statement(final: bool) -> Select[Any]:
    """The tasks a tick reads (plain columns, not ORM objects), with bound ``pid``, ``connector``
    and ``round_id``: every task of the project, or for a connector with final annotations
    (:class:`~alloop.protocols.FinalAnnotations`) the round's own (to count them) and the ones not
    answered yet. Built once per kind: every tick runs one."""
    known = _STATEMENTS.get(final)
    if known is not None:
        return known
    stmt: Any = (
        sa_select(col(Task.id), col(Task.sample_id), col(Task.round_id), col(Task.external_id),
                  col(Task.pushed_at), col(Sample.key), col(Round.number),
                  (_answered() if final else literal(False)).label("answered"))
        .join(Sample, col(Sample.id) == col(Task.sample_id))
        .join(Round, col(Round.id) == col(Task.round_id))
        .where(col(Task.project_id) == bindparam("pid"), col(Task.connector) == bindparam("connector"))
        .order_by(col(Task.id))
    )
    if final:
        stmt = stmt.where(or_(col(Task.round_id) == bindparam("round_id"), ~_answered()))
    _STATEMENTS[final] = stmt
    return _STATEMENTS[final]


_STATEMENTS: dict[bool, Select[Any]] = {}

#: the tasks among given external ids (bound ``pid``, ``connector`` and expanding ``ext``)
_AMONG = _tasks_statement(False).where(col(Task.external_id).in_(bindparam("ext", expanding=True)))
#: the tasks of a round in a connector (bound ``round_id``, ``connector``)
_ROUND_TASKS = sa_select(func.count()).select_from(Task).where(
    col(Task.round_id) == bindparam("round_id"), col(Task.connector) == bindparam("connector"))


class _DbTasks:
    """The project's tasks in a connector as a :class:`~alloop.protocols.TaskLookup`, read from
    the database only when asked: all of them (a full pull), or those among some external ids
    (an incremental pull: a tick then reads the changed tasks' rows, not the project's)."""

    def __init__(self, engine: Any, project_id: int, connector: str) -> None:
        self.engine, self.params = engine, {"pid": project_id, "connector": connector}
        self.rows: list[Any] = []

    @staticmethod
    def ref(t: Any) -> TaskRef:
        """The :class:`~alloop.protocols.TaskRef` of a task row of :func:`_tasks_statement`."""
        return TaskRef(t.key, t.external_id, t.number, t.pushed_at)

    def all(self) -> list[TaskRef]:
        with self.engine.connect() as c:
            self.rows = list(c.execute(_tasks_statement(False), self.params).all())
        return [self.ref(t) for t in self.rows]

    def among(self, external_ids: Any) -> list[TaskRef]:
        ids = sorted({str(i) for i in external_ids})
        rows: list[Any] = []
        with self.engine.connect() as c:
            for start in range(0, len(ids), 900):  # any backend's parameter limit
                rows.extend(c.execute(_AMONG, {**self.params, "ext": ids[start : start + 900]}).all())
        self.rows = rows
        return [self.ref(t) for t in rows]


def collect(env: StepEnv, rnd: Round) -> TickResult:
    """Ingest every annotation of the project's tasks, then close the round when a rule of
    :func:`~alloop.loop.policies.close_reason` fires."""
    ws = env.ws
    project = env.project()
    conn = ws.connector
    loop = ws.config.loop
    lazy = isinstance(conn, IncrementalPull) and not _final(conn)  # reads the task rows it needs, later
    with session_scope(ws.engine) as s:
        rows = [] if lazy else s.connection().execute(
            _tasks_statement(_final(conn)), {"pid": project.id, "connector": conn.name, "round_id": rnd.id}
        ).all()
        model_at = None
        requested = rnd.retrain_requested_at is not None
        if loop.retrain_after_labels is not None or loop.retrain_after_s is not None or requested:
            mv = s.get(ModelVersion, rnd.model_version_id) if rnd.model_version_id is not None else None
            model_at = mv.created_at if mv is not None else rnd.created_at
        state = s.get(ConnectorState, (project.id, conn.name)) if isinstance(conn, IncrementalPull) else None
        cursor = dict(state.state) if state is not None else None
    new_cursor = None
    records: list[AnnotationRecord] = []
    complete: list[int] | None = None
    if lazy and isinstance(conn, IncrementalPull):  # what changed since the last pull: only those tasks' rows
        lookup = _DbTasks(ws.engine, project.id, conn.name)  # type: ignore[arg-type]
        pulled = conn.pull_changes(lookup, cursor)
        records, new_cursor = pulled.records, pulled.cursor
        rows = lookup.rows
        complete = [t.id for t in rows if t.external_id in pulled.complete]
    else:
        asked = [t for t in rows if not t.answered]  # final annotations: an answered task is not asked again
        refs = [_DbTasks.ref(t) for t in asked]
        if not refs:
            pass
        elif isinstance(conn, CompletePull):  # every annotation the tool holds: a missing one was deleted there
            records, complete = conn.pull_complete(refs), [t.id for t in asked]
        else:
            records = conn.pull(refs)
    tasks_by_key = {t.key: t for t in rows}
    with Session(ws.engine, expire_on_commit=False) as s:
        stats = ingest(s, project_id=project.id, connector=conn.name, labels=project.labels,  # type: ignore[arg-type]
                       records=records, tasks_by_key=tasks_by_key, complete_tasks=complete)
        if new_cursor is not None:
            _save_cursor(s, project.id, conn.name, new_cursor)  # type: ignore[arg-type]
        s.flush()
        if stats.changed:
            env.data.labels_changed()
        n_tasks = (s.connection().execute(_ROUND_TASKS, {"round_id": rnd.id, "connector": conn.name}).scalar_one()
                   if lazy else sum(1 for t in rows if t.number == rnd.number))
        if _final(conn):  # nothing is ever deleted there: answered before, or answered now
            answered_now = {r.sample_key for r in records}
            n_done = sum(1 for t in rows if t.number == rnd.number and (t.answered or t.key in answered_now))
        else:
            n_done = resolved_tasks(s, rnd.id)  # type: ignore[arg-type]
        target = None if env.stream_factor() is None else rnd.budget  # stream: the view holds more
        progress = f"{n_done}/{n_tasks} tasks resolved"
        if target is not None:
            progress += f" (stream: closes at {min(target, n_tasks)})"
        if stats.changed:
            progress += f", {stats.new} new and {stats.updated} updated annotations"
            if stats.deleted:
                progress += f", {stats.deleted} deleted in {conn.name}"
        if rnd.state == RoundState.PUSHED:
            env.transition(s, rnd, RoundState.COLLECTING)
            return result("collecting", rnd, RoundState.COLLECTING, f"round {rnd.number}: collecting, {progress}")
        new_labels = new_labels_since(s, project.id, model_at) if model_at is not None else 0  # type: ignore[arg-type]
        reason = close_reason(loop, n_tasks=n_tasks, n_resolved=n_done, pushed_at=rnd.pushed_at,
                              model_at=model_at, new_labels=new_labels, requested=requested,
                              target=target)
        if reason is not None:
            why = "" if reason == "complete" else f" early: {reason}"
            env.transition(s, rnd, RoundState.CLOSED, completed_at=utcnow(), note=why.strip() or None)
            return result("closed", rnd, RoundState.CLOSED, f"round {rnd.number}: closed{why}, {progress}")
        s.commit()
        _faults.crash_point(rnd.number, "after_ingest")
    return result(
        "waiting", rnd, RoundState.COLLECTING, f"round {rnd.number}: waiting for labels, {progress}",
        progressed=stats.changed > 0, waiting=True,
    )


def _save_cursor(s: Session, project_id: int, connector: str, cursor: dict[str, object]) -> None:
    """Store the connector's pull cursor (committed with the annotations it read)."""
    row = s.get(ConnectorState, (project_id, connector))
    if row is None:
        s.add(ConnectorState(project_id=project_id, connector=connector, state=cursor))
    else:
        row.state = cursor
        row.updated_at = utcnow()
        s.add(row)
