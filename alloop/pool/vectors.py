"""Feature-vector pool source: a ``.npy`` matrix (with optional labels/keys files) or a ``.parquet``.

The matrix is converted to float32 and copied, content-addressed, into
``<work_dir>/pool/vectors-<hash>.npy``; each sample points at its row there (and the import
registers the file as part of the project's vector store, see
:class:`~alloop.store.models.VectorFile`). Rows with NaN or infinite values are quarantined.
Shape mismatches and duplicated keys refuse the import. The scan is columnar
(:class:`~alloop.pool.base.VectorScan`): no object per row.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from alloop.config import VectorSource
from alloop.errors import PoolImportError, format_list
from alloop.files import atomic_file
from alloop.pool.base import (
    RowKeys,
    VectorScan,
    encode_labels,
    label_str,
    row_keys,
    source_file,
)
from alloop.pool.texts import check_unique_keys
from alloop.progress import NULL_PROGRESS, Progress

logger = logging.getLogger(__name__)

__all__ = ["row_keys", "scan_matrix", "scan_vectors", "store_matrix"]

SUPPORTED_SUFFIXES = (".npy", ".parquet")

#: bytes of float32 rows read, hashed and written at a time
CHUNK_BYTES = 32 << 20


def store_matrix(matrix: np.ndarray, work_dir: Path) -> str:
    """Save a float32 matrix as ``pool/vectors-<sha256[:16]>.npy`` under ``work_dir``.

    The write is atomic (temporary file + :func:`os.replace`) and skipped when the file
    already exists (the name is the hash of the content) with the same shape.

    Returns
    -------
    str
        The path relative to ``work_dir``, POSIX style.
    """
    m = _float32(matrix)
    digest = hashlib.sha256(m.data).hexdigest()  # C-contiguous: its buffer is hashed without a copy
    return _store_rows(_ArrayRows(m), digest, Path(work_dir), NULL_PROGRESS)


def _nonfinite_reason(row: np.ndarray, i: int) -> str:
    nan = np.isnan(row)
    inf = np.isinf(row)
    cols = np.flatnonzero(nan | inf).tolist()
    return (
        f"row {i} has non-finite values ({int(nan.sum())} NaN, {int(inf.sum())} inf) "
        f"in column(s) {format_list(cols)}; fix or drop that row"
    )


def _float32(block: np.ndarray) -> NDArray[np.float32]:
    """A C-contiguous native float32 copy (or the block itself when it already is one)."""
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 becomes inf: quarantined
        return np.ascontiguousarray(block, dtype=np.float32)


class _Rows:
    """The rows of an (n, d) matrix as float32 chunks, read one chunk at a time.

    A chunk is valid until the chunk after the next one is read (readers reuse two buffers).
    """

    n: int
    dim: int

    def chunks(self, rows: int) -> Iterator[NDArray[np.float32]]:
        raise NotImplementedError

    def raw_bytes(self) -> tuple[Path, int] | None:
        """``(file, offset)`` when the rows are already the stored float32 bytes, contiguous in a
        file from ``offset`` (then the store is a plain file copy); None otherwise."""
        return None


class _ArrayRows(_Rows):
    """Rows of an array in memory (or memory-mapped)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix
        self.n, self.dim = matrix.shape

    def chunks(self, rows: int) -> Iterator[NDArray[np.float32]]:
        for start in range(0, self.n, rows):
            yield _float32(self.matrix[start : start + rows])


