"""The bulk importer on both backends (``db_url``: a SQLite file and a real PostgreSQL).

Vectors go in as columns (COPY on PostgreSQL, executemany on SQLite), get their store row and
one registered vector file; re-imports change nothing, restore what was fixed, leave changed
content alone; two files make one store that reads every sample's vector back.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

from alloop.config import VectorSource
from alloop.errors import PoolImportError
from alloop.pool import importer
from alloop.pool.base import PoolItem, QuarantinedItem, ScanResult
from alloop.pool.importer import import_pool, in_test_split
from alloop.pool.vectors import scan_matrix, scan_vectors
from alloop.store.bulk import SAMPLE, bulk_insert, bulk_insert_samples, vector_store
from alloop.store.engine import open_store, session_scope
from alloop.store.models import Project, Sample, VectorFile, utcnow


@pytest.fixture
def engine(db_url):
    engine = open_store(db_url)
    with session_scope(engine) as s:
        s.add(Project(name="p", task="classification", seed=7))
    yield engine
    engine.dispose()


def samples(engine) -> dict[str, Sample]:
    with session_scope(engine) as s:
        return {x.key: x for x in s.exec(select(Sample)).all()}


def vector_files(engine) -> list[tuple[str, int, int, int]]:
    with session_scope(engine) as s:
        rows = s.exec(select(VectorFile).order_by(VectorFile.first_row)).all()
        return [(f.path, f.first_row, f.rows, f.dim) for f in rows]


def matrix(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def labels(n: int) -> list[str]:
    return [("a", "b", "c")[i % 3] for i in range(n)]


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_vectors_get_their_store_row_and_one_vector_file(engine, tmp_path: Path, db_url) -> None:
    x = matrix(50)
    x[7, 1] = np.nan
    scan = scan_matrix(x, keys("k", 50), labels(50), tmp_path)
    report = import_pool(engine, "p", scan, test_fraction=0)
    assert (report.added, report.unchanged, len(report.quarantined)) == (49, 0, 1)
    assert report.write_method == ("copy" if db_url.startswith("postgresql") else "executemany")
    assert (report.vector_file, report.first_row) == (scan.path, 0)
    got = samples(engine)
    assert len(got) == 50
    for i in range(50):
        smp = got[f"k{i}"]
        assert smp.row == i and smp.data == {"vectors": scan.path, "row": i} and smp.kind == "vector"
        assert smp.project_id is not None and smp.created_at.tzinfo is not None
    assert got["k7"].status == "quarantined" and got["k7"].reference_label is None
    assert got["k7"].reason is not None and "1 NaN" in got["k7"].reason
    assert got["k8"].status == "ok" and got["k8"].reference_label == "c" and got["k8"].split == "pool"
    assert got["k8"].content_hash == scan.hashes(np.array([8]))[0]
    assert vector_files(engine) == [(scan.path, 0, 50, 4)]
    # the samples were added as before: readable rows first, then the quarantined ones
    assert sorted(got, key=lambda k: got[k].id or 0)[-1] == "k7"

    again = import_pool(engine, "p", scan_matrix(x, keys("k", 50), labels(50), tmp_path), test_fraction=0)
    assert (again.added, again.unchanged, again.restored, again.changed) == (0, 49, 0, [])
    assert again.write_method is None and len(again.quarantined) == 1
    assert vector_files(engine) == [(scan.path, 0, 50, 4)]
    assert {k: (v.id, v.row, v.content_hash) for k, v in samples(engine).items()} == {
        k: (v.id, v.row, v.content_hash) for k, v in got.items()}


def test_reimport_restores_a_fixed_row_and_leaves_a_changed_one(engine, tmp_path: Path) -> None:
    x = matrix(20)
    x[3, 0] = np.inf
    first = scan_matrix(x, keys("k", 20), labels(20), tmp_path)
    import_pool(engine, "p", first, test_fraction=0)
    before = samples(engine)
    fixed = x.copy()
    fixed[3, 0] = 1.5  # now readable
    fixed[5] += 1.0  # changed content: its labels belong to the old vector
    second = scan_matrix(fixed, keys("k", 20), labels(20), tmp_path)
    assert second.path != first.path
    report = import_pool(engine, "p", second, test_fraction=0)
    assert (report.added, report.unchanged, report.restored, report.changed) == (0, 18, 1, ["k5"])
    assert report.first_row == 20 and report.quarantined == []
    assert vector_files(engine) == [(first.path, 0, 20, 4), (second.path, 20, 20, 4)]
    after = samples(engine)
    restored = after["k3"]
    assert (restored.status, restored.reason, restored.reference_label) == ("ok", None, "a")
    assert restored.row == 23 and restored.data == {"vectors": second.path, "row": 3}
    assert restored.content_hash == second.hashes(np.array([3]))[0] != before["k3"].content_hash
    changed = after["k5"]
    assert (changed.row, changed.data, changed.content_hash) == (5, before["k5"].data, before["k5"].content_hash)
    assert {k: after[k].row for k in after if k not in ("k3",)} == {k: before[k].row for k in before if k != "k3"}
    store = vector_store(engine, after["k0"].project_id, tmp_path)
    assert np.array_equal(store.take(np.array([restored.row, changed.row])), np.stack([fixed[3], x[5]]))


def test_two_vector_files_make_one_store(engine, tmp_path: Path) -> None:
    a, b = matrix(30, 6, seed=1), matrix(12, 6, seed=2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b.astype(np.float64))  # converted to float32 on the way
    (tmp_path / "b-keys.txt").write_text("\n".join(keys("b", 12)) + "\n")
    (tmp_path / "a-labels.txt").write_text("\n".join(labels(30)) + "\n")
    work = tmp_path / "work"
    first = import_pool(engine, "p", scan_vectors(VectorSource(path=tmp_path / "a.npy",
                                                               labels_path=tmp_path / "a-labels.txt"), work),
                        test_fraction=0)
    second = import_pool(engine, "p", scan_vectors(VectorSource(path=tmp_path / "b.npy",
                                                                keys_path=tmp_path / "b-keys.txt"), work),
                         test_fraction=0)
    assert (first.first_row, second.first_row, first.added, second.added) == (0, 30, 30, 12)
    files = vector_files(engine)
    assert [f[1:] for f in files] == [(0, 30, 6), (30, 12, 6)]
    assert sorted(p.name for p in (work / "pool").iterdir()) == sorted(Path(f[0]).name for f in files)
    got = samples(engine)
    truth = {**{f"row-{i:06d}": a[i] for i in range(30)}, **{f"b{i}": b[i].astype(np.float32) for i in range(12)}}
    assert set(got) == set(truth)
    order = sorted(got)
    rows = np.array([got[k].row for k in order])
    project_id = got[order[0]].project_id
    with session_scope(engine) as s:
        from_session = vector_store(s, project_id, work)
    store = vector_store(engine, project_id, work)
    assert len(store.files) == 2 and store.n_rows == 42 and store.dim == 6
    expected = np.stack([truth[k] for k in order])
    assert np.array_equal(store.take(rows), expected)
    assert np.array_equal(from_session.take(rows[::-1]), expected[::-1])
    assert np.array_equal(np.concatenate([c for _, c in store.chunks(np.arange(42), 10)]),
                          np.concatenate([a, b.astype(np.float32)]))
    # importing A again registers nothing and changes nothing
    again = import_pool(engine, "p", scan_vectors(VectorSource(path=tmp_path / "a.npy",
                                                               labels_path=tmp_path / "a-labels.txt"), work),
                        test_fraction=0)
    assert (again.added, again.unchanged, again.first_row) == (0, 30, 0) and vector_files(engine) == files


def test_the_test_split_is_decided_per_key_as_before(engine, tmp_path: Path) -> None:
    n = 400
    x = matrix(n)
    x[11, 2] = np.nan
    lab: list[str | None] = labels(n)
    lab[12] = None  # no reference label: never held out
    report = import_pool(engine, "p", scan_matrix(x, keys("k", n), lab, tmp_path), test_fraction=0.3)
    got = samples(engine)
    expected = {f"k{i}" for i in range(n) if i not in (11, 12) and in_test_split(7, f"k{i}", 0.3)}
    assert {k for k, v in got.items() if v.split == "test"} == expected
    assert report.test == len(expected) and 80 < len(expected) < 160


def test_items_and_quarantined_items_go_through_the_bulk_writer(engine, tmp_path: Path) -> None:
    data = {"path": "/imgs/l'été 100%.png", "width": 3, "reference_boxes": [{"label": "a", "box": [0.5, 1, 2, 3]}]}
    scan = ScanResult(
        items=[PoolItem("a/1.png", "image", "h1", data, "a"), PoolItem("b/2.png", "image", "h2", {"path": "x"}, "b"),
               PoolItem("t", "text", "h3", {"text": 'quote " and \\ and \n and \t'}, None)],
        quarantined=[QuarantinedItem("bad.png", "image", "OSError: truncated", {"path": "bad"}, "h4")],
    )
    report = import_pool(engine, "p", scan, test_fraction=0)
    assert (report.added, len(report.quarantined), report.vector_file) == (3, 1, None)
    got = samples(engine)
    assert got["a/1.png"].data == data and got["t"].data == {"text": 'quote " and \\ and \n and \t'}
    assert [got[k].kind for k in ("a/1.png", "t", "bad.png")] == ["image", "text", "image"]
    assert got["bad.png"].status == "quarantined" and got["bad.png"].reason == "OSError: truncated"
    assert all(v.row is None for v in got.values()) and vector_files(engine) == []
    fixed = ScanResult(items=[*scan.items, PoolItem("bad.png", "image", "h5", {"path": "bad"}, "a")])
    again = import_pool(engine, "p", fixed, test_fraction=0)
    assert (again.added, again.unchanged, again.restored) == (0, 3, 1)
    assert samples(engine)["bad.png"].status == "ok" and samples(engine)["bad.png"].content_hash == "h5"


def test_a_vector_sample_imported_before_the_store_gets_its_row(engine, tmp_path: Path) -> None:
    x = matrix(10)
    scan = scan_matrix(x, keys("k", 10), labels(10), tmp_path)
    import_pool(engine, "p", scan, test_fraction=0)
    with session_scope(engine) as s:  # as a project imported before migration 0003 looks
        s.connection().execute(text("UPDATE sample SET row = NULL"))
        s.connection().execute(text("DELETE FROM vectorfile"))
    report = import_pool(engine, "p", scan_matrix(x, keys("k", 10), labels(10), tmp_path), test_fraction=0)
    assert (report.added, report.unchanged) == (0, 10)
    assert {k: v.row for k, v in samples(engine).items()} == {f"k{i}": i for i in range(10)}
    assert vector_files(engine) == [(scan.path, 0, 10, 4)]


def test_an_import_running_at_the_same_time_is_a_clear_error(engine, db_url, tmp_path: Path, monkeypatch) -> None:
    x = matrix(40)
    scan = scan_matrix(x, keys("k", 40), labels(40), tmp_path)
    register = importer._register_vector_file
    other = open_store(db_url)

    outcome: list[object] = []

    def the_other_import(*args):
        try:
            outcome.append(import_pool(other, "p", scan, test_fraction=0))
        except Exception as exc:  # checked below
            outcome.append(exc)

    def the_other_import_commits_first(*args):
        if threading.current_thread() is threading.main_thread():
            # the other process: same source, same moment (this one has looked at the project already)
            worker = threading.Thread(target=the_other_import)
            worker.start()
            worker.join()
        return register(*args)

    monkeypatch.setattr(importer, "_register_vector_file", the_other_import_commits_first)
    with pytest.raises(PoolImportError, match=r"another import of this project ran at the same time; run "
                                              r"`alloop import` again"):
        import_pool(engine, "p", scan, test_fraction=0)
    other.dispose()
    assert [getattr(o, "added", o) for o in outcome] == [40]
    assert len(samples(engine)) == 40 and vector_files(engine) == [(scan.path, 0, 40, 4)]  # the other one's


def test_a_failed_import_writes_nothing_and_keeps_the_indexes(engine, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(importer, "BATCH", 100)
    monkeypatch.setattr(importer, "REBUILD_INDEX_ROWS", 100)  # SQLite: the content-hash index is rebuilt
    x = matrix(1000)
    write = importer._Writer.write
    calls = []

    def fail_on_the_third_batch(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return write(self, batch)

    monkeypatch.setattr(importer._Writer, "write", fail_on_the_third_batch)
    with pytest.raises(RuntimeError, match="disk full"):
        import_pool(engine, "p", scan_matrix(x, keys("k", 1000), labels(1000), tmp_path), test_fraction=0)
    assert samples(engine) == {} and vector_files(engine) == []
    indexes = {i["name"] for i in inspect(engine).get_indexes("sample")}
    assert "ix_sample_project_id" in indexes
    monkeypatch.setattr(importer._Writer, "write", write)
    report = import_pool(engine, "p", scan_matrix(x, keys("k", 1000), labels(1000), tmp_path), test_fraction=0)
    assert report.added == 1000 and len(samples(engine)) == 1000
    assert "ix_sample_project_id" in {i["name"] for i in inspect(engine).get_indexes("sample")}


def test_an_insert_failing_in_the_writer_thread_writes_nothing(engine, tmp_path: Path, monkeypatch) -> None:
    """Into an empty project a batch is inserted while the next is prepared: its error still ends the import."""
    monkeypatch.setattr(importer, "BATCH", 100)
    insert = importer.bulk_insert_samples
    threads = []

    def fail_on_the_fourth_insert(conn, rows, columns, **kwargs):
        threads.append(threading.current_thread())
        if len(threads) == 4:
            raise RuntimeError("connection lost")
        return insert(conn, rows, columns, **kwargs)

    monkeypatch.setattr(importer, "bulk_insert_samples", fail_on_the_fourth_insert)
    x = matrix(1000)
    with pytest.raises(RuntimeError, match="connection lost"):
        import_pool(engine, "p", scan_matrix(x, keys("k", 1000), labels(1000), tmp_path), test_fraction=0)
    assert samples(engine) == {} and vector_files(engine) == []
    assert len(threads) == 4 and threading.main_thread() not in threads
    monkeypatch.setattr(importer, "bulk_insert_samples", insert)
    assert import_pool(engine, "p", scan_matrix(x, keys("k", 1000), labels(1000), tmp_path),
                       test_fraction=0).added == 1000


def test_a_failed_import_of_items_keeps_the_indexes_too(engine, monkeypatch) -> None:
    """Texts and images: nothing was written before the index is dropped (SQLite then opens the transaction)."""
    monkeypatch.setattr(importer, "BATCH", 10)
    monkeypatch.setattr(importer, "REBUILD_INDEX_ROWS", 10)
    scan = ScanResult(items=[PoolItem(f"t{i}", "text", f"h{i}", {"text": str(i)}, "ab"[i % 2]) for i in range(50)])
    write = importer._Writer.write

    def fail_on_the_second_batch(self, batch):
        if batch.keys[0] == "t10":
            raise RuntimeError("killed")
        return write(self, batch)

    monkeypatch.setattr(importer._Writer, "write", fail_on_the_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        import_pool(engine, "p", scan, test_fraction=0)
    assert samples(engine) == {}
    assert "ix_sample_project_id" in {i["name"] for i in inspect(engine).get_indexes("sample")}


def test_bulk_insert_constants_and_text_values(engine, db_url) -> None:
    with session_scope(engine) as s:
        project_id = s.exec(select(Project.id)).one()
        conn = s.connection()
        rows = [(f"key'{i}%s", "h", json.dumps({"n": i, "s": "it's 100%"}), None, "pool", "ok", None, i)
                for i in range(5)]
        done = bulk_insert_samples(conn, iter(rows), importer.INSERT_COLUMNS,
                                   constants={"project_id": project_id, "kind": "o'dd %(x)s", "created_at": utcnow()})
        assert done.rows == 5 and done.method == ("copy" if db_url.startswith("postgresql") else "executemany")
        plain = bulk_insert(conn, SAMPLE, [("z", "h", "{}", "pool", "ok", 9)],
                            ("key", "content_hash", "data", "split", "status", "row"),
                            constants={"project_id": project_id, "kind": "vector", "created_at": utcnow()},
                            method="executemany")
        assert plain == type(done)(1, "executemany")
    got = samples(engine)
    assert got["key'3%s"].data == {"n": 3, "s": "it's 100%"} and got["key'3%s"].kind == "o'dd %(x)s"
    assert got["key'3%s"].row == 3 and got["z"].row == 9 and len(got) == 6
    if not db_url.startswith("postgresql"):
        with session_scope(engine) as s, pytest.raises(ValueError, match="COPY needs PostgreSQL"):
            bulk_insert_samples(s.connection(), [], ("key",), method="copy")


def test_a_sqlite_database_held_by_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    """Another connection holds the write lock for the whole import: a clear error, nothing written."""
    import sqlite3

    from sqlalchemy import create_engine

    from alloop.store.engine import migrate

    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = create_engine(url, connect_args={"timeout": 0.2})  # as the 30 s busy timeout ends, sooner
    migrate(engine)
    with session_scope(engine) as s:
        s.add(Project(name="p", task="classification", seed=7))
    holder = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the other process's write transaction, open throughout
    try:
        with pytest.raises(PoolImportError, match=r"held the SQLite database for longer than its 30 s busy "
                                                  r"timeout\. Run `alloop import` again"):
            import_pool(engine, "p", scan_matrix(matrix(20), keys("k", 20), labels(20), tmp_path), test_fraction=0)
    finally:
        holder.rollback()
        holder.close()
    assert samples(engine) == {} and vector_files(engine) == []
    engine.dispose()


def test_a_float32_npy_copied_in_the_background_is_on_disk_before_the_import_commits(engine, tmp_path: Path) -> None:
    from sqlalchemy import event

    x = matrix(3000, 16, seed=4)
    np.save(tmp_path / "a.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(labels(3000)) + "\n")
    work = tmp_path / "work"
    scan = scan_vectors(VectorSource(path=tmp_path / "a.npy", labels_path=tmp_path / "y.txt"), work, wait=False)
    assert scan.pending is not None  # the copy was handed to a second thread
    stored = work / scan.path
    seen: list[bytes] = []

    def at_commit(conn) -> None:
        seen.append(stored.read_bytes())  # raises if the file is not there yet

    event.listen(engine, "commit", at_commit)
    try:
        report = import_pool(engine, "p", scan, test_fraction=0)
    finally:
        event.remove(engine, "commit", at_commit)
    assert report.added == 3000 and scan.pending is None
    assert seen and seen[-1] == (tmp_path / "a.npy").read_bytes()  # byte for byte the source, at the commit
    assert sorted(p.name for p in (work / "pool").iterdir()) == [stored.name]  # no temporary left
    assert np.array_equal(vector_store(engine, samples(engine)["row-000000"].project_id, work).take(
        np.arange(3000)), x)


def test_without_an_in_kernel_copy_the_rows_are_copied_through_python(engine, tmp_path: Path,
                                                                       monkeypatch) -> None:
    import errno
    import os

    def refuse(*args, **kwargs):  # what the kernel answers between two file systems it cannot copy across
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    x = matrix(700, 8, seed=5)
    np.save(tmp_path / "a.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(labels(700)) + "\n")
    scan = scan_vectors(VectorSource(path=tmp_path / "a.npy", labels_path=tmp_path / "y.txt"), tmp_path / "work",
                        wait=False)
    assert import_pool(engine, "p", scan, test_fraction=0).added == 700
    assert (tmp_path / "work" / scan.path).read_bytes() == (tmp_path / "a.npy").read_bytes()


def test_an_import_refused_while_the_copy_runs_leaves_no_temporary_file(engine, tmp_path: Path) -> None:
    with session_scope(engine) as s:
        project = s.exec(select(Project)).one()
        project.labels = ["a", "b"]
        s.add(project)
    np.save(tmp_path / "a.npy", matrix(900, 8, seed=6))
    (tmp_path / "y.txt").write_text("\n".join(["a", "b", "zebra"] * 300) + "\n")
    scan = scan_vectors(VectorSource(path=tmp_path / "a.npy", labels_path=tmp_path / "y.txt"), tmp_path / "work",
                        wait=False)
    with pytest.raises(PoolImportError, match="zebra"):
        import_pool(engine, "p", scan, test_fraction=0)
    assert samples(engine) == {} and scan.pending is None
    names = [p.name for p in (tmp_path / "work" / "pool").iterdir()]
    assert names == [Path(scan.path).name]  # the copy ended under its content name; no temporary left
    assert (tmp_path / "work" / scan.path).read_bytes() == (tmp_path / "a.npy").read_bytes()
