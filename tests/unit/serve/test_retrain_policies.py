"""The retrain rules (``[loop] retrain_after_labels`` / ``retrain_after_s``) next to the "round
complete" rule: each closes a round exactly when it should - as pure functions, and through the
real loop on a real SQLite store, with labels handed back through the jsonl connector."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import select

from alloop.config import LoopConfig
from alloop.loop.controller import Controller
from alloop.loop.ingest import DELETED, ingest, new_labels_since, resolved_tasks
from alloop.loop.policies import close_reason
from alloop.protocols import AnnotationRecord
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, ModelVersion, Round, Sample, Task, utcnow
from alloop.store.queries import get_project, training_labels
from tests.conftest import open_workspace, write_project

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _reason(loop, *, n_tasks=10, n_resolved=0, new=0, age_s=0.0, pushed_s=0.0):
    now = T0 + timedelta(hours=1)
    return close_reason(loop, n_tasks=n_tasks, n_resolved=n_resolved, pushed_at=now - timedelta(seconds=pushed_s),
                        model_at=now - timedelta(seconds=age_s), new_labels=new, now=now)


def test_each_rule_fires_exactly_at_its_threshold():
    loop = LoopConfig(retrain_after_labels=3)
    assert _reason(loop, new=2, n_resolved=2) is None
    assert _reason(loop, new=3, n_resolved=3) == "3 new labels, retrain_after_labels = 3"
    timed = LoopConfig(retrain_after_s=600)
    assert _reason(timed, new=0, age_s=10_000) is None  # an old model but nothing new: keep waiting
    assert _reason(timed, new=1, age_s=599) is None
    assert _reason(timed, new=1, age_s=600).startswith("model 600 s old with 1 new labels")
    # the "round complete" rule is unchanged, and wins when several fire
    assert _reason(LoopConfig(), n_resolved=9) is None
    assert _reason(LoopConfig(), n_resolved=10) == "complete"
    assert _reason(LoopConfig(retrain_after_labels=1), n_resolved=10, new=10) == "complete"
    part = LoopConfig(completion_fraction=0.5, completion_timeout_s=60, retrain_after_labels=8)
    assert _reason(part, n_resolved=5, new=5, pushed_s=59) is None
    assert _reason(part, n_resolved=5, new=5, pushed_s=60) == "complete"
    # whichever fires first: labels before the time rule
    both = LoopConfig(retrain_after_labels=4, retrain_after_s=3600)
    assert _reason(both, new=4, age_s=10).startswith("4 new labels")
    assert _reason(both, new=1, age_s=3600).startswith("model 3600 s old")


# --- the real loop: jsonl hand-off on a SQLite file --------------------------------------------

def _project(tmp_path: Path, **loop):
    pf = write_project(tmp_path / "p", connector={"name": "jsonl"},
                       loop={"initial_size": 10, "batch_size": 5, "max_rounds": 4, **loop})
    return open_workspace(pf)


def _pushed(ws, number: int) -> list[str]:
    with session_scope(ws.engine) as s:
        return list(s.exec(select(Sample.key).join(Task, Task.sample_id == Sample.id)
                           .join(Round, Round.id == Task.round_id)
                           .where(Round.number == number).order_by(Task.id)).all())


def _label(ws, keys: list[str]) -> None:
    """Annotators return correct labels for ``keys`` (appended to the labels file)."""
    truth = ws.reference_labels(keys)
    with open(ws.work_dir / "handoff" / "labels.jsonl", "a") as fh:
        for k in keys:
            fh.write(json.dumps({"key": k, "label": truth[k], "annotator": "ana"}) + "\n")


def _states(ws) -> list[tuple[int, str]]:
    with session_scope(ws.engine) as s:
        return [(r.number, r.state) for r in s.exec(select(Round).order_by(Round.number))]


def test_retrain_after_labels_closes_at_the_nth_label_and_late_labels_are_still_ingested(tmp_path):
    ws = _project(tmp_path, retrain_after_labels=4)
    ctl = Controller(ws)
    assert ctl.run()[-1].waiting
    round0 = _pushed(ws, 0)
    _label(ws, round0[:3])
    r = ctl.run()[-1]
    assert r.waiting and "3/10 tasks resolved" in r.message and _states(ws) == [(0, "COLLECTING")]
    _label(ws, round0[3:4])
    results = ctl.run()
    closed = next(x for x in results if x.action == "closed")
    assert "closed early: 4 new labels, retrain_after_labels = 4, 4/10 tasks resolved" in closed.message
    assert _states(ws) == [(0, "CLOSED"), (1, "COLLECTING")] and results[-1].waiting
    # the round-1 model was trained on those 4 labels
    with session_scope(ws.engine) as s:
        rnd1 = s.exec(select(Round).where(Round.number == 1)).one()
        assert rnd1.model_version_id is not None
    # labels that arrive later for round-0 tasks are ingested, attached to round 0 - and, being new
    # since round 1's model, they count towards its retrain rule
    _label(ws, round0[4:7])
    r = ctl.run()[-1]
    assert r.waiting and _states(ws)[-1] == (1, "COLLECTING")
    with session_scope(ws.engine) as s:
        by_round = dict(
            s.exec(select(Annotation.sample_id, Round.number).join(Round, Round.id == Annotation.round_id)).all()
        )
        key_of = dict(s.exec(select(Sample.id, Sample.key)).all())
        assert sorted(key_of[i] for i, n in by_round.items() if n == 0) == sorted(round0[:7])
        assert resolved_tasks(s, rnd1.id) == 0
        assert new_labels_since(s, get_project(s, ws.name).id, rnd1.created_at) == 3
    _label(ws, _pushed(ws, 1)[:1])  # 3 late + 1 = 4 new labels since round 1's model
    assert any(x.action == "closed" and "4 new labels" in x.message for x in ctl.run())
    assert _states(ws)[:2] == [(0, "CLOSED"), (1, "CLOSED")]
    ws.close()


def _set_model_age(ws, number: int, seconds: float) -> None:
    """Date round ``number``'s model (the time the rule reads) ``seconds`` before now: no waiting."""
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == number)).one()
        row = s.get(ModelVersion, rnd.model_version_id) if rnd.model_version_id is not None else rnd
        row.created_at = utcnow() - timedelta(seconds=seconds)
        s.add(row)


