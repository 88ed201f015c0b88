"""Arrays that shard work opens where it runs, without shipping the bytes through pickles.

A selection kernel that runs per shard (the distributed k-center greedy, IDEAL's neighbour
search, OFDS's k-means) needs the pool's features on every worker. :meth:`Backend.share`
describes an array once:

* an array that is a C-ordered view of a memory-mapped file (a vector store, a round's score
  files) travels as ``(path, byte offset, shape, dtype)``: the worker maps the same bytes;
* any other array stays in the process (local backend) or is put in Ray's object store once
  (shared memory on a node, zero-copy reads).

``SharedArray.open()`` gives the worker a read-only array with the same values.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["SharedArray", "file_backing"]


@dataclass(frozen=True)
class SharedArray:
    """A read-only array that shard work can open: a file region, an in-process array, or a
    Ray object reference.

    Attributes
    ----------
    shape : tuple of int
    dtype : str
    path : str or None
        The memory-mapped file holding the bytes (C order, from ``offset``).
    offset : int
        Byte offset of the first element in ``path``.
    ref : Any
        The array itself (local backend) or a Ray ``ObjectRef`` to it, when ``path`` is None.
    """

    shape: tuple[int, ...]
    dtype: str
    path: str | None = None
    offset: int = 0
    ref: Any = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def open(self) -> NDArray[Any]:
        """The array, read-only (memory-mapped when it lives in a file)."""
        if self.path is not None:
            if self.nbytes == 0:
                return np.empty(self.shape, self.dtype)
            return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        obj = self.ref
        if not isinstance(obj, np.ndarray):  # a Ray ObjectRef
            import ray

            obj = ray.get(obj)
        return np.asarray(obj)

    @classmethod
    def in_process(cls, X: NDArray[Any]) -> SharedArray:
        return cls(tuple(int(s) for s in X.shape), X.dtype.str, ref=X)


def file_backing(X: NDArray[Any]) -> tuple[Path, int] | None:
    """``(file, byte offset)`` when ``X`` is a C-contiguous view of a memory-mapped file, else None.

    Follows ``X.base`` to the :class:`numpy.memmap` that owns the mapping (``np.load(...,
    mmap_mode="r")``, its slices, ``np.asarray`` views of them); a copy, a strided view or an
    array built in memory has none.
    """
    if not isinstance(X, np.ndarray) or not X.flags.c_contiguous:
        return None
    base: Any = X
    while isinstance(base, np.ndarray) and not isinstance(base.base, mmap.mmap):
        if base.base is None:
            return None
        base = base.base
    if not isinstance(base, np.memmap) or base.filename is None:
        return None
    start = X.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if start < 0 or start + X.nbytes > base.nbytes:
        return None
    return Path(base.filename), int(base.offset) + int(start)
