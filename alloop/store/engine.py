"""Engines and sessions: SQLite (default, WAL mode) or PostgreSQL, migrated with Alembic.

Both backends run the same Alembic migrations. PostgreSQL specifics handled here:

- the driver is psycopg 3 (``pip install 'alloop[postgres]'``); ``postgres://`` and
  ``postgresql://`` URLs use it;
- migrations hold a transaction-level advisory lock, so processes starting together on a
  fresh database migrate it once, one after the other;
- its ``json`` type has no NaN or Infinity: such floats (``inf`` is valid TOML) are stored as
  the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` instead of failing the write.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlmodel import Session, create_engine

from alloop.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: key of the PostgreSQL advisory lock that serializes migrations (any constant bigint)
MIGRATION_LOCK_KEY = 0x616C6C6F6F70  # "alloop"

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else _NON_FINITE[obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _pg_json_dumps(obj: Any) -> str:
    """JSON for PostgreSQL's ``json`` type, which rejects NaN and Infinity: those become strings."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), allow_nan=False)


def _postgres_url(parsed: URL) -> URL:
    """``postgres://`` / ``postgresql://`` -> psycopg 3; a clear error when the driver is missing."""
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_driver_name() == "psycopg":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "A PostgreSQL database needs the psycopg driver, which is not installed: "
                "`pip install 'alloop[postgres]'` (or `pip install 'psycopg[binary]>=3.1'`)."
            ) from None
    return parsed


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; SQLite files get WAL mode, foreign keys and a busy timeout.

    ``sqlite://`` (in memory) uses a single shared connection, for simulations and tests.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"Invalid database URL {url!r}: {exc}. Expected e.g. 'sqlite:///path/alloop.db' or "
            "'postgresql+psycopg://user@host/db'."
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        else:
            engine = create_engine(
                "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        if parsed.drivername.split("+")[0] in ("postgres", "postgresql"):
            parsed = _postgres_url(parsed)
            # an unreachable server fails in seconds, not after the OS's TCP timeout (a URL's own wins)
            connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
            return create_engine(
                parsed, pool_pre_ping=True, json_serializer=_pg_json_dumps, connect_args=connect_args
            )
        return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"Cannot use the database URL {parsed.render_as_string(hide_password=True)!r}: {exc}. "
            "alloop supports 'sqlite:///path/alloop.db' and 'postgresql+psycopg://user@host/db'."
        ) from None


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` with Alembic (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # one migrating process at a time; the others then find it done
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise StoreError(
            f"Cannot open or migrate the database at {where}: {exc.orig}. "
            "Check the URL and that the server is running."
        ) from exc
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient privilege
            raise
        raise StoreError(
            f"Cannot create alloop's tables in the database at {where}: {exc.orig}. The database user "
            "must own the database or have CREATE on its schema (PostgreSQL 15+ no longer grants it on "
            "'public' to everyone): `GRANT CREATE ON SCHEMA public TO <user>` or `ALTER DATABASE <db> "
            "OWNER TO <user>`."
        ) from exc


def open_store(url: str) -> Engine:
    """Engine for ``url`` with the schema migrated to the latest version.

    A new in-memory SQLite database (``sqlite://``: a simulation's, a test's) is a copy of one
    migrated the same way once per process (SQLite's backup API), not migrated again: a
    simulation opens one per run.
    """
    engine = make_engine(url)
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        _copy_migrated(engine)
    else:
        migrate(engine)
    return engine


_template: Engine | None = None
_template_lock = threading.Lock()


def _copy_migrated(engine: Engine) -> None:
    """Fill the empty in-memory database of ``engine`` with this process's migrated template."""
    global _template
    with _template_lock:
        if _template is None:
            template = make_engine("sqlite://")
            migrate(template)
            _template = template
        src = _template.raw_connection()
        dst = engine.raw_connection()
        try:
            src.driver_connection.backup(dst.driver_connection)  # type: ignore[union-attr]
        finally:
            dst.close()
            src.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
