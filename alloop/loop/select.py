"""SCORED -> SELECTED: the strategy picks the round's batch from the saved scores."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import insert
from sqlmodel import Session

from alloop.loop.artifacts import RoundScores, scores_path
from alloop.loop.env import StepEnv, result
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.rng import derive_rng
from alloop.store.engine import session_scope
from alloop.store.models import Round, Selection
from alloop.store.queries import pool_samples, selected_ids, training_boxes, training_labels
from alloop.strategies.base import SelectionContext

logger = logging.getLogger(__name__)

__all__ = ["select"]


def select(env: StepEnv, rnd: Round) -> TickResult:
    """Pick ``rnd.budget`` candidates (never a sample already selected) and record them ranked."""
    ws = env.ws
    project = ws.project()
    scores = RoundScores.load(scores_path(ws.work_dir, rnd.number))
    strategy, name = env.strategy_for(rnd, scores.proba is not None)
    with session_scope(ws.engine) as s:
        by_id = {smp.id: smp for smp in pool_samples(s, project.id)}  # type: ignore[arg-type]
        chosen = selected_ids(s, project.id)  # type: ignore[arg-type]
        labels = training_labels(s, project, ws.config.loop.aggregation)
    keep = np.array([i in by_id for i in scores.sample_ids], dtype=bool)  # quarantined since scoring: drop
    scores = scores.on(keep)
    ids = scores.sample_ids
    classes = {lb: i for i, lb in enumerate(project.labels)}
    if project.task == "detection":  # labeled = has boxes; there is no one class per image
        with session_scope(ws.engine) as s:
            boxed = training_boxes(s, project)
        label_arr = np.array([0 if int(i) in boxed else -1 for i in ids], dtype=np.int64)
    else:
        label_arr = np.array([classes.get(labels.get(int(i), ""), -1) for i in ids], dtype=np.int64)
    embeddings = scores.embeddings
    if embeddings is None and "embeddings" in strategy.requires:
        _, embeddings = env.data.features([by_id[int(i)] for i in ids])
    extras = {}
    if scores.objects is not None:
        from alloop.strategies.objects import ObjectSet

        o = scores.objects
        extras["objects"] = ObjectSet(image=o.image, label=o.label, score=o.score, features=o.features, box=o.box)
    ctx = SelectionContext(
        n_samples=len(ids),
        candidates=np.flatnonzero([int(i) not in chosen for i in ids]),
        labeled=np.flatnonzero(label_arr >= 0),
        rng=derive_rng(project.seed, "round", rnd.number, "select"),
        proba=scores.proba,
        embeddings=embeddings,
        labels=None if project.task == "detection" else label_arr,
        keys=np.array([by_id[int(i)].key for i in ids], dtype=object),
        extras=extras,
    )
    sel = strategy.select(ctx, rnd.budget)
    rows = [
        dict(project_id=project.id, round_id=rnd.id, sample_id=int(ids[pos]), rank=rank,
             score=float(score) if np.isfinite(score) else 0.0)
        for rank, (pos, score) in enumerate(zip(sel.positions, sel.scores))
    ]
    with Session(ws.engine, expire_on_commit=False) as s:
        s.execute(insert(Selection), rows)
        env.transition(s, rnd, RoundState.SELECTED)
    return result("selected", rnd, RoundState.SELECTED, f"round {rnd.number}: {name} selected {len(sel)} samples")
