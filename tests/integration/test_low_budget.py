"""TypiClust and ProbCover in the real loop: cold start on given vectors, the project's classes
reaching ProbCover's purity rule."""

from __future__ import annotations

from sqlmodel import select

from alloop.loop.controller import Controller
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Selection
from tests.conftest import open_workspace, write_project


def test_typiclust_cold_start_then_probcover_cover_the_classes(tmp_path):
    """Iris (3 classes): TypiClust's 3 picks in round 0 hit every class; ProbCover picks in round 1
    with delta from the purity rule on the project's 3 classes, none picked twice."""
    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
        features={"name": "vector"},
        cold_start={"name": "typiclust"},
        strategy={"name": "probcover"},
        loop={"initial_size": 3, "batch_size": 4, "max_rounds": 2},
    )
    ws = open_workspace(pf)
    assert Controller(ws).run()[-1].finished
    with session_scope(ws.engine) as s:
        label = dict(s.exec(select(Sample.key, Sample.reference_label)).all())
        rounds = {r.number: (r.strategy, s.exec(
            select(Sample.key).join(Selection, Selection.sample_id == Sample.id)
            .where(Selection.round_id == r.id).order_by(Selection.rank)).all())
            for r in s.exec(select(Round))}
    assert [rounds[n][0] for n in (0, 1)] == ["typiclust", "probcover"]
    assert {label[k] for k in rounds[0][1]} == {"setosa", "versicolor", "virginica"}
    assert len(rounds[1][1]) == 4 and not set(rounds[0][1]) & set(rounds[1][1])
    ws.close()
