"""SELECTED -> PUSHED: the round's picks become tasks in the labeling tool, pre-annotated.

Samples are pushed once: tasks already recorded are skipped, and tasks the tool has but the
database lacks (a crash between the push and its commit) are found by sample key and adopted.
In stream mode (:class:`~alloop.protocols.StreamPresenter`) the round's re-ranked leftovers,
whose tasks the select step moved to this round, are refreshed in the tool instead: their round,
rank and score, and the round's model's prediction (idempotent, so a repeated push after a crash
applies only what is missing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import bindparam, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from alloop.errors import ConnectorDataError
from alloop.loop import _faults
from alloop.loop.artifacts import RoundScores, scores_path
from alloop.loop.env import StepEnv, result
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.protocols import Prediction, RoundPresenter, StreamPresenter, TaskPayload
from alloop.store.engine import session_scope
from alloop.store.models import Project, Round, Sample, Selection, Task, table, utcnow

logger = logging.getLogger(__name__)

__all__ = ["payloads", "push"]


#: the round's picks, in rank order, with what a task needs (Core rows, built once)
_PICKED = (
    sa_select(col(Sample.id), col(Sample.key), col(Sample.kind), col(Sample.data), col(Selection.rank),
              col(Selection.score))
    .join(Selection, col(Selection.sample_id) == col(Sample.id))
    .where(col(Selection.round_id) == bindparam("round_id")).order_by(col(Selection.rank))
)
#: samples that already have a task in the connector, with the tool's task id
_PUSHED = sa_select(col(Task.sample_id), col(Task.external_id)).where(
    col(Task.project_id) == bindparam("pid"), col(Task.connector) == bindparam("connector"))


def push(env: StepEnv, rnd: Round) -> TickResult:
    """Create the tasks of the round's selections not pushed yet, and record them with the state change."""
    ws = env.ws
    project = env.project()
    conn = ws.connector
    with session_scope(ws.engine) as s:
        c = s.connection()  # Core: the columns a task needs, as plain rows
        picked = c.execute(_PICKED, {"round_id": rnd.id}).all()
        done = {sid: ext for sid, ext in c.execute(_PUSHED, {"pid": project.id, "connector": conn.name})}
    todo = [smp for smp in picked if smp.id not in done]
    conn.ensure_project()
    keys = [smp.key for smp in todo]
    adopted = conn.find_tasks(keys, round_number=rnd.number) if todo else {}
    fresh = [smp for smp in todo if smp.key not in adopted]
    pushed = conn.push(payloads(env, rnd, project, fresh)) if fresh else {}
    refreshed, n_again = 0, 0
    if isinstance(conn, StreamPresenter) and conn.stream_factor() is not None:
        again = [smp for smp in picked if smp.id in done]  # re-ranked leftovers: their tasks moved here
        n_again = len(again)
        if again:
            refreshed = conn.refresh_tasks(
                {done[smp.id]: p for smp, p in zip(again, payloads(env, rnd, project, again))})
            _faults.crash_point(rnd.number, "after_refresh")
    _faults.crash_point(rnd.number, "after_push")
    if isinstance(conn, RoundPresenter):  # also after a push that only adopted: a crash may have cut it short
        conn.present_round(rnd.number)
    ext = {**adopted, **pushed}
    missing = [k for k in keys if k not in ext]
    if missing:
        raise ConnectorDataError(
            f"The labeling tool returned no task id for {len(missing)} pushed samples (e.g. {missing[0]!r})."
        )
    now = utcnow()
    rows = [dict(project_id=project.id, round_id=rnd.id, sample_id=smp.id, connector=conn.name,
                 external_id=str(ext[smp.key]), pushed_at=now) for smp in todo]
    with Session(ws.engine, expire_on_commit=False) as s:
        if rows:
            s.connection().execute(insert(table(Task)), rows)  # Core: no ORM bulk-insert work
        env.transition(s, rnd, RoundState.PUSHED, pushed_at=now)
    msg = f"round {rnd.number}: pushed {len(fresh)} tasks to {conn.name}"
    if adopted:
        msg += f" (adopted {len(adopted)} already there)"
    if n_again:
        msg += f", re-ranked {n_again} unlabeled tasks of earlier rounds ({refreshed} updated there)"
    return result("pushed", rnd, RoundState.PUSHED, msg)


