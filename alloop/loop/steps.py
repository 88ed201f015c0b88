"""The work of each round state: train, score, select, push, collect - and the final model.

Every step reads what it needs, works outside a transaction, then writes its results and the
state change together through the controller's ``transition`` (one transaction).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert
from sqlmodel import Session, select

from alloop import registry
from alloop.errors import ConnectorDataError, LearnerError
from alloop.files import atomic_write
from alloop.features.base import SampleRef
from alloop.loop import _faults
from alloop.loop.external import ExternalModel, train_external
from alloop.loop.ingest import ingest, new_labels_since, resolved_tasks
from alloop.loop.policies import close_reason
from alloop.loop.states import RoundState
from alloop.rng import derive_rng, derive_seed
from alloop.store.engine import session_scope
from alloop.store.models import (
    ModelVersion,
    Project,
    Round,
    Sample,
    Selection,
    Task,
    utcnow,
)
from alloop.store.queries import (
    get_project,
    pool_samples,
    selected_ids,
    test_samples,
    training_boxes,
    training_labels,
)
from alloop.strategies.base import SelectionContext

if TYPE_CHECKING:
    from alloop.loop.controller import TickResult
    from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

Transition = Callable[..., None]


def _result(action: str, rnd: Round, state: RoundState, message: str, **kw: Any) -> "TickResult":
    from alloop.loop.controller import TickResult

    return TickResult(action, rnd.number, state.value, message, **kw)


def _object_set(arrays: dict[str, np.ndarray], keep: np.ndarray) -> Any:
    """The ObjectSet of a round's scores, on the positions kept (images quarantined since are dropped)."""
    from alloop.strategies._objects import ObjectSet

    new_pos = np.cumsum(keep) - 1
    mine = keep[arrays["obj_image"]] if len(arrays["obj_image"]) else np.zeros(0, bool)
    return ObjectSet(image=new_pos[arrays["obj_image"][mine]], label=arrays["obj_label"][mine],
                     score=arrays["obj_score"][mine], features=arrays["obj_features"][mine],
                     box=arrays["obj_box"][mine])


