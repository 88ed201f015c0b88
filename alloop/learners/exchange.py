"""The files the command learner exchanges with the training command.

What the command reads (:func:`write_inputs`): for detection, COCO files written by
:func:`alloop.detection.coco.coco_document` (``file_name`` = the absolute image path,
``alloop_key`` = the sample key, categories ``j + 1`` in label order); otherwise JSON lines
``{"key", "path" or "text", "label"}``. What it writes back (see :mod:`alloop.learners.command`
for the formats): class probabilities or labels per key (:func:`read_proba`, through
:func:`alloop.files.iter_jsonl`), detections as a COCO results list, a COCO object or JSON lines
(:func:`read_detections`), and optional metrics (:func:`read_metrics`). Every reading error
names the file and the line or entry.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alloop.detection.boxes import Proposals, clip_boxes, invalid_boxes
from alloop.errors import ConfigError, LearnerError, PoolImportError, format_list
from alloop.files import atomic_write, iter_jsonl
from alloop.protocols.learner import ExportItem

__all__ = [
    "ExportItem",
    "check_unique_keys",
    "read_detections",
    "read_metrics",
    "read_proba",
    "write_inputs",
]

_PROBA_EXAMPLE = '{"key": "img_001.png", "proba": {"cat": 0.9, "dog": 0.1}}'
_LABEL_EXAMPLE = '{"key": "img_001.png", "label": "cat", "score": 0.9}'
_RESULT_EXAMPLE = '{"image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40], "score": 0.87}'

#: An exported image: its absolute path, width and height (the order of predict.json's ids).
ImageFile = tuple[str, int, int]


# ---------------------------------------------------------------------------------------------
# what the command reads
# ---------------------------------------------------------------------------------------------
def check_unique_keys(items: Sequence[ExportItem], what: str) -> None:
    """Raise LearnerError when two ``items`` share a key."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.key] = counts.get(item.key, 0) + 1
    dupes = [key for key, n in counts.items() if n > 1]
    if dupes:
        raise LearnerError(
            f"The {what} samples repeat the key(s) {format_list(sorted(set(dupes)))}; keys must be unique."
        )


def _image_path(item: ExportItem) -> str:
    path = item.data.get("path")
    if not path:
        raise LearnerError(
            f"Sample {item.key!r} has no image path (data {dict(item.data)!r}); a detection sample "
            "needs data={'path': ...}. Check the pool's source."
        )
    return os.path.abspath(os.path.expanduser(str(path)))


def _label_index(label: Any, labels: list[str], key: str) -> int:
    if label not in labels:
        raise LearnerError(
            f"Sample {key!r} has the label {label!r}, which is not one of the project's labels "
            f"({format_list(labels, 20)}). Fix the annotation or add the label to project.labels."
        )
    return labels.index(label)


def _write_coco(path: Path, items: Sequence[ExportItem], labels: list[str], with_boxes: bool) -> list[ImageFile]:
    """Write a COCO file; the (absolute path, width, height) of each item."""
    from alloop.detection.coco import CocoItem, coco_document, write_coco

    def rows() -> Iterator[CocoItem]:
        for item in items:
            data = {**item.data, "path": _image_path(item)}
            yield item.key, data, (item.boxes or []) if with_boxes else None

    doc = coco_document(rows(), labels, error=LearnerError)
    write_coco(path, doc)
    return [(img["file_name"], img["width"], img["height"]) for img in doc["images"]]


def _write_jsonl(path: Path, items: Sequence[ExportItem], labels: list[str], with_label: bool) -> None:
    lines = []
    for item in items:
        row: dict[str, Any] = {"key": item.key}
        if item.data.get("path"):
            row["path"] = os.path.abspath(os.path.expanduser(str(item.data["path"])))
        if item.data.get("text") is not None:
            row["text"] = str(item.data["text"])
        if len(row) == 1:
            raise LearnerError(f"Sample {item.key!r} has neither a 'path' nor a 'text' (data {dict(item.data)!r}).")
        if with_label:
            if item.label is None:
                raise LearnerError(f"Training sample {item.key!r} has no label; only labeled samples can be exported.")
            _label_index(item.label, labels, item.key)
            row["label"] = item.label
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write(path, "".join(line + "\n" for line in lines))


def write_inputs(
    task: str, labels: list[str], train: Sequence[ExportItem], predict: Sequence[ExportItem],
    paths: Mapping[str, Path],
) -> list[ImageFile]:
    """Write ``paths["labels"]``, ``paths["train"]`` and ``paths["predict"]`` (atomically).

    Returns the exported predict images ``(absolute path, width, height)`` for detection (their
    COCO ids are 1, 2...), an empty list otherwise.

    Raises
    ------
    LearnerError
        A sample without an image path (detection) or without path and text, a training sample
        without a label, a label not in ``labels``, a malformed box.
    SampleDecodeError
        An image whose size is not in its data cannot be read.
    """
    atomic_write(paths["labels"], json.dumps(labels, ensure_ascii=False))
    if task == "detection":
        _write_coco(paths["train"], train, labels, with_boxes=True)
        return _write_coco(paths["predict"], predict, labels, with_boxes=False)
    _write_jsonl(paths["train"], train, labels, with_label=True)
    _write_jsonl(paths["predict"], predict, labels, with_label=False)
    return []


