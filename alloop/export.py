"""Export a project's training labels: what people labeled, aggregated, in a standard format.

- Detection: COCO JSON (``images`` with ``file_name`` = the image path relative to the pool
  folder (or absolute), ``width``, ``height``; ``annotations`` with pixel ``bbox``;
  ``categories`` in label-set order). Images labeled as empty are listed without annotations.
- Classification and text: JSON lines (``{"key", "label", "path" | "text"}``) or CSV.

The aggregation rule is the project's ([loop] aggregation); boxes: the latest annotation.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from alloop.errors import ConfigError
from alloop.files import atomic_write

__all__ = ["FORMATS", "export_labels"]

FORMATS = ("coco", "jsonl", "csv")


def _format(path: Path, fmt: str | None, task: str) -> str:
    if fmt is None:
        fmt = {".json": "coco", ".jsonl": "jsonl", ".csv": "csv"}.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"Cannot tell the export format from {path.name!r}: use a .json (COCO), .jsonl or .csv "
                "file name, or pass --format."
            )
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}; known: {', '.join(FORMATS)}.")
    if (task == "detection") != (fmt == "coco"):
        want = "coco (boxes)" if task == "detection" else "jsonl or csv (one label per sample)"
        raise ConfigError(f"A {task!r} project exports as {want}; got format {fmt!r}.")
    return fmt


def export_labels(ws: Any, out: Path, fmt: str | None = None, *, absolute_paths: bool = False) -> dict[str, int]:
    """Write the project's aggregated labels to ``out``; returns counts (samples, boxes)."""
    from alloop.detection.annotations import image_size, pixel_boxes
    from alloop.detection.coco import coco_document, write_coco
    from alloop.store.engine import session_scope
    from alloop.store.models import Sample
    from alloop.store.queries import get_project, training_boxes, training_labels

    out = Path(out)
    with session_scope(ws.engine) as s:
        project = get_project(s, ws.name)
        fmt = _format(out, fmt, project.task)
        from sqlmodel import select

        samples = {smp.id: smp for smp in s.exec(select(Sample).where(Sample.project_id == project.id)).all()}
        if project.task == "detection":
            labeled: dict[int, Any] = training_boxes(s, project)
        else:
            labeled = training_labels(s, project, ws.config.loop.aggregation)
    order = sorted(labeled, key=lambda i: samples[i].key)
    root = ws.pool_root()
    if fmt == "coco":
        items = []
        for sid in order:
            smp = samples[sid]
            data = dict(smp.data)
            if not absolute_paths and root is not None:
                try:
                    data["path"] = str(Path(data["path"]).resolve().relative_to(Path(root).resolve()).as_posix())
                except ValueError:
                    pass
            size = image_size(smp.data, smp.key)
            data["width"], data["height"] = size
            items.append((smp.key, data, pixel_boxes(labeled[sid], size)))
        doc = coco_document(items, project.labels)
        doc["info"] = {"description": f"alloop project {project.name}: labeled boxes", "labels": list(project.labels)}
        write_coco(out, doc, indent=1)
        return {"samples": len(items), "boxes": len(doc["annotations"])}
    rows = []
    for sid in order:
        smp = samples[sid]
        row = {"key": smp.key, "label": labeled[sid]}
        for k in ("path", "text"):
            if k in smp.data:
                row[k] = smp.data[k]
        rows.append(row)
    if fmt == "jsonl":
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    else:
        buf = io.StringIO()
        fields = ["key", "label"] + [k for k in ("path", "text") if any(k in r for r in rows)]
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        payload = buf.getvalue().encode("utf-8")
    atomic_write(out, payload)
    return {"samples": len(rows)}
