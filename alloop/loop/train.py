"""CREATED -> TRAINED: the round's model, trained on every label so far. And the final model."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from alloop.loop.artifacts import model_stem
from alloop.loop.env import StepEnv, result
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.loop.stopping import stop_metrics, tracks_stopping
from alloop.metrics import headline
from alloop.store.engine import session_scope
from alloop.store.models import ModelVersion, Project, Round, table
from alloop.store.queries import get_project

logger = logging.getLogger(__name__)

__all__ = ["finish", "train"]


def train(env: StepEnv, rnd: Round) -> TickResult:
    """Train the round's model (none yet with fewer than two labeled classes) and record it."""
    project = env.project()
    model, mv = env.models.train(project, ("round", rnd.number), model_stem(rnd.number))
    loop = env.ws.config.loop
    if mv is not None and model is not None and env.ws.learner_kind == "features" and tracks_stopping(loop):
        mv.metrics = {**mv.metrics, **stop_metrics(env.data, project, loop, model, rnd.number, env.ws.work_dir)}
    with Session(env.ws.engine, expire_on_commit=False) as s:
        values: dict[str, Any] = {}
        if mv is not None:
            mv.round_number = rnd.number
            # Core: one INSERT, its id read back, without the ORM's flush work
            res = s.connection().execute(insert(table(ModelVersion)), mv.model_dump(exclude={"id"}))
            mv.id = int(res.inserted_primary_key[0])  # type: ignore[index]
            values["model_version_id"] = mv.id
        env.transition(s, rnd, RoundState.TRAINED, **values)
    env.models.remember(rnd.number, model)
    key = headline(project.task)[0]
    acc = mv.metrics.get(key) if mv else None
    none = {"none": "no model (learner 'none')", "external": "no model yet (no labels to train on)"}
    msg = none.get(env.ws.learner_kind, "no model yet (fewer than 2 labeled classes)") if mv is None else (
        f"trained on {mv.n_labels} labels" + (f", {key} {acc:.4f}" if acc is not None else "")
    )
    return result("trained", rnd, RoundState.TRAINED, f"round {rnd.number}: {msg}")


def finish(env: StepEnv, project: Project, reason: str) -> TickResult:
    """Train the final model on every label and mark the project finished."""
    _, mv = env.models.train(project, "final", "final")
    with session_scope(env.ws.engine) as s:
        row = get_project(s, project.name)
        if mv is not None:
            mv.final = True
            s.add(mv)
        row.status, row.finished_reason = "finished", reason
        s.add(row)
    logger.info("project %s finished: %s", project.name, reason)
    key, what = headline(project.task)
    acc = mv.metrics.get(key) if mv else None
    msg = f"finished: {reason}" + (f"; final model {what} {acc:.4f}" if acc is not None else "")
    return TickResult("finished", None, None, msg, finished=True)
