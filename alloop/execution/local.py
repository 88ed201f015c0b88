"""The local backend: per-shard work as a plain loop in this process (no pickling, no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from numpy.typing import NDArray

from alloop.execution.base import DEFAULT_SHARD_ROWS, EncodedBatch, encode_batch
from alloop.execution.shared import SharedArray
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import Encoder, SampleRef

__all__ = ["LocalBackend", "LocalShardGroup"]

S = TypeVar("S")
R = TypeVar("R")


class LocalShardGroup:
    """Per-shard workers as plain objects in this process; a call runs them one after the other."""

    def __init__(self, workers: list[Any]) -> None:
        self._workers: list[Any] | None = workers

    @property
    def size(self) -> int:
        return 0 if self._workers is None else len(self._workers)

    def call(self, method: str, *args: Any) -> list[Any]:
        if self._workers is None:
            raise RuntimeError("This shard group is closed.")
        return [getattr(w, method)(*args) for w in self._workers]

    def close(self) -> None:
        self._workers = None

    def __enter__(self) -> LocalShardGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBackend:
    """Runs everything in the calling process, one shard after the other.

    Parameters
    ----------
    shard_rows : int
        ``[execution] shard_rows``: rows per shard of per-shard work.
    """

    name = "local"

    def __init__(self, shard_rows: int = DEFAULT_SHARD_ROWS) -> None:
        self.shard_rows = int(shard_rows)

    @property
    def workers(self) -> int:
        return 1

    def map_shards(
        self,
        fn: Callable[[S, Any], R],
        shards: Sequence[S],
        shared: Any = None,
        *,
        what: str,
        progress: Progress = NULL_PROGRESS,
    ) -> list[R]:
        out: list[R] = []
        with progress.task(what, total=len(shards)) as bar:
            for shard in shards:
                out.append(fn(shard, shared))
                bar.advance()
        return out

    def shard_workers(self, cls: Callable[[S, Any], Any], shards: Sequence[S], shared: Any = None, *,
                      what: str) -> LocalShardGroup:
        return LocalShardGroup([cls(shard, shared) for shard in shards])

    def share(self, X: NDArray[Any]) -> SharedArray:
        return SharedArray.in_process(X)

    def encode(self, encoder: Encoder, samples: Sequence[SampleRef], batch_size: int) -> Iterator[EncodedBatch]:
        for start in range(0, len(samples), batch_size):
            yield encode_batch(encoder, samples[start : start + batch_size])

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalBackend(shard_rows={self.shard_rows})"
