"""File hand-off for any labeling tool: a tasks file out, a labels file in.

Push appends one JSON object per task to ``tasks_path``::

    {"key": "3/0042.png", "round": 2, "data": {"path": "/abs/3/0042.png"},
     "prediction": {"label": "3", "score": 0.91, "model_version": "round-2"}}

A task's id is its sample key. A sample whose key is already in the file is not written again:
pushing twice leaves one line per key.

Pull reads ``labels_path`` (written by the team's tool or script), one object per line::

    {"key": "3/0042.png", "label": "3", "annotator": "ana"}      # required: key, label
    optional: "id" (unique annotation id; default "<key>#<annotator>"), "cancelled" (bool),
    "created_at"/"updated_at" (ISO 8601), "lead_time" (seconds)

A later line with the same id replaces an earlier one (an updated annotation).

Detection projects write and read boxes in pixels, ``[x, y, w, h]`` (COCO)::

    task:   {"key": "000017.png", ..., "prediction": {"boxes": [{"bbox": [12, 30, 40, 22], "label": "cat",
             "score": 0.87}], "model_version": "round-2"}}
    label:  {"key": "000017.png", "boxes": [{"bbox": [12, 30, 41, 22], "label": "cat"}], "annotator": "ana"}

(``"boxes": []``: nothing to detect in the image; a label line needs "boxes" instead of "label").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from alloop.errors import ConnectorDataError
from alloop.files import read_jsonl, write_jsonl
from alloop.protocols import AnnotationRecord, ConnectorContext, TaskPayload, TaskRef


class JsonlParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks_path: Path | None = None
    """Default: <work_dir>/handoff/tasks.jsonl"""
    labels_path: Path | None = None
    """Default: <work_dir>/handoff/labels.jsonl"""


def _parse_time(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConnectorDataError(f"{where}: expected an ISO 8601 time, got {value!r}.") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class JsonlConnector:
    """Writes tasks to a JSONL file and reads labels back from another."""

    name = "jsonl"

    def __init__(self, context: ConnectorContext, params: JsonlParams) -> None:
        base = context.work_dir / "handoff"
        self.tasks_path = Path(params.tasks_path or base / "tasks.jsonl")
        self.labels_path = Path(params.labels_path or base / "labels.jsonl")
        self.context = context
        self.detection = context.task == "detection"

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, *, context: ConnectorContext) -> JsonlConnector:
        from alloop.params import parse_params

        return cls(context, parse_params(JsonlParams, params, "jsonl connector parameters"))

    def ensure_project(self) -> None:
        self.tasks_path.parent.mkdir(parents=True, exist_ok=True)
        self.labels_path.parent.mkdir(parents=True, exist_ok=True)

    def _read_jsonl(self, path: Path) -> list[tuple[int, dict[str, Any]]]:
        if not path.exists():
            return []
        # a last line without its newline is still being written by the other side: read it next time
        return read_jsonl(path, error=ConnectorDataError, partial_last_line=True)

    def find_tasks(self, keys: Sequence[str], round_number: int | None = None) -> dict[str, str]:
        """The keys in the tasks file (written for ``round_number`` if given)."""
        wanted = set(keys)
        return {o["key"]: o["key"] for _, o in self._read_jsonl(self.tasks_path)
                if o.get("key") in wanted and (round_number is None or o.get("round") == round_number)}

    def _drop_partial_line(self) -> None:
        """Cut a last line without its newline (a push killed mid-write) before appending."""
        if not self.tasks_path.exists():
            return
        with open(self.tasks_path, "rb+") as fh:
            size = fh.seek(0, 2)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            fh.truncate(data.rfind(b"\n") + 1)

    def push(self, tasks: Sequence[TaskPayload]) -> dict[str, str]:
        """Append the tasks whose keys are not in the tasks file yet; the id of a task is its key."""
        self.ensure_project()
        self._drop_partial_line()
        written = {o.get("key") for _, o in self._read_jsonl(self.tasks_path)}
        lines: list[dict[str, Any]] = []
        for t in tasks:
            if t.sample_key in written:
                continue
            written.add(t.sample_key)
            obj: dict[str, Any] = {"key": t.sample_key, "round": t.round_number, "kind": t.kind, "data": dict(t.data)}
            if t.prediction is not None and self.detection:
                from alloop.detection.annotations import image_size, pixel_boxes

                size = image_size(t.data, t.sample_key)
                out = []
                for b in (t.prediction.value or {}).get("boxes", []):
                    for px in pixel_boxes([b], size):  # none when clipped away
                        out.append(px | ({"score": b["score"]} if "score" in b else {}))
                obj["prediction"] = {"boxes": out, "model_version": t.prediction.model_version}
            elif t.prediction is not None:
                obj["prediction"] = {
                    "label": t.prediction.label,
                    "score": t.prediction.score,
                    "model_version": t.prediction.model_version,
                }
            lines.append(obj)
        if lines:
            write_jsonl(self.tasks_path, lines, append=True, sort_keys=True)
        return {t.sample_key: t.sample_key for t in tasks}

    def pull(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        for t in tasks:
            if t.external_id != t.sample_key:
                raise ConnectorDataError(
                    f"The jsonl connector never issued the task id {t.external_id!r} (sample {t.sample_key!r}): "
                    "its task ids are the sample keys. The task was recorded for another connector."
                )
        by_key = {t.sample_key: t for t in tasks}
        latest: dict[str, AnnotationRecord] = {}
        sizes: dict[str, Any] = {}
        if self.detection:  # image sizes, to store boxes in percent like every connector
            sizes = {o["key"]: o.get("data", {}) for _, o in self._read_jsonl(self.tasks_path) if "key" in o}
        for no, o in self._read_jsonl(self.labels_path):
            where = f"{self.labels_path}:{no}"
            key = o.get("key")
            if not isinstance(key, str):
                raise ConnectorDataError(f"{where}: missing string field 'key'.")
            if key not in by_key:
                continue
            cancelled = bool(o.get("cancelled", False))
            label = o.get("label")
            value = None
            if self.detection:
                value = None if cancelled else self._boxes(o, where, key, sizes)
                label = None
            elif not cancelled and not isinstance(label, str):
                raise ConnectorDataError(f"{where}: field 'label' must be a string (or set \"cancelled\": true).")
            annotator = str(o.get("annotator", "unknown"))
            ref = by_key[key]
            created = _parse_time(o.get("created_at"), where) or ref.pushed_at
            updated = _parse_time(o.get("updated_at"), where) or created
            source_id = str(o.get("id", f"{key}#{annotator}"))
            latest[source_id] = AnnotationRecord(
                sample_key=key,
                external_task_id=ref.external_id,
                source_id=source_id,
                annotator=annotator,
                label=None if cancelled else label,
                cancelled=cancelled,
                value=value,
                created_at=created,
                updated_at=updated,
                lead_time=o.get("lead_time"),
            )
        return list(latest.values())

    @staticmethod
    def _boxes(o: dict[str, Any], where: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
        from alloop.detection.annotations import image_size, percent_boxes

        boxes = o.get("boxes")
        example = '"boxes": [{"bbox": [x, y, w, h], "label": "cat"}]'
        if not isinstance(boxes, list):
            raise ConnectorDataError(f"{where}: a detection label needs {example} (pixels; [] for no object).")
        for i, b in enumerate(boxes):
            bbox = b.get("bbox") if isinstance(b, dict) else None
            ok = isinstance(bbox, list) and len(bbox) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox) and bbox[2] > 0 and bbox[3] > 0
            if not ok or not isinstance(b.get("label"), str):
                raise ConnectorDataError(
                    f"{where}: boxes[{i}] must be {{\"bbox\": [x, y, w, h], \"label\": name}} with w, h > 0 "
                    f"(pixels); got {json.dumps(b)}.")
        if key not in data:
            raise ConnectorDataError(f"{where}: sample {key!r} is not in the tasks file; cannot size its boxes.")
        return {"boxes": percent_boxes(boxes, image_size(data[key], key))}

    def close(self) -> None:
        return None
