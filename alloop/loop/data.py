"""The pool as a step reads it: sample arrays, their features (streamed), teacher probabilities.

Samples travel as :class:`~alloop.store.arrays.SampleArrays` (ids and vector-store rows), one
query per step. Features come from the project's vector store when the encoder is ``vector``
(memory-mapped, no copy, see :class:`~alloop.features.store.VectorStore`), else from the
content-addressed feature cache (encoding what it lacks). :meth:`PoolData.chunks` streams them
``shard_rows`` at a time, so a step holds one shard of features, not the pool.

Unreadable samples (a corrupt image, a text the encoder cannot take) are quarantined in the
database with the reason and dropped, so one bad file never stops a round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import update
from sqlmodel import select

from alloop.features.store import VectorFileInfo, VectorStore
from alloop.protocols import SampleRef
from alloop.store.arrays import (
    SampleArrays,
    arrays_of,
    count_candidates,
    reference_arrays,
    sample_arrays,
    sample_records,
    selected_array,
)
from alloop.store.engine import session_scope
from alloop.store.models import Project, Sample, VectorFile
from alloop.store.queries import training_labels

if TYPE_CHECKING:
    from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["PoolData"]

_REF_COLUMNS = ("key", "kind", "content_hash", "data")
T = TypeVar("T")


class PoolData:
    """Sample arrays, features and teacher outputs of one project."""

    def __init__(self, ws: Workspace, *, sole_writer: bool = False) -> None:
        self.ws = ws
        self._stores: dict[int, VectorStore] = {}
        #: sole writer (a simulation's private database): query results kept until this process
        #: changes what they read (a quarantine, an ingest); None: every call queries
        self._memo: dict[tuple[Any, ...], Any] | None = {} if sole_writer else None

    def _kept(self, key: tuple[Any, ...], query: Callable[[], T]) -> T:
        if self._memo is None:
            return query()
        if key not in self._memo:
            self._memo[key] = query()
        return self._memo[key]  # type: ignore[no-any-return]

    def forget(self) -> None:
        """Drop every kept query result (after a failure: what the database holds is read again)."""
        if self._memo is not None:
            self._memo.clear()

    def labels_changed(self) -> None:
        """Annotations were stored: the kept training labels are stale."""
        if self._memo is not None:
            for key in [k for k in self._memo if k[0] == "labels"]:
                del self._memo[key]

    # -- which samples ---------------------------------------------------------------------------
    def arrays(self, project_id: int, split: str = "pool", *, with_reference: bool = False) -> SampleArrays:
        """The readable samples of ``split`` in id order (held-out ones are ``split="test"``)."""
        return self._kept(("arrays", project_id, split, with_reference),
                          lambda: sample_arrays(self.ws.engine, project_id, split, with_reference=with_reference))

    def reference(self, project_id: int, split: str, labels: Sequence[str]) -> tuple[SampleArrays, NDArray[np.int64]]:
        """The readable samples of ``split`` with a known label in ``labels``, and those labels' indexes."""
        return self._kept(("reference", project_id, split, tuple(labels)),
                          lambda: reference_arrays(self.ws.engine, project_id, split, labels))

    def arrays_among(self, project_id: int, ids: Sequence[int] | NDArray[np.int64]) -> SampleArrays:
        """The readable pool samples among ``ids`` (a modest set, e.g. the labeled ones), in id order.

        A sole writer takes them from the kept pool arrays; otherwise the database is asked."""
        if self._memo is None:
            return arrays_of(self.ws.engine, ids)
        pool = self.arrays(project_id)
        wanted = np.fromiter((int(i) for i in ids), dtype=np.int64, count=len(ids))
        return pool.take(np.isin(pool.ids, wanted))

    def selected(self, project_id: int) -> NDArray[np.int64]:
        """Ids of every sample selected so far in the project, ascending."""
        return self._kept(("selected", project_id), lambda: selected_array(self.ws.engine, project_id))

    def selections_stored(self, project_id: int, ids: NDArray[np.int64]) -> None:
        """``ids`` were selected (committed): a sole writer adds them to the kept selected ids."""
        if self._memo is not None and ("selected", project_id) in self._memo:
            self._memo[("selected", project_id)] = np.union1d(self._memo[("selected", project_id)], ids)

    def candidate_counts(self, project_id: int) -> tuple[int, int]:
        """``(selected so far, readable pool samples never selected)``
        (:func:`~alloop.store.arrays.count_candidates`; a sole writer counts its kept arrays)."""
        if self._memo is None:
            return count_candidates(self.ws.engine, project_id)
        chosen = self.selected(project_id)
        pool = self.arrays(project_id)
        return len(chosen), int(len(pool) - np.count_nonzero(np.isin(pool.ids, chosen, assume_unique=True)))

    def training_labels(self, project: Project, rule: str) -> dict[int, str]:
        """The aggregated label of every labeled sample (:func:`~alloop.store.queries.training_labels`)."""
        def query() -> dict[int, str]:
            with session_scope(self.ws.engine) as s:
                return training_labels(s, project, rule)

        return dict(self._kept(("labels", project.id, rule), query))

    def refs(self, ids: NDArray[np.int64]) -> list[SampleRef]:
        """What an encoder reads of each sample, in the order of ``ids``."""
        recs = sample_records(self.ws.engine, ids, _REF_COLUMNS)
        out = []
        for i in ids:
            key, kind, content_hash, data = recs[int(i)]
            out.append(SampleRef(key, kind, content_hash, data, self.ws.work_dir))
        return out

    def store(self, project_id: int, need_rows: int = 0) -> VectorStore:
        """The project's vector store (its vectors imports' files); read again from the database when
        the one this process knows ends before ``need_rows`` (an import added files since)."""
        known = self._stores.get(project_id)
        if known is not None and known.n_rows >= need_rows and known:
            return known
        with session_scope(self.ws.engine) as s:
            files = s.exec(select(VectorFile).where(VectorFile.project_id == project_id)).all()
        store = VectorStore(self.ws.work_dir, [VectorFileInfo(f.path, f.first_row, f.rows, f.dim) for f in files])
        self._stores[project_id] = store
        return store

    def vector_store(self, project_id: int, samples: SampleArrays) -> VectorStore | None:
        """The vector store when it can serve these samples' features (the ``vector`` encoder)."""
        if self.ws.config.features.name != "vector" or not samples.has_rows:
            return None
        store = self.store(project_id, int(samples.rows.max()) + 1)
        return store if store else None

    # -- features --------------------------------------------------------------------------------
    def quarantine(self, failures: dict[int, tuple[str, str]]) -> None:
        """Mark unreadable samples (``{sample id: (key, reason)}``) quarantined, with the reason."""
        if not failures:
            return
        with session_scope(self.ws.engine) as s:
            for sid, (_, reason) in failures.items():
                s.execute(update(Sample).where(Sample.id == sid).values(status="quarantined", reason=reason))  # type: ignore[arg-type]
        if self._memo is not None:
            self._memo.clear()
        for key, reason in failures.values():
            logger.warning("Quarantined %s: %s", key, reason)

    def _encode(self, samples: SampleArrays) -> tuple[SampleArrays, NDArray[np.float32]]:
        refs = self.refs(samples.ids)
        X, failures = self.ws.feature_cache.get(refs, self.ws.encoder, self.ws.progress)
        if not failures:
            return samples, X
        bad = {int(i): (r.key, failures[r.key]) for i, r in zip(samples.ids, refs) if r.key in failures}
        self.quarantine(bad)
        keep = np.array([int(i) not in bad for i in samples.ids], dtype=bool)
        return samples.take(keep), X

    def features(self, project_id: int, samples: SampleArrays) -> tuple[SampleArrays, NDArray[np.float32]]:
        """Features of the readable samples (in memory: ``len(samples) x d``); unreadable ones are
        quarantined and dropped from the returned arrays."""
        store = self.vector_store(project_id, samples)
        if store is not None:
            view = store.contiguous(samples.rows)
            return samples, (view if view is not None else store.take(samples.rows))
        if not len(samples):
            return samples, np.zeros((0, 0), dtype=np.float32)
        return self._encode(samples)

    def chunks(self, project_id: int, samples: SampleArrays, chunk_rows: int | None = None
               ) -> Iterator[tuple[SampleArrays, NDArray[np.float32]]]:
        """``(samples of the chunk, their features)``, ``chunk_rows`` at a time, in order; unreadable
        samples are quarantined and left out of their chunk."""
        chunk_rows = chunk_rows or self.ws.config.execution.shard_rows
        store = self.vector_store(project_id, samples)
        for start in range(0, len(samples), chunk_rows):
            part = samples.take(slice(start, start + chunk_rows))
            if store is not None:
                view = store.contiguous(part.rows)
                yield part, (np.asarray(view) if view is not None else store.take(part.rows))
            else:
                yield self._encode(part)

    def teacher_proba(self, samples: SampleArrays) -> tuple[SampleArrays, NDArray[np.float32]]:
        """Cached teacher probabilities of the samples the teacher can read."""
        from alloop.teachers.base import teacher_proba

        refs = self.refs(samples.ids)
        T, failures = teacher_proba(self.ws.teacher, self.ws.project().labels, refs,
                                    self.ws.feature_cache, self.ws.progress)
        if not failures:
            return samples, T
        bad = {int(i): (r.key, failures[r.key]) for i, r in zip(samples.ids, refs) if r.key in failures}
        self.quarantine(bad)
        return samples.take(np.array([int(i) not in bad for i in samples.ids], dtype=bool)), T