# ---------------------------------------------------------------------------------------------
# what the command wrote
# ---------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(path: Path) -> dict[str, float]:
    """``metrics.json`` as a dict of finite numbers (empty when the command wrote none)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LearnerError(
            f'{path}: not valid JSON ({exc}). Write a JSON object of numbers, e.g. {{"accuracy": 0.91}}.'
        ) from None
    if not isinstance(data, dict):
        raise LearnerError(f"{path}: expected a JSON object of numbers, got a JSON {type(data).__name__}.")
    bad = {k: v for k, v in data.items() if not _is_number(v)}
    if bad:
        name, value = next(iter(bad.items()))
        raise LearnerError(
            f"{path}: metric {name!r} is {json.dumps(value)}, but metrics must be finite numbers "
            f'({len(bad)} are not). Write numbers only, e.g. {{"accuracy": 0.91}}; leave out the others.'
        )
    return {str(k): float(v) for k, v in data.items()}


def _close(name: str, known: Sequence[str]) -> str:
    hint = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return f" Did you mean {hint[0]!r}?" if hint else ""


def _proba_row(obj: dict[str, Any], labels: list[str], where: str) -> np.ndarray:
    n = len(labels)
    if "proba" in obj:
        proba = obj["proba"]
        row: np.ndarray
        if isinstance(proba, dict):
            row = np.zeros(n)
            for name, p in proba.items():
                if name not in labels:
                    raise LearnerError(
                        f"{where}: unknown label {name!r} in 'proba' (labels: {format_list(labels, 20)})."
                        + _close(name, labels)
                    )
                row[labels.index(name)] = p if _is_number(p) else math.nan
            values = list(proba.values())
        elif isinstance(proba, list) and len(proba) == n:
            values = proba
            row = np.array([p if _is_number(p) else math.nan for p in proba], float)
        else:
            raise LearnerError(
                f"{where}: 'proba' must be an object {{label: probability}} (or a list of {n} numbers in "
                f"label order), got {json.dumps(proba)[:200]}. E.g. {_PROBA_EXAMPLE}."
            )
        if not np.isfinite(row).all() or (row < 0).any():
            raise LearnerError(f"{where}: probabilities must be finite numbers >= 0, got {json.dumps(values)[:200]}.")
        if row.sum() <= 0:
            raise LearnerError(f"{where}: the probabilities sum to 0; give at least one positive value.")
        return row / row.sum()
    if "label" in obj:
        name = obj["label"]
        name = str(name) if isinstance(name, int) and not isinstance(name, bool) else name  # class 3 -> "3"
        if name not in labels:
            raise LearnerError(
                f"{where}: unknown label {name!r} (labels: {format_list(labels, 20)}).{_close(name, labels)}"
            )
        score = obj.get("score", 1.0)
        if not _is_number(score) or not 0.0 <= score <= 1.0:
            raise LearnerError(f"{where}: 'score' must be a number between 0 and 1, got {json.dumps(score)}.")
        # the score on the predicted label, the rest shared by the others
        row = np.full(n, (1.0 - score) / (n - 1) if n > 1 else 0.0)
        row[labels.index(name)] = score if n > 1 else 1.0
        return row / row.sum()
    raise LearnerError(
        f"{where}: a line needs 'proba' or 'label' (fields: {format_list(list(obj), 10) or 'none'}). "
        f"E.g. {_PROBA_EXAMPLE} or {_LABEL_EXAMPLE}."
    )


def read_proba(path: Path, keys: Sequence[str], labels: list[str]) -> np.ndarray:
    """Class probabilities of ``keys`` (rows in that order, columns in label order) from JSON lines.

    Each line is ``{"key", "proba": {label: p} or [p, ...]}`` or ``{"key", "label", "score"?}``;
    every key needs exactly one line.
    """
    position = {k: i for i, k in enumerate(keys)}
    proba = np.zeros((len(keys), len(labels)), np.float64)
    line_of: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path, error=LearnerError, expect=f"one JSON object, e.g. {_PROBA_EXAMPLE}"):
        where = f"{path}, line {lineno}"
        if "key" not in obj:
            raise LearnerError(
                f"{where}: expected a JSON object with a 'key', got {json.dumps(obj)[:200]}. E.g. {_PROBA_EXAMPLE}."
            )
        key = str(obj["key"])
        if key not in position:
            raise LearnerError(
                f"{where}: key {key!r} is not one of the {len(keys)} samples in the predict file."
                f"{_close(key, keys)} Write the 'key' of each predict line as given."
            )
        if key in line_of:
            raise LearnerError(
                f"{where}: key {key!r} was already predicted on line {line_of[key]}; write each key once."
            )
        line_of[key] = lineno
        proba[position[key]] = _proba_row(obj, labels, where)
    missing = [k for k in keys if k not in line_of]
    if missing:
        raise LearnerError(
            f"{path}: {len(missing)} of the {len(keys)} samples to predict have no line, e.g. "
            f"{format_list(missing, 3)}. The command must write one line per line of the predict file."
        )
    return proba.astype(np.float32)


def _read_results(
    path: Path, results: list[Any], files: list[ImageFile], labels: list[str], keys: Sequence[str]
) -> Proposals:
    """A COCO results list whose image and category ids are those of predict.json."""
    image, box, label, score = [], [], [], []
    for i, obj in enumerate(results):
        where = f"{path}, entry [{i}]"
        if not isinstance(obj, dict) or not all(f in obj for f in ("image_id", "category_id", "bbox")):
            raise LearnerError(
                f"{where}: expected an object with 'image_id', 'category_id', 'bbox' and 'score', got "
                f"{json.dumps(obj)[:200]}. E.g. {_RESULT_EXAMPLE}."
            )
        img, cat = obj["image_id"], obj["category_id"]
        if isinstance(img, bool) or not isinstance(img, int) or not 1 <= img <= len(files):
            raise LearnerError(
                f"{where}: image_id {json.dumps(img)} is not an image id of the predict file (1..{len(files)})."
            )
        if isinstance(cat, bool) or not isinstance(cat, int) or not 1 <= cat <= len(labels):
            raise LearnerError(
                f"{where}: category_id {json.dumps(cat)} is not a category id (1..{len(labels)}: "
                f"{format_list(labels, 20)}, the ids of the categories in the predict file)."
            )
        b = obj["bbox"]
        if not (isinstance(b, list) and len(b) == 4 and all(_is_number(v) for v in b) and b[2] > 0 and b[3] > 0):
            raise LearnerError(f"{where}: 'bbox' must be [x, y, w, h] in pixels with w, h > 0, got {json.dumps(b)}.")
        s = obj.get("score", 1.0)
        if not _is_number(s) or not 0.0 <= s <= 1.0:
            raise LearnerError(f"{where}: 'score' must be a number between 0 and 1, got {json.dumps(s)}.")
        _, width, height = files[img - 1]
        clipped = clip_boxes([b], width, height)
        if invalid_boxes(clipped)[0]:
            raise LearnerError(
                f"{where}: bbox {b} lies outside its {width}x{height} image {keys[img - 1]!r}; boxes are "
                "[x, y, w, h] in pixels, not fractions of the image size."
            )
        image.append(keys[img - 1])
        box.append(clipped[0])
        label.append(labels[cat - 1])
        score.append(float(s))
    if not image:
        return Proposals.empty()
    return Proposals(image=image, box=box, label=label, score=score)


def read_detections(run_dir: Path, files: list[ImageFile], labels: list[str], keys: Sequence[str]) -> Proposals:
    """The detections in ``predictions.json`` (or ``predictions.jsonl``) of ``run_dir``, in predict order.

    ``files`` and ``keys`` are the exported predict images and their sample keys (COCO ids 1, 2...).
    """
    from alloop.detection.autolabels import read_autolabels

    order = {k: i for i, k in enumerate(keys)}
    json_path, jsonl_path = run_dir / "predictions.json", run_dir / "predictions.jsonl"
    path = json_path if json_path.exists() else jsonl_path
    text = path.read_text(encoding="utf-8", errors="replace")
    if path == json_path:
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise LearnerError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
        if isinstance(data, list):
            found = _read_results(path, data, files, labels, keys)
            return found[np.argsort([order[k] for k in found.image.tolist()], kind="stable")]
    # a whole COCO object or JSON lines: images named by absolute path (as in predict.json) or key
    key_of = {f[0]: k for f, k in zip(files, keys)} | {k: k for k in keys}
    sizes = {name: (float(files[order[k]][1]), float(files[order[k]][2])) for name, k in key_of.items()}
    try:
        found = read_autolabels(path, labels=labels, image_sizes=sizes)
    except (PoolImportError, ConfigError) as exc:
        raise LearnerError(f"The training command's predictions cannot be read: {exc}") from None
    if not len(found):
        return found
    image = [key_of[name] for name in found.image.tolist()]
    found = Proposals(image=image, box=found.box, label=found.label, score=found.score)
    return found[np.argsort([order[k] for k in image], kind="stable")]
