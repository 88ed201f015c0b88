"""Bulk writes without ORM objects, and the project's vector store as recorded in the database.

:func:`bulk_insert` writes many rows of one table in the caller's transaction: with ``COPY ... FROM
STDIN`` on PostgreSQL (psycopg 3, :meth:`psycopg.Cursor.copy`), with the driver's ``executemany`` in
batches elsewhere (SQLite). The rows are tuples of values the database takes as they are (``str``,
``int``, ``float``, ``None``; a JSON column as its serialised text, see :func:`json_serializer`);
values shared by every row (a project id, a timestamp) are given once as ``constants`` and pass
through the column's own type (so a timestamp is stored as the ORM would store it).

:func:`vector_store` opens a project's :class:`~alloop.features.store.VectorStore` from its
:class:`~alloop.store.models.VectorFile` rows.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, Table, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from alloop.features.store import VectorFileInfo, VectorStore
from alloop.store import models

#: the tables as SQLAlchemy Core sees them (for statements without ORM objects)
SAMPLE: Table = SQLModel.metadata.tables[models.Sample.__tablename__]  # type: ignore[index]
VECTORFILE: Table = SQLModel.metadata.tables[models.VectorFile.__tablename__]  # type: ignore[index]

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLE", "VECTORFILE", "BulkWrite", "bulk_insert", "bulk_insert_samples", "indexes_rebuilt",
    "json_serializer", "vector_store",
]

#: rows per ``executemany`` call (memory: one batch of tuples at a time)
EXECUTEMANY_BATCH = 20_000

Method = Literal["auto", "copy", "executemany"]

#: positional parameter markers of the DB-API paramstyles (sqlite3: qmark; psycopg: format)
_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


@dataclass(frozen=True)
class BulkWrite:
    """What :func:`bulk_insert` did: how many rows, and how (``"copy"`` or ``"executemany"``)."""

    rows: int
    method: str


def json_serializer(connection: Connection) -> Callable[[Any], str]:
    """The function the engine serialises JSON columns with (PostgreSQL: NaN-safe, see ``engine.py``)."""
    serializer = getattr(connection.dialect, "_json_serializer", None)
    return serializer if callable(serializer) else json.dumps


def _sql_literal(value: Any, escape_percent: bool) -> str | None:
    """A value already converted for the database as SQL text; None when it is not text, a number or NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        text = repr(value)
    elif isinstance(value, str):
        text = "'" + value.replace("'", "''") + "'"
    else:
        return None
    return text.replace("%", "%%") if escape_percent else text


def _uses_copy(connection: Connection, method: Method) -> bool:
    dialect = connection.dialect
    can_copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
    if method == "copy" and not can_copy:
        raise ValueError(f"COPY needs PostgreSQL with psycopg 3, not {dialect.name}+{dialect.driver}")
    return can_copy if method == "auto" else method == "copy"


def _constant_values(
    connection: Connection, table: Table, constants: Mapping[str, Any], copy: bool
) -> tuple[Any, ...]:
    """The constants as the database takes them: JSON serialised; other types through their bind
    processor for ``executemany`` (COPY hands Python values to psycopg, which adapts them itself)."""
    out = []
    for name, value in constants.items():
        col_type = table.c[name].type
        if isinstance(col_type, JSON) and value is not None:
            value = json_serializer(connection)(value)
        elif not copy:
            process = col_type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
            value = process(value) if process is not None else value
        out.append(value)
    return tuple(out)


