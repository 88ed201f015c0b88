"""On-disk feature cache: each content is encoded once per encoder fingerprint.

Layout (one folder per encoder fingerprint)::

    <cache_dir>/<fingerprint>/chunk-<id>.npy         float32 rows
    <cache_dir>/<fingerprint>/chunk-<id>.keys.json   content hashes of those rows

A chunk's keys file is written last (atomically), so a crash mid-write leaves an orphan
``.npy`` that is ignored. Rows are read back memory-mapped. Two processes may fill the same
cache at once: chunks have unique names and duplicate rows are harmless.

The samples the cache lacks are encoded by an execution backend (:mod:`alloop.execution`): in
this process by default, or by Ray Data actors on a cluster. Either way this process writes the
chunks, so the files are the same.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from alloop.execution import Backend, LocalBackend
from alloop.files import atomic_file
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import Encoder, SampleRef

logger = logging.getLogger(__name__)


def _atomic_save(path: Path, writer: Callable[[IO[bytes]], object]) -> None:
    with atomic_file(path) as fh:
        writer(fh)


class FeatureCache:
    """Features by (encoder fingerprint, content hash).

    Parameters
    ----------
    root : Path
        Cache folder (``<work_dir>/cache/features`` by default).
    chunk_rows : int
        Rows per chunk file written while encoding (a crash loses at most one chunk).
    batch_size : int
        Samples handed to the encoder per call.
    backend : Backend, optional
        Where the encoder runs (:func:`alloop.execution.open_backend`); default: in this process.
    """

    def __init__(
        self, root: Path, chunk_rows: int = 8192, batch_size: int = 256, backend: Backend | None = None
    ) -> None:
        self.root = Path(root)
        self.chunk_rows = chunk_rows
        self.batch_size = batch_size
        self.backend: Backend = backend if backend is not None else LocalBackend()
        #: number of samples the encoder was asked to encode (observable, for tests)
        self.encoded_count = 0
        self._memo: dict[Path, dict[str, tuple[Path, int]]] = {}

    def _dir(self, encoder: Encoder) -> Path:
        return self.root / encoder.fingerprint()

    def _index(self, folder: Path, refresh: bool = False) -> dict[str, tuple[Path, int]]:
        if not refresh and folder in self._memo:
            return self._memo[folder]
        index: dict[str, tuple[Path, int]] = {}
        if not folder.is_dir():
            return index
        for keys_file in sorted(folder.glob("chunk-*.keys.json")):
            npy = keys_file.with_name(keys_file.name.replace(".keys.json", ".npy"))
            hashes = json.loads(keys_file.read_text())
            for row, h in enumerate(hashes):
                index.setdefault(h, (npy, row))
        self._memo[folder] = index
        return index

    def _write_chunk(self, folder: Path, hashes: list[str], rows: list[np.ndarray]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{uuid.uuid4().hex[:12]}"
        arr = np.ascontiguousarray(np.vstack(rows), dtype=np.float32)
        _atomic_save(folder / f"{name}.npy", lambda fh: np.save(fh, arr))
        _atomic_save(folder / f"{name}.keys.json", lambda fh: fh.write(json.dumps(hashes).encode()))

    def get(
        self, samples: Sequence[SampleRef], encoder: Encoder, progress: Progress = NULL_PROGRESS
    ) -> tuple[np.ndarray, dict[str, str]]:
        """Features of ``samples`` in order, encoding what the cache lacks.

        Returns
        -------
        features : ndarray of shape (n_ok, dim), float32
            Rows of the samples that could be read, in input order.
        failures : dict
            ``{sample key: reason}`` for samples the encoder could not read (to quarantine).
        """
        folder = self._dir(encoder)
        index = self._index(folder)
        if any(s.content_hash not in index for s in samples):
            index = self._index(folder, refresh=True)  # another process may have added chunks
        todo: dict[str, SampleRef] = {}
        for s in samples:
            if s.content_hash not in index and s.content_hash not in todo:
                todo[s.content_hash] = s
        failures: dict[str, str] = {}  # content hash -> reason
        if todo:
            pending = list(todo.values())
            logger.info("Encoding %d samples (%d cached)", len(pending), len(samples) - len(pending))
            buf_h: list[str] = []
            buf_r: list[np.ndarray] = []
            with progress.task("Encoding samples", total=len(pending)) as bar:
                for part in self.backend.encode(encoder, pending, self.batch_size):
                    self.encoded_count += part.count
                    failures.update(part.failures)
                    if part.hashes:
                        buf_h += part.hashes
                        buf_r.append(part.rows)
                    bar.advance(part.count)
                    if len(buf_h) >= self.chunk_rows:
                        self._write_chunk(folder, buf_h, buf_r)
                        buf_h, buf_r = [], []
            if buf_h:
                self._write_chunk(folder, buf_h, buf_r)
            index = self._index(folder, refresh=True)
        ok = [s for s in samples if s.content_hash not in failures]
        bad = {s.key: failures[s.content_hash] for s in samples if s.content_hash in failures}
        return self._gather(ok, index), bad

    @staticmethod
    def _gather(samples: Sequence[SampleRef], index: dict[str, tuple[Path, int]]) -> np.ndarray:
        if not samples:
            return np.zeros((0, 0), dtype=np.float32)
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for pos, s in enumerate(samples):
            path, row = index[s.content_hash]
            by_file.setdefault(path, []).append((pos, row))
        arrays = {path: np.load(path, mmap_mode="r") for path in by_file}
        dim = next(iter(arrays.values())).shape[1]
        out = np.empty((len(samples), dim), dtype=np.float32)
        for path, pairs in by_file.items():
            pos, rows = np.array(pairs).T
            out[pos] = arrays[path][rows]
        return out
