"""Feature-vector pool source: a ``.npy`` matrix (with optional labels/keys files) or a ``.parquet``.

The matrix is converted to float32 and copied, content-addressed, into
``<work_dir>/pool/vectors-<hash>.npy``; each sample points at its row there. Rows with NaN or
infinite values are quarantined. Shape mismatches and duplicated keys refuse the import.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import NDArray

from alloop.config import VectorSource
from alloop.errors import PoolImportError, format_list
from alloop.files import atomic_file
from alloop.pool.base import (
    PoolItem,
    QuarantinedItem,
    ScanResult,
    label_str,
    row_keys,
    sha256_bytes,
    source_file,
)
from alloop.pool.texts import check_unique_keys
from alloop.progress import NULL_PROGRESS, Progress

logger = logging.getLogger(__name__)

__all__ = ["row_keys", "scan_matrix", "scan_vectors", "store_matrix"]

SUPPORTED_SUFFIXES = (".npy", ".parquet")


def store_matrix(matrix: np.ndarray, work_dir: Path) -> str:
    """Save a float32 matrix as ``pool/vectors-<sha256[:16]>.npy`` under ``work_dir``.

    The write is atomic (temporary file + :func:`os.replace`) and skipped when the file
    already exists (the name is the hash of the content).

    Returns
    -------
    str
        The path relative to ``work_dir``, POSIX style.
    """
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    digest = hashlib.sha256(matrix.data).hexdigest()[:16]  # C-contiguous: its buffer is hashed without a copy
    rel = f"pool/vectors-{digest}.npy"
    target = Path(work_dir) / rel
    if target.is_file():
        return rel
    with atomic_file(target) as fh:
        np.save(fh, matrix, allow_pickle=False)
    return rel


def _nonfinite_reason(row: np.ndarray, i: int) -> str:
    nan = np.isnan(row)
    inf = np.isinf(row)
    cols = np.flatnonzero(nan | inf).tolist()
    return (
        f"row {i} has non-finite values ({int(nan.sum())} NaN, {int(inf.sum())} inf) "
        f"in column(s) {format_list(cols)}; fix or drop that row"
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
) -> ScanResult:
    """Turn a checked matrix with keys (and labels) into a :class:`ScanResult`.

    Parameters
    ----------
    matrix : ndarray of shape (n, d)
        Converted to float32 and stored with :func:`store_matrix`.
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
    ScanResult
        ``data = {"vectors": "pool/vectors-<hash>.npy", "row": i}``, ``content_hash`` = sha256
        of the row's float32 bytes. Rows with NaN/inf are quarantined.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        m = np.ascontiguousarray(matrix, dtype=np.float32)
    rel = store_matrix(m, work_dir)
    finite = cast("NDArray[np.bool_]", np.isfinite(m).all(axis=1))  # the stub cannot tell a 2-D input from 1-D
    reasons = reasons or {}
    result = ScanResult()
    with progress.task("Scanning vectors", total=len(keys)) as bar:
        for i, key in enumerate(keys):
            row = m[i]
            data = {"vectors": rel, "row": i}
            digest = sha256_bytes(row.tobytes())
            label = labels[i] if labels is not None else None
            if i in reasons or not finite[i]:
                reason = reasons.get(i) or _nonfinite_reason(row, i)
                result.quarantined.append(QuarantinedItem(key, "vector", reason, data, digest))
            else:
                result.items.append(PoolItem(key, "vector", digest, data, label))
            bar.advance()
    if result.quarantined:
        logger.info(
            "%d of %d vector row(s) quarantined: %s", len(result.quarantined), len(keys),
            format_list(q.key for q in result.quarantined),
        )
    if label_names is None and labels is not None:
        label_names = sorted({lab for lab in labels if lab is not None}) or None
    result.label_names = label_names
    return result


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise PoolImportError(
            f"The {what} file {str(path)!r} does not exist. Fix `{what}_path` in [pool.source] of "
            "alloop.toml."
        )
    try:
        with path.open("r", encoding="utf-8-sig") as fh:
            return [line.strip() for line in fh]
    except UnicodeDecodeError as exc:
        raise PoolImportError(f"{path}: not valid UTF-8 ({exc.reason}). Save it as UTF-8.") from None


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


def _read_labels(path: Path, n: int) -> list[str | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = _load_npy(path, "labels")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise PoolImportError(
                f"{path}: labels must be a 1-D array with one label per row, got shape {arr.shape}."
            )
        labels = [label_str(v) for v in arr.tolist()]
    elif suffix == ".txt":
        labels = [line or None for line in _read_lines(path, "labels")]
    else:
        raise PoolImportError(
            f"Cannot read labels from {str(path)!r}: unsupported extension {suffix or '(none)'!r}. "
            "Supported: .npy (1-D array), .txt (one label per line)."
        )
    if len(labels) != n:
        raise PoolImportError(
            f"{path} has {len(labels)} labels but the vectors have {n} rows. Give exactly one "
            "label per row (an empty line in a .txt means 'no label')."
        )
    return labels


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


def _read_npy_source(source: VectorSource, path: Path) -> tuple[np.ndarray, list[str], list | None]:
    matrix = _check_matrix(_load_npy(path, "vectors"), path)
    n = matrix.shape[0]
    labels = _read_labels(Path(source.labels_path), n) if source.labels_path else None
    keys = _read_keys(Path(source.keys_path), n) if source.keys_path else row_keys("row", n)
    return matrix, keys, labels


def scan_vectors(
    source: VectorSource, work_dir: Path, progress: Progress = NULL_PROGRESS
) -> ScanResult:
    """Read a ``.npy`` matrix or a ``.parquet`` table of vectors into pool items.

    Parameters
    ----------
    source : VectorSource
        ``.npy``: a 2-D numeric matrix; ``labels_path`` (.npy 1-D or .txt, one label per row)
        and ``keys_path`` (.txt, one key per line) are optional, default keys are
        ``"row-000123"``. ``.parquet``: ``vector_column`` (list of numbers per row),
        ``key_column`` and ``label_column``; a missing key/label column is an error unless it
        has its default name (``"key"`` -> row keys, ``"label"`` -> no labels).
    work_dir : Path
        The matrix is copied to ``<work_dir>/pool/vectors-<hash>.npy`` (float32).
    progress : Progress

    Returns
    -------
    ScanResult
        See :func:`scan_matrix`.

    Raises
    ------
    PoolImportError
        Missing/unreadable file, unsupported extension, not 2-D, label/key count different from
        the row count (both numbers named), duplicated keys.
    """
    path, suffix = source_file(source.path, SUPPORTED_SUFFIXES, "vectors")
    reasons: dict[int, str] = {}
    if suffix == ".npy":
        matrix, keys, labels = _read_npy_source(source, path)
    else:
        from alloop.pool.parquet import read_parquet_source

        matrix, keys, labels, reasons = read_parquet_source(source, path)
    return scan_matrix(matrix, keys, labels, work_dir, reasons=reasons, progress=progress)