def test_retrain_after_s_needs_an_old_model_and_one_new_label(tmp_path):
    ws = _project(tmp_path, retrain_after_s=600)
    ctl = Controller(ws)
    ctl.run()
    _set_model_age(ws, 0, 3600)
    r = ctl.run()[-1]
    assert r.waiting and _states(ws) == [(0, "COLLECTING")]  # old enough, but no new label
    _set_model_age(ws, 0, 0)  # (the exact threshold is checked on the pure rule above)
    _label(ws, _pushed(ws, 0)[:1])
    r = ctl.run()[-1]
    assert r.waiting and "1 new" in r.message and _states(ws) == [(0, "COLLECTING")]  # a new label, a young model
    _set_model_age(ws, 0, 3600)
    results = ctl.run()
    closed = [x for x in results if x.action == "closed"]
    assert closed
    assert re.search(r"closed early: model \d+ s old with 1 new labels, retrain_after_s = 600", closed[0].message)
    assert _states(ws)[0] == (0, "CLOSED")
    ws.close()


def test_without_retrain_rules_the_round_waits_for_every_task(tmp_path):
    ws = _project(tmp_path)
    ctl = Controller(ws)
    ctl.run()
    keys = _pushed(ws, 0)
    _label(ws, keys[:9])
    assert ctl.run()[-1].waiting and _states(ws) == [(0, "COLLECTING")]
    _label(ws, keys[9:])
    assert any(x.action == "closed" for x in ctl.run())
    ws.close()


# --- deleted annotations -----------------------------------------------------------------------

def _rec(key, sid, label, minutes=0):
    t = T0 + timedelta(minutes=minutes)
    return AnnotationRecord(key, f"t-{key}", sid, "ana", label, False, t, t)


def test_a_deleted_annotation_is_kept_marked_not_trained_on_and_restored_when_back(tmp_path):
    ws = _project(tmp_path)
    Controller(ws).run()
    keys = _pushed(ws, 0)[:2]
    truth = ws.reference_labels(keys)
    with session_scope(ws.engine) as s:
        project = get_project(s, ws.name)
        tasks = {t.sample_id: t for t in s.exec(select(Task)).all()}
        key_id = dict(s.exec(select(Sample.key, Sample.id)).all())
        by_key = {k: tasks[key_id[k]] for k in keys}
        round_id = by_key[keys[0]].round_id
    every = [t.id for t in by_key.values()]

    def pull(records):
        with session_scope(ws.engine) as s:
            return ingest(s, project_id=project.id, connector="jsonl", labels=project.labels, records=records,
                          tasks_by_key=by_key, complete_tasks=every)

    both = [_rec(keys[0], "1", truth[keys[0]]), _rec(keys[1], "2", truth[keys[1]])]
    assert pull(both).new == 2
    st = pull(both[1:])  # annotation 1 vanished from the tool's complete listing
    assert (st.deleted, st.new, st.updated) == (1, 0, 0) and st.changed == 1
    with session_scope(ws.engine) as s:
        rows = {a.source_id: a for a in s.exec(select(Annotation)).all()}
        assert len(rows) == 2  # never deleted
        assert (rows["1"].valid, rows["1"].invalid_reason) == (False, DELETED)
        assert set(training_labels(s, project, "majority")) == {key_id[keys[1]]}  # not trained on
        assert resolved_tasks(s, round_id) == 1  # nor counted as resolving its task
    assert pull(both[1:]).changed == 0  # seen gone again: nothing changes
    st = pull(both)  # it is back
    assert (st.updated, st.restored, st.deleted) == (1, 1, 0)
    with session_scope(ws.engine) as s:
        row = s.exec(select(Annotation).where(Annotation.source_id == "1")).one()
        assert (row.valid, row.invalid_reason) == (True, None)
        assert len(training_labels(s, project, "majority")) == 2
    # a connector whose pull is not complete (complete_tasks=None) never marks anything deleted
    with session_scope(ws.engine) as s:
        st = ingest(s, project_id=project.id, connector="jsonl", labels=project.labels, records=[],
                    tasks_by_key=by_key)
    assert st.deleted == 0
    ws.close()
