"""SCORED -> SELECTED: the strategy picks the round's batch from the saved scores."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlmodel import Session

from alloop.loop.artifacts import RoundScores, scores_path
from alloop.loop.env import StepEnv, result
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.rng import derive_rng
from alloop.store.arrays import SampleArrays, members, sample_records
from alloop.store.engine import session_scope
from alloop.store.models import Round, Selection, table
from alloop.store.queries import training_boxes
from alloop.strategies.base import SelectionContext

logger = logging.getLogger(__name__)

__all__ = ["select"]


def select(env: StepEnv, rnd: Round) -> TickResult:
    """Pick ``rnd.budget`` candidates (never a sample already selected) and record them ranked."""
    ws = env.ws
    project = env.project()
    scores = RoundScores.load(scores_path(ws.work_dir, rnd.number))
    strategy, name = env.strategy_for(rnd, scores.proba is not None)
    if scores.sample_rows is None:  # scores written without their rows: the pool's, from the database
        pool = env.data.arrays(project.id)  # type: ignore[arg-type]
        pos = pool.positions_of(scores.sample_ids)
        if (pos < 0).any():  # quarantined since scoring: drop
            scores = scores.on(pos >= 0)
            pos = pos[pos >= 0]
        rows = pool.rows[pos]
    else:  # the scored samples, as scored: only this project's loop (which holds its lease) quarantines
        rows = np.asarray(scores.sample_rows)
    ids = scores.sample_ids
    chosen = env.data.selected(project.id)  # type: ignore[arg-type]
    if project.task == "detection":  # labeled = has boxes; there is no one class per image
        with session_scope(ws.engine) as s:
            labeled_ids = np.array(sorted(training_boxes(s, project)), dtype=np.int64)
    else:
        labels = env.data.training_labels(project, ws.config.loop.aggregation)
    n = len(ids)
    if project.task == "detection":
        label_arr = np.where(np.isin(ids, labeled_ids), 0, -1).astype(np.int64)
    else:
        classes = {lb: i for i, lb in enumerate(project.labels)}
        label_arr = np.full(n, -1, dtype=np.int64)
        if labels:
            lab_ids = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
            lab_cls = np.array([classes.get(v, -1) for v in labels.values()], dtype=np.int64)
            where = SampleArrays(ids, rows).positions_of(lab_ids)
            label_arr[where[where >= 0]] = lab_cls[where >= 0]
    embeddings = scores.embeddings
    if embeddings is None and "embeddings" in strategy.requires:
        _, embeddings = env.data.features(project.id, SampleArrays(ids, rows))  # type: ignore[arg-type]
    keys = None
    if "keys" in strategy.requires:
        recs = sample_records(ws.engine, ids, ("key",))
        keys = np.array([recs[int(i)][0] for i in ids], dtype=object)
    extras: dict[str, Any] = {}
    if scores.objects is not None:
        from alloop.strategies.objects import ObjectSet

        o = scores.objects
        extras["objects"] = ObjectSet(image=o.image, label=o.label, score=o.score, features=o.features, box=o.box)
    extras.update(scores.model_arrays)  # penultimate features, ensemble members
    ctx = SelectionContext(
        n_samples=n,
        candidates=np.flatnonzero(~members(ids, chosen)),
        labeled=np.flatnonzero(label_arr >= 0),
        rng=derive_rng(project.seed, "round", rnd.number, "select"),
        proba=scores.proba,
        embeddings=embeddings,
        labels=None if project.task == "detection" else label_arr,
        keys=keys,
        extras=extras,
        backend=ws.backend if strategy.uses_backend else None,
        n_classes=len(project.labels) or None,
    )
    sel = strategy.select(ctx, rnd.budget)
    picked = ids[sel.positions]
    rows_out = [
        dict(project_id=project.id, round_id=rnd.id, sample_id=int(sid), rank=rank,
             score=float(score) if np.isfinite(score) else 0.0)
        for rank, (sid, score) in enumerate(zip(picked.tolist(), sel.scores.tolist()))
    ]
    with Session(ws.engine, expire_on_commit=False) as s:
        s.connection().execute(insert(table(Selection)), rows_out)  # Core: no ORM bulk-insert work
        env.transition(s, rnd, RoundState.SELECTED)
    env.data.selections_stored(project.id, picked)  # type: ignore[arg-type]
    return result("selected", rnd, RoundState.SELECTED, f"round {rnd.number}: {name} selected {len(sel)} samples")
