"""The Teacher protocol: class probabilities a student learns from (knowledge distillation).

A teacher maps samples to class probabilities over the project's label set without seeing
any label: a CLIP zero-shot classifier, a few-shot adapted model, or any model's predictions
read from a file. Teachers are registered in the ``alloop.teachers`` entry-point group and
built with ``Cls.from_params(params, context=TeacherContext(...))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from numpy.typing import NDArray

from alloop.progress import Progress
from alloop.protocols.context import PluginContext
from alloop.protocols.encoder import SampleRef

__all__ = ["Teacher", "TeacherContext"]


@dataclass(frozen=True)
class TeacherContext(PluginContext):
    """What a teacher may use besides the project.

    Attributes
    ----------
    cache : alloop.features.cache.FeatureCache
        The project's feature cache, to share image features with the encoder.
    """

    cache: Any = None


@runtime_checkable
class Teacher(Protocol):
    def fingerprint(self) -> str:
        """Changes whenever the probabilities for the same content could change."""
        ...

    def predict_proba(self, samples: Sequence[SampleRef], progress: Progress) -> NDArray[Any]:
        """Class probabilities of shape (len(samples), n_labels), rows summing to 1.

        Columns follow the project's label set (``TeacherContext.labels``).
        Raises :class:`alloop.errors.SampleDecodeError` for an unreadable sample.
        """
        ...
