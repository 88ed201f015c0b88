"""Between alloop's records and Label Studio's JSON: predictions out, annotations in."""

from __future__ import annotations

import base64
import mimetypes
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alloop.errors import ConnectorDataError
from alloop.protocols import AnnotationRecord, Prediction
from connectors.label_studio.labeling_config import ConfigInfo


def prediction_json(pred: Prediction, info: ConfigInfo) -> dict[str, Any]:
    """A Label Studio prediction (pre-annotation) for one task."""
    if info.result_type == "choices":
        result = [{"from_name": info.from_name, "to_name": info.to_name, "type": "choices",
                   "value": {"choices": [pred.label]}, "score": pred.score}]
    else:  # rectanglelabels: boxes in percent of the image, as Label Studio stores them
        boxes = (pred.value or {}).get("boxes", [])
        result = [
            {"from_name": info.from_name, "to_name": info.to_name, "type": "rectanglelabels",
             "value": {"x": b["x"], "y": b["y"], "width": b["width"], "height": b["height"], "rotation": 0,
                       "rectanglelabels": [b["label"]]},
             "score": b.get("score", pred.score)}
            for b in boxes
        ]
    return {"model_version": pred.model_version, "score": pred.score, "result": result}


def image_reference(path: Path, mode: str, *, document_root: Path | None, url_prefix: str | None) -> str:
    """How a task points at a local image: local-files URL, http URL, or an inline data URI."""
    if mode == "data-uri":
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    if mode == "url":
        if not url_prefix:
            raise ConnectorDataError("images = 'url' needs connector.params.url_prefix (where your images are served).")
        if document_root is None:
            raise ConnectorDataError(
                "images = 'url' needs connector.params.document_root (the folder url_prefix serves)."
            )
        return url_prefix.rstrip("/") + "/" + path.resolve().relative_to(document_root.resolve()).as_posix()
    if document_root is None:
        raise ConnectorDataError(
            "images = 'local-files' needs the Label Studio document root: set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
            "(as for the server) or connector.params.document_root."
        )
    try:
        rel = path.resolve().relative_to(document_root.resolve())
    except ValueError:
        raise ConnectorDataError(
            f"Image {path} is outside the Label Studio document root {document_root}; local-files serving "
            "only reaches files below it. Move the pool under it or start Label Studio with a parent folder."
        ) from None
    return f"/data/local-files/?d={rel.as_posix()}"


def _time(value: str | None) -> datetime:
    if not value:
        return datetime.now(timezone.utc)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_annotation(
    task: dict[str, Any], ann: dict[str, Any], info: ConfigInfo, users: dict[int, str]
) -> AnnotationRecord:
    """One exported annotation as an AnnotationRecord.

    Classification: the label is the chosen choice (none chosen -> label None: an *empty*
    annotation, stored as invalid; a skip is ``was_cancelled``). Detection: the label is None
    and ``value = {"boxes": [...]}`` in percent coordinates. A skip carries neither label nor
    value, whatever the annotator chose before skipping.
    """
    cancelled = bool(ann.get("was_cancelled"))
    mine = [] if cancelled else [r for r in ann.get("result") or [] if r.get("from_name") == info.from_name]
    label: str | None = None
    value: dict[str, Any] | None = None
    if info.result_type == "choices":
        choices = [c for r in mine for c in (r.get("value") or {}).get("choices", [])]
        label = choices[0] if len(choices) == 1 else None
        if len(choices) > 1:
            value = {"choices": choices}
    elif not cancelled:
        boxes = []
        for r in mine:
            v = r.get("value") or {}
            for lb in v.get("rectanglelabels", []):
                boxes.append({k: v.get(k) for k in ("x", "y", "width", "height", "rotation")} | {"label": lb})
        value = {"boxes": boxes}
    who = ann.get("completed_by")
    if isinstance(who, dict):
        annotator = who.get("email") or str(who.get("id"))
    else:
        annotator = users.get(who, f"user-{who}") if isinstance(who, int) else str(who)
    return AnnotationRecord(
        sample_key=str(task["data"]["sample_id"]),
        external_task_id=str(task["id"]),
        source_id=str(ann["id"]),
        annotator=annotator,
        label=label,
        cancelled=cancelled,
        created_at=_time(ann.get("created_at")),
        updated_at=_time(ann.get("updated_at") or ann.get("created_at")),
        value=value,
        lead_time=ann.get("lead_time"),
    )
