"""Active-learning order in Label Studio Community: rank fields on every task and a Data Manager
view listing the open round's tasks most useful first (real Label Studio server)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select as sa_select
from sqlmodel import col

from alloop.loop.controller import Controller
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Selection
from connectors.label_studio.views import VIEW_TITLE
from tests.conftest import write_project
from tests.integration import ls_support as lss

DIGIT = lambda data: data["sample_id"].split("/")[0]  # noqa: E731 - the truth is the class folder


def _picks(ws, number: int) -> list[tuple[str, int, float]]:
    """(sample key, 0-based rank, score) of round ``number``'s selections, by rank."""
    with session_scope(ws.engine) as s:
        return [tuple(r) for r in s.connection().execute(
            sa_select(col(Sample.key), col(Selection.rank), col(Selection.score))
            .join(Selection, col(Selection.sample_id) == col(Sample.id))
            .join(Round, col(Round.id) == col(Selection.round_id))
            .where(col(Round.number) == number).order_by(col(Selection.rank))
        )]


def _views(ls, pid: int) -> list:
    return [v for v in ls.views.list(project=pid) if (v.data or {}).get("title") == VIEW_TITLE]


def _view_keys(ls, pid: int, view_id: int) -> list[str]:
    """The view's tasks as Label Studio lists them (``GET /api/tasks?view=ID``), in its order."""
    return [t.data["sample_id"] for t in ls.tasks.list(project=pid, view=view_id, fields="task_only", page_size=100)]


def test_tasks_carry_rank_and_score_and_the_view_lists_the_open_round_by_rank(label_studio):
    _, ws, ls, who, pid = lss.looped_project(label_studio.document_root, "order", seed=0, annotators=["olga"],
                                             loop={"initial_size": 12, "batch_size": 11, "max_rounds": 3})

    for number, size in ((0, 12), (1, 11)):
        picks = _picks(ws, number)
        assert len(picks) == size
        data = {t.data["sample_id"]: t.data for t in lss.tasks(ls, pid, fields="task_only")
                if t.data["alloop_round"] == number}
        # every task carries its round, its 1-based rank and the strategy's score
        assert {k: (d["alloop_rank"], d["alloop_score"]) for k, d in data.items()} == {
            key: (rank + 1, score) for key, rank, score in picks}
        # one view, filtered to the open round, ordered by rank as a number (10, 11 after 9, not after 1)
        views = _views(ls, pid)
        assert len(views) == 1
        assert _view_keys(ls, pid, views[0].id) == [key for key, _, _ in picks]
        lss.label_all(ls, pid, DIGIT, list(who.values()))
        Controller(ws).run()

    # presenting a round again changes nothing: still one view, same tasks, same order
    before = _views(ls, pid)
    ws.connector.present_round(2)
    ws.connector.present_round(2)
    after = _views(ls, pid)
    assert [v.id for v in after] == [v.id for v in before] and len(after) == 1
    assert _view_keys(ls, pid, after[0].id) == [key for key, _, _ in _picks(ws, 2)]
    ws.close()


def test_a_view_pointed_elsewhere_by_hand_is_put_back_on_the_next_push(label_studio):
    _, ws, ls, who, pid = lss.looped_project(label_studio.document_root, "order2", seed=1, annotators=["pia"],
                                             loop={"initial_size": 4, "batch_size": 3, "max_rounds": 2})
    (view,) = _views(ls, pid)
    # someone re-points the tab at round 0's tasks in reverse order
    ls.views.update(str(view.id), project=pid, data={
        "title": VIEW_TITLE,
        "filters": {"conjunction": "and", "items": [{"filter": "filter:tasks:data.alloop_round",
                                                     "operator": "equal", "type": "Number", "value": 0}]},
        "ordering": ["-tasks:data.alloop_rank"]})
    assert _view_keys(ls, pid, view.id) == [k for k, _, _ in _picks(ws, 0)][::-1]
    lss.label_all(ls, pid, DIGIT, list(who.values()))
    Controller(ws).run()
    (again,) = _views(ls, pid)
    assert again.id == view.id
    assert _view_keys(ls, pid, view.id) == [k for k, _, _ in _picks(ws, 1)]
    ws.close()


def test_a_process_killed_after_the_import_heals_the_view_on_the_next_run(label_studio):
    import signal

    from tests.conftest import run_cli

    folder = Path(label_studio.document_root) / "order3"
    pf = write_project(folder, project={"name": "order3", "seed": 2}, connector={"name": "label_studio"},
                       loop={"initial_size": 10, "batch_size": 3, "max_rounds": 2})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf), env={"ALLOOP_TEST_KILL_AT": "0:after_push"})
    assert r.returncode == -signal.SIGKILL
    ls = lss.client()
    pid = lss.project_id(ls, "alloop: order3")
    tasks = lss.tasks(ls, pid, "task_only")
    assert sorted(t.data["alloop_rank"] for t in tasks) == list(range(1, 11))  # imported with their ranks
    assert _views(ls, pid) == []  # killed before the view was made
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    assert "adopted 10 already there" in r.stdout
    (view,) = _views(ls, pid)
    assert len(lss.tasks(ls, pid, "task_only")) == 10
    by_rank = sorted(tasks, key=lambda t: t.data["alloop_rank"])
    assert _view_keys(ls, pid, view.id) == [t.data["sample_id"] for t in by_rank]