def bulk_insert(
    connection: Connection,
    table: Table,
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str],
    *,
    constants: Mapping[str, Any] | None = None,
    method: Method = "auto",
    batch_size: int = EXECUTEMANY_BATCH,
) -> BulkWrite:
    """Insert ``rows`` into ``table`` in the connection's current transaction.

    Parameters
    ----------
    connection : Connection
        An open connection (e.g. ``session.connection()``); nothing is committed here.
    table : Table
    rows : iterable of tuples
        One tuple per row, values in the order of ``columns``: ``str``, ``int``, ``float``,
        ``None``, JSON columns as serialised text. Consumed once, lazily.
    columns : sequence of str
    constants : mapping, optional
        Column -> Python value shared by every row (converted once by the column's type).
    method : {"auto", "copy", "executemany"}
        ``auto``: COPY on PostgreSQL with psycopg 3, ``executemany`` otherwise.
    batch_size : int
        Rows per ``executemany`` call.

    Returns
    -------
    BulkWrite
        Rows written and the method used.
    """
    constants = dict(constants or {})
    copy = _uses_copy(connection, method)
    names = [*columns, *constants]
    extra = _constant_values(connection, table, constants, copy)
    quote = connection.dialect.identifier_preparer.quote
    column_list = ", ".join(quote(n) for n in names)
    table_name = connection.dialect.identifier_preparer.format_table(table)
    n = 0
    if copy:
        driver = connection.connection.driver_connection  # psycopg.Connection, in this transaction
        assert driver is not None
        statement = f"COPY {table_name} ({column_list}) FROM STDIN"
        dbapi_error = connection.dialect.loaded_dbapi.Error
        try:
            with driver.cursor() as cur, cur.copy(statement) as out:
                if extra:
                    for row in rows:
                        out.write_row(tuple(chain(row, extra)))
                        n += 1
                else:
                    for row in rows:
                        out.write_row(row)
                        n += 1
        except dbapi_error as exc:  # as SQLAlchemy would raise it (IntegrityError for a unique key, ...)
            raise DBAPIError.instance(statement, None, exc, dbapi_error, dialect=connection.dialect) from exc
        return BulkWrite(n, "copy")
    style = connection.dialect.paramstyle
    if style not in _MARKERS:
        raise ValueError(f"bulk_insert supports the paramstyles {', '.join(_MARKERS)}, not {style!r}")
    # constants the database takes as text or numbers are written into the statement (nothing to
    # bind per row); others (a datetime psycopg adapts itself) stay parameters, after the row's
    literals = [_sql_literal(v, escape_percent=style != "qmark") for v in extra]
    bound = tuple(v for v, lit in zip(extra, literals) if lit is None)
    names = [*columns, *(k for k, lit in zip(constants, literals) if lit is not None),
             *(k for k, lit in zip(constants, literals) if lit is None)]
    values = [_MARKERS[style]] * len(columns) + [lit for lit in literals if lit is not None]
    values += [_MARKERS[style]] * len(bound)
    column_list = ", ".join(quote(n) for n in names)
    sql = f"INSERT INTO {table_name} ({column_list}) VALUES ({', '.join(values)})"
    it = iter(rows)
    while batch := list(islice(it, batch_size)):
        connection.exec_driver_sql(sql, [(*row, *bound) for row in batch] if bound else batch)
        n += len(batch)
    return BulkWrite(n, "executemany")


@contextmanager
def indexes_rebuilt(connection: Connection, table: Table, names: Sequence[str]) -> Iterator[None]:
    """SQLite: drop the named (non-unique) indexes for the block, build them again after it.

    Inserting many rows into an index on random values (content hashes) touches a random page
    per row; sorting all of them once at the end is several times cheaper. Both happen in the
    caller's transaction: readers keep seeing the old table and its indexes until the commit,
    and a rollback (an error in the block) restores the indexes as they were. Worth it when the
    rows added are many and at least as many as the rows already there. Other databases: no-op.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    indexes = [i for i in table.indexes if i.name in names and not i.unique]
    if not indexes:
        yield
        return
    driver = connection.connection.driver_connection
    if driver is not None and not driver.in_transaction:
        # sqlite3 opens a transaction before INSERT/UPDATE/DELETE only: DDL would commit at once
        driver.execute("BEGIN")
    for index in indexes:
        index.drop(connection)
    yield
    for index in indexes:
        index.create(connection)


def bulk_insert_samples(
    connection: Connection,
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str],
    *,
    constants: Mapping[str, Any] | None = None,
    method: Method = "auto",
) -> BulkWrite:
    """:func:`bulk_insert` into the ``sample`` table (see there)."""
    return bulk_insert(connection, SAMPLE, rows, columns, constants=constants, method=method)


def vector_store(session_or_engine: Session | Connection | Engine, project_id: int, work_dir: Path) -> VectorStore:
    """The project's vector store: its :class:`~alloop.store.models.VectorFile` rows, read by row.

    Parameters
    ----------
    session_or_engine : Session, Connection or Engine
        Where to read the ``vectorfile`` rows (an engine opens and closes a connection).
    project_id : int
    work_dir : Path
        The project's work dir (the files' paths are relative to it).

    Returns
    -------
    VectorStore
        Empty (falsy) when the project has no vector files.
    """
    t = VECTORFILE
    query = (
        select(t.c.path, t.c.first_row, t.c.rows, t.c.dim)
        .where(t.c.project_id == project_id)
        .order_by(t.c.first_row)
    )
    if isinstance(session_or_engine, Engine):
        with session_or_engine.connect() as conn:
            found = conn.execute(query).all()
    elif isinstance(session_or_engine, Session):
        found = session_or_engine.connection().execute(query).all()
    else:
        found = session_or_engine.execute(query).all()
    files = [VectorFileInfo(str(p), int(f), int(r), int(d)) for p, f, r, d in found]
    return VectorStore(Path(work_dir), files)
