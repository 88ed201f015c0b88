"""Shared fixtures: real SQLite files, a real PostgreSQL, real bundled data, real CLI processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alloop.config import dumps_toml, load_config
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.workspace import Workspace
from tests.helpers.postgres import PostgresCluster, PostgresUnavailable

ALLOOP = str(Path(sys.executable).with_name("alloop"))


def write_project(folder: Path, database: str | None = None, **overrides: Any) -> Path:
    """A digits project file in ``folder``; ``overrides`` replace whole sections.

    ``database``: a URL for ``[project] database`` (default: SQLite in the work dir).
    """
    data: dict[str, Any] = {
        "project": {"name": "t", "seed": 0},
        "pool": {"source": {"type": "bundled", "name": "digits"}, "test_fraction": 0.3},
        "features": {"name": "pixels"},
        "strategy": {"name": "margin"},
        "connector": {"name": "oracle"},
        "loop": {"initial_size": 20, "batch_size": 10, "max_rounds": 3},
    }
    data.update(overrides)
    if database is not None:
        data["project"] = {**data["project"], "database": database}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alloop.toml").write_text(dumps_toml(data))
    return folder / "alloop.toml"


def open_workspace(project_file: Path, do_import: bool = True) -> Workspace:
    cfg, _ = load_config(project_file)
    ws = Workspace(cfg)
    ws.ensure_project()
    if do_import:
        import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=cfg.pool.test_fraction)
    return ws


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([ALLOOP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def digits_ws(tmp_path: Path):
    ws = open_workspace(write_project(tmp_path / "proj"))
    yield ws
    ws.close()


# --- a real Label Studio server for the whole session -------------------------------------

def _free_port(start: int = 18090) -> int:
    from connectors.label_studio.server import port_is_free

    for port in range(start, start + 200):
        if port_is_free(port):
            return port
    raise RuntimeError("no free port for Label Studio")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """Label Studio from its own virtualenv ($ALLOOP_LS_VENV, default ./.venv-ls), on loopback.

    There is no skip: without the server the tests fail, with the reason.
    """
    from connectors.label_studio.server import LocalLabelStudio

    venv = Path(os.environ.get("ALLOOP_LS_VENV", Path(__file__).resolve().parents[1] / ".venv-ls"))
    if not (venv / "bin" / "label-studio").exists():
        pytest.fail(
            f"Label Studio is not installed in {venv}: run `make setup` (it creates .venv-ls) or set ALLOOP_LS_VENV."
        )
    root = tmp_path_factory.mktemp("label-studio")
    server = LocalLabelStudio(data_dir=root / "data", port=_free_port(), venv=venv, document_root=root / "docroot")
    (root / "docroot").mkdir()
    server.start()
    creds = server.credentials()
    saved = {
        k: os.environ.get(k)
        for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    }
    os.environ["LABEL_STUDIO_URL"] = server.url
    os.environ["LABEL_STUDIO_API_KEY"] = creds["LABEL_STUDIO_API_KEY"]
    os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(server.document_root)
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --- a real PostgreSQL cluster for the whole session ---------------------------------------

@pytest.fixture(scope="session")
def postgres_cluster():
    """A private PostgreSQL cluster (Debian's postgresql package), stopped at session end.

    There is no skip: if it cannot start, the tests that use it fail with the reason.
    """
    cluster = None
    error = None
    try:
        cluster = PostgresCluster()
        cluster.start()
    except PostgresUnavailable as exc:
        error = str(exc)
    if error is not None:
        if cluster is not None:
            cluster.stop()
        pytest.fail(f"PostgreSQL is unavailable: {error}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster):
    """A fresh, empty PostgreSQL database for one test: ``postgresql+psycopg://postgres@127.0.0.1:<port>/<db>``."""
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The test runs twice: on a SQLite file in ``tmp_path``, and on an empty PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'alloop.db'}"
    return request.getfixturevalue("postgres_url")


NUMERICS_TESTS = Path(__file__).parent / "unit" / "strategies"


def pytest_collection_modifyitems(config, items):
    """``make test-numerics`` reruns ``pytest -m numerics tests/unit/strategies`` under other
    OpenBLAS kernel families (collecting only that folder keeps the reruns short): a numerics
    test anywhere else would silently miss them."""
    stray = [item.nodeid for item in items
             if item.get_closest_marker("numerics") and NUMERICS_TESTS not in Path(str(item.path)).parents]
    if stray:
        raise pytest.UsageError(
            f"tests marked numerics must live under tests/unit/strategies (make test-numerics "
            f"collects only that folder); got {', '.join(stray[:5])}. Move them there, or add their "
            "folder to NUMERICS_TESTS in the Makefile and here."
        )