def _scores(env: StepEnv, rnd: Round) -> RoundScores | None:
    path = scores_path(env.ws.work_dir, rnd.number)
    return RoundScores.load(path) if path.exists() else None


def _order(smp: Any) -> dict[str, Any]:
    """The pick's place in the round: 1-based rank and the strategy's score (rows that carry them)."""
    rank = getattr(smp, "rank", None)
    score = getattr(smp, "score", None)
    return {"rank": None if rank is None else int(rank) + 1,
            "score": float(score) if score is not None and np.isfinite(score) else None}


def payloads(env: StepEnv, rnd: Round, project: Project, samples: Sequence[Any]) -> list[TaskPayload]:
    """The tasks of ``samples`` (:class:`Sample` objects or rows with their ``id``, ``key``, ``kind`` and
    ``data``, and optionally the selection's ``rank`` and ``score``), with the round's model's
    prediction as pre-annotation when there is one."""
    if project.task == "detection":
        return _box_payloads(env, rnd, project, samples)
    scores = _scores(env, rnd)
    proba: dict[int, NDArray[np.float32]] = {}
    if scores is not None and scores.proba is not None and samples and len(scores.sample_ids):
        # the picks' rows only, not the pool's
        wanted = np.array([smp.id for smp in samples], dtype=np.int64)
        pos = np.searchsorted(scores.sample_ids, wanted)
        pos = np.minimum(pos, len(scores.sample_ids) - 1)
        hit = scores.sample_ids[pos] == wanted
        proba = {int(i): np.asarray(scores.proba[p]) for i, p, h in zip(wanted, pos, hit) if h}
    out = []
    for smp in samples:
        pred = None
        p = proba.get(smp.id)
        if p is not None:
            top = int(np.argmax(p))
            pred = Prediction(
                label=project.labels[top],
                score=float(p[top]),
                model_version=f"{project.name}-round-{rnd.number}",
                proba={lb: float(v) for lb, v in zip(project.labels, p)},
            )
        out.append(TaskPayload(smp.key, smp.kind, smp.data, rnd.number, pred, **_order(smp)))
    return out


def _box_payloads(env: StepEnv, rnd: Round, project: Project, samples: Sequence[Any]) -> list[TaskPayload]:
    """Detection tasks, pre-annotated with the proposals of each image (when there are any)."""
    from alloop.detection.annotations import image_size, percent_boxes

    boxes: dict[int, list[dict[str, Any]]] = {}
    scores = _scores(env, rnd)
    if scores is not None and scores.objects is not None:
        o, ids = scores.objects, scores.sample_ids
        for pos, lab, score, box in zip(o.image, o.label, o.score, o.box):
            x0, y0, x1, y1 = (float(v) for v in box)
            boxes.setdefault(int(ids[pos]), []).append(
                {"bbox": [x0, y0, x1 - x0, y1 - y0], "label": project.labels[int(lab)], "score": float(score)})
    out = []
    for smp in samples:
        pred = None
        mine = boxes.get(smp.id)
        if mine:
            best = max(mine, key=lambda b: b["score"])
            pred = Prediction(label=best["label"], score=float(np.mean([b["score"] for b in mine])),
                              model_version=f"{project.name}-round-{rnd.number}",
                              value={"boxes": percent_boxes(mine, image_size(smp.data, smp.key))})
        out.append(TaskPayload(smp.key, smp.kind, smp.data, rnd.number, pred, **_order(smp)))
    return out
