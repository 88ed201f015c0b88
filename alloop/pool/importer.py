"""Write a scanned source into the project database, idempotently.

Re-importing the same source changes nothing. A key whose content changed is reported and
left alone (its labels belong to the old content); a previously quarantined file that now
reads fine is restored. Everything happens in one transaction: an error writes nothing.

The write is columnar and in batches (:data:`BATCH` samples): new samples go in with
:func:`alloop.store.bulk.bulk_insert_samples` (``COPY`` on PostgreSQL, ``executemany`` on
SQLite), never as ORM objects. Into an empty project nothing is looked up; otherwise the keys of
each batch are looked up (one ``key = ANY(array)`` query on PostgreSQL, ``key IN (...)`` with
:data:`LOOKUP_BATCH` keys on SQLite) and only the samples that need it are updated.

A vectors import also registers its stored matrix as one :class:`~alloop.store.models.VectorFile`
of the project's vector store (rows ``first_row ..< first_row + rows``, ``first_row`` the end of
the store, or the file's registered ``first_row`` when it is already there) and gives each new
sample, quarantined ones included, its store row ``Sample.row = first_row + <row in the file>``
(``data`` keeps ``{"vectors": <file>, "row": <row in the file>}``). An unchanged sample without a
store row (imported before the store existed) gets its row in the file imported now. Two imports
of one project at the same time: the second fails on a unique constraint and writes nothing.

Cost, one core: about 10 µs per new vector row (hashing, storing, SQLite insert), about 4 µs per
unchanged one on a re-import; the test split, when ``test_fraction > 0``, adds about 15 µs per
new labelled sample (one derived generator per key, so that a sample's split never depends on the
import order).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import String, any_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from alloop.errors import PoolImportError, format_list
from alloop.pool.base import Scan, ScanResult, VectorScan
from alloop.progress import NULL_PROGRESS, Progress, ProgressTask
from alloop.rng import derive_rng
from alloop.store.bulk import SAMPLE, VECTORFILE, bulk_insert_samples, indexes_rebuilt, json_serializer
from alloop.store.engine import session_scope
from alloop.store.models import utcnow
from alloop.store.queries import get_project

logger = logging.getLogger(__name__)

#: samples handled (looked up, inserted) per batch
BATCH = 50_000
#: keys per ``IN (...)`` lookup (SQLite allows 32,766 parameters per statement; PostgreSQL takes
#: a batch's keys as one array)
LOOKUP_BATCH = 10_000

#: SQLite: an import into an empty project of at least this many samples (and at least as many as
#: the table holds) builds these indexes once at the end instead of row by row
REBUILD_INDEX_ROWS = 100_000
REBUILT_INDEXES = ("ix_sample_project_id",)

#: the columns a batch inserts (and ``kind``); ``project_id`` and ``created_at`` are constants
INSERT_COLUMNS = ("key", "content_hash", "data", "reference_label", "split", "status", "reason", "row")
#: columns written as one constant when a batch has a single value in them (fewer values to bind)
_OFTEN_CONSTANT = frozenset({"reference_label", "split", "status", "reason", "kind"})


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    restored: int = 0
    test: int = 0
    changed: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    #: how the new samples were written: "copy" (PostgreSQL) or "executemany"; None if none were
    write_method: str | None = None
    #: vectors imports: the project's vector file of this source and its first store row
    vector_file: str | None = None
    first_row: int | None = None

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.unchanged} unchanged"]
        if self.restored:
            parts.append(f"{self.restored} restored from quarantine")
        if self.test:
            parts.append(f"{self.test} new samples held out for evaluation")
        if self.quarantined:
            parts.append(f"{len(self.quarantined)} quarantined")
        if self.changed:
            parts.append(f"{len(self.changed)} changed content (not applied)")
        return ", ".join(parts)


def in_test_split(seed: int, key: str, fraction: float) -> bool:
    """Deterministic per key, so re-imports and import order never move a sample."""
    return fraction > 0 and derive_rng(seed, "split", key).random() < fraction


@dataclass
class _Batch:
    """Samples of a scan, as columns (``reasons[i]`` None: readable; ``rows[i]``: store row or None)."""

    keys: list[str]
    kinds: list[str]
    hashes: list[str]
    data: list[str]  # JSON text
    labels: list[str | None]
    reasons: list[str | None]
    rows: list[int | None]
    may_test: list[bool]  # has a reference (label or boxes): may be held out

    def __len__(self) -> int:
        return len(self.keys)


def _scan_labels(scan: Scan) -> set[str]:
    """The labels of the readable samples (and of their reference boxes)."""
    if isinstance(scan, VectorScan):
        if scan.label_codes is None:
            return set()
        ok = np.ones(len(scan), dtype=bool)
        ok[list(scan.reasons)] = False
        return {scan.label_values[c] for c in np.unique(scan.label_codes[ok]).tolist() if c >= 0}
    return ({i.reference_label for i in scan.items if i.reference_label is not None}
            | {str(b["label"]) for i in scan.items for b in i.data.get("reference_boxes", ())})


def _label_set(current: list[str], scan: Scan) -> list[str]:
    found = _scan_labels(scan)
    if current:
        labels = list(current)
    elif scan.label_names:
        labels = list(scan.label_names)
    elif isinstance(scan, VectorScan):
        labels = sorted(found)
    else:
        labels = sorted({i.reference_label for i in scan.items if i.reference_label is not None})
    if len(labels) < 2:
        raise PoolImportError(
            "The project has no label set. Set `labels = [...]` under [project] in alloop.toml "
            "(at least 2 labels), or import a source with known labels (e.g. class sub-folders)."
        )
    unknown = sorted(found - set(labels))
    if unknown:
        raise PoolImportError(
            f"The source has labels that are not in the project's label set: {format_list(unknown)}. "
            f"Label set: {format_list(labels, 20)}. Add them to [project] labels or fix the source."
        )
    return labels


def _vector_batches(scan: VectorScan, first_row: int) -> Iterator[_Batch]:
    """Readable rows first, then quarantined ones (each in file order), as the samples were always added."""
    order = np.concatenate([scan.ok_rows(), scan.quarantined_rows()]) if scan.reasons else np.arange(len(scan))
    keys = scan.keys
    for start in range(0, order.size, BATCH):
        rows = order[start : start + BATCH]
        labels = scan.labels(rows)
        row_list: list[int] = rows.tolist()
        yield _Batch(
            keys=list(keys[start : start + BATCH]) if not scan.reasons else [keys[i] for i in row_list],
            kinds=[scan.kind] * rows.size,
            hashes=scan.hashes(rows),
            data=scan.data_json(rows),
            labels=labels,
            reasons=[scan.reasons.get(i) for i in row_list] if scan.reasons else [None] * rows.size,
            rows=(rows + first_row).tolist(),
            may_test=[lab is not None for lab in labels],
        )


def _item_batches(scan: ScanResult, dumps: Any) -> Iterator[_Batch]:
    """Items, then quarantined items, as columns."""
    for start in range(0, len(scan.items), BATCH):
        items = scan.items[start : start + BATCH]
        yield _Batch(
            keys=[i.key for i in items],
            kinds=[i.kind for i in items],
            hashes=[i.content_hash for i in items],
            data=[dumps(i.data) for i in items],
            labels=[i.reference_label for i in items],
            reasons=[None] * len(items),
            rows=[None] * len(items),
            may_test=[i.reference_label is not None or "reference_boxes" in i.data for i in items],
        )
    for start in range(0, len(scan.quarantined), BATCH):
        qs = scan.quarantined[start : start + BATCH]
        yield _Batch(
            keys=[q.key for q in qs],
            kinds=[q.kind for q in qs],
            hashes=[q.content_hash or "" for q in qs],
            data=[dumps(q.data) for q in qs],
            labels=[None] * len(qs),
            reasons=[q.reason for q in qs],
            rows=[None] * len(qs),
            may_test=[False] * len(qs),
        )


def _register_vector_file(conn: Connection, project_id: int, scan: VectorScan) -> int:
    """The store row of the file's row 0: the file's registered first row, or the end of the store."""
    t = VECTORFILE
    found = conn.execute(
        select(t.c.first_row, t.c.rows, t.c.dim).where(t.c.project_id == project_id, t.c.path == scan.path)
    ).first()
    if found is not None:
        first_row, rows, dim = (int(v) for v in found)
        if (rows, dim) != (len(scan), scan.dim):
            raise PoolImportError(
                f"The project's vector file {scan.path} is registered with {rows} rows of {dim} values, "
                f"but this source has {len(scan)} rows of {scan.dim}. Import it into a new project."
            )
        return first_row
    end = conn.execute(
        select(func.coalesce(func.max(t.c.first_row + t.c.rows), 0)).where(t.c.project_id == project_id)
    ).scalar_one()
    first_row = int(end)
    conn.execute(
        t.insert().values(
            project_id=project_id, path=scan.path, first_row=first_row, rows=len(scan), dim=scan.dim,
            created_at=utcnow(),
        )
    )
    return first_row


#: a stored sample as the importer compares it: (key, content_hash, status, id, row)
Stored = tuple[str, str, str, int, "int | None"]


def _existing(conn: Connection, project_id: int, keys: Sequence[str]) -> dict[str, Stored]:
    """key -> (key, content_hash, status, id, row) of the project's samples among ``keys``.

    PostgreSQL: one query, the keys as one array parameter (``key = ANY(:keys)``). Others:
    ``key IN (?, ...)`` with :data:`LOOKUP_BATCH` keys at a time, as plain SQL on the driver's
    cursor (compiling an expanding parameter of 10,000 keys and wrapping each result row costs
    more than the lookup itself).
    """
    t = SAMPLE
    if conn.dialect.name == "postgresql":
        query = select(t.c.key, t.c.content_hash, t.c.status, t.c.id, t.c.row).where(
            t.c.project_id == project_id, t.c.key == any_(bindparam("keys", type_=postgresql.ARRAY(String)))
        )
        return {r[0]: tuple(r) for r in conn.execute(query, {"keys": list(keys)}).all()}
    if conn.dialect.paramstyle != "qmark":
        raise NotImplementedError(f"sample lookup for {conn.dialect.name} ({conn.dialect.paramstyle})")
    out: dict[str, Stored] = {}
    cursor = conn.connection.cursor()  # the transaction's own connection
    try:
        for start in range(0, len(keys), LOOKUP_BATCH):
            part = list(keys[start : start + LOOKUP_BATCH])
            cursor.execute(
                "SELECT key, content_hash, status, id, row FROM sample WHERE project_id = ? AND key IN ("
                + ",".join("?" * len(part)) + ")",
                (project_id, *part),
            )
            out.update({r[0]: r for r in cursor.fetchall()})
    finally:
        cursor.close()
    return out


class _Writer:
    """Classifies a batch against the database and writes it: inserts, restores, row numbers."""

    def __init__(self, conn: Connection, project_id: int, seed: int, test_fraction: float, empty: bool,
                 report: ImportReport) -> None:
        self.conn, self.project_id, self.seed, self.test_fraction = conn, project_id, seed, test_fraction
        self.empty, self.report = empty, report
        self.created_at = utcnow()
        self.methods: set[str] = set()
        self.inserted = 0
        self.restores: list[dict[str, Any]] = []
        self.rows_to_set: list[dict[str, Any]] = []
        t = SAMPLE
        self.restore = (
            update(t)
            .where(t.c.id == bindparam("_id"))
            .values(status="ok", reason=None, content_hash=bindparam("_hash"), data=bindparam("_data"),
                    reference_label=bindparam("_label"), row=bindparam("_row"))
        )
        self.set_row = update(t).where(t.c.id == bindparam("_id")).values(row=bindparam("_row"))

    def _classify(self, batch: _Batch, existing: dict[str, Stored]) -> list[int]:
        """Count unchanged/changed samples, queue restores and row numbers; the positions of new samples."""
        report = self.report
        new: list[int] = []
        for i, key in enumerate(batch.keys):
            old = existing.get(key)
            if old is None:
                new.append(i)
                continue
            if batch.reasons[i] is not None:  # quarantined now: the stored sample is left as it is
                continue
            _, digest, status, sid, row = old
            if digest == batch.hashes[i] and status == "ok":
                report.unchanged += 1
                if row is None and batch.rows[i] is not None:  # imported before the vector store existed
                    self.rows_to_set.append({"_id": sid, "_row": batch.rows[i]})
            elif status == "quarantined":
                self.restores.append({"_id": sid, "_hash": batch.hashes[i], "_data": json.loads(batch.data[i]),
                                      "_label": batch.labels[i], "_row": batch.rows[i]})
                report.restored += 1
            else:
                report.changed.append(key)
        return new

    def write(self, batch: _Batch) -> Callable[[], None] | None:
        """Classify the batch, apply its updates; the insert of its new samples, to run next (or None)."""
        report = self.report
        report.quarantined.extend((k, r) for k, r in zip(batch.keys, batch.reasons) if r is not None)
        existing = {} if self.empty else _existing(self.conn, self.project_id, batch.keys)
        cols = (batch.keys, batch.hashes, batch.data, batch.labels, batch.reasons, batch.rows, batch.may_test,
                batch.kinds)
        if existing:
            new = self._classify(batch, existing)
            if len(new) < len(batch):
                cols = tuple([c[i] for i in new] for c in cols)  # type: ignore[assignment]
        if self.restores:
            self.conn.execute(self.restore, self.restores)
            self.restores.clear()
        if self.rows_to_set:
            self.conn.execute(self.set_row, self.rows_to_set)
            self.rows_to_set.clear()
        keys, hashes, data, labels, reasons, rows, may_test, kinds = cols
        n = len(keys)
        if not n:
            return None
        if reasons.count(None) != n:
            statuses = ["ok" if r is None else "quarantined" for r in reasons]
            labels = [lab if r is None else None for lab, r in zip(labels, reasons)]
        else:
            statuses = ["ok"] * n
        report.added += statuses.count("ok")
        splits = ["pool"] * n
        if self.test_fraction > 0:
            for i, key in enumerate(keys):
                if may_test[i] and reasons[i] is None and in_test_split(self.seed, key, self.test_fraction):
                    splits[i] = "test"
                    report.test += 1
        constants: dict[str, Any] = {"project_id": self.project_id, "created_at": self.created_at}
        columns: list[str] = []
        values: list[list[Any]] = []
        every: tuple[list[Any], ...] = (keys, hashes, data, labels, splits, statuses, reasons, rows, kinds)
        for name, column in zip((*INSERT_COLUMNS, "kind"), every):
            if name in _OFTEN_CONSTANT and column.count(column[0]) == n:  # the same in every row
                constants[name] = column[0]
            else:
                columns.append(name)
                values.append(column)
        return partial(self._insert, values, columns, constants)

    def _insert(self, values: list[list[Any]], columns: list[str], constants: dict[str, Any]) -> None:
        done = bulk_insert_samples(self.conn, zip(*values), columns, constants=constants)
        self.methods.add(done.method)
        self.inserted += done.rows


def _write_batches(writer: _Writer, batches: Iterator[_Batch], bar: ProgressTask, *, overlap: bool) -> None:
    """Write the batches in order. With ``overlap`` (nothing to look up: the project was empty), a
    batch's insert runs in a second thread while this one prepares the next (the drivers release
    the GIL while the database works); the connection is used by one thread at a time."""
    if not overlap:
        for batch in batches:
            insert = writer.write(batch)
            if insert is not None:
                insert()
            bar.advance(len(batch))
        return
    with ThreadPoolExecutor(1) as pool:
        pending: Future[None] | None = None
        try:
            for batch in batches:
                insert = writer.write(batch)
                if pending is not None:
                    pending.result()
                    pending = None
                if insert is not None:
                    pending = pool.submit(insert)
                bar.advance(len(batch))
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                wait([pending])  # never leave a statement running when the transaction ends


def _table_size(conn: Connection) -> int:
    """About how many samples the table holds, all projects (the highest id: no scan)."""
    return int(conn.execute(select(func.max(SAMPLE.c.id))).scalar() or 0)


def _concurrent_import(exc: IntegrityError) -> bool:
    """A unique constraint (sample key, vector file) broken: another import wrote the same rows first."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


