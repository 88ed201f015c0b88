"""A project's vector store: the float32 files its vectors imports wrote, read by row.

A vectors import writes its matrix once (``pool/vectors-<hash>.npy``, see
:func:`alloop.pool.vectors.store_matrix`) and records it as a :class:`~alloop.store.models.VectorFile`
covering store rows ``first_row ..< first_row + rows``; each sample keeps its store row in
``Sample.row``. Rounds read features through this class: memory-mapped, shard by shard, with no
second copy in the feature cache.

Memory: :meth:`VectorStore.take` allocates ``len(rows) x dim`` float32; :meth:`VectorStore.chunks`
holds one chunk (``chunk_rows x dim``) at a time, plus the operating system's page cache of the
files (shared, reclaimable).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from alloop.errors import StoreError

__all__ = ["VectorFileInfo", "VectorStore"]


@dataclass(frozen=True)
class VectorFileInfo:
    """Where one file of the store lies (``path`` relative to the work dir) and which rows it holds."""

    path: str
    first_row: int
    rows: int
    dim: int


class VectorStore:
    """Rows of a project's vector files, memory-mapped on first use.

    Parameters
    ----------
    work_dir : Path
        The project's work dir (file paths are relative to it).
    files : sequence of VectorFileInfo
        The project's vector files, any order; their row ranges must not overlap.
    """

    def __init__(self, work_dir: Path, files: Sequence[VectorFileInfo]) -> None:
        self.work_dir = Path(work_dir)
        self.files = sorted(files, key=lambda f: f.first_row)
        dims = {f.dim for f in self.files}
        if len(dims) > 1:
            raise StoreError(
                f"The project's vector files have different lengths per row ({sorted(dims)}); all vectors "
                "of a pool must have the same length. Re-import the pool into a new project."
            )
        self.dim = dims.pop() if dims else 0
        self._starts = np.array([f.first_row for f in self.files], dtype=np.int64)
        self._ends = self._starts + np.array([f.rows for f in self.files], dtype=np.int64)
        self._maps: dict[int, NDArray[np.float32]] = {}

    def __bool__(self) -> bool:
        return bool(self.files)

    @property
    def n_rows(self) -> int:
        """One past the highest row the store holds."""
        return int(self._ends.max()) if self.files else 0

    def _map(self, i: int) -> NDArray[np.float32]:
        if i not in self._maps:
            f = self.files[i]
            path = self.work_dir / f.path
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise StoreError(
                    f"The project's vector file {str(path)!r} cannot be read ({exc}). It holds store rows "
                    f"{f.first_row}..{f.first_row + f.rows - 1}; restore it from a backup of the work dir "
                    "or import the source again."
                ) from None
            if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape != (f.rows, f.dim):
                raise StoreError(
                    f"The project's vector file {str(path)!r} holds {arr.dtype} {arr.shape}; the database "
                    f"expects float32 ({f.rows}, {f.dim}). The file was replaced: restore it or re-import."
                )
            self._maps[i] = arr
        return self._maps[i]

    def _file_of(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        idx = np.searchsorted(self._starts, rows, side="right") - 1
        bad = (idx < 0) | (rows < 0)
        ok = ~bad
        bad[ok] = rows[ok] >= self._ends[idx[ok]]
        if bad.any():
            raise StoreError(
                f"Store row {int(rows[np.flatnonzero(bad)[0]])} is in none of the project's vector files "
                f"(rows 0..{self.n_rows - 1}). The database and the work dir disagree: restore the work dir."
            )
        return idx

    def contiguous(self, rows: NDArray[np.int64]) -> NDArray[np.float32] | None:
        """A read-only memory-mapped view when ``rows`` are consecutive in one file, else None."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0 or int(rows[-1]) - int(rows[0]) != rows.size - 1 or not np.all(np.diff(rows) == 1):
            return None
        i = self._file_of(rows[:1])[0]
        if int(rows[-1]) >= self._ends[i]:
            return None
        start = int(rows[0]) - int(self._starts[i])
        return self._map(int(i))[start : start + rows.size]

    def take(self, rows: NDArray[np.int64], out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """The rows, in the order given, as a new float32 array of shape (len(rows), dim)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if out is None:
            out = np.empty((rows.size, self.dim), dtype=np.float32)
        if rows.size == 0:
            return out
        which = self._file_of(rows)
        for i in np.unique(which):
            sel = np.flatnonzero(which == i) if len(self.files) > 1 else slice(None)
            local = rows[sel] - self._starts[i]
            out[sel] = self._map(int(i))[local]
        return out

    def chunks(self, rows: NDArray[np.int64], chunk_rows: int) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """``(start, X)`` for consecutive slices ``rows[start:start + chunk_rows]``; one chunk in memory."""
        rows = np.asarray(rows, dtype=np.int64)
        for start in range(0, rows.size, chunk_rows):
            part = rows[start : start + chunk_rows]
            view = self.contiguous(part)
            yield start, (np.asarray(view) if view is not None else self.take(part))
