"""Store what a labeling tool returned: every annotation kept, none counted twice.

An annotation is identified by (connector, source id). Seeing it again updates the stored
row when something changed (an edited label, a later cancel) and does nothing otherwise.
A label outside the project's label set is stored as invalid with its reason - reported,
never trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, select

from alloop.errors import ConnectorDataError
from alloop.store.models import Annotation, Task, utcnow
from connectors.base import AnnotationRecord

logger = logging.getLogger(__name__)


@dataclass
class IngestStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.new + self.updated


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
    tasks_by_key: dict[str, Task],
) -> IngestStats:
    """Upsert ``records`` (in the caller's transaction), with bulk inserts and updates."""
    stats = IngestStats()
    latest = {r.source_id: r for r in records}  # a source id seen twice: the later report wins
    if not latest:
        return stats
    ids = list(latest)
    compared = ("annotator", "label", "value", "cancelled", "valid", "invalid_reason", "lead_time", "updated_at")
    cols = [getattr(Annotation, c) for c in ("id", "source_id", *compared)]
    existing: dict[str, Any] = {}
    for i in range(0, len(ids), 900):
        for row in session.execute(
            select(*cols).where(
                Annotation.project_id == project_id,
                Annotation.connector == connector,
                Annotation.source_id.in_(ids[i : i + 900]),  # type: ignore[attr-defined]
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
        else:
            stats.unchanged += 1
            continue
        if not valid:
            stats.invalid.append((r.sample_key, reason or ""))
    if inserts:
        session.execute(insert(Annotation), inserts)
    if updates:
        session.execute(update(Annotation), updates)
    for key, reason in stats.invalid:
        logger.warning("Invalid annotation for %s: %s", key, reason)
    return stats
