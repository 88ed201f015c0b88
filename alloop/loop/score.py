"""TRAINED -> SCORED: what the round's strategy needs, computed for the whole pool and saved.

The scores (:class:`~alloop.loop.artifacts.RoundScores`) are written before the transition
commits, so the SELECTED step of a restarted process selects from the same numbers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlmodel import Session

from alloop.loop.artifacts import ObjectColumns, RoundScores, scores_path
from alloop.loop.env import StepEnv, result
from alloop.loop.external import ExternalModel
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.store.models import Project, Round, Sample

logger = logging.getLogger(__name__)

__all__ = ["score"]


def score(env: StepEnv, rnd: Round) -> TickResult:
    """Model probabilities (and embeddings, proposals) of every readable pool sample."""
    project = env.ws.project()
    model = env.models.of(rnd)
    strategy, name = env.strategy_for(rnd, model is not None)
    pool, X = env.data.features(env.data.pool(project))
    proba = embeddings = None
    if isinstance(model, ExternalModel):
        if model.proba is not None:
            known = set(model.keys)
            late = [smp.key for smp in pool if smp.key not in known]
            if late:
                logger.warning("round %d: %d samples imported after the model ran are left out of this "
                               "round (the next model covers them)", rnd.number, len(late))
                X = X[[smp.key in known for smp in pool]]
                pool = [smp for smp in pool if smp.key in known]
            proba = model.proba_of([smp.key for smp in pool]).astype(np.float32)
    elif model is not None and len(pool):
        proba = np.asarray(model.predict_proba(X), dtype=np.float32)
        if "embeddings" in strategy.requires:
            emb = model.embed(X)
            if emb is not None:
                embeddings = np.asarray(emb, dtype=np.float32)
    objects = None
    if env.ws.config.proposals is not None:
        objects = _objects(env, project, pool, model, features="objects" in strategy.requires)
    scores = RoundScores(sample_ids=np.array([smp.id for smp in pool], dtype=np.int64), proba=proba,
                         embeddings=embeddings, objects=objects)
    scores.save(scores_path(env.ws.work_dir, rnd.number))
    with Session(env.ws.engine, expire_on_commit=False) as s:
        env.transition(s, rnd, RoundState.SCORED, strategy=name, strategy_params=strategy.model_dump(mode="json"))
    msg = f"round {rnd.number}: scored {len(pool)} samples for {name}"
    if objects is not None:
        msg += f" ({len(objects)} object proposals)"
    return result("scored", rnd, RoundState.SCORED, msg)


def _objects(env: StepEnv, project: Project, pool: list[Sample], model: Any, *, features: bool) -> ObjectColumns:
    """The pool's object proposals (crop features only when the strategy clusters them)."""
    from alloop.detection.source import load_proposals, object_set

    ws = env.ws
    cfg = ws.config.proposals
    assert cfg is not None  # the caller checked
    dets = model.detections if isinstance(model, ExternalModel) else None
    props, where = load_proposals(cfg, project.labels, pool, model_detections=dets,
                                  cache_dir=ws.cache_dir, progress=ws.progress)
    logger.info("project %s: %d proposals from %s", project.name, len(props), where)
    cols = object_set(props, pool, project.labels, ws.encoder if features else None, ws.feature_cache,
                      pad=cfg.pad, work_dir=ws.work_dir, progress=ws.progress)
    return ObjectColumns(image=cols["obj_image"], label=cols["obj_label"], score=cols["obj_score"],
                         box=cols["obj_box"], features=cols["obj_features"])
