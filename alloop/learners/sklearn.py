"""Any scikit-learn classifier as a learner, cloned fresh every round.

Project file::

    [learner]
    name = "sklearn"
    params = { estimator = "sklearn.linear_model.LogisticRegression", params = { C = 1.0 }, scale = true }
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict

from alloop.errors import ConfigError, LearnerError, NotFittedError
from alloop.protocols.context import PluginContext

DEFAULT_ESTIMATOR = "sklearn.linear_model.LogisticRegression"


class SklearnParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    estimator: str = DEFAULT_ESTIMATOR
    """Import path of a classifier class with fit/predict_proba."""
    params: dict[str, Any] = {"max_iter": 2000}
    """Keyword arguments of the estimator."""
    scale: bool = False
    """Standardize features first (a StandardScaler in a pipeline)."""


def import_estimator(path: str) -> type:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"learner.params.estimator must be an import path like {DEFAULT_ESTIMATOR!r}. Got {path!r}."
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"Cannot import estimator {path!r} ({exc}). Give the full import path of a classifier, "
            f"e.g. {DEFAULT_ESTIMATOR!r} or 'sklearn.ensemble.RandomForestClassifier'."
        ) from None
    if not (hasattr(cls, "fit") and hasattr(cls, "predict_proba")):
        raise ConfigError(f"{path!r} is not a probabilistic classifier (needs fit and predict_proba).")
    return cls


class SklearnLearner:
    """Wraps a scikit-learn classifier; ``fit`` always starts from a fresh clone."""

    name = "sklearn"
    requires: frozenset[str] = frozenset()

    def __init__(self, params: SklearnParams | None = None) -> None:
        self.params = params or SklearnParams()
        self._cls = import_estimator(self.params.estimator)
        try:
            self._cls(**self.params.params)
        except TypeError as exc:
            raise ConfigError(f"Invalid parameters for {self.params.estimator}: {exc}.") from None
        self.model_: Any = None
        self.classes_: np.ndarray | None = None
        self.n_classes_: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, *,
                    context: PluginContext | None = None) -> SklearnLearner:
        from alloop.params import parse_params

        return cls(parse_params(SklearnParams, params, "sklearn learner parameters"))

    def _build(self, seed: int) -> Any:
        kwargs = dict(self.params.params)
        est = self._cls(**kwargs)
        if "random_state" in est.get_params() and "random_state" not in kwargs:
            est.set_params(random_state=seed)
        if self.params.scale:
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            est = make_pipeline(StandardScaler(), est)
        return est

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int, **_: Any) -> SklearnLearner:
        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise LearnerError(f"X has {len(X)} rows but y has {len(y)} labels.")
        present = np.unique(y)
        if present.size < 2:
            raise LearnerError(
                f"Need labels of at least 2 classes to train a classifier; got only class indices {present.tolist()}."
            )
        model = self._build(seed)
        model.fit(X, y)
        self.model_ = model
        self.classes_ = np.asarray(model.classes_, dtype=np.int64)
        self.n_classes_ = n_classes
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None or self.classes_ is None or self.n_classes_ is None:
            raise NotFittedError("SklearnLearner.predict_proba called before fit.")
        p = np.asarray(self.model_.predict_proba(X), dtype=np.float64)
        out = np.zeros((len(X), self.n_classes_), dtype=np.float64)
        out[:, self.classes_] = p
        return out

    def embed(self, X: np.ndarray) -> np.ndarray | None:
        return None

    @property
    def gives_penultimate(self) -> bool:
        """Whether :meth:`penultimate` can answer: a linear model (``sklearn.linear_model``) or an
        ``MLPClassifier``."""
        return self._cls.__module__.startswith("sklearn.linear_model") or self._cls.__name__ == "MLPClassifier"

    def penultimate(self, X: np.ndarray) -> np.ndarray | None:
        """The input of the model's last layer: the features after the pipeline's preprocessing
        for a linear model, the last hidden layer's activations for an ``MLPClassifier``; None
        for other models."""
        if self.model_ is None:
            raise NotFittedError("SklearnLearner.penultimate called before fit.")
        if not self.gives_penultimate:
            return None
        steps = getattr(self.model_, "steps", None)
        final = steps[-1][1] if steps else self.model_
        h = np.asarray(X, dtype=np.float64)
        for _, step in (steps or [])[:-1]:
            h = step.transform(h)
        if self._cls.__name__ == "MLPClassifier":
            from sklearn.neural_network._base import ACTIVATIONS

            act = ACTIVATIONS[final.activation]  # in place
            for W, b in zip(final.coefs_[:-1], final.intercepts_[:-1]):
                h = h @ W + b
                act(h)
        return np.asarray(h)

    def save(self, file: BinaryIO) -> None:
        import joblib

        joblib.dump({"model": self.model_, "classes": self.classes_, "n_classes": self.n_classes_}, file)

    @classmethod
    def load(cls, path: Path, params: dict[str, Any] | None = None) -> SklearnLearner:
        import joblib

        obj = cls.from_params(params)
        state = joblib.load(path)
        obj.model_, obj.classes_, obj.n_classes_ = state["model"], state["classes"], state["n_classes"]
        return obj
