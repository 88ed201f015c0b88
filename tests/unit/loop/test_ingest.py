from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from alloop.errors import ConnectorDataError
from alloop.loop.ingest import ingest
from alloop.protocols import AnnotationRecord
from alloop.store.engine import open_store, session_scope
from alloop.store.models import Annotation, Project, Round, Sample, Task
from alloop.store.queries import training_labels

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def env(db_url):
    engine = open_store(db_url)
    with session_scope(engine) as s:
        p = Project(name="p", task="classification", labels=["cat", "dog"])
        s.add(p)
        s.flush()
        r = Round(project_id=p.id, number=0, budget=2)
        smp = [Sample(project_id=p.id, key=k, kind="vector", content_hash=k) for k in ("a", "b")]
        s.add(r)
        s.add_all(smp)
        s.flush()
        tasks = {x.key: Task(project_id=p.id, round_id=r.id, sample_id=x.id, connector="c", external_id=f"t-{x.key}")
                 for x in smp}
        s.add_all(tasks.values())
    return engine, p, tasks


def rec(key, sid, who, label, minutes=0, cancelled=False):
    t = T0 + timedelta(minutes=minutes)
    return AnnotationRecord(key, f"t-{key}", sid, who, label, cancelled, t, t)


def _ingest(env, records):
    engine, p, tasks = env
    with session_scope(engine) as s:
        return ingest(s, project_id=p.id, connector="c", labels=p.labels, records=records, tasks_by_key=tasks)


def _rows(engine):
    with session_scope(engine) as s:
        return s.exec(select(Annotation).order_by(Annotation.id)).all()


def test_reingesting_the_same_annotations_counts_nothing_twice(env):
    records = [rec("a", "1", "ana", "cat"), rec("b", "2", "ana", "dog")]
    assert _ingest(env, records).new == 2
    st = _ingest(env, records)
    assert (st.new, st.updated, st.unchanged) == (0, 0, 2)
    assert len(_rows(env[0])) == 2


def test_updated_annotation_replaces_the_older_one(env):
    _ingest(env, [rec("a", "1", "ana", "cat")])
    st = _ingest(env, [rec("a", "1", "ana", "dog", minutes=5)])
    assert st.updated == 1
    rows = _rows(env[0])
    assert [(r.source_id, r.label) for r in rows] == [("1", "dog")]
    with session_scope(env[0]) as s:
        assert list(training_labels(s, env[1], "majority").values()) == ["dog"]


def test_unknown_label_is_kept_invalid_and_not_trained_on(env):
    st = _ingest(env, [rec("a", "1", "ana", "horse"), rec("b", "2", "ana", "cat")])
    assert st.invalid == [("a", "label 'horse' is not in the label set ['cat', 'dog']")]
    rows = {r.source_id: r for r in _rows(env[0])}
    assert rows["1"].valid is False and "horse" in rows["1"].invalid_reason
    with session_scope(env[0]) as s:
        labels = training_labels(s, env[1], "majority")
    assert sorted(labels.values()) == ["cat"]


def test_cancelled_is_kept_but_is_not_a_label(env):
    _ingest(env, [rec("a", "1", "ana", None, cancelled=True)])
    rows = _rows(env[0])
    assert len(rows) == 1 and rows[0].cancelled and rows[0].valid
    with session_scope(env[0]) as s:
        assert training_labels(s, env[1], "majority") == {}


def test_annotation_for_unknown_sample_is_refused(env):
    with pytest.raises(ConnectorDataError, match="never pushed"):
        _ingest(env, [rec("zzz", "9", "ana", "cat")])
    assert _rows(env[0]) == []


def test_tied_votes_break_the_same_way_after_an_update(env):
    """Two annotators disagree at the same instant: the earlier-stored vote wins, on every backend -
    also once an update moved its row (PostgreSQL then returns it last without an ORDER BY)."""
    from dataclasses import replace

    first, second = rec("a", "1", "ana", "cat"), rec("a", "2", "bob", "dog")
    _ingest(env, [first, second])
    assert _ingest(env, [replace(first, lead_time=3.0), second]).updated == 1  # same vote, row rewritten
    with session_scope(env[0]) as s:
        assert training_labels(s, env[1], "majority") == {env[2]["a"].sample_id: "cat"}
