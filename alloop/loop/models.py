"""The model of each round: trained from the labels so far, evaluated, saved, found again.

Feature learners (:class:`~alloop.protocols.FeatureLearner`) are fit here on the labeled
samples' features (plus the pool's features and a teacher's probabilities when they ask);
external learners (:class:`~alloop.protocols.ExternalLearner`) train through
:mod:`alloop.loop.external`. A fresh learner is built for every model: nothing carries over.
A model is kept in memory for the process and saved (``[loop] save_models``) so a restarted
process scores with the same model; without the file it is retrained deterministically from
the same labels and seed.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alloop import registry
from alloop.errors import LearnerError
from alloop.files import atomic_write
from alloop.loop.artifacts import model_stem
from alloop.loop.data import PoolData
from alloop.loop.external import ExternalModel, train_external
from alloop.protocols import FeatureLearner
from alloop.rng import derive_seed
from alloop.store.arrays import SampleArrays
from alloop.store.engine import session_scope
from alloop.store.models import ModelVersion, Project, Round

if TYPE_CHECKING:
    from alloop.workspace import Workspace

__all__ = ["RoundModels"]

#: a round's model: a fitted feature learner, an external model's predictions, or None
Model = Any


class RoundModels:
    """Trains, saves and finds the model of each round of one project."""

    def __init__(self, ws: Workspace, data: PoolData) -> None:
        self.ws = ws
        self.data = data
        self._models: dict[int, Model] = {}

    # -- training ---------------------------------------------------------------------------
    def _fit(self, project: Project, labeled: SampleArrays, labels: dict[int, str], round_key: object) -> Model:
        classes = {lb: i for i, lb in enumerate(project.labels)}
        if len({labels[int(i)] for i in labeled.ids}) < 2:
            return None
        pid: int = project.id  # type: ignore[assignment]
        labeled, X = self.data.features(pid, labeled)
        y = np.array([classes[labels[int(i)]] for i in labeled.ids], dtype=np.int64)
        if len(np.unique(y)) < 2:
            return None
        learner = self.ws.new_learner(project)
        if not isinstance(learner, FeatureLearner):  # learner_kind said "features"
            raise LearnerError(f"Learner {learner.name!r} cannot be fit on feature rows.")
        kwargs: dict[str, Any] = {}
        if "pool" in learner.requires or "teacher" in learner.requires:
            pool, X_pool = self.data.features(pid, self.data.arrays(pid))
            if "teacher" in learner.requires:
                kept, T_pool = self.data.teacher_proba(pool)
                if len(kept) != len(pool):  # the teacher could not read some: drop them everywhere
                    X_pool = X_pool[np.isin(pool.ids, kept.ids)]
                    keep = np.isin(labeled.ids, kept.ids)
                    labeled, X, y = labeled.take(keep), X[keep], y[keep]
                    pool = kept
                kwargs["teacher_pool"] = T_pool
                kwargs["teacher_proba"] = T_pool[pool.positions_of(labeled.ids)]
            kwargs["X_pool"] = X_pool
        learner.fit(X, y, n_classes=len(project.labels), seed=derive_seed(project.seed, round_key, "learner"), **kwargs)
        return learner

    def _evaluate(self, project: Project, learner: FeatureLearner) -> dict[str, Any]:
        """Held-out accuracy, predicted a shard at a time."""
        pid: int = project.id  # type: ignore[assignment]
        test, y = self.data.reference(pid, "test", project.labels)
        if not len(test):
            return {}
        correct = n = 0
        for part, X in self.data.chunks(pid, test):
            if len(part):
                pred = np.argmax(learner.predict_proba(X), axis=1)
                correct += int(np.sum(pred == y[test.positions_of(part.ids)]))
                n += len(part)
        return {"accuracy": correct / n, "n_test": n} if n else {}

    def train(self, project: Project, round_key: object, stem: str) -> tuple[Model, ModelVersion | None]:
        """Train a model on the current labels: ``(model, its ModelVersion row)``, or ``(None, None)``
        when there is nothing to train on yet (or no learner)."""
        if self.ws.learner_kind == "external":
            return train_external(self.ws, project, round_key, stem)
        if self.ws.learner_kind == "none":
            return None, None
        labels = self.data.training_labels(project, self.ws.config.loop.aggregation)
        labeled = self.data.arrays_among(project.id, list(labels))  # type: ignore[arg-type]
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

    def remember(self, round_number: int, model: Model) -> None:
        """Keep a round's freshly trained model for this process's next steps."""
        if model is not None:
            self._models[round_number] = model

    # -- finding a round's model again ---------------------------------------------------------
    def of(self, rnd: Round) -> Model:
        """The model of ``rnd``: in memory, else loaded from its artifact, else retrained (same labels,
        same seed). ``None`` when the round trained none."""
        if rnd.model_version_id is None:
            return None
        if rnd.number in self._models:
            return self._models[rnd.number]
        with session_scope(self.ws.engine) as s:
            mv = s.get(ModelVersion, rnd.model_version_id)
        saved = mv is not None and mv.artifact_path and Path(mv.artifact_path).exists()
        model: Model
        if saved and self.ws.learner_kind == "external":
            model = ExternalModel.load(Path(mv.artifact_path))  # type: ignore[union-attr,arg-type]
        elif saved and self.ws.learner_kind == "features":
            cls = registry.load("learner", self.ws.config.learner.name)
            model = cls.load(Path(mv.artifact_path), self.ws.config.learner.params)  # type: ignore[union-attr,arg-type]
        else:  # no artifact kept: retrain deterministically from the same labels and seed
            model, _ = self.train(self.ws.project(), ("round", rnd.number), model_stem(rnd.number))
            if model is None:
                raise LearnerError(f"Cannot rebuild the model of round {rnd.number}.")
        self._models[rnd.number] = model
        return model