class _NpyRows(_Rows):
    """Rows of a C-order ``.npy`` file, read with plain reads (no mapping: memory stays two chunks)."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, n: int, dim: int) -> None:
        self.path, self.offset, self.dtype, self.n, self.dim = path, offset, dtype, n, dim

    def chunks(self, rows: int) -> Iterator[NDArray[np.float32]]:
        rows = min(rows, self.n)
        buffers = [np.empty((rows, self.dim), dtype=self.dtype) for _ in range(2 if self.n > rows else 1)]
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            for i, start in enumerate(range(0, self.n, rows)):
                k = min(rows, self.n - start)
                buf = buffers[i % len(buffers)][:k]
                if fh.readinto(buf.reshape(-1).view(np.uint8).data) != buf.nbytes:
                    raise PoolImportError(
                        f"{self.path} ends before row {start + k} of the {self.n} its header announces: "
                        "the file is truncated. Save the matrix again (numpy.save)."
                    )
                yield _float32(buf)

    def raw_bytes(self) -> tuple[Path, int] | None:
        native_f32 = self.dtype == np.dtype(np.float32) and self.dtype.isnative
        return (self.path, self.offset) if native_f32 else None


def _chunk_rows(dim: int) -> int:
    return max(1, CHUNK_BYTES // (4 * dim))


def _npy_header(n: int, dim: int) -> bytes:
    """The header :func:`numpy.save` writes for a C-order float32 (n, dim) array."""
    out = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n, dim)}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue()


def _hash_rows(
    rows: _Rows, reasons: dict[int, str], progress: Progress, sink: BinaryIO | None = None
) -> tuple[str, NDArray[np.uint8]]:
    """sha256 of the whole float32 matrix (hex) and of each row (raw digests, shape (n, 32)).

    Rows with NaN/inf are added to ``reasons`` (a reason already there is kept). With ``sink``,
    the float32 rows are written to it too. The whole-matrix hash and the write run in a second
    thread (both release the GIL) while this one hashes the rows.
    """
    whole = hashlib.sha256()
    digests = np.empty((rows.n, 32), dtype=np.uint8)
    sha256 = hashlib.sha256

    def consume(chunk: NDArray[np.float32]) -> None:
        whole.update(chunk.data)  # C-contiguous: hashed without a copy
        if sink is not None:
            sink.write(chunk.reshape(-1).view(np.uint8).data)

    start = 0
    with progress.task("Hashing vectors", total=rows.n) as bar, ThreadPoolExecutor(1) as pool:
        previous: Future[None] | None = None
        for chunk in rows.chunks(_chunk_rows(rows.dim)):
            job = pool.submit(consume, chunk)
            k = len(chunk)
            raw, step = chunk.reshape(-1).view(np.uint8).data, 4 * rows.dim
            digests[start : start + k] = np.frombuffer(
                b"".join([sha256(raw[j : j + step]).digest() for j in range(0, k * step, step)]), dtype=np.uint8
            ).reshape(k, 32)
            bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
            for j in bad.tolist():
                if start + j not in reasons:
                    reasons[start + j] = _nonfinite_reason(chunk[j], start + j)
            start += k
            if previous is not None:
                previous.result()  # its buffer is read into next
            previous = job
            bar.advance(k)
        if previous is not None:
            previous.result()
    return whole.hexdigest(), digests


def _stored_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of a stored float32 ``.npy`` file; ``None`` if it cannot be read as one."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return tuple(arr.shape) if arr.dtype == np.float32 and not np.isfortran(arr) else None


def _already_stored(target: Path, n: int, dim: int) -> bool:
    """Whether ``target`` holds the (n, dim) matrix (its name is the content's hash)."""
    if not target.is_file():
        return False
    shape = _stored_shape(target)
    if shape == (n, dim):
        return True
    if shape is not None:
        raise PoolImportError(
            f"{target} already holds a matrix of shape {shape} with the same bytes as this "
            f"source's ({n}, {dim}). A pool's vectors must keep their length: "
            "import this source into a new project (another work_dir)."
        )
    logger.warning("%s cannot be read; writing it again", target)
    return False


def _store_rows(rows: _Rows, digest: str, work_dir: Path, progress: Progress) -> str:
    """Write the rows as ``pool/vectors-<digest[:16]>.npy`` unless that file already holds them."""
    rel = f"pool/vectors-{digest[:16]}.npy"
    target = Path(work_dir) / rel
    if _already_stored(target, rows.n, rows.dim):
        return rel
    with progress.task("Storing vectors", total=rows.n) as bar, atomic_file(target) as fh:
        fh.write(_npy_header(rows.n, rows.dim))
        for chunk in rows.chunks(_chunk_rows(rows.dim)):
            fh.write(chunk.reshape(-1).view(np.uint8).data)
            bar.advance(len(chunk))
    return rel


def _maybe_stored(work_dir: Path, n: int, dim: int) -> bool:
    """Whether a stored matrix of this shape exists (then this source is likely one of them)."""
    return any(_stored_shape(p) == (n, dim) for p in (Path(work_dir) / "pool").glob("vectors-*.npy"))


class _PendingStore:
    """A stored matrix being copied to a temporary file in a background thread; :meth:`wait`
    returns once it is synced to disk under its content name (or raises the copy's error)."""

    def __init__(self, future: Future[None], tmp: Path, target: Path, n: int, dim: int) -> None:
        self.future, self.tmp, self.target, self.n, self.dim = future, tmp, target, n, dim
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.future.result()
            if not _already_stored(self.target, self.n, self.dim):
                os.replace(self.tmp, self.target)
        finally:
            self.tmp.unlink(missing_ok=True)


def _copy_raw(src: Path, offset: int, nbytes: int, tmp: Path, header: bytes) -> None:
    """Write ``header`` then ``nbytes`` of ``src`` from ``offset`` to ``tmp``, and sync it: a copy in
    the kernel (:func:`os.copy_file_range`, no bytes through Python) where the file system allows."""
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        fout.write(header)
        fout.flush()
        copied = 0
        try:
            while copied < nbytes:
                k = os.copy_file_range(fin.fileno(), fout.fileno(), min(nbytes - copied, 1 << 30), offset + copied)
                if k == 0:
                    break
                copied += k
        except OSError:  # no in-kernel copy between these files (another file system, an old kernel)
            fout.seek(len(header) + copied)
            fin.seek(offset + copied)
            while copied < nbytes and (block := fin.read(min(CHUNK_BYTES, nbytes - copied))):
                fout.write(block)
                copied += len(block)
        if copied != nbytes:
            raise PoolImportError(
                f"{src} ended after {copied} of the {nbytes} bytes of vectors its header announces while "
                "it was copied: the file is truncated, or was changed during the import. Save it again "
                "(numpy.save) and import again."
            )
        fout.flush()
        os.fsync(fout.fileno())


def _hash_and_store(
    rows: _Rows, reasons: dict[int, str], work_dir: Path, progress: Progress, *, wait: bool = True
) -> tuple[str, NDArray[np.uint8], _PendingStore | None]:
    """Hash the rows and store them; the stored file (relative path), the row digests, and the
    copy still running when ``wait`` is false (None when the file is complete).

    A first import reads the source once: the rows are written to a temporary file while they
    are hashed, which takes the content's name at the end. A ``.npy`` source whose bytes are
    already the stored float32 rows is copied by the kernel in a second thread instead, while
    this one hashes (with ``wait=False`` the copy goes on after this returns: the importer
    waits for it before it commits). When a stored matrix of the same shape exists (a
    re-import, most likely), the rows are hashed first and written (a second read) only if
    their file is not there.
    """
    if _maybe_stored(work_dir, rows.n, rows.dim):
        digest, digests = _hash_rows(rows, reasons, progress)
        return _store_rows(rows, digest, work_dir, progress), digests, None
    pool = Path(work_dir) / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    tmp = pool / f".vectors-{uuid.uuid4().hex}.tmp"
    raw = rows.raw_bytes()
    if raw is not None:
        copier = ThreadPoolExecutor(1, thread_name_prefix="alloop-store")
        job = copier.submit(_copy_raw, raw[0], raw[1], 4 * rows.n * rows.dim, tmp, _npy_header(rows.n, rows.dim))
        copier.shutdown(wait=False)
        try:
            digest, digests = _hash_rows(rows, reasons, progress)
        except BaseException:
            wait_all([job])
            tmp.unlink(missing_ok=True)
            raise
        rel = f"pool/vectors-{digest[:16]}.npy"
        pending = _PendingStore(job, tmp, Path(work_dir) / rel, rows.n, rows.dim)
        if wait:
            pending.wait()
            return rel, digests, None
        return rel, digests, pending
    try:
        with open(tmp, "wb") as fh:
            fh.write(_npy_header(rows.n, rows.dim))
            digest, digests = _hash_rows(rows, reasons, progress, sink=fh)
            fh.flush()
            os.fsync(fh.fileno())
        rel = f"pool/vectors-{digest[:16]}.npy"
        if not _already_stored(Path(work_dir) / rel, rows.n, rows.dim):
            os.replace(tmp, Path(work_dir) / rel)
    finally:
        tmp.unlink(missing_ok=True)
    return rel, digests, None


def _scan_rows(
    rows: _Rows,
    keys: Sequence[str],
    label_codes: NDArray[np.int32] | None,
    label_values: list[str],
    work_dir: Path,
    *,
    label_names: list[str] | None,
    reasons: dict[int, str] | None,
    progress: Progress,
    wait: bool = True,
) -> VectorScan:
    reasons = dict(reasons or {})
    rel, digests, pending = _hash_and_store(rows, reasons, work_dir, progress, wait=wait)
    reasons = dict(sorted(reasons.items()))
    if reasons:
        logger.info(
            "%d of %d vector row(s) quarantined: %s", len(reasons), rows.n,
            format_list(keys[i] for i in reasons),
        )
    if label_names is None and label_codes is not None:
        label_names = sorted(label_values) or None
    return VectorScan(
        path=rel, dim=rows.dim, keys=keys, digests=digests, label_codes=label_codes,
        label_values=label_values, reasons=reasons, label_names=label_names, pending=pending,
    )


def scan_matrix(
    matrix: np.ndarray,
    keys: Sequence[str],
    labels: Sequence[str | None] | None,
    work_dir: Path,
    *,
    label_names: list[str] | None = None,
    reasons: dict[int, str] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> VectorScan:
    """Turn a checked matrix with keys (and labels) into a :class:`~alloop.pool.base.VectorScan`.

    Parameters
    ----------
    matrix : ndarray of shape (n, d)
        Converted to float32 (chunk by chunk) and stored as ``pool/vectors-<sha16>.npy``.
    keys : sequence of str, length n
        Unique keys (checked by the caller).
    labels : sequence of (str or None), length n, or None
    work_dir : Path
    label_names : list of str, optional
        Label order; default the sorted distinct labels.
    reasons : dict, optional
        Row -> reason for rows to quarantine whatever their values (e.g. null vectors).
    progress : Progress

    Returns
    -------
    VectorScan
        Each row's sample has ``data = {"vectors": "pool/vectors-<hash>.npy", "row": i}`` and
        ``content_hash`` = sha256 of the row's float32 bytes. Rows with NaN/inf are quarantined.
    """
    codes, values = encode_labels(labels) if labels is not None else (None, [])
    return _scan_rows(_ArrayRows(matrix), keys, codes, values, work_dir,
                      label_names=label_names, reasons=reasons, progress=progress)


#: characters of a text file read at a time (labels are encoded block by block)
_TEXT_BLOCK = 1 << 24


def _line_blocks(path: Path, what: str) -> Iterator[list[str]]:
    """The file's lines, stripped, a block at a time (one entry per line, as iterating the file gives)."""
    if not path.is_file():
        raise PoolImportError(
            f"The {what} file {str(path)!r} does not exist. Fix `{what}_path` in [pool.source] of "
            "alloop.toml."
        )
    try:
        with path.open("r", encoding="utf-8-sig") as fh:
            while block := fh.readlines(_TEXT_BLOCK):
                yield list(map(str.strip, block))
    except UnicodeDecodeError as exc:
        raise PoolImportError(f"{path}: not valid UTF-8 ({exc.reason}). Save it as UTF-8.") from None


def _read_lines(path: Path, what: str) -> list[str]:
    return [line for block in _line_blocks(path, what) for line in block]


def _read_label_lines(path: Path) -> tuple[NDArray[np.int32], list[str]]:
    """Label codes of a ``.txt`` file, encoded block by block (an empty line: no label)."""
    index: dict[str, int] = {"": -1}
    values: list[str] = []
    parts: list[NDArray[np.int32]] = []
    for block in _line_blocks(path, "labels"):
        for value in dict.fromkeys(block):
            if value not in index:
                index[value] = len(values)
                values.append(value)
        parts.append(np.fromiter(map(index.__getitem__, block), dtype=np.int32, count=len(block)))
    return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)), values


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PoolImportError(
            f"The {what} file {str(path)!r} does not exist. Fix the path in [pool.source] of "
            "alloop.toml."
        ) from None
    except (ValueError, OSError, EOFError) as exc:
        raise PoolImportError(
            f"Cannot read {str(path)!r} as a .npy array: {exc}. Save it with numpy.save "
            "(numeric or string dtype; object arrays are not accepted)."
        ) from None


