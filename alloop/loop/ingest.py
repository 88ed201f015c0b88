"""Store what a labeling tool returned: every annotation kept, none counted twice.

An annotation is identified by (connector, source id). Seeing it again updates the stored
row when something changed (an edited label, a later cancel) and does nothing otherwise.
A label outside the project's label set is stored as invalid with its reason - reported,
never trained on.

An annotation deleted in the tool is never deleted here: when the connector's pull is complete
(it returns every annotation the tool holds for the pulled tasks, like Label Studio's export), a
stored annotation missing from it is marked invalid with the reason :data:`DELETED` - so it is
no longer trained on nor counted as resolving its task - and restored if it reappears.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Row, func, insert, or_, update
from sqlmodel import Session, col, select

from alloop.errors import ConnectorDataError
from alloop.protocols import AnnotationRecord
from alloop.store.models import Annotation, Task, table, utcnow

logger = logging.getLogger(__name__)

_ANNOTATION = table(Annotation)

#: ``invalid_reason`` of an annotation that disappeared from the labeling tool
DELETED = "deleted in the labeling tool"


def _not_deleted() -> ColumnElement[bool]:
    return or_(col(Annotation.invalid_reason).is_(None), col(Annotation.invalid_reason) != DELETED)


@dataclass
class IngestStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    restored: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.new + self.updated + self.deleted


def _check(record: AnnotationRecord, labels: Sequence[str]) -> tuple[bool, str | None]:
    """Valid, or invalid with the reason. A skip (cancelled) is valid but is no label."""
    if record.cancelled:
        return True, None
    value = record.value or {}
    if "boxes" in value:  # detection: every box needs a known label; no boxes = nothing there
        bad = sorted({str(b.get("label")) for b in value["boxes"] if b.get("label") not in labels})
        if bad:
            return False, f"box labels {bad} are not in the label set {list(labels)}"
        return True, None
    if "choices" in value:
        return False, f"{len(value['choices'])} labels chosen ({value['choices']}), expected exactly one"
    if record.label is None:
        return False, "empty annotation: no label chosen (a skip would be cancelled instead)"
    if record.label not in labels:
        return False, f"label {record.label!r} is not in the label set {list(labels)}"
    return True, None


def ingest(
    session: Session,
    *,
    project_id: int,
    connector: str,
    labels: Sequence[str],
    records: Sequence[AnnotationRecord],
    tasks_by_key: dict[str, Any],
    complete_tasks: Collection[int] | None = None,
) -> IngestStats:
    """Upsert ``records`` (in the caller's transaction), with bulk inserts and updates.

    ``complete_tasks``: ids of tasks whose annotations ``records`` lists completely; a stored
    annotation of those tasks that is not among them was deleted in the tool and is marked so.
    """
    stats = IngestStats()
    latest = {r.source_id: r for r in records}  # a source id seen twice: the later report wins
    if complete_tasks:
        _mark_deleted(session, project_id, connector, complete_tasks, set(latest), stats)
    if not latest:
        return stats
    ids = list(latest)
    compared = ("annotator", "label", "value", "cancelled", "valid", "invalid_reason", "lead_time", "updated_at")
    cols = [_ANNOTATION.c[c] for c in ("id", "source_id", *compared)]
    existing: dict[str, Any] = {}
    conn = session.connection()  # Core statements in the caller's transaction: plain rows, no ORM loading
    for i in range(0, len(ids), 900):
        for row in conn.execute(
            select(*cols).where(
                Annotation.project_id == project_id,
                Annotation.connector == connector,
                col(Annotation.source_id).in_(ids[i : i + 900]),
            )
        ):
            existing[row.source_id] = row
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    now = utcnow()
    for r in latest.values():
        task = tasks_by_key.get(r.sample_key)
        if task is None:
            raise ConnectorDataError(
                f"The labeling tool returned an annotation for sample {r.sample_key!r}, which alloop never pushed."
            )
        valid, reason = _check(r, labels)
        fields = dict(
            annotator=r.annotator,
            label=r.label,
            value=dict(r.value) if r.value is not None else None,
            cancelled=r.cancelled,
            valid=valid,
            invalid_reason=reason,
            lead_time=r.lead_time,
            updated_at=r.updated_at,
        )
        old = existing.get(r.source_id)
        if old is None:
            inserts.append(dict(
                project_id=project_id, sample_id=task.sample_id, task_id=task.id, round_id=task.round_id,
                connector=connector, source_id=r.source_id, created_at=r.created_at, ingested_at=now, **fields,
            ))
            stats.new += 1
        elif any(getattr(old, k) != fields[k] for k in compared):
            updates.append(dict(id=old.id, ingested_at=now, **fields))
            stats.updated += 1
            if old.invalid_reason == DELETED:
                stats.restored += 1
                logger.info("Annotation %s of %s is back in the labeling tool: restored", r.source_id, r.sample_key)
        else:
            stats.unchanged += 1
            continue
        if not valid:
            stats.invalid.append((r.sample_key, reason or ""))
    if inserts:
        conn.execute(insert(_ANNOTATION), inserts)
    if updates:
        session.execute(update(Annotation), updates)
    for key, reason in stats.invalid:
        logger.warning("Invalid annotation for %s: %s", key, reason)
    return stats


def _mark_deleted(
    session: Session, project_id: int, connector: str, task_ids: Collection[int], present: set[str], stats: IngestStats
) -> None:
    """Mark the stored annotations of ``task_ids`` that the tool no longer has (never delete rows)."""
    ids = list(task_ids)
    gone: list[Row[Any]] = []
    for i in range(0, len(ids), 900):
        rows = session.execute(
            select(Annotation.id, Annotation.source_id, Annotation.sample_id).where(
                Annotation.project_id == project_id,
                Annotation.connector == connector,
                col(Annotation.task_id).in_(ids[i : i + 900]),
                _not_deleted(),
            )
        ).all()
        gone.extend(row for row in rows if row.source_id not in present)
    if not gone:
        return
    now = utcnow()
    session.execute(
        update(Annotation), [dict(id=row.id, valid=False, invalid_reason=DELETED, ingested_at=now) for row in gone]
    )
    stats.deleted = len(gone)
    logger.info("%d annotation(s) deleted in the labeling tool (e.g. %s): kept, marked invalid, no longer "
                "trained on", len(gone), gone[0].source_id)


def resolved_tasks(session: Session, round_id: int) -> int:
    """Tasks of the round with at least one annotation still in the tool (a label, an invalid one or a skip)."""
    return int(
        session.connection().execute(
            select(func.count(func.distinct(Annotation.task_id)))
            .join(Task, col(Task.id) == col(Annotation.task_id))
            .where(Task.round_id == round_id, _not_deleted())
        ).scalar_one()
    )


def open_leftovers(session: Session, project_id: int, connector: str) -> NDArray[np.int64]:
    """Sample ids of the project's tasks in ``connector`` with no annotation still in the tool
    (not resolved, see :func:`resolved_tasks`), ascending: what a stream round may re-rank."""
    answered = select(col(Annotation.id)).where(col(Annotation.task_id) == col(Task.id), _not_deleted()).exists()
    ids = session.connection().execute(
        select(col(Task.sample_id)).where(col(Task.project_id) == project_id, col(Task.connector) == connector,
                                          ~answered).order_by(col(Task.sample_id))
    ).scalars().all()
    return np.array(ids, dtype=np.int64)


def new_labels_since(session: Session, project_id: int, since: datetime) -> int:
    """Samples with a valid label (or boxes) ingested after ``since``: what a retrain would add.

    A valid, not cancelled annotation always carries a label or boxes (see :func:`_check`).
    """
    return int(
        session.connection().execute(
            select(func.count(func.distinct(Annotation.sample_id))).where(
                Annotation.project_id == project_id,
                Annotation.valid == True,  # noqa: E712
                Annotation.cancelled == False,  # noqa: E712
                Annotation.ingested_at > since,
            )
        ).scalar_one()
    )
