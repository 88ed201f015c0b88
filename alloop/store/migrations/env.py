"""Alembic environment: migrations run on the connection alloop hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from alloop.errors import ConfigError
from alloop.store import models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata
config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # `alembic` CLI use: build an engine from the ini url
        from alloop.store.engine import make_engine

        url = config.get_main_option("sqlalchemy.url")
        if url is None:
            raise ConfigError(
                "Alembic was run without a database: set sqlalchemy.url in its ini file. (alloop itself "
                "hands over its connection: every database it opens is migrated by open_store.)"
            )
        engine = make_engine(url)
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
