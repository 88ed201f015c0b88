"""The store on both backends: SQLite files and a real PostgreSQL (``db_url`` runs each test twice)."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import SQLModel, select

from alloop.errors import ConfigError, ProjectNotFoundError, StoreError
from alloop.store.engine import MIGRATION_LOCK_KEY, MIGRATIONS_DIR, make_engine, migrate, open_store, session_scope
from alloop.store.models import Project, Round, Sample, Selection
from alloop.store.queries import ensure_project, get_project
from tests.helpers.waiting import SAFETY_NET_S, wait_until


def _alembic(conn) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def _head() -> str:
    return ScriptDirectory.from_config(_alembic(None)).get_current_head()


def test_migrations_build_exactly_the_models(db_url):
    engine = open_store(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
        assert conn.execute(text("select version_num from alembic_version")).scalar() == _head()
    migrate(engine)  # idempotent


def test_migrations_go_down_to_nothing_and_up_again(db_url):
    """The same migration files, both ways, on both backends (batch mode on SQLite only)."""
    engine = open_store(db_url)
    with engine.begin() as conn:
        command.downgrade(_alembic(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_timestamps_come_back_aware_utc_to_the_microsecond(db_url):
    engine = open_store(db_url)
    at = datetime(2026, 3, 29, 2, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as s:
        s.add(Project(name="p", task="classification", created_at=at))
    with session_scope(engine) as s:
        back = s.exec(select(Project)).one().created_at
        later = s.exec(select(Project).where(Project.created_at > at - timedelta(microseconds=1))).all()
    assert back == at and back.tzinfo is not None and back.utcoffset() == timedelta(0)
    assert back.microsecond == 123456 and len(later) == 1
    # naive datetimes are refused, not guessed
    with pytest.raises(StatementError, match="timezone"), session_scope(engine) as s:
        s.add(Project(name="q", task="classification", created_at=datetime(2026, 1, 1)))


def test_64_bit_seeds_and_json_round_trip(db_url):
    engine = open_store(db_url)
    config = {"name": "é 中 🙂", "nested": {"list": [1, 2.5, None, True]}, "big": 2**53 + 1, "f": 0.1 + 0.2}
    with session_scope(engine) as s:
        ensure_project(s, name="p", task="classification", labels=["a"], seed=2**40 + 7, config=config)
        ensure_project(s, name="n", task="classification", labels=["a"], seed=-(2**63), config={})
    with session_scope(engine) as s:
        p = get_project(s, "p")
        assert (p.seed, p.config, p.labels) == (2**40 + 7, config, ["a"])
        assert get_project(s, "n").seed == -(2**63)
    with pytest.raises(ConfigError, match="64 bits"), session_scope(engine) as s:
        ensure_project(s, name="x", task="classification", labels=None, seed=2**63, config={})


def test_non_finite_floats_in_json_are_stored(db_url):
    """``completion_timeout_s = inf`` is valid TOML; PostgreSQL's json type has no Infinity."""
    engine = open_store(db_url)
    with session_scope(engine) as s:
        s.add(Project(name="p", task="classification", config={"loop": {"t": math.inf, "u": -math.inf, "v": math.nan}}))
    with session_scope(engine) as s:
        loop = get_project(s, "p").config["loop"]
    if engine.dialect.name == "postgresql":
        assert loop == {"t": "Infinity", "u": "-Infinity", "v": "NaN"}
    else:
        assert loop["t"] == math.inf and loop["u"] == -math.inf and math.isnan(loop["v"])


def test_foreign_keys_are_enforced(db_url):
    engine = open_store(db_url)
    pid, rid, _ = _project_with_samples(engine)
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(Selection(project_id=pid, round_id=rid, sample_id=999_999, rank=0, score=1.0))


def _migration_lock_waiters(engine) -> int:
    """Sessions of this database waiting for the advisory lock that serializes migrations."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((classid::bigint << 32) | objid::bigint) = :key"), {"key": MIGRATION_LOCK_KEY}).scalar_one()


def test_processes_starting_together_migrate_a_fresh_postgres_database_once(postgres_url):
    """Three processes open a fresh database at once. Their overlap is certain, not hoped for: the
    test holds the migration lock until all three wait for it; then one migrates, the others find
    the schema done (alembic logs each migration it runs)."""
    code = (
        "import logging, sys\n"
        "from alloop.store.engine import open_store\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        f"open_store({postgres_url!r})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    engine = make_engine(postgres_url)
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 3  # past their imports
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            for p in procs:  # released together
                p.stdin.write("go\n")
                p.stdin.flush()

            def none_gone() -> str | None:
                gone = [p.returncode for p in procs if p.poll() is not None]
                return f"a process finished without waiting for the migration lock: {gone}" if gone else None

            wait_until(lambda: _migration_lock_waiters(engine) == 3, "all three waiting for the migration lock",
                       alive=none_gone)
            assert "alembic_version" not in inspect(engine).get_table_names()
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        logs = []
        for p in procs:
            _, err = p.communicate(timeout=SAFETY_NET_S)
            assert p.returncode == 0, err
            logs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    migrated = ["Running upgrade" in err for err in logs]
    assert sorted(migrated) == [False, False, True], logs  # one ran the migrations, after it nobody
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalars().all() == [_head()]
    engine.dispose()


def test_unreachable_postgres_is_a_store_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match="server is running"):
        open_store(f"postgresql+psycopg://alloop@127.0.0.1:{port}/alloop")


def test_postgres_urls_use_psycopg():
    for url in ("postgres://u@db/alloop", "postgresql://u@db/alloop", "postgresql+psycopg://u@db/alloop"):
        engine = make_engine(url)
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")


def test_sqlite_file_uses_wal_and_foreign_keys(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'sub' / 'a.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "sub" / "a.db").exists()


def test_bad_url_is_a_config_error():
    from alloop.store.engine import make_engine

    with pytest.raises(ConfigError, match="Invalid database URL"):
        make_engine("not a url")


def _project_with_samples(engine, n=3):
    with session_scope(engine) as s:
        p = Project(name="p", task="classification", labels=["a", "b"])
        s.add(p)
        s.flush()
        samples = [Sample(project_id=p.id, key=f"k{i}", kind="vector", content_hash=f"h{i}") for i in range(n)]
        s.add_all(samples)
        r = Round(project_id=p.id, number=0, budget=2)
        s.add(r)
        s.flush()
        return p.id, r.id, [x.id for x in samples]


def test_a_sample_cannot_be_selected_twice(db_url):
    engine = open_store(db_url)
    pid, rid, sids = _project_with_samples(engine)
    with session_scope(engine) as s:
        s.add(Selection(project_id=pid, round_id=rid, sample_id=sids[0], rank=0, score=1.0))
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(Selection(project_id=pid, round_id=rid, sample_id=sids[0], rank=1, score=0.5))
    with session_scope(engine) as s:  # the failed transaction left the connection usable
        s.add(Selection(project_id=pid, round_id=rid, sample_id=sids[1], rank=1, score=0.5))
    with session_scope(engine) as s:
        assert len(s.exec(select(Selection)).all()) == 2


def test_duplicate_sample_key_rejected(db_url):
    engine = open_store(db_url)
    pid, _, _ = _project_with_samples(engine)
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(Sample(project_id=pid, key="k0", kind="vector", content_hash="zz"))


def test_project_not_found_lists_known(db_url):
    engine = open_store(db_url)
    _project_with_samples(engine)
    with session_scope(engine) as s, pytest.raises(ProjectNotFoundError, match="known: p"):
        get_project(s, "nope")
