"""The Learner protocol: the model retrained each round.

Labels are class indices into the project's label set (``0 .. n_classes-1``);
``predict_proba`` always returns one column per class of the label set, in that order,
even for classes the learner has not seen yet (probability 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Learner(Protocol):
    name: str

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        n_classes: int,
        seed: int,
        X_pool: np.ndarray | None = None,
        teacher_proba: np.ndarray | None = None,
        teacher_pool: np.ndarray | None = None,
    ) -> "Learner":
        """Train from scratch on labeled rows ``X`` (n, d) with class indices ``y`` (n,).

        Learners that set ``uses_pool = True`` also get ``X_pool`` (m, d), the pool's features
        (labeled items included); those that also set ``requires_teacher = True`` get the
        teacher's probabilities of the labeled rows (n, C) and of the pool rows (m, C).
        """
        ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (n, n_classes); rows sum to 1."""
        ...

    def embed(self, X: np.ndarray) -> np.ndarray | None:
        """Model features of shape (n, k) for embedding-based strategies, or None to use ``X``."""
        ...

    def save(self, file: BinaryIO) -> None:
        """Write the fitted model to a binary file object (read back by ``load``)."""
        ...

    @classmethod
    def load(cls, path: Path, params: dict[str, Any] | None = None) -> "Learner": ...
