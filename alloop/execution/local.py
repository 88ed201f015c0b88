"""The local backend: per-shard work as a plain loop in this process (no pickling, no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from numpy.typing import NDArray

from alloop.execution.base import EncodedBatch, encode_batch
from alloop.execution.shared import SharedArray
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import Encoder, SampleRef

__all__ = ["LocalBackend"]

S = TypeVar("S")
R = TypeVar("R")


class LocalBackend:
    """Runs everything in the calling process, one shard after the other."""

    name = "local"

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
        return "LocalBackend()"