def import_pool(
    engine: Engine,
    project_name: str,
    scan: Scan,
    *,
    test_fraction: float,
    progress: Progress = NULL_PROGRESS,
) -> ImportReport:
    """Insert new samples, restore fixed ones, report changed and quarantined ones.

    Parameters
    ----------
    engine : Engine
    project_name : str
    scan : ScanResult or VectorScan
        What the source's scanner read (:func:`alloop.pool.sources.scan_source`).
    test_fraction : float
        Share of new samples with a reference label (or boxes) held out for evaluation, decided
        per key (:func:`in_test_split`, about 15 µs a key; not computed at all when 0).
    progress : Progress
        One step per sample written.

    Returns
    -------
    ImportReport

    Raises
    ------
    PoolImportError
        No usable label set, labels outside it, a vector file registered with another shape, or
        another import of the project running at the same time (nothing is written).
    """
    report = ImportReport()
    stored = scan if isinstance(scan, VectorScan) else None
    try:
        with session_scope(engine) as s:
            project = get_project(s, project_name)
            labels = _label_set(project.labels, scan)
            if labels != project.labels:
                project.labels = labels
                s.add(project)
            report.labels = labels
            assert project.id is not None
            conn = s.connection()
            empty = conn.execute(select(SAMPLE.c.id).where(SAMPLE.c.project_id == project.id).limit(1)).first() is None
            if isinstance(scan, VectorScan):
                first_row = _register_vector_file(conn, project.id, scan)
                report.vector_file, report.first_row = scan.path, first_row
                batches = _vector_batches(scan, first_row)
                total = len(scan)
            else:
                batches = _item_batches(scan, json_serializer(conn))
                total = len(scan.items) + len(scan.quarantined)
            writer = _Writer(conn, project.id, project.seed, test_fraction, empty, report)
            rebuild = empty and total >= REBUILD_INDEX_ROWS and total >= _table_size(conn)
            with progress.task("Writing samples", total=total) as bar, \
                    indexes_rebuilt(conn, SAMPLE, REBUILT_INDEXES if rebuild else ()):
                _write_batches(writer, batches, bar, overlap=empty)
            report.write_method = "copy" if "copy" in writer.methods else next(iter(writer.methods), None)
            inserted = writer.inserted
            if stored is not None:  # the rows point at the stored matrix: it is on disk before they commit
                stored.wait_stored()
    except IntegrityError as exc:
        if not _concurrent_import(exc):
            raise
        raise PoolImportError(
            f"Nothing was imported into project {project_name!r}: another import of this project ran at "
            f"the same time; run `alloop import` again. ({exc.orig})"
        ) from None
    except OperationalError as exc:
        if "database is locked" not in str(exc.orig):
            raise
        raise PoolImportError(
            f"Nothing was imported into project {project_name!r}: another process (an import, or a "
            f"loop writing a round) held the SQLite database for longer than its 30 s busy timeout. "
            f"Run `alloop import` again when it is done (a long import of the same project finishes "
            f"first). ({exc.orig})"
        ) from None
    finally:
        if stored is not None and stored.pending is not None:  # failed before the commit: let the copy end
            with suppress(Exception):
                stored.wait_stored()
    if report.write_method is not None:
        how = "COPY" if report.write_method == "copy" else "executemany"
        logger.info("Wrote %d new samples with %s", inserted, how)
    if report.changed:
        logger.warning(
            "%d samples changed content since their import and were left unchanged: %s",
            len(report.changed),
            format_list(report.changed),
        )
    for key, reason in report.quarantined:
        logger.warning("Quarantined %s: %s", key, reason)
    return report
