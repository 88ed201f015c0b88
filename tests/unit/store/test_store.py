from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from alloop.errors import ConfigError, ProjectNotFoundError
from alloop.store.engine import migrate, open_store, session_scope
from alloop.store.models import Project, Round, Sample, Selection
from alloop.store.queries import get_project


def test_migrations_build_exactly_the_models(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0001"
    migrate(engine)  # idempotent


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


def test_a_sample_cannot_be_selected_twice(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    pid, rid, sids = _project_with_samples(engine)
    with session_scope(engine) as s:
        s.add(Selection(project_id=pid, round_id=rid, sample_id=sids[0], rank=0, score=1.0))
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            s.add(Selection(project_id=pid, round_id=rid, sample_id=sids[0], rank=1, score=0.5))


def test_duplicate_sample_key_rejected(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    pid, _, _ = _project_with_samples(engine)
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            s.add(Sample(project_id=pid, key="k0", kind="vector", content_hash="zz"))


def test_project_not_found_lists_known(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    _project_with_samples(engine)
    with session_scope(engine) as s:
        with pytest.raises(ProjectNotFoundError, match="known: p"):
            get_project(s, "nope")