def _read_labels(path: Path, n: int) -> tuple[NDArray[np.int32], list[str]]:
    """Label codes and values (see :func:`~alloop.pool.base.encode_labels`) of a labels file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = _load_npy(path, "labels")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise PoolImportError(
                f"{path}: labels must be a 1-D array with one label per row, got shape {arr.shape}."
            )
        _check_label_count(path, len(arr), n)
        uniques, inverse = np.unique(arr, return_inverse=True)  # each distinct value is read once
        table, values = encode_labels([label_str(v) for v in uniques.tolist()])
        return table[inverse.reshape(-1)], values
    if suffix == ".txt":
        codes, values = _read_label_lines(path)
        _check_label_count(path, len(codes), n)
        return codes, values
    raise PoolImportError(
        f"Cannot read labels from {str(path)!r}: unsupported extension {suffix or '(none)'!r}. "
        "Supported: .npy (1-D array), .txt (one label per line)."
    )


def _check_label_count(path: Path, count: int, n: int) -> None:
    if count != n:
        raise PoolImportError(
            f"{path} has {count} labels but the vectors have {n} rows. Give exactly one "
            "label per row (an empty line in a .txt means 'no label')."
        )


def _read_keys(path: Path, n: int) -> list[str]:
    if path.suffix.lower() != ".txt":
        raise PoolImportError(f"Cannot read keys from {str(path)!r}: expected a .txt file, one key per line.")
    keys = _read_lines(path, "keys")
    for lineno, key in enumerate(keys, start=1):
        if not key:
            raise PoolImportError(f"{path}, line {lineno}: empty key. Every row needs a key.")
    if len(keys) != n:
        raise PoolImportError(
            f"{path} has {len(keys)} keys but the vectors have {n} rows. Give exactly one key "
            "per row."
        )
    if len(set(keys)) != len(keys):
        check_unique_keys(
            ((k, i) for i, k in enumerate(keys, start=1)), str(path), "line",
            "Make every line of the keys file unique.",
        )
    return keys


def _check_matrix(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 2:
        raise PoolImportError(
            f"{path}: expected a 2-D matrix (rows x features), got an array of shape {arr.shape} "
            f"({arr.ndim}-D). Reshape it, e.g. x.reshape(len(x), -1), and save it again."
        )
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == np.bool_):
        raise PoolImportError(
            f"{path}: expected a numeric matrix, got dtype {arr.dtype}. Save float values."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise PoolImportError(f"{path}: the matrix is empty (shape {arr.shape}); nothing to import.")
    return arr


def _open_npy(path: Path) -> np.ndarray:
    """The ``.npy`` matrix memory-mapped (only its header is read), or loaded when it cannot be mapped."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        pass
    return _load_npy(path, "vectors")  # the error message, or an array that cannot be mapped (empty)


