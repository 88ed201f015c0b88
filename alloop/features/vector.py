"""The ``vector`` encoder: pre-computed feature rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from alloop.errors import SampleDecodeError
from alloop.features.base import EncoderParams, check_kinds
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

__all__ = ["VectorEncoder"]


def _resolve(path: str, work_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(work_dir) / p


class VectorEncoder(EncoderParams):
    """Features are the stored vectors themselves (``vectors`` pool sources, tabular sets).

    Reads the rows from the work-dir ``.npy`` files named in each sample's data
    (``{"vectors": "pool/vectors-<hash>.npy", "row": i}``), memory-mapped, one file at a time.
    Takes no parameters.
    """

    name: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"

    def fingerprint(self) -> str:
        return self._fingerprint()

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Return the samples' rows, shape (len(samples), d), float32, in input order.

        Raises
        ------
        ConfigError
            A sample is not a vector sample.
        SampleDecodeError
            A file is missing/unreadable, a row is out of range, or dimensions differ.
        """
        check_kinds(samples, "vector", self.name)
        groups: dict[Path, list[tuple[int, int, str]]] = {}
        for pos, s in enumerate(samples):
            rel, row = s.data.get("vectors"), s.data.get("row")
            if not isinstance(rel, str) or isinstance(row, bool) or not isinstance(row, int):
                raise SampleDecodeError(
                    s.key, f"expected data {{'vectors': <path>, 'row': <int>}}, got {s.data!r}"
                )
            groups.setdefault(_resolve(rel, s.work_dir), []).append((pos, row, s.key))
        out: np.ndarray | None = None
        with progress.task("Reading vectors", total=len(samples)) as bar:
            for path, entries in groups.items():
                try:
                    matrix = np.load(path, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError, EOFError) as exc:
                    raise SampleDecodeError(entries[0][2], f"cannot read {path}: {exc}") from exc
                if matrix.ndim != 2:
                    raise SampleDecodeError(entries[0][2], f"{path} is not a 2-D matrix (shape {matrix.shape})")
                if out is None:
                    out = np.empty((len(samples), matrix.shape[1]), dtype=np.float32)
                elif matrix.shape[1] != out.shape[1]:
                    raise SampleDecodeError(
                        entries[0][2],
                        f"{path} has {matrix.shape[1]} features per row but other samples have "
                        f"{out.shape[1]}; all vectors of a pool must have the same length",
                    )
                positions = np.array([e[0] for e in entries], dtype=np.int64)
                rows = np.array([e[1] for e in entries], dtype=np.int64)
                bad = np.flatnonzero((rows < 0) | (rows >= matrix.shape[0]))
                if bad.size:
                    e = entries[int(bad[0])]
                    raise SampleDecodeError(e[2], f"row {e[1]} is out of range: {path} has {matrix.shape[0]} rows")
                out[positions] = matrix[rows]
                bar.advance(len(entries))
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)
