"""What every execution backend offers: the :class:`Backend` protocol and the shared encode step.

A backend runs a round's per-shard work. The caller describes each shard by a small picklable
value (a row range and the paths of the memory-mapped files it reads); the work function reads
the files itself, so only descriptions and small results travel. :func:`encode_batch` is the one
place that turns a batch of samples into feature rows and quarantines unreadable samples; the
local loop and the Ray actors both call it, so both backends fail and succeed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from alloop.errors import SampleDecodeError
from alloop.execution.shared import SharedArray
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import Encoder, SampleRef

__all__ = ["DEFAULT_SHARD_ROWS", "Backend", "EncodedBatch", "ShardGroup", "SharedArray", "encode_batch"]

#: ``[execution] shard_rows`` when no configuration says otherwise
DEFAULT_SHARD_ROWS = 65536

S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class EncodedBatch:
    """The outcome of encoding one batch of samples.

    Attributes
    ----------
    hashes : list of str
        Content hashes of the samples that could be read, in input order.
    rows : ndarray of shape (len(hashes), dim), float32
        Their features (shape ``(0, 0)`` when no sample of the batch could be read).
    failures : dict
        ``{content hash: reason}`` for the samples the encoder could not read.
    count : int
        Samples the batch covered (read or not).
    """

    hashes: list[str]
    rows: NDArray[np.float32]
    failures: dict[str, str] = field(default_factory=dict)
    count: int = 0


def encode_batch(encoder: Encoder, batch: Sequence[SampleRef]) -> EncodedBatch:
    """Encode a batch; if a sample fails, encode one by one to find the culprits.

    A :class:`~alloop.errors.SampleDecodeError` quarantines only the sample it names (its reason
    is kept); any other exception (a wrong sample kind, a broken model) propagates.
    """
    try:
        feats = np.asarray(encoder.encode(batch, NULL_PROGRESS), dtype=np.float32)
        return EncodedBatch([s.content_hash for s in batch], feats, {}, len(batch))
    except SampleDecodeError:
        pass
    hashes: list[str] = []
    rows: list[NDArray[np.float32]] = []
    failures: dict[str, str] = {}
    for s in batch:
        try:
            one = np.asarray(encoder.encode([s], NULL_PROGRESS), dtype=np.float32)
        except SampleDecodeError as exc:
            failures[s.content_hash] = exc.reason
            continue
        hashes.append(s.content_hash)
        rows.append(one[0])
    matrix = np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return EncodedBatch(hashes, matrix, failures, len(batch))


@runtime_checkable
class ShardGroup(Protocol):
    """Stateful per-shard workers started by :meth:`Backend.shard_workers`, addressed together.

    Worker ``i`` was built as ``cls(shards[i], shared)`` and keeps its state (e.g. a shard's
    running distances) between calls. A context manager: leaving it (or :meth:`close`) ends the
    workers.
    """

    @property
    def size(self) -> int:
        """How many workers (one per shard)."""
        ...

    def call(self, method: str, *args: Any) -> list[Any]:
        """``[worker.method(*args) for worker in workers]``, run on all at once, in shard order.

        An exception raised by a worker's method surfaces as itself; a worker that died (its
        process or node) surfaces as :class:`~alloop.errors.ExecutionError` naming the shard
        and the method, and the group is then unusable.
        """
        ...

    def close(self) -> None:
        """End the workers (idempotent)."""
        ...

    def __enter__(self) -> ShardGroup: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """Runs per-shard work: in this process (``local``) or on a Ray cluster (``ray``).

    The controller, store, state machine and connectors never see which backend ran; results
    are the same on both.
    """

    #: "local" or "ray"
    name: str

    @property
    def workers(self) -> int:
        """How many shards can run at once (1 locally; the cluster's CPUs on Ray)."""
        ...

    def map_shards(
        self,
        fn: Callable[[S, Any], R],
        shards: Sequence[S],
        shared: Any = None,
        *,
        what: str,
        progress: Progress = NULL_PROGRESS,
    ) -> list[R]:
        """``[fn(shard, shared) for shard in shards]``, in shard order.

        ``fn`` is a top-level (importable) function; ``shards`` are small picklable
        descriptions; ``shared`` (e.g. a fitted model) is sent to the workers once per call.
        An exception raised by ``fn`` surfaces as itself, with its message, and is not retried.
        ``what`` labels the progress bar.
        """
        ...

    #: ``[execution] shard_rows``: rows per shard of per-shard work
    shard_rows: int

    def shard_workers(self, cls: Callable[[S, Any], Any], shards: Sequence[S], shared: Any = None, *,
                      what: str) -> ShardGroup:
        """Start one stateful worker per shard, ``cls(shard, shared)``; see :class:`ShardGroup`.

        ``cls`` is a top-level (importable) class; ``shards`` small picklable descriptions;
        ``shared`` is sent once. Locally the workers are plain objects in this process; on Ray,
        actors that hold no CPU (they run between the driver's calls, one method at a time) spread
        over the nodes. An exception raised by a constructor surfaces as itself. ``what`` names
        the work in errors.
        """
        ...

    def share(self, X: NDArray[Any]) -> SharedArray:
        """Describe ``X`` once for shard work (:class:`~alloop.execution.shared.SharedArray`):
        a memory-mapped file region travels as its path and offset, anything else as the
        array (local) or one object-store copy (Ray). Workers call ``.open()``."""
        ...

    def encode(self, encoder: Encoder, samples: Sequence[SampleRef], batch_size: int) -> Iterator[EncodedBatch]:
        """Encode ``samples`` in batches of ``batch_size``, yielding each batch's outcome in input order."""
        ...

    def close(self) -> None:
        """Release what the backend holds (a Ray connection it opened, a local cluster it started)."""
        ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...
