"""The hot path's queries: columns of many samples as numpy arrays, never one ORM object per row.

A round reads its pool as arrays (sample ids in id order, their vector-store rows) in one query
per step; the rows are fetched in batches straight from the driver's cursor, so the transient
Python objects are one batch, not the pool. ORM objects stay for the few rows a transaction
touches (a round, its selections, its tasks).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, text

__all__ = ["SampleArrays", "arrays_of", "count_candidates", "members", "reference_arrays", "sample_arrays",
           "sample_records", "selected_array"]

#: rows fetched from the cursor per batch
FETCH_ROWS = 65536


@dataclass(frozen=True)
class SampleArrays:
    """Samples of one split as parallel arrays, in id order.

    Attributes
    ----------
    ids : ndarray of shape (n,), int64
        Database ids, ascending.
    rows : ndarray of shape (n,), int64
        Row of each sample in the project's vector store, ``-1`` when it has none.
    """

    ids: NDArray[np.int64]
    rows: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def concat(parts: Sequence[SampleArrays], empty: SampleArrays) -> SampleArrays:
        """The parts one after the other (``empty`` sliced to nothing when there are none)."""
        if not parts:
            return empty.take(slice(0, 0))
        return SampleArrays(np.concatenate([p.ids for p in parts]), np.concatenate([p.rows for p in parts]))

    def take(self, index: Any) -> SampleArrays:
        """The samples at ``index`` (a boolean mask, positions or a slice)."""
        return SampleArrays(self.ids[index], self.rows[index])

    def positions_of(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Positions of ``ids`` in this set (``-1`` for ids it does not hold)."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, max(len(self) - 1, 0))
        hit = (self.ids[pos] == ids) if len(self) else np.zeros(ids.shape, dtype=bool)
        return np.where(hit, pos, -1).astype(np.int64)

    @property
    def has_rows(self) -> bool:
        """Every sample has a vector-store row (the store can serve their features)."""
        return bool(len(self)) and int(self.rows.min()) >= 0


def members(ids: NDArray[np.int64], among: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``np.isin(ids, among)`` for sample ids: by a lookup table over ``among``'s range when that
    is compact (ids are dense: O(n), about 20x faster than sorting at 10^7 ids), else by sorting."""
    ids, among = np.asarray(ids, dtype=np.int64), np.asarray(among, dtype=np.int64)
    if not len(among) or not len(ids):
        return np.zeros(ids.shape, dtype=bool)
    span = int(among.max()) - int(among.min())
    kind = "table" if span <= 4 * (len(ids) + len(among)) else None
    return np.isin(ids, among, kind=kind)


def _driver_sql(engine: Engine, sql: str, params: dict[str, Any]) -> tuple[str, Any]:
    """``sql`` with ``:name`` parameters in the driver's own placeholder style, and its parameters."""
    names = re.findall(r":(\w+)", sql)
    style = engine.dialect.paramstyle
    if style == "qmark":
        return re.sub(r":\w+", "?", sql), tuple(params[n] for n in names)
    if style in ("pyformat", "format"):
        sql = sql.replace("%", "%%")
        if style == "pyformat":
            return re.sub(r":(\w+)", r"%(\1)s", sql), params
        return re.sub(r":\w+", "%s", sql), tuple(params[n] for n in names)
    if style == "named":
        return sql, params
    raise NotImplementedError(f"parameter style {style!r}")


def iter_batches(engine: Engine, sql: str, params: dict[str, Any], size: int = FETCH_ROWS
                 ) -> Iterator[Sequence[Any]]:
    """Rows of ``sql`` as plain tuples, ``size`` at a time, straight from the driver's cursor.

    SQLAlchemy's result rows cost about 2 µs each to build; a million-row pool is read in a
    fraction of that through the DBAPI cursor.
    """
    stmt, args = _driver_sql(engine, sql, params)
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(stmt, args)
            while True:
                batch = cursor.fetchmany(size)
                if not batch:
                    break
                yield batch
        finally:
            cursor.close()


def _fetch_int_columns(engine: Engine, sql: str, params: dict[str, Any], n_cols: int) -> NDArray[np.int64]:
    parts: list[NDArray[np.int64]] = []
    for batch in iter_batches(engine, sql, params):
        flat = np.fromiter(chain.from_iterable(batch), dtype=np.int64, count=len(batch) * n_cols)
        parts.append(flat.reshape(-1, n_cols))
    return np.concatenate(parts) if parts else np.zeros((0, n_cols), dtype=np.int64)