class Steps:
    def __init__(self, ws: "Workspace", transition: Transition) -> None:
        self.ws = ws
        self.transition = transition
        self._models: dict[int, Any] = {}

    # -- shared helpers -----------------------------------------------------------------------
    def _refs(self, samples: Sequence[Sample]) -> list[SampleRef]:
        return [SampleRef(s.key, s.kind, s.content_hash, s.data, self.ws.work_dir) for s in samples]

    def _quarantine(self, samples: Sequence[Sample], failures: dict[str, str]) -> list[Sample]:
        """Mark unreadable samples quarantined (with the reason); return the readable ones."""
        if failures:
            with session_scope(self.ws.engine) as s:
                for smp in samples:
                    if smp.key in failures:
                        row = s.get(Sample, smp.id)
                        if row is not None:
                            row.status, row.reason = "quarantined", failures[smp.key]
                            s.add(row)
            for key, reason in failures.items():
                logger.warning("Quarantined %s: %s", key, reason)
        return [smp for smp in samples if smp.key not in failures]

    def features(self, samples: Sequence[Sample]) -> tuple[list[Sample], np.ndarray]:
        """Features of the readable samples; unreadable ones are quarantined and dropped."""
        X, failures = self.ws.feature_cache.get(self._refs(samples), self.ws.encoder, self.ws.progress)
        return self._quarantine(samples, failures), X

    def teacher_proba(self, samples: Sequence[Sample]) -> tuple[list[Sample], np.ndarray]:
        """Cached teacher probabilities of the samples the teacher can read."""
        from alloop.teachers.base import teacher_proba

        project_labels = self.ws.project().labels
        T, failures = teacher_proba(self.ws.teacher, project_labels, self._refs(samples), self.ws.feature_cache,
                                    self.ws.progress)
        return self._quarantine(samples, failures), T

    def _fit(self, project: Project, labeled: list[Sample], labels: dict[int, str], round_key: object) -> Any | None:
        classes = {lb: i for i, lb in enumerate(project.labels)}
        y_names = [labels[smp.id] for smp in labeled]  # type: ignore[index]
        if len(set(y_names)) < 2:
            return None
        labeled, X = self.features(labeled)
        y = np.array([classes[labels[smp.id]] for smp in labeled], dtype=np.int64)  # type: ignore[index]
        if len(np.unique(y)) < 2:
            return None
        learner = self.ws.new_learner()
        kwargs: dict[str, Any] = {}
        if getattr(learner, "uses_pool", False):
            pool, X_pool = self.features(self._pool(project))
            if getattr(learner, "requires_teacher", False):
                kept, T_pool = self.teacher_proba(pool)
                if len(kept) != len(pool):  # the teacher could not read some: drop them everywhere
                    ok = {smp.id for smp in kept}
                    X_pool = X_pool[[smp.id in ok for smp in pool]]
                    keep = np.array([smp.id in ok for smp in labeled], dtype=bool)
                    labeled, X, y = [m for m, k in zip(labeled, keep) if k], X[keep], y[keep]
                    pool = kept
                row = {smp.id: i for i, smp in enumerate(pool)}
                kwargs["teacher_pool"] = T_pool
                kwargs["teacher_proba"] = T_pool[[row[smp.id] for smp in labeled]]
            kwargs["X_pool"] = X_pool
        learner.fit(X, y, n_classes=len(project.labels), seed=derive_seed(project.seed, round_key, "learner"), **kwargs)
        return learner

    def _pool(self, project: Project) -> list[Sample]:
        with session_scope(self.ws.engine) as s:
            return pool_samples(s, project.id)  # type: ignore[arg-type]

    def _evaluate(self, project: Project, learner: Any) -> dict[str, Any]:
        with session_scope(self.ws.engine) as s:
            test = test_samples(s, project.id)  # type: ignore[arg-type]
        if not test:
            return {}
        test, X = self.features(test)
        classes = {lb: i for i, lb in enumerate(project.labels)}
        y = np.array([classes[smp.reference_label] for smp in test])  # type: ignore[index]
        pred = np.argmax(learner.predict_proba(X), axis=1)
        return {"accuracy": float(np.mean(pred == y)), "n_test": len(test)}

    def _train_model(self, project: Project, round_key: object, stem: str) -> tuple[Any | None, ModelVersion | None]:
        if self.ws.learner_kind == "external":
            return train_external(self, project, round_key, stem)
        if self.ws.learner_kind == "none":
            return None, None
        with session_scope(self.ws.engine) as s:
            labels = training_labels(s, project, self.ws.config.loop.aggregation)
            pool = pool_samples(s, project.id)  # type: ignore[arg-type]
        labeled = [smp for smp in pool if smp.id in labels]
        learner = self._fit(project, labeled, labels, round_key)
        if learner is None:
            return None, None
        metrics: dict[str, Any] = {"n_labels": len(labeled)}
        metrics.update(self._evaluate(project, learner))
        path = digest = None
        if self.ws.config.loop.save_models:
            path = self.ws.work_dir / "models" / f"{stem}.joblib"
            buf = io.BytesIO()
            learner.save(buf)
            data = buf.getvalue()
            atomic_write(path, data)
            digest = hashlib.sha256(data).hexdigest()
        mv = ModelVersion(
            project_id=project.id,  # type: ignore[arg-type]
            learner=self.ws.config.learner.name,
            artifact_path=str(path) if path else None,
            artifact_hash=digest,
            n_labels=len(labeled),
            metrics=metrics,
        )
        return learner, mv

    # -- CREATED -> TRAINED --------------------------------------------------------------------------
    def train(self, rnd: Round) -> "TickResult":
        project = self.ws.project()
        learner, mv = self._train_model(project, ("round", rnd.number), f"round-{rnd.number:04d}")
        with Session(self.ws.engine, expire_on_commit=False) as s:
            values: dict[str, Any] = {}
            if mv is not None:
                mv.round_number = rnd.number
                s.add(mv)
                s.flush()
                values["model_version_id"] = mv.id
            self.transition(s, rnd, RoundState.TRAINED, **values)
        if learner is not None:
            self._models[rnd.number] = learner
        from alloop.report import headline

        key = headline(project.task)[0]
        acc = mv.metrics.get(key) if mv else None
        none = {"none": "no model (learner 'none')", "external": "no model yet (no labels to train on)"}
        msg = none.get(self.ws.learner_kind, "no model yet (fewer than 2 labeled classes)") if mv is None else (
            f"trained on {mv.n_labels} labels" + (f", {key} {acc:.4f}" if acc is not None else "")
        )
        return _result("trained", rnd, RoundState.TRAINED, f"round {rnd.number}: {msg}")

    def _model_for(self, rnd: Round) -> Any | None:
        if rnd.model_version_id is None:
            return None
        if rnd.number in self._models:
            return self._models[rnd.number]
        with session_scope(self.ws.engine) as s:
            mv = s.get(ModelVersion, rnd.model_version_id)
        cls = registry.load("learner", self.ws.config.learner.name)
        if mv is not None and mv.artifact_path and Path(mv.artifact_path).exists() and self.ws.learner_kind == "external":
            learner = ExternalModel.load(Path(mv.artifact_path))
        elif mv is not None and mv.artifact_path and Path(mv.artifact_path).exists() and hasattr(cls, "load"):
            learner = cls.load(Path(mv.artifact_path), self.ws.config.learner.params)
        else:  # no artifact kept: retrain deterministically from the same labels and seed
            learner, _ = self._train_model(self.ws.project(), ("round", rnd.number), f"round-{rnd.number:04d}")
            if learner is None:
                raise LearnerError(f"Cannot rebuild the model of round {rnd.number}.")
        self._models[rnd.number] = learner
        return learner

    def _strategy_for(self, rnd: Round, has_model: bool) -> tuple[Any, str]:
        if rnd.number == 0:
            return self.ws.cold_start, self.ws.config.cold_start.name
        strategy = self.ws.strategy
        if strategy.requires & {"proba"} and not has_model:
            logger.warning(
                "round %d: strategy %s needs a model, none could be trained yet; using cold start %s",
                rnd.number, self.ws.config.strategy.name, self.ws.config.cold_start.name,
            )
            return self.ws.cold_start, self.ws.config.cold_start.name
        return strategy, self.ws.config.strategy.name

    def _scores_path(self, rnd: Round) -> Path:
        return self.ws.work_dir / "rounds" / f"round-{rnd.number:04d}" / "scores.npz"

    # -- TRAINED -> SCORED ----------------------------------------------------------------------------
    def score(self, rnd: Round) -> "TickResult":
        project = self.ws.project()
        model = self._model_for(rnd)
        strategy, name = self._strategy_for(rnd, model is not None)
        pool, X = self.features(self._pool(project))
        arrays: dict[str, np.ndarray] = {}
        if isinstance(model, ExternalModel):
            if model.proba is not None:
                known = set(model.keys)
                late = [smp.key for smp in pool if smp.key not in known]
                if late:
                    logger.warning("round %d: %d samples imported after the model ran are left out of this "
                                   "round (the next model covers them)", rnd.number, len(late))
                    X = X[[smp.key in known for smp in pool]]
                    pool = [smp for smp in pool if smp.key in known]
                arrays["proba"] = model.proba_of([smp.key for smp in pool]).astype(np.float32)
        elif model is not None and len(pool):
            arrays["proba"] = model.predict_proba(X).astype(np.float32)
            if "embeddings" in strategy.requires:
                emb = model.embed(X)
                if emb is not None:
                    arrays["embeddings"] = np.asarray(emb, dtype=np.float32)
        arrays["sample_ids"] = np.array([smp.id for smp in pool], dtype=np.int64)
        if self.ws.config.proposals is not None:
            arrays.update(self._objects(project, pool, model, features="objects" in strategy.requires))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(self._scores_path(rnd), buf.getvalue())
        with Session(self.ws.engine, expire_on_commit=False) as s:
            self.transition(
                s, rnd, RoundState.SCORED, strategy=name, strategy_params=strategy.model_dump(mode="json")
            )
        msg = f"round {rnd.number}: scored {len(pool)} samples for {name}"
        if "obj_image" in arrays:
            msg += f" ({len(arrays['obj_image'])} object proposals)"
        return _result("scored", rnd, RoundState.SCORED, msg)

    def _objects(self, project: Project, pool: list[Sample], model: Any, *, features: bool) -> dict[str, np.ndarray]:
        """The pool's object proposals as ObjectSet columns (crop features only when asked)."""
        from alloop.detection.source import load_proposals, object_set

        cfg = self.ws.config.proposals
        dets = model.detections if isinstance(model, ExternalModel) else None
        props, where = load_proposals(cfg, project.labels, pool, model_detections=dets,  # type: ignore[arg-type]
                                      cache_dir=self.ws.cache_dir, progress=self.ws.progress)
        logger.info("project %s: %d proposals from %s", project.name, len(props), where)
        return object_set(props, pool, project.labels, self.ws.encoder if features else None,
                          self.ws.feature_cache, pad=cfg.pad, work_dir=self.ws.work_dir,  # type: ignore[union-attr]
                          progress=self.ws.progress)

    # -- SCORED -> SELECTED ---------------------------------------------------------------------------
    def select(self, rnd: Round) -> "TickResult":
        project = self.ws.project()
        with np.load(self._scores_path(rnd)) as z:
            arrays = {k: z[k] for k in z.files}
        strategy, name = self._strategy_for(rnd, "proba" in arrays)
        with session_scope(self.ws.engine) as s:
            by_id = {smp.id: smp for smp in pool_samples(s, project.id)}  # type: ignore[arg-type]
            chosen = selected_ids(s, project.id)  # type: ignore[arg-type]
            labels = training_labels(s, project, self.ws.config.loop.aggregation)
        ids = arrays["sample_ids"]
        keep = np.array([i in by_id for i in ids], dtype=bool)  # quarantined since scoring: drop
        ids = ids[keep]
        classes = {lb: i for i, lb in enumerate(project.labels)}
        if project.task == "detection":  # labeled = has boxes; there is no one class per image
            with session_scope(self.ws.engine) as s:
                boxed = training_boxes(s, project)
            label_arr = np.array([0 if int(i) in boxed else -1 for i in ids], dtype=np.int64)
        else:
            label_arr = np.array([classes.get(labels.get(int(i), ""), -1) for i in ids], dtype=np.int64)
        embeddings = arrays["embeddings"][keep] if "embeddings" in arrays else None
        if embeddings is None and "embeddings" in strategy.requires:
            _, embeddings = self.features([by_id[int(i)] for i in ids])
        ctx = SelectionContext(
            n_samples=len(ids),
            candidates=np.flatnonzero([int(i) not in chosen for i in ids]),
            labeled=np.flatnonzero(label_arr >= 0),
            rng=derive_rng(project.seed, "round", rnd.number, "select"),
            proba=arrays["proba"][keep] if "proba" in arrays else None,
            embeddings=embeddings,
            labels=None if project.task == "detection" else label_arr,
            keys=np.array([by_id[int(i)].key for i in ids], dtype=object),
            extras={"objects": _object_set(arrays, keep)} if "obj_image" in arrays else {},
        )
        sel = strategy.select(ctx, rnd.budget)
        rows = [
            dict(project_id=project.id, round_id=rnd.id, sample_id=int(ids[pos]), rank=rank,
                 score=float(score) if np.isfinite(score) else 0.0)
            for rank, (pos, score) in enumerate(zip(sel.positions, sel.scores))
        ]
        with Session(self.ws.engine, expire_on_commit=False) as s:
            s.execute(insert(Selection), rows)
            self.transition(s, rnd, RoundState.SELECTED)
        return _result("selected", rnd, RoundState.SELECTED, f"round {rnd.number}: {name} selected {len(sel)} samples")

    # -- SELECTED -> PUSHED ---------------------------------------------------------------------------
    def _payloads(self, rnd: Round, project: Project, samples: list[Sample]) -> list[Any]:
        from connectors.base import Prediction, TaskPayload

        proba: dict[int, np.ndarray] = {}
        path = self._scores_path(rnd)
        if path.exists():
            with np.load(path) as z:
                if "proba" in z.files:
                    proba = dict(zip(z["sample_ids"].tolist(), z["proba"]))
        if project.task == "detection":
            return self._box_payloads(rnd, project, samples)
        out = []
        for smp in samples:
            pred = None
            p = proba.get(smp.id)  # type: ignore[arg-type]
            if p is not None:
                top = int(np.argmax(p))
                pred = Prediction(
                    label=project.labels[top],
                    score=float(p[top]),
                    model_version=f"{project.name}-round-{rnd.number}",
                    proba={lb: float(v) for lb, v in zip(project.labels, p)},
                )
            out.append(TaskPayload(smp.key, smp.kind, smp.data, rnd.number, pred))
        return out

    def _box_payloads(self, rnd: Round, project: Project, samples: list[Sample]) -> list[Any]:
        """Detection tasks, pre-annotated with the proposals of each image (when there are any)."""
        from alloop.detection.annotations import image_size, percent_boxes
        from connectors.base import Prediction, TaskPayload

        boxes: dict[int, list[dict[str, Any]]] = {}
        path = self._scores_path(rnd)
        if path.exists():
            with np.load(path) as z:
                if "obj_image" in z.files:
                    ids = z["sample_ids"]
                    for pos, lab, score, box in zip(z["obj_image"], z["obj_label"], z["obj_score"], z["obj_box"]):
                        x0, y0, x1, y1 = (float(v) for v in box)
                        boxes.setdefault(int(ids[pos]), []).append(
                            {"bbox": [x0, y0, x1 - x0, y1 - y0], "label": project.labels[int(lab)], "score": float(score)})
        out = []
        for smp in samples:
            pred = None
            mine = boxes.get(smp.id)  # type: ignore[arg-type]
            if mine:
                best = max(mine, key=lambda b: b["score"])
                pred = Prediction(label=best["label"], score=float(np.mean([b["score"] for b in mine])),
                                  model_version=f"{project.name}-round-{rnd.number}",
                                  value={"boxes": percent_boxes(mine, image_size(smp.data, smp.key))})
            out.append(TaskPayload(smp.key, smp.kind, smp.data, rnd.number, pred))
        return out

    def push(self, rnd: Round) -> "TickResult":
        project = self.ws.project()
        conn = self.ws.connector
        with session_scope(self.ws.engine) as s:
            picked = s.exec(
                select(Sample).join(Selection, Selection.sample_id == Sample.id)
                .where(Selection.round_id == rnd.id).order_by(Selection.rank)
            ).all()
            done = set(s.exec(select(Task.sample_id).where(Task.project_id == project.id, Task.connector == conn.name)).all())
        todo = [smp for smp in picked if smp.id not in done]
        conn.ensure_project()
        keys = [smp.key for smp in todo]
        adopted = conn.find_tasks(keys, round_number=rnd.number) if todo else {}
        fresh = [smp for smp in todo if smp.key not in adopted]
        pushed = conn.push(self._payloads(rnd, project, fresh)) if fresh else {}
        _faults.crash_point(rnd.number, "after_push")
        ext = {**adopted, **pushed}
        missing = [k for k in keys if k not in ext]
        if missing:
            raise ConnectorDataError(
                f"The labeling tool returned no task id for {len(missing)} pushed samples (e.g. {missing[0]!r})."
            )
        now = utcnow()
        rows = [dict(project_id=project.id, round_id=rnd.id, sample_id=smp.id, connector=conn.name,
                     external_id=str(ext[smp.key]), pushed_at=now) for smp in todo]
        with Session(self.ws.engine, expire_on_commit=False) as s:
            if rows:
                s.execute(insert(Task), rows)
            self.transition(s, rnd, RoundState.PUSHED, pushed_at=now)
        msg = f"round {rnd.number}: pushed {len(fresh)} tasks to {conn.name}"
        if adopted:
            msg += f" (adopted {len(adopted)} already there)"
        return _result("pushed", rnd, RoundState.PUSHED, msg)

    # -- PUSHED/COLLECTING -> COLLECTING/CLOSED ------------------------------------------------------
    def collect(self, rnd: Round) -> "TickResult":
        """Ingest every annotation of every task of the project (late labels of closed rounds too),
        then close the round when a rule of :func:`~alloop.loop.policies.close_reason` fires."""
        from connectors.base import TaskRef

        project = self.ws.project()
        conn = self.ws.connector
        loop = self.ws.config.loop
        with session_scope(self.ws.engine) as s:
            rows = s.exec(
                select(Task, Sample.key, Round.number).join(Sample, Sample.id == Task.sample_id)
                .join(Round, Round.id == Task.round_id)
                .where(Task.project_id == project.id, Task.connector == conn.name).order_by(Task.id)
            ).all()
            model_at = None
            if loop.retrain_after_labels is not None or loop.retrain_after_s is not None:
                mv = s.get(ModelVersion, rnd.model_version_id) if rnd.model_version_id is not None else None
                model_at = mv.created_at if mv is not None else rnd.created_at
        tasks_by_key = {key: t for t, key, _ in rows}
        refs = [TaskRef(key, t.external_id, number, t.pushed_at) for t, key, number in rows]
        records = conn.pull(refs)
        # a connector whose pull lists every annotation the tool holds for these tasks (Label Studio's
        # export) also tells what was deleted there
        complete = [t.id for t, _, _ in rows] if getattr(conn, "pull_is_complete", False) else None
        with Session(self.ws.engine, expire_on_commit=False) as s:
            stats = ingest(s, project_id=project.id, connector=conn.name, labels=project.labels,  # type: ignore[arg-type]
                           records=records, tasks_by_key=tasks_by_key, complete_tasks=complete)
            s.flush()
            n_tasks = sum(1 for *_, number in rows if number == rnd.number)
            n_done = resolved_tasks(s, rnd.id)  # type: ignore[arg-type]
            progress = f"{n_done}/{n_tasks} tasks resolved"
            if stats.changed:
                progress += f", {stats.new} new and {stats.updated} updated annotations"
                if stats.deleted:
                    progress += f", {stats.deleted} deleted in {conn.name}"
            if rnd.state == RoundState.PUSHED:
                self.transition(s, rnd, RoundState.COLLECTING)
                return _result("collecting", rnd, RoundState.COLLECTING, f"round {rnd.number}: collecting, {progress}")
            new_labels = new_labels_since(s, project.id, model_at) if model_at is not None else 0  # type: ignore[arg-type]
            reason = close_reason(loop, n_tasks=n_tasks, n_resolved=n_done, pushed_at=rnd.pushed_at,
                                  model_at=model_at, new_labels=new_labels)
            if reason is not None:
                why = "" if reason == "complete" else f" early: {reason}"
                self.transition(s, rnd, RoundState.CLOSED, completed_at=utcnow(), note=why.strip() or None)
                return _result("closed", rnd, RoundState.CLOSED, f"round {rnd.number}: closed{why}, {progress}")
            s.commit()
            _faults.crash_point(rnd.number, "after_ingest")
        return _result(
            "waiting", rnd, RoundState.COLLECTING, f"round {rnd.number}: waiting for labels, {progress}",
            progressed=stats.changed > 0, waiting=True,
        )

    # -- the end -------------------------------------------------------------------------------------
    def finish(self, project: Project, reason: str) -> "TickResult":
        from alloop.loop.controller import TickResult

        _, mv = self._train_model(project, "final", "final")
        with session_scope(self.ws.engine) as s:
            row = get_project(s, project.name)
            if mv is not None:
                mv.final = True
                s.add(mv)
            row.status, row.finished_reason = "finished", reason
            s.add(row)
        logger.info("project %s finished: %s", project.name, reason)
        from alloop.report import headline

        key, what = headline(project.task)
        acc = mv.metrics.get(key) if mv else None
        msg = f"finished: {reason}" + (f"; final model {what} {acc:.4f}" if acc is not None else "")
        return TickResult("finished", None, None, msg, finished=True)
