"""A timestamp-free picture of a project's database, to compare runs."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from alloop.store.engine import make_engine, session_scope
from alloop.store.models import (
    Annotation,
    ModelVersion,
    Project,
    Round,
    Sample,
    Selection,
    Task,
)


def snapshot(db_url: str) -> dict[str, Any]:
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        key = dict(s.exec(select(Sample.id, Sample.key)).all())
        number = dict(s.exec(select(Round.id, Round.number)).all())
        project = s.exec(select(Project)).one()
        snap = {
            "project": (project.status, project.finished_reason, project.labels),
            "rounds": [(r.number, r.state, r.strategy, r.budget) for r in s.exec(select(Round).order_by(Round.number))],
            "selections": sorted(
                (number[x.round_id], x.rank, key[x.sample_id], round(x.score, 6)) for x in s.exec(select(Selection))
            ),
            "tasks": sorted((number[t.round_id], key[t.sample_id], t.external_id) for t in s.exec(select(Task))),
            "annotations": sorted(
                (key[a.sample_id], a.source_id, a.annotator, a.label, a.cancelled, a.valid)
                for a in s.exec(select(Annotation))
            ),
            "models": [
                (m.round_number, m.final, m.n_labels, round(m.metrics.get("accuracy", -1), 6))
                for m in s.exec(select(ModelVersion).order_by(ModelVersion.id))
            ],
            "quarantined": sorted(x.key for x in s.exec(select(Sample).where(Sample.status == "quarantined"))),
        }
    engine.dispose()
    return snap


def assert_no_duplicates(snap: dict[str, Any]) -> None:
    selected = [k for _, _, k, _ in snap["selections"]]
    assert len(selected) == len(set(selected)), "a sample was selected twice"
    pushed = [k for _, k, _ in snap["tasks"]]
    assert len(pushed) == len(set(pushed)), "a sample was pushed twice"
    sources = [(a[0], a[1]) for a in snap["annotations"]]
    assert len(sources) == len(set(sources)), "an annotation was stored twice"
