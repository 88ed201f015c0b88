"""The Learner protocols: the model retrained each round.

Every learner is built fresh each round with ``Cls.from_params(params, context=PluginContext)``
and declares in ``requires`` what its training needs besides the labeled samples. Two kinds:

- a :class:`FeatureLearner` trains in the process on feature rows (scikit-learn models, the
  KD student). Labels are class indices into the project's label set (``0 .. n_classes-1``);
  ``predict_proba`` returns one column per class of the label set, in that order, even for
  classes the learner has not seen yet (probability 0; a learner that distills from a teacher
  may give them the probability its teacher gives). ``requires`` may hold ``"pool"`` (it
  also gets the pool's features: semi-supervised) and ``"teacher"`` (it also gets a teacher's
  probabilities: knowledge distillation).
- an :class:`ExternalLearner` trains outside the process on exported samples (the ``command``
  learner runs a team's own training script) and returns its predictions for the samples it
  was asked about; ``requires`` holds ``"files"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from alloop.detection.boxes import Proposals

__all__ = ["LEARNER_INPUTS", "MODEL_ARRAYS", "ExportItem", "ExternalLearner", "ExternalResult", "FeatureLearner",
           "Learner"]

#: what a learner's ``requires`` may name
LEARNER_INPUTS = frozenset({"pool", "teacher", "files"})

#: arrays a strategy may require that only some models give: requirement -> (the model's
#: method, what it is). A feature learner gives ``name`` when its ``gives_<name>`` attribute is
#: True; its method returns one row per sample.
MODEL_ARRAYS: dict[str, tuple[str, str]] = {
    "penultimate": ("penultimate", "penultimate features (the input of its last, linear layer; for gradient "
                                   "embeddings)"),
    "members": ("member_proba", "class probabilities of each ensemble member, shape (n, members, classes)"),
}


@runtime_checkable
class Learner(Protocol):
    """What every learner is: a named model with declared training inputs."""

    name: str
    requires: frozenset[str]
    """Training inputs besides the labeled samples: ``"pool"``, ``"teacher"``, ``"files"``."""


@runtime_checkable
class FeatureLearner(Protocol):
    """A learner trained in the process on feature rows."""

    name: str
    requires: frozenset[str]

    def fit(
        self,
        X: NDArray[np.float32],
        y: NDArray[np.int64],
        *,
        n_classes: int,
        seed: int,
        X_pool: NDArray[np.float32] | None = None,
        teacher_proba: NDArray[np.float32] | None = None,
        teacher_pool: NDArray[np.float32] | None = None,
    ) -> Any:
        """Train from scratch on labeled rows ``X`` (n, d) with class indices ``y`` (n,); return self.

        With ``"pool"`` in ``requires`` it also gets ``X_pool`` (m, d), the pool's features
        (labeled items included); with ``"teacher"`` the teacher's probabilities of the labeled
        rows (n, C) and of the pool rows (m, C).
        """
        ...

    def predict_proba(self, X: NDArray[np.float32]) -> NDArray[Any]:
        """Class probabilities of shape (n, n_classes); rows sum to 1."""
        ...

    def embed(self, X: NDArray[np.float32]) -> NDArray[Any] | None:
        """Model features of shape (n, k) for embedding-based strategies, or None to use ``X``."""
        ...

    # Optional, for strategies that declare one of MODEL_ARRAYS: a ``gives_<name>`` attribute
    # and the method it names, e.g. ``gives_penultimate`` and ``penultimate(X)`` (BADGE),
    # ``gives_members`` and ``member_proba(X)`` (vote entropy, BALD). A learner without them is
    # refused for such strategies when the project is loaded.

    def save(self, file: BinaryIO) -> None:
        """Write the fitted model to a binary file object (read back by ``load``)."""
        ...

    @classmethod
    def load(cls, path: Path, params: Mapping[str, Any] | None = None) -> Any:
        """The fitted model saved at ``path`` (built with ``params``)."""
        ...


@dataclass(frozen=True)
class ExportItem:
    """One sample handed to an external learner.

    Attributes
    ----------
    key : str
        The stable sample key.
    data : mapping
        ``{"path": absolute image path, optional "width", "height"}`` or ``{"text": ...}``.
    label : str, optional
        Classification/text: the training label.
    boxes : sequence of mappings, optional
        Detection: ``[{"bbox": [x, y, w, h] (pixels), "label": str}, ...]``.
    """

    key: str
    data: Mapping[str, Any]
    label: str | None = None
    boxes: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class ExternalResult:
    """What one run of an external learner produced.

    Attributes
    ----------
    task : str
    keys : tuple of str
        The predict items' keys, in the order given.
    proba : ndarray of shape (len(keys), n_labels), float32, or None
        Classification/text: rows sum to 1, columns in label order.
    detections : Proposals or None
        Detection: image keys, ``xywh`` pixel boxes clipped to the image, labels, scores.
    metrics : dict of str to float
        Reported by the learner (e.g. its own validation scores).
    run_dir : Path
    seconds : float
        How long the training ran.
    """

    task: str
    keys: tuple[str, ...]
    proba: NDArray[np.float32] | None
    detections: Proposals | None
    metrics: dict[str, float]
    run_dir: Path
    seconds: float


@runtime_checkable
class ExternalLearner(Protocol):
    """A learner trained outside the process, on exported samples."""

    name: str
    requires: frozenset[str]

    def run(
        self,
        *,
        task: str,
        labels: Sequence[str],
        train: Sequence[ExportItem],
        predict: Sequence[ExportItem],
        run_dir: Path,
        seed: int,
    ) -> ExternalResult:
        """Train on ``train`` and predict ``predict``; files go to ``run_dir``."""
        ...
