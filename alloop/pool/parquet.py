"""Parquet tables of vectors: a list-of-numbers column, optional key and label columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alloop.config import VectorSource
from alloop.errors import PoolImportError
from alloop.pool.base import RowKeys, label_str
from alloop.pool.texts import check_unique_keys

__all__ = ["read_parquet_source"]


def read_parquet_source(
    source: VectorSource, path: Path
) -> tuple[np.ndarray, Sequence[str], list | None, dict[int, str]]:
    """Matrix, keys, labels and null-vector rows of a parquet table (rows numbered from 0)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PoolImportError(f"Cannot read {str(path)!r} as parquet: {exc}.") from None
    columns = table.column_names
    # a missing key/label column is an error only when the user named one other than the default
    # (not "was it set?": a config re-read from its stored JSON has every field set)
    explicit = {
        f for f in ("key_column", "label_column")
        if getattr(source, f) != VectorSource.model_fields[f].default
    }

    def missing(field: str, column: str) -> PoolImportError:
        return PoolImportError(
            f"{path} has no column {column!r} (columns: {', '.join(map(repr, columns))}). "
            f"Set `{field}` in [pool.source] of alloop.toml to the right column."
        )

    if source.vector_column not in columns:
        raise missing("vector_column", source.vector_column)
    if source.key_column not in columns and "key_column" in explicit:
        raise missing("key_column", source.key_column)
    has_labels = bool(source.label_column) and source.label_column in columns
    if source.label_column and not has_labels and "label_column" in explicit:
        raise missing("label_column", source.label_column)
    matrix, reasons = parquet_matrix(table.column(source.vector_column).combine_chunks(), path, source)
    n = len(matrix)
    if source.key_column in columns:
        raw_keys = table.column(source.key_column).to_pylist()
        for i, k in enumerate(raw_keys):
            if k is None or str(k) == "":
                raise PoolImportError(f"{path}, row {i} (from 0): the key is empty. Every row needs a key.")
        keys: Sequence[str] = [str(k) for k in raw_keys]
        if len(set(keys)) != len(keys):
            check_unique_keys(
                ((k, i) for i, k in enumerate(keys)), f"{path} (rows numbered from 0)", "row",
                f"Make the values of column {source.key_column!r} unique.",
            )
    else:
        keys = RowKeys("row", n)
    labels = None
    if has_labels:
        labels = [label_str(v) for v in table.column(source.label_column).to_pylist()]
    return matrix, keys, labels, reasons


def parquet_matrix(col: Any, path: Path, source: VectorSource) -> tuple[np.ndarray, dict[int, str]]:
    """A list-typed arrow column as an (n, d) float64 matrix; null vectors become NaN rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) or not (
        pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)
    ):
        raise PoolImportError(
            f"{path}: column {source.vector_column!r} must hold a list of numbers per row, got "
            f"type {t}. Store each vector as a list<float> value."
        )
    n = len(col)
    if n == 0:
        raise PoolImportError(f"{path} has no rows; nothing to import.")
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False)
    valid = np.flatnonzero(~null)
    if valid.size == 0:
        raise PoolImportError(f"{path}: every value of column {source.vector_column!r} is null.")
    d = int(lengths[valid[0]])
    if d == 0:
        raise PoolImportError(f"{path}: row {valid[0]} has an empty vector; vectors need 1 value or more.")
    bad = valid[lengths[valid] != d]
    if bad.size:
        raise PoolImportError(
            f"{path}: vectors must all have the same length; row {valid[0]} has {d} values but "
            f"row {bad[0]} has {int(lengths[bad[0]])} (rows numbered from 0)."
        )
    matrix = np.full((n, d), np.nan, dtype=np.float64)
    values = col.flatten().to_numpy(zero_copy_only=False)
    matrix[valid] = np.asarray(values, dtype=np.float64).reshape(valid.size, d)
    reasons = {int(i): f"row {int(i)}: the vector is null (missing)" for i in np.flatnonzero(null)}
    return matrix, reasons