def sample_arrays(engine: Engine, project_id: int, split: str = "pool", *, with_reference: bool = False
                  ) -> SampleArrays:
    """The readable samples of ``split`` (``"pool"`` or ``"test"``) as arrays, in id order.

    ``with_reference``: only those with a reference label (held-out classification samples).
    """
    sql = ("SELECT id, COALESCE(\"row\", -1) FROM sample WHERE project_id = :pid AND status = 'ok' "
           "AND split = :split")
    if with_reference:
        sql += " AND reference_label IS NOT NULL"
    cols = _fetch_int_columns(engine, sql + " ORDER BY id", {"pid": project_id, "split": split}, 2)
    return SampleArrays(np.ascontiguousarray(cols[:, 0]), np.ascontiguousarray(cols[:, 1]))


def reference_arrays(engine: Engine, project_id: int, split: str, labels: Sequence[str]
                     ) -> tuple[SampleArrays, NDArray[np.int64]]:
    """Readable samples of ``split`` with a reference label in ``labels``: ``(samples, class index)``."""
    classes = {lb: i for i, lb in enumerate(labels)}
    ids: list[int] = []
    rows: list[int] = []
    ys: list[int] = []
    for batch in iter_batches(
        engine,
        "SELECT id, COALESCE(\"row\", -1), reference_label FROM sample WHERE project_id = :pid "
        "AND status = 'ok' AND split = :split AND reference_label IS NOT NULL ORDER BY id",
        {"pid": project_id, "split": split},
    ):
        for i, r, lab in batch:
            y = classes.get(lab)
            if y is not None:
                ids.append(i)
                rows.append(r)
                ys.append(y)
    return (SampleArrays(np.array(ids, dtype=np.int64), np.array(rows, dtype=np.int64)),
            np.array(ys, dtype=np.int64))


def arrays_of(engine: Engine, ids: Sequence[int] | NDArray[np.int64], split: str = "pool") -> SampleArrays:
    """The readable samples of ``split`` among ``ids`` (a modest set, e.g. the labeled ones), in id order."""
    recs = sample_records(engine, ids, ("row", "status", "split"))
    keep = sorted(i for i, (_, status, sp) in recs.items() if status == "ok" and sp == split)
    return SampleArrays(np.array(keep, dtype=np.int64),
                        np.array([-1 if recs[i][0] is None else recs[i][0] for i in keep], dtype=np.int64))


def selected_array(engine: Engine, project_id: int) -> NDArray[np.int64]:
    """Ids of every sample selected so far in the project, ascending."""
    cols = _fetch_int_columns(
        engine, "SELECT sample_id FROM selection WHERE project_id = :pid ORDER BY sample_id", {"pid": project_id}, 1
    )
    return np.ascontiguousarray(cols[:, 0])


def count_candidates(engine: Engine, project_id: int) -> tuple[int, int]:
    """``(selected so far, readable pool samples never selected)``, counted by the database."""
    with engine.connect() as conn:
        n_selected = conn.execute(
            text("SELECT COUNT(*) FROM selection WHERE project_id = :pid"), {"pid": project_id}
        ).scalar_one()
        n_open = conn.execute(
            text("SELECT COUNT(*) FROM sample s WHERE s.project_id = :pid AND s.status = 'ok' AND s.split = 'pool' "
                 "AND NOT EXISTS (SELECT 1 FROM selection x WHERE x.project_id = :pid AND x.sample_id = s.id)"),
            {"pid": project_id},
        ).scalar_one()
    return int(n_selected), int(n_open)


def sample_records(engine: Engine, ids: Sequence[int] | NDArray[np.int64], columns: Sequence[str]
                   ) -> dict[int, tuple[Any, ...]]:
    """``{id: (column values...)}`` for a modest set of ids (a batch, a round's picks, the labeled set).

    JSON columns come back decoded. Queried in batches of 900 ids (any backend's parameter limit).
    """
    from alloop.store.models import Sample

    table = Sample.__table__  # type: ignore[attr-defined]
    cols = [table.c[name] for name in columns]
    out: dict[int, tuple[Any, ...]] = {}
    id_list = [int(i) for i in ids]
    with engine.connect() as conn:
        for start in range(0, len(id_list), 900):
            chunk = id_list[start : start + 900]
            stmt = table.select().with_only_columns(table.c.id, *cols).where(table.c.id.in_(chunk))
            for row in conn.execute(stmt):
                out[int(row[0])] = tuple(row[1:])
    return out
