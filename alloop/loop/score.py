"""TRAINED -> SCORED: what the round's strategy needs, computed for the whole pool and saved.

The scores (:class:`~alloop.loop.artifacts.RoundScores`) are written before the transition
commits, so the SELECTED step of a restarted process selects from the same numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlmodel import Session

from alloop.errors import ConfigError
from alloop.features.store import VectorFileInfo, VectorStore
from alloop.loop.artifacts import ObjectColumns, RoundScores, ScoresWriter, scores_path
from alloop.loop.env import StepEnv, result
from alloop.loop.external import ExternalModel
from alloop.loop.result import TickResult
from alloop.loop.states import RoundState
from alloop.protocols.learner import MODEL_ARRAYS
from alloop.store.arrays import SampleArrays, sample_records
from alloop.store.models import Project, Round

logger = logging.getLogger(__name__)

__all__ = ["score"]


def score(env: StepEnv, rnd: Round) -> TickResult:
    """Model probabilities (and embeddings, proposals) of every readable pool sample, shard by shard."""
    project = env.project()
    model = env.models.of(rnd)
    strategy, name = env.strategy_for(rnd, model is not None)
    pool = env.data.arrays(project.id)  # type: ignore[arg-type]
    path = scores_path(env.ws.work_dir, rnd.number)
    objects = None
    if isinstance(model, ExternalModel):
        pool, proba = _external(env, rnd, project, pool, model)
        if env.ws.config.proposals is not None:
            objects = _objects(env, project, pool, model, features="objects" in strategy.requires)
        RoundScores(sample_ids=pool.ids, proba=proba, objects=objects, sample_rows=pool.rows).save(path)
    elif model is not None and len(pool):
        pool = _stream(env, project, pool, model, "embeddings" in strategy.requires, path,
                       extra=tuple(sorted(strategy.requires & MODEL_ARRAYS.keys())))
    else:
        if env.data.vector_store(project.id, pool) is None:  # type: ignore[arg-type]
            # encode (and quarantine what cannot be read) now, as a model would: a cold start never
            # picks a file the encoder cannot read
            pool = SampleArrays.concat([part for part, _ in env.data.chunks(project.id, pool)], pool)  # type: ignore[arg-type]
        if env.ws.config.proposals is not None:
            objects = _objects(env, project, pool, model, features="objects" in strategy.requires)
        RoundScores(sample_ids=pool.ids, objects=objects, sample_rows=pool.rows).save(path)
    with Session(env.ws.engine, expire_on_commit=False) as s:
        env.transition(s, rnd, RoundState.SCORED, strategy=name, strategy_params=strategy.model_dump(mode="json"))
    msg = f"round {rnd.number}: scored {len(pool)} samples for {name}"
    if objects is not None:
        msg += f" ({len(objects)} object proposals)"
    return result("scored", rnd, RoundState.SCORED, msg)


@dataclass(frozen=True)
class ScoreShard:
    """One shard of the pool to score: its vector-store rows, read where the work runs."""

    work_dir: str
    files: tuple[VectorFileInfo, ...]
    rows: NDArray[np.int64]
    embed: bool
    extra: tuple[str, ...] = ()
    """Model arrays to compute too (:data:`~alloop.protocols.learner.MODEL_ARRAYS`)."""


_Scored = tuple[NDArray[np.float32], NDArray[np.float32] | None, dict[str, NDArray[np.float32]]]


def _predict(model: Any, X: NDArray[Any], embed: bool, extra: tuple[str, ...]) -> _Scored:
    """Probabilities, embeddings when asked, and the model arrays ``extra`` (float32)."""
    p = np.asarray(model.predict_proba(X), dtype=np.float32)
    e = model.embed(X) if embed else None
    arrays = {}
    for name in extra:
        method, what = MODEL_ARRAYS[name]
        give = getattr(model, method, None)
        arr = give(X) if give is not None else None
        if arr is None:
            raise ConfigError(
                f"The strategy needs the model's {what}, and this model ({type(model).__name__}) gives none: "
                "choose a learner that does (see the strategy's documentation)."
            )
        arrays[name] = np.asarray(arr, dtype=np.float32)
    return p, None if e is None else np.asarray(e, dtype=np.float32), arrays


def score_shard(shard: ScoreShard, model: Any) -> _Scored:
    """The model's probabilities (and embeddings, model arrays) of one shard (runs in a Ray task
    or in-process)."""
    store = VectorStore(Path(shard.work_dir), shard.files)
    view = store.contiguous(shard.rows)
    X = np.asarray(view) if view is not None else store.take(shard.rows)
    return _predict(model, X, shard.embed, shard.extra)


def _stream(env: StepEnv, project: Project, pool: SampleArrays, model: Any, embed: bool, path: Path, *,
            extra: tuple[str, ...] = ()) -> SampleArrays:
    """Predict shard by shard into the score files; returns the samples scored.

    A vectors pool is scored by the execution backend (in-process, or Ray tasks that read the
    memory-mapped store themselves, the model put in the object store once per wave of shards);
    other pools read their features from the feature cache here, a shard at a time. Memory: a wave
    of shards' predictions (``workers x 2 x shard_rows x (C + k)`` float32) plus, in-process, one
    shard of features; the score files (``n x C``, ``n x k``) are written through the page cache.
    """
    n = len(pool)
    writer = ScoresWriter(path)
    out: dict[str, NDArray[np.float32]] = {}
    ids = np.empty(n, dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)
    done = 0

    def put(part: SampleArrays, p: NDArray[np.float32], e: NDArray[np.float32] | None,
            more: dict[str, NDArray[np.float32]]) -> None:
        nonlocal done
        m = len(part)
        for name, arr in (("proba", p), ("embeddings", e), *more.items()):
            if arr is not None:
                if name not in out:
                    out[name] = writer.array(name, (n, *arr.shape[1:]), np.float32)
                out[name][done : done + m] = arr
        ids[done : done + m] = part.ids
        rows[done : done + m] = part.rows
        done += m

    shard_rows = env.ws.config.execution.shard_rows
    store = env.data.vector_store(project.id, pool)  # type: ignore[arg-type]
    try:
        with env.ws.progress.task(f"Scoring {n} samples", total=n) as bar:
            if store is not None:
                backend = env.ws.backend
                files = tuple(store.files)
                wave = max(1, 2 * backend.workers) * shard_rows
                for w0 in range(0, n, wave):
                    starts = range(w0, min(w0 + wave, n), shard_rows)
                    parts = [pool.take(slice(a, min(a + shard_rows, n))) for a in starts]
                    shards = [ScoreShard(str(env.ws.work_dir), files, part.rows, embed, extra) for part in parts]
                    results = backend.map_shards(score_shard, shards, shared=model, what="Scoring shards")
                    for part, scored in zip(parts, results):
                        put(part, *scored)
                        bar.advance(len(part))
            else:
                for part, X in env.data.chunks(project.id, pool, shard_rows):  # type: ignore[arg-type]
                    if len(part):
                        put(part, *_predict(model, X, embed, extra))
                        bar.advance(len(part))
            if done < n:  # some samples could not be read (quarantined): keep the rows scored
                for name, arr in out.items():
                    writer.put(name, np.array(arr[:done]))
            writer.put("sample_ids", ids[:done])
            writer.put("sample_rows", rows[:done])
            writer.commit()
    except BaseException:
        writer.abort()
        raise
    return pool.take(np.isin(pool.ids, ids[:done], assume_unique=True)) if done < n else pool


def _external(env: StepEnv, rnd: Round, project: Project, pool: SampleArrays, model: ExternalModel
              ) -> tuple[SampleArrays, NDArray[np.float32] | None]:
    """An external model's probabilities (from its prediction file), for the samples it covers."""
    if model.proba is None:
        return pool, None
    keys = sample_records(env.ws.engine, pool.ids, ("key",))
    known = set(model.keys)
    mine = np.array([keys[int(i)][0] in known for i in pool.ids], dtype=bool)
    if not mine.all():
        logger.warning("round %d: %d samples imported after the model ran are left out of this "
                       "round (the next model covers them)", rnd.number, int((~mine).sum()))
        pool = pool.take(mine)
    return pool, model.proba_of([keys[int(i)][0] for i in pool.ids]).astype(np.float32)


def _objects(env: StepEnv, project: Project, pool: SampleArrays, model: Any, *, features: bool) -> ObjectColumns:
    """The pool's object proposals (crop features only when the strategy clusters them)."""
    from alloop.detection.source import load_proposals, object_set

    ws = env.ws
    cfg = ws.config.proposals
    assert cfg is not None  # the caller checked
    dets = model.detections if isinstance(model, ExternalModel) else None
    samples = env.data.refs(pool.ids)
    props, where = load_proposals(cfg, project.labels, samples, model_detections=dets,
                                  cache_dir=ws.cache_dir, progress=ws.progress)
    logger.info("project %s: %d proposals from %s", project.name, len(props), where)
    cols = object_set(props, samples, project.labels, ws.encoder if features else None, ws.feature_cache,
                      pad=cfg.pad, work_dir=ws.work_dir, progress=ws.progress)
    return ObjectColumns(image=cols["obj_image"], label=cols["obj_label"], score=cols["obj_score"],
                         box=cols["obj_box"], features=cols["obj_features"])
