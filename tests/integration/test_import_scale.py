"""`alloop import` of large vector pools, as real processes, on SQLite and on PostgreSQL (COPY).

The pool is stored once (``pool/vectors-<hash>.npy``), registered once as a vector file, every
sample gets its store row; a second import adds and registers nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

from alloop.store.engine import make_engine
from tests.conftest import run_cli, write_project


def _pool(folder: Path, n: int, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    y = np.arange(n) % 10
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return x, y


def _project(tmp_path: Path, database: str | None = None) -> Path:
    source = {"type": "vectors", "path": str(tmp_path / "data" / "x.npy"),
              "labels_path": str(tmp_path / "data" / "y.npy")}
    return write_project(tmp_path / "p", database=database, pool={"source": source, "test_fraction": 0.0},
                         features={"name": "vector"})


def _check_store(url: str, work: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Every sample's store row is its file row, one vector file, the pool file once under pool/."""
    engine = make_engine(url)
    with engine.connect() as conn:
        keys, rows, data_rows, labels = zip(*conn.execute(text(
            "SELECT key, row, data, reference_label FROM sample ORDER BY id")).all())
        files = conn.execute(text("SELECT path, first_row, rows, dim FROM vectorfile")).all()
    engine.dispose()
    n = len(x)
    assert len(keys) == n
    assert list(keys[:2]) == ["row-000000", "row-000001"] and keys[-1] == f"row-{n - 1:06d}"
    assert np.array_equal(np.array(rows, dtype=np.int64), np.arange(n))
    data = [json.loads(d) if isinstance(d, str) else d for d in data_rows]  # SQLite: text, PostgreSQL: json
    assert [d["row"] for d in data] == list(range(n))
    assert {d["vectors"] for d in data} == {files[0][0]}
    assert list(labels[:12]) == [str(v) for v in y[:12]]
    stored = sorted((work / "pool").iterdir())
    assert [(p, 0, n, x.shape[1]) for p, *_ in files] == [(f"pool/{stored[0].name}", 0, n, x.shape[1])]
    assert len(stored) == 1 and stored[0].name.startswith("vectors-")
    assert np.array_equal(np.load(stored[0], mmap_mode="r"), x)


def test_a_million_vectors_on_sqlite(tmp_path: Path) -> None:
    x, y = _pool(tmp_path / "data", 1_000_000)
    pf = _project(tmp_path)
    r = run_cli("import", "-p", str(pf), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "1000000 added, 0 unchanged" in r.stdout
    work = tmp_path / "p" / ".alloop"
    url = f"sqlite:///{work / 'alloop.db'}"
    _check_store(url, work, x, y)
    r = run_cli("import", "-p", str(pf), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "0 added, 1000000 unchanged" in r.stdout
    _check_store(url, work, x, y)  # nothing registered, nothing stored twice
    engine = create_engine(url)
    with engine.connect() as conn:  # the project index built once at the end is there
        assert "ix_sample_project_id" in {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sample'"))}
    engine.dispose()


def test_vectors_on_postgresql_go_in_with_copy(tmp_path: Path, postgres_url: str) -> None:
    x, y = _pool(tmp_path / "data", 200_000)
    pf = _project(tmp_path, database=postgres_url)
    r = run_cli("import", "-p", str(pf), env={"ALLOOP_LOG_LEVEL": "INFO"}, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "200000 added, 0 unchanged" in r.stdout
    assert "Wrote 200000 new samples with COPY" in r.stderr, r.stderr
    work = tmp_path / "p" / ".alloop"
    _check_store(postgres_url, work, x, y)
    r = run_cli("import", "-p", str(pf), env={"ALLOOP_LOG_LEVEL": "INFO"}, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "0 added, 200000 unchanged" in r.stdout and "new samples with" not in r.stderr
    _check_store(postgres_url, work, x, y)