def _read_npy_source(
    source: VectorSource, path: Path
) -> tuple[_Rows, Sequence[str], tuple[NDArray[np.int32], list[str]] | None]:
    matrix = _check_matrix(_open_npy(path), path)
    n, dim = matrix.shape
    if isinstance(matrix, np.memmap) and matrix.flags.c_contiguous:
        rows: _Rows = _NpyRows(path, int(matrix.offset), matrix.dtype, n, dim)
        del matrix  # the mapping: rows are read with plain reads, one chunk at a time
    else:
        rows = _ArrayRows(matrix)  # Fortran order (or not mappable): sliced from the array
    labels = _read_labels(Path(source.labels_path), n) if source.labels_path else None
    keys = _read_keys(Path(source.keys_path), n) if source.keys_path else RowKeys("row", n)
    return rows, keys, labels


def scan_vectors(
    source: VectorSource, work_dir: Path, progress: Progress = NULL_PROGRESS, *, wait: bool = True
) -> VectorScan:
    """Read a ``.npy`` matrix or a ``.parquet`` table of vectors, as columns.

    Parameters
    ----------
    source : VectorSource
        ``.npy``: a 2-D numeric matrix; ``labels_path`` (.npy 1-D or .txt, one label per row)
        and ``keys_path`` (.txt, one key per line) are optional, default keys are
        ``"row-000123"``. ``.parquet``: ``vector_column`` (list of numbers per row),
        ``key_column`` and ``label_column``; a missing key/label column is an error unless it
        has its default name (``"key"`` -> row keys, ``"label"`` -> no labels).
    work_dir : Path
        The matrix is copied to ``<work_dir>/pool/vectors-<hash>.npy`` (float32), unless that
        file is already there.
    progress : Progress
    wait : bool
        False: return as soon as the rows are hashed, while a float32 ``.npy`` is still being
        copied in the background (:meth:`~alloop.pool.base.VectorScan.wait_stored`, which
        :func:`~alloop.pool.importer.import_pool` calls before it commits).

    Returns
    -------
    VectorScan
        See :func:`scan_matrix`.

    Notes
    -----
    A ``.npy`` matrix in C order is read in chunks of about 32 MiB (a float32 one is copied
    by the kernel meanwhile, :func:`os.copy_file_range`), so memory holds the per-row digests
    (32 bytes a row), the keys and label codes, not the matrix. Other inputs (parquet,
    Fortran-order ``.npy``) are loaded whole.

    Raises
    ------
    PoolImportError
        Missing/unreadable file, unsupported extension, not 2-D, label/key count different from
        the row count (both numbers named), duplicated keys.
    """
    path, suffix = source_file(source.path, SUPPORTED_SUFFIXES, "vectors")
    reasons: dict[int, str] = {}
    if suffix == ".npy":
        rows, keys, labels = _read_npy_source(source, path)
    else:
        from alloop.pool.parquet import read_parquet_source

        matrix, keys, label_list, reasons = read_parquet_source(source, path)
        rows = _ArrayRows(matrix)
        labels = encode_labels(label_list) if label_list is not None else None
    codes, values = labels if labels is not None else (None, [])
    return _scan_rows(rows, keys, codes, values, work_dir, label_names=None, reasons=reasons, progress=progress,
                      wait=wait)
