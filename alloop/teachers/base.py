"""Teacher outputs through the feature cache (the protocol: :class:`alloop.protocols.Teacher`).

Teacher probabilities are cached per pool like features: :class:`TeacherEncoder` makes a teacher
look like an encoder (fingerprint = teacher fingerprint + label set), so the on-disk feature
cache stores its outputs by sample content hash and never asks twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from alloop.features.cache import FeatureCache
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef, Teacher


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
