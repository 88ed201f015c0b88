"""Incremental pulls against a real Label Studio server: after a full pull, a pull reads only the
tasks changed since the last one; a change the watermark missed comes back at the
reconciliation pull; the cursor is stored with the annotations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import func, select

from alloop.loop.controller import Controller
from alloop.loop.ingest import DELETED
from alloop.protocols import ConnectorContext, TaskRef
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, ConnectorState, Project
from connectors.label_studio.connector import LabelStudioConnector
from tests.conftest import open_workspace, write_project
from tests.integration import ls_support as lss

DIGIT = lambda data: data["sample_id"].split("/")[0]  # noqa: E731 - the truth is the class folder

N_TASKS = 20_000
N_CHANGED = 50


def _future(cursor: dict) -> dict:
    """The cursor with its watermark a day ahead: an incremental pull then sees nothing."""
    return {**cursor, "since": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()}


def test_a_pull_reads_the_50_changed_tasks_of_20000_and_reconciliation_recovers_a_missed_change(label_studio):
    ctx = ConnectorContext(project="incr20k", task="text", labels=("a", "b"))
    conn = LabelStudioConnector.from_params(
        {"reconcile_every": 4, "reconcile_after_s": None, "watermark_margin_s": 1.0}, context=ctx)
    conn.ensure_project()
    pid = conn.project_id
    ls = lss.client()
    (uid,) = lss.users(ls, ["quinn"]).values()
    # 20,000 tasks, each already annotated once, in bulk through the import API
    body = [{"data": {"text": f"t{i}", "sample_id": f"s{i}", "alloop_round": 0},
             "annotations": [{"result": lss.choice("a", "text"), "completed_by": uid}]} for i in range(N_TASKS)]
    ids: list[int] = []
    for i in range(0, N_TASKS, 5000):
        ids += ls.projects.import_tasks(pid, request=body[i : i + 5000], return_task_ids=True).task_ids
    assert len(ids) == N_TASKS
    now = datetime.now(timezone.utc)
    refs = [TaskRef(f"s{i}", str(tid), 0, now) for i, tid in enumerate(ids)]

    first = conn.pull_changes(refs, None)  # no cursor: a full pull
    assert first.full and len(first.records) == N_TASKS and len(first.complete) == N_TASKS
    assert conn.reads["exported"] == N_TASKS

    quiet = conn.pull_changes(refs, first.cursor)  # nothing changed since (but a margin's worth of the import)
    assert not quiet.full and quiet.cursor["pulls"] == 1

    # 50 tasks get a second annotation
    changed = ids[100 : 100 + 2 * N_CHANGED : 2]
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda tid: ls.annotations.create(tid, result=lss.choice("b", "text"),
                                                               completed_by=uid), changed))
    before = dict(conn.reads)
    third = conn.pull_changes(refs, quiet.cursor)
    assert not third.full
    assert conn.reads["listed"] - before["listed"] == N_CHANGED  # the filtered listing: 50 rows, not 20,000
    assert conn.reads["exported"] - before["exported"] == N_CHANGED
    assert third.complete == {str(t) for t in changed} and third.tasks_read == N_CHANGED
    assert {r.source_id for r in third.records} >= {str(a.id) for a in made}
    assert len(third.records) == 2 * N_CHANGED  # both annotations of each changed task

    # a change the watermark misses (the watermark pushed a day ahead) ...
    late = ls.annotations.create(ids[7], result=lss.choice("b", "text"), completed_by=uid)
    missed = conn.pull_changes(refs, _future(third.cursor))
    assert not missed.full and str(late.id) not in {r.source_id for r in missed.records}
    assert missed.cursor["pulls"] == 3
    # ... is recovered by the reconciliation pull (every 4th)
    full = conn.pull_changes(refs, missed.cursor)
    assert full.full and str(late.id) in {r.source_id for r in full.records}
    assert len(full.records) == N_TASKS + N_CHANGED + 1 and full.cursor["pulls"] == 0
    conn.close()


def _stored(ws) -> int:
    with session_scope(ws.engine) as s:
        return int(s.exec(select(func.count()).select_from(Annotation)).one())


def _cursor(ws) -> dict:
    with session_scope(ws.engine) as s:
        pid = s.exec(select(Project.id).where(Project.name == ws.name)).one()
        return dict(s.get(ConnectorState, (pid, "label_studio")).state)


def _set_cursor(ws, cursor: dict) -> None:
    with session_scope(ws.engine) as s:
        pid = s.exec(select(Project.id).where(Project.name == ws.name)).one()
        row = s.get(ConnectorState, (pid, "label_studio"))
        row.state = cursor
        s.add(row)
        s.commit()


def test_collect_keeps_the_cursor_in_the_database_and_reconciles_on_schedule(label_studio, monkeypatch):
    from alloop.loop import collect

    rows_read: list[int] = []  # task rows each tick read from alloop's database
    for name in ("all", "among"):
        real = getattr(collect._DbTasks, name)

        def counted(self, *args, _real=real):
            out = _real(self, *args)
            rows_read.append(len(self.rows))
            return out

        monkeypatch.setattr(collect._DbTasks, name, counted)
    folder = Path(label_studio.document_root) / "incr"
    pf = write_project(folder, project={"name": "incr", "seed": 0},
                       connector={"name": "label_studio",
                                  "params": {"reconcile_every": 4, "reconcile_after_s": 3600}},
                       loop={"initial_size": 12, "batch_size": 6, "max_rounds": 2})
    ws = open_workspace(pf)
    ls = lss.client()
    (uid,) = lss.users(ls, ["rita"]).values()
    results = Controller(ws).run()
    assert results[-1].waiting
    pid = lss.project_id(ls, "alloop: incr")
    tasks = lss.tasks(ls, pid)
    first = _cursor(ws)  # the first pull was full, the second (the waiting tick) incremental
    assert first["pulls"] == 1 and first["project"] == pid and first["full_at"] is not None

    # the tasks were imported moments ago (within the cursor's safety margin): start the watermark now
    _set_cursor(ws, {**_cursor(ws), "since": datetime.now(timezone.utc).isoformat()})
    lss.annotate(ls, [(t.id, lss.choice(DIGIT(t.data)), uid, False) for t in tasks[:3]])
    conn = ws.connector
    before = dict(conn.reads)
    rows_read.clear()
    Controller(ws).tick()
    assert conn.reads["incremental"] - before["incremental"] == 1
    assert conn.reads["exported"] - before["exported"] == 3  # only the 3 changed tasks
    assert rows_read == [3]  # and only their rows of the 12 from the database
    assert _stored(ws) == 3 and _cursor(ws)["pulls"] == 2

    # the watermark is pushed past two new annotations: the incremental pull misses them ...
    _set_cursor(ws, _future(_cursor(ws)))
    lss.annotate(ls, [(t.id, lss.choice(DIGIT(t.data)), uid, False) for t in tasks[3:5]])
    Controller(ws).tick()
    assert _stored(ws) == 3 and _cursor(ws)["pulls"] == 3
    # ... and the reconciliation pull (every 4th) stores them
    before = dict(conn.reads)
    rows_read.clear()
    Controller(ws).tick()
    assert conn.reads["full"] - before["full"] == 1 and rows_read == [12]
    assert _stored(ws) == 5 and _cursor(ws)["pulls"] == 0

    # deleting an annotation in Label Studio touches its task: the next incremental pull sees it
    gone = ls.annotations.list(tasks[0].id)[0].id
    ls.annotations.delete(gone)
    before = dict(conn.reads)
    Controller(ws).tick()
    assert conn.reads["incremental"] - before["incremental"] == 1
    with session_scope(ws.engine) as s:
        row = s.exec(select(Annotation).where(Annotation.source_id == str(gone))).one()
        assert not row.valid and row.invalid_reason == DELETED
    ws.close()
