"""SCORED -> SELECTED: the strategy picks the round's batch from the saved scores.

Batch mode picks ``rnd.budget`` samples never selected before. Stream mode (a connector whose
view does the selecting, :class:`~alloop.protocols.StreamPresenter`) picks ``stream_factor x
budget`` (capped by what is available) among the never-selected samples and the project's *open
leftovers* (pushed in an earlier round, no annotation yet). A leftover picked again is re-ranked:
its selection row and its task move to this round with the new rank and score (a sample keeps
one selection and one task); a leftover not picked again stays in its round.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import bindparam, insert, update
from sqlmodel import Session

from alloop.loop.artifacts import RoundScores, scores_path
from alloop.loop.env import StepEnv, result
from alloop.loop.ingest import open_leftovers
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.rng import derive_rng
from alloop.store.arrays import SampleArrays, members, sample_records
from alloop.store.engine import session_scope
from alloop.store.models import Round, Selection, Task, table
from alloop.store.queries import training_boxes
from alloop.strategies.base import SelectionContext

logger = logging.getLogger(__name__)

__all__ = ["select"]


#: a re-ranked leftover's selection row and task move to the round (Core, executemany)
_MOVE_SELECTION = (
    update(table(Selection))
    .where(table(Selection).c.project_id == bindparam("pid"), table(Selection).c.sample_id == bindparam("sid"))
    .values(round_id=bindparam("rid"), rank=bindparam("new_rank"), score=bindparam("new_score"))
)
_MOVE_TASK = (
    update(table(Task))
    .where(table(Task).c.project_id == bindparam("pid"), table(Task).c.connector == bindparam("conn"),
           table(Task).c.sample_id == bindparam("sid"))
    .values(round_id=bindparam("rid"))
)


def stream_size(factor: int, budget: int, n_candidates: int, n_leftovers: int, budget_left: int | None) -> int:
    """How many samples a stream round picks: ``factor x budget``, capped by the candidates, and so
    that the fresh picks (those that are not leftovers) never exceed ``budget_left``
    (``loop.budget`` minus the samples selected so far; None when there is no total budget)."""
    k = min(factor * budget, n_candidates)
    if budget_left is not None:
        k = min(k, n_leftovers + max(budget_left, 0))
    return max(k, 0)


def select(env: StepEnv, rnd: Round) -> TickResult:
    """Pick ``rnd.budget`` candidates (never a sample already selected) and record them ranked; in
    stream mode, ``stream_factor x budget`` candidates, open leftovers included (re-ranked)."""
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
    factor = env.stream_factor()
    fresh = ~members(ids, chosen)
    leftovers: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
    if factor is not None:
        with session_scope(ws.engine) as s:
            leftovers = open_leftovers(s, project.id, ws.connector.name)  # type: ignore[arg-type]
        is_leftover = members(ids, leftovers)
        candidates = np.flatnonzero(fresh | is_leftover)
        left = None if ws.config.loop.budget is None else ws.config.loop.budget - len(chosen)
        k = stream_size(factor, rnd.budget, len(candidates), int(np.count_nonzero(is_leftover)), left)
    else:
        candidates = np.flatnonzero(fresh)
        k = rnd.budget
    ctx = SelectionContext(
        n_samples=n,
        candidates=candidates,
        labeled=np.flatnonzero(label_arr >= 0),
        rng=derive_rng(project.seed, "round", rnd.number, "select"),
        proba=scores.proba,
        embeddings=embeddings,
        labels=None if project.task == "detection" else label_arr,
        keys=keys,
        extras=extras,
        backend=ws.backend if strategy.uses_backend else None,
        n_classes=len(project.labels) or None,
        cache_dir=ws.cache_dir / "strategies",
    )
    sel = strategy.select(ctx, k)
    picked = ids[sel.positions]
    again = members(picked, leftovers)
    rows_out = [
        dict(project_id=project.id, round_id=rnd.id, sample_id=int(sid), rank=rank,
             score=float(score) if np.isfinite(score) else 0.0)
        for rank, (sid, score) in enumerate(zip(picked.tolist(), sel.scores.tolist()))
    ]
    new_rows = [r for r, a in zip(rows_out, again.tolist()) if not a]
    moved = [dict(pid=r["project_id"], sid=r["sample_id"], rid=r["round_id"], new_rank=r["rank"],
                  new_score=r["score"], conn=ws.connector.name) for r, a in zip(rows_out, again.tolist()) if a]
    with Session(ws.engine, expire_on_commit=False) as s:
        c = s.connection()
        if new_rows:
            c.execute(insert(table(Selection)), new_rows)  # Core: no ORM bulk-insert work
        if moved:
            c.execute(_MOVE_SELECTION, moved)
            c.execute(_MOVE_TASK, moved)
        env.transition(s, rnd, RoundState.SELECTED)
    env.data.selections_stored(project.id, picked)  # type: ignore[arg-type]
    msg = f"round {rnd.number}: {name} selected {len(sel)} samples"
    if factor is not None:
        msg += (f" (stream: {len(sel) - len(moved)} new, {len(moved)} re-ranked of {len(leftovers)} unlabeled "
                f"leftovers; the round closes at {rnd.budget} labeled)")
    return result("selected", rnd, RoundState.SELECTED, msg)
