"""An ensemble of any feature learner: M members, each on a bootstrap resample of the labels.

Query-by-committee strategies (``vote_entropy``, ``bald``) need several models that disagree
where the data leaves room to: the members are copies of one learner, each trained on a
bootstrap resample of the labeled items (drawn with the round's seed and the member's index,
redrawn while it holds fewer than two classes) with its own seed. The ensemble predicts the
members' mean probabilities, and gives each member's (``member_proba``).

Project file::

    [learner]
    name = "ensemble"
    params = { learner = "sklearn", learner_params = { estimator = "sklearn.linear_model.LogisticRegression" }, members = 5 }
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alloop.errors import ConfigError, NotFittedError
from alloop.protocols.context import PluginContext
from alloop.rng import derive_rng, derive_seed

__all__ = ["EnsembleLearner", "EnsembleParams", "bootstrap_rows"]


class EnsembleParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    learner: str = "sklearn"
    """The members' learner (any registered feature learner)."""
    learner_params: dict[str, Any] = Field(default_factory=dict)
    members: int = Field(default=5, ge=2, le=100)
    bootstrap: bool = True
    """Each member on a bootstrap resample (False: every member on every label, seeds differ)."""


def bootstrap_rows(y: np.ndarray, rng: np.random.Generator, tries: int = 50) -> np.ndarray:
    """A bootstrap resample (row indices) holding at least two classes when ``y`` does."""
    n = len(y)
    for _ in range(tries):
        rows = rng.integers(0, n, n)
        if len(np.unique(y[rows])) >= min(2, len(np.unique(y))):
            return rows
    return np.arange(n)  # a resample with two classes is this unlikely: every row once


class EnsembleLearner:
    """M members of one feature learner; mean probabilities, and each member's."""

    name = "ensemble"
    #: :meth:`member_proba` answers (strategies that declare "members")
    gives_members = True

    def __init__(self, params: EnsembleParams, context: PluginContext | None = None) -> None:
        from alloop import registry
        from alloop.protocols import FeatureLearner

        self.params, self.context = params, context
        probe = registry.create("learner", params.learner, params.learner_params, context=context)
        if not isinstance(probe, FeatureLearner):
            raise ConfigError(f"ensemble needs a feature learner (sklearn, kd_student, ...); {params.learner!r} "
                              "trains outside the process.")
        self.requires: frozenset[str] = frozenset(probe.requires)
        self.members_: list[Any] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, *,
                    context: PluginContext | None = None) -> EnsembleLearner:
        from alloop.params import parse_params

        return cls(parse_params(EnsembleParams, params, "ensemble learner parameters"), context)

    def _member(self) -> Any:
        from alloop import registry

        return registry.create("learner", self.params.learner, self.params.learner_params, context=self.context)

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int, seed: int, **kwargs: Any) -> EnsembleLearner:
        y = np.asarray(y)
        members = []
        for m in range(self.params.members):
            rows = bootstrap_rows(y, derive_rng(seed, "member", m)) if self.params.bootstrap else np.arange(len(y))
            kw = dict(kwargs)
            if kw.get("teacher_proba") is not None:  # one row per labeled item: resampled with them
                kw["teacher_proba"] = np.asarray(kw["teacher_proba"])[rows]
            members.append(self._member().fit(X[rows], y[rows], n_classes=n_classes,
                                              seed=derive_seed(seed, "member", m), **kw))
        self.members_ = members
        return self

    def member_proba(self, X: np.ndarray) -> np.ndarray:
        """Each member's class probabilities, shape ``(n, members, classes)``."""
        if self.members_ is None:
            raise NotFittedError("ensemble.member_proba called before fit.")
        return np.stack([np.asarray(m.predict_proba(X), dtype=np.float64) for m in self.members_], axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The members' mean probabilities."""
        out: np.ndarray = self.member_proba(X).mean(axis=1)
        return out

    def embed(self, X: np.ndarray) -> np.ndarray | None:
        return None

    def save(self, file: BinaryIO) -> None:
        import joblib

        joblib.dump({"members": self.members_, "params": self.params.model_dump()}, file)

    @classmethod
    def load(cls, path: Path, params: Mapping[str, Any] | None = None) -> EnsembleLearner:
        import joblib

        obj = cls.from_params(params)
        obj.members_ = joblib.load(path)["members"]
        return obj
