"""The pool as a step reads it: samples, their features and teacher probabilities.

Unreadable samples (a corrupt image, a text the encoder cannot take) are quarantined in the
database with the reason and dropped, so one bad file never stops a round.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from alloop.protocols import SampleRef
from alloop.store.engine import session_scope
from alloop.store.models import Project, Sample
from alloop.store.queries import pool_samples

if TYPE_CHECKING:
    from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["PoolData"]


class PoolData:
    """Pool samples, features and teacher outputs of one project (cached on disk by content)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def pool(self, project: Project) -> list[Sample]:
        """The readable pool samples (held-out ones excluded), in id order."""
        with session_scope(self.ws.engine) as s:
            return pool_samples(s, project.id)  # type: ignore[arg-type]

    def refs(self, samples: Sequence[Sample]) -> list[SampleRef]:
        return [SampleRef(s.key, s.kind, s.content_hash, s.data, self.ws.work_dir) for s in samples]

    def quarantine(self, samples: Sequence[Sample], failures: dict[str, str]) -> list[Sample]:
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

    def features(self, samples: Sequence[Sample]) -> tuple[list[Sample], NDArray[np.float32]]:
        """Features of the readable samples; unreadable ones are quarantined and dropped."""
        X, failures = self.ws.feature_cache.get(self.refs(samples), self.ws.encoder, self.ws.progress)
        return self.quarantine(samples, failures), X

    def teacher_proba(self, samples: Sequence[Sample]) -> tuple[list[Sample], NDArray[np.float32]]:
        """Cached teacher probabilities of the samples the teacher can read."""
        from alloop.teachers.base import teacher_proba

        T, failures = teacher_proba(self.ws.teacher, self.ws.project().labels, self.refs(samples),
                                    self.ws.feature_cache, self.ws.progress)
        return self.quarantine(samples, failures), T
