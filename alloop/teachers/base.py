"""Teachers: probability sources a student learns from (knowledge distillation).

A teacher maps samples to class probabilities over the project's label set, without seeing
any label: a CLIP zero-shot classifier, a few-shot adapted model, or any model's predictions
read from a file. Teachers are registered in the ``alloop.teachers`` entry-point group and
built with ``Cls.from_params(params, context=TeacherContext(...))``.

Teacher probabilities are cached per pool like features: :class:`TeacherEncoder` makes a teacher
look like an encoder (fingerprint = teacher fingerprint + label set), so the on-disk feature
cache stores its outputs by sample content hash and never asks twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from alloop.features.base import SampleRef
from alloop.features.cache import FeatureCache
from alloop.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class TeacherContext:
    """What a teacher may use: the project's labels, work dir and feature cache."""

    labels: tuple[str, ...]
    work_dir: Path
    cache: FeatureCache


@runtime_checkable
class Teacher(Protocol):
    def fingerprint(self) -> str:
        """Changes whenever the probabilities for the same content could change."""
        ...

    def predict_proba(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Class probabilities of shape (len(samples), n_labels), rows summing to 1.

        Columns follow the project's label set (``TeacherContext.labels``).
        Raises :class:`alloop.errors.SampleDecodeError` for an unreadable sample.
        """
        ...


class TeacherEncoder:
    """Adapter: a teacher as an encoder, so its probabilities go through the feature cache."""

    def __init__(self, teacher: Teacher, labels: Sequence[str]) -> None:
        self.teacher = teacher
        self.labels = tuple(labels)

    def fingerprint(self) -> str:
        labels = hashlib.sha256(json.dumps(self.labels).encode()).hexdigest()[:8]
        return f"teacher-{self.teacher.fingerprint()}-labels-{labels}"

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        return np.asarray(self.teacher.predict_proba(samples, progress), dtype=np.float32)


def teacher_proba(
    teacher: Teacher, labels: Sequence[str], samples: Sequence[SampleRef], cache: FeatureCache,
    progress: Progress = NULL_PROGRESS,
) -> tuple[np.ndarray, dict[str, str]]:
    """Cached teacher probabilities of ``samples`` (rows of readable samples) and failures."""
    return cache.get(samples, TeacherEncoder(teacher, labels), progress)
