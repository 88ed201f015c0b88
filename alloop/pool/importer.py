"""Write a scanned source into the project database, idempotently.

Re-importing the same source changes nothing. A key whose content changed is reported and
left alone (its labels belong to the old content); a previously quarantined file that now
reads fine is restored. Everything happens in one transaction: an error writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import select

from alloop.errors import PoolImportError, format_list
from alloop.pool.base import ScanResult
from alloop.rng import derive_rng
from alloop.store.engine import session_scope
from alloop.store.models import Sample
from alloop.store.queries import get_project

logger = logging.getLogger(__name__)


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    restored: int = 0
    test: int = 0
    changed: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

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


def _label_set(current: list[str], scan: ScanResult) -> list[str]:
    if current:
        labels = list(current)
    elif scan.label_names:
        labels = list(scan.label_names)
    else:
        labels = sorted({i.reference_label for i in scan.items if i.reference_label is not None})
    if len(labels) < 2:
        raise PoolImportError(
            "The project has no label set. Set `labels = [...]` under [project] in alloop.toml "
            "(at least 2 labels), or import a source with known labels (e.g. class sub-folders)."
        )
    unknown = sorted(
        ({i.reference_label for i in scan.items if i.reference_label is not None}
         | {str(b["label"]) for i in scan.items for b in i.data.get("reference_boxes", ())}) - set(labels)
    )
    if unknown:
        raise PoolImportError(
            f"The source has labels that are not in the project's label set: {format_list(unknown)}. "
            f"Label set: {format_list(labels, 20)}. Add them to [project] labels or fix the source."
        )
    return labels


def import_pool(engine: Engine, project_name: str, scan: ScanResult, *, test_fraction: float) -> ImportReport:
    """Insert new samples, restore fixed ones, report changed and quarantined ones."""
    report = ImportReport()
    with session_scope(engine) as s:
        project = get_project(s, project_name)
        labels = _label_set(project.labels, scan)
        if labels != project.labels:
            project.labels = labels
            s.add(project)
        report.labels = labels
        existing = {
            smp.key: smp for smp in s.exec(select(Sample).where(Sample.project_id == project.id)).all()
        }
        for item in scan.items:
            old = existing.get(item.key)
            if old is None:
                split = (
                    "test"
                    if (item.reference_label is not None or "reference_boxes" in item.data)
                    and in_test_split(project.seed, item.key, test_fraction)
                    else "pool"
                )
                report.test += split == "test"
                s.add(
                    Sample(
                        project_id=project.id,  # type: ignore[arg-type]
                        key=item.key,
                        kind=item.kind,
                        content_hash=item.content_hash,
                        data=dict(item.data),
                        reference_label=item.reference_label,
                        split=split,
                    )
                )
                report.added += 1
            elif old.content_hash == item.content_hash and old.status == "ok":
                report.unchanged += 1
            elif old.status == "quarantined":
                old.status, old.reason = "ok", None
                old.content_hash, old.data = item.content_hash, dict(item.data)
                old.reference_label = item.reference_label
                s.add(old)
                report.restored += 1
            else:
                report.changed.append(item.key)
        for q in scan.quarantined:
            report.quarantined.append((q.key, q.reason))
            if q.key not in existing:
                s.add(
                    Sample(
                        project_id=project.id,  # type: ignore[arg-type]
                        key=q.key,
                        kind=q.kind,
                        content_hash=q.content_hash or "",
                        data=dict(q.data),
                        status="quarantined",
                        reason=q.reason,
                    )
                )
    if report.changed:
        logger.warning(
            "%d samples changed content since their import and were left unchanged: %s",
            len(report.changed),
            format_list(report.changed),
        )
    for key, reason in report.quarantined:
        logger.warning("Quarantined %s: %s", key, reason)
    return report
