"""COCO detection files: the one writer and the one reader.

- :func:`coco_document` builds a COCO object from samples and their pixel boxes: ``images``
  (``id`` from 1, ``file_name``, ``width``, ``height``, ``alloop_key``), ``annotations``
  (``bbox`` ``[x, y, w, h]`` in pixels, ``area``, ``iscrowd`` 0, optional ``score``) and
  ``categories`` (the label set in order, ids ``j + 1``); :func:`write_coco` writes it
  atomically. Used by ``alloop export`` and by the command learner's exports.
- :func:`read_coco` / :func:`parse_coco` read and check one: every section a list of objects,
  unique image and category ids, unique file names, positive sizes, annotations whose image and
  category exist, boxes of 4 finite numbers with ``w, h > 0``, scores in ``[0, 1]``. Every error
  names the file and the entry (``"<path>, annotations[3] (id 12): ..."``). Used by the
  autolabel reader, the ground-truth reader and the dataset generators.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloop.detection._records import (
    BoxRecord,
    number,
    parse_box,
    parse_score,
    read_text,
    scalar_key,
    unknown_label,
)
from alloop.detection.annotations import image_size
from alloop.errors import PoolImportError, format_list
from alloop.files import atomic_write

__all__ = ["CocoFile", "CocoImage", "CocoItem", "coco_document", "load_json", "parse_coco", "read_coco", "write_coco"]

#: One sample of a COCO document: its key, its data (``path``, optional ``width``/``height``)
#: and its pixel boxes ``[{"bbox", "label", "score"?}]`` (None: listed without annotations).
CocoItem = tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]] | None]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _checked_bbox(obj: Mapping[str, Any], key: str, error: Callable[[str], Exception]) -> list[float]:
    try:
        bbox = [float(v) for v in obj["bbox"]]
        ok = len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0 and all(map(math.isfinite, bbox))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok or "label" not in obj:
        raise error(
            f"Sample {key!r} has the object {dict(obj)!r}; an object needs 'bbox' [x, y, w, h] "
            "(pixels, w, h > 0) and 'label'."
        )
    return bbox


def coco_document(
    items: Iterable[CocoItem],
    labels: Sequence[str],
    *,
    file_name: str = "path",
    error: Callable[[str], Exception] = PoolImportError,
) -> dict[str, Any]:
    """A COCO object: ``images``, ``annotations`` (pixel boxes), ``categories`` (labels order).

    Parameters
    ----------
    items : iterable of (key, data, boxes)
        The sample key, its data (``path``, optional ``width``/``height``; otherwise the size is
        read from the image file) and its pixel boxes ``[{"bbox", "label", "score"?}]`` (None:
        an image listed without annotations). Read once, in order.
    labels : sequence of str
        The label set; category ``j + 1`` is ``labels[j]``.
    file_name : {"path", "key"}
        What ``file_name`` holds: the image path as given in ``data`` or the sample key. Each
        image also carries ``alloop_key``.
    error : callable
        Builds the exception for a bad box or label from its message.

    Returns
    -------
    dict
        Images numbered from 1 in item order, annotations numbered from 1.

    Raises
    ------
    Exception
        From ``error``: a box that is not ``[x, y, w, h]`` with finite ``w, h > 0``, or has no
        label; a label not in ``labels``.
    SampleDecodeError
        An image's size is not in ``data`` and the file cannot be read.
    """
    cat = {lb: j + 1 for j, lb in enumerate(labels)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, (key, data, boxes) in enumerate(items, start=1):
        w, h = image_size(data, key)
        images.append({"id": i, "file_name": str(data.get("path")) if file_name == "path" else key,
                       "width": w, "height": h, "alloop_key": key})
        for b in boxes or []:
            x, y, bw, bh = _checked_bbox(b, key, error)
            if b["label"] not in cat:
                raise error(
                    f"Sample {key!r} has the label {b['label']!r}, which is not one of the project's labels "
                    f"({format_list(labels, 20)}). Fix the annotation or add the label to project.labels."
                )
            ann = {"id": len(annotations) + 1, "image_id": i, "category_id": cat[b["label"]],
                   "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0}
            if b.get("score") is not None:
                ann["score"] = float(b["score"])
            annotations.append(ann)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": j, "name": lb} for lb, j in cat.items()],
    }


def write_coco(path: str | Path, doc: Mapping[str, Any], *, indent: int | None = None) -> None:
    """Write ``doc`` as JSON to ``path``, atomically (a reader never sees half a file)."""
    atomic_write(path, json.dumps(doc, indent=indent))


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CocoImage:
    """An entry of ``images``: its id, ``file_name`` and size (None when the file gives none)."""

    id: int | str
    file_name: str
    size: tuple[float, float] | None


@dataclass(frozen=True)
class CocoFile:
    """A checked COCO file.

    Attributes
    ----------
    path : Path
    images : list of CocoImage
        In file order.
    categories : list of str
        The category names, in file order.
    boxes : list of BoxRecord
        One per annotation, in file order: ``image`` is the image's ``file_name``, ``label`` the
        category's name, ``score`` 1 when the annotation has none.
    """

    path: Path
    images: list[CocoImage]
    categories: list[str]
    boxes: list[BoxRecord]

    def sizes(self) -> dict[str, tuple[float, float]]:
        """``file_name -> (width, height)`` of the images that give their size."""
        return {img.file_name: img.size for img in self.images if img.size is not None}


def _entry(path: Path, section: str, index: int, obj: Any) -> str:
    ident = obj.get("id") if isinstance(obj, dict) else None
    return f"{path}, {section}[{index}]" + (f" (id {ident!r})" if ident is not None else "")


def _section(path: Path, data: dict[str, Any], name: str, alternative: str) -> list[dict[str, Any]]:
    if name not in data:
        raise PoolImportError(
            f"{path}: a COCO file needs a top-level {name!r} list (keys found: "
            f"{format_list(list(data), 10) or 'none'}). Add it.{alternative}"
        )
    section = data[name]
    if not isinstance(section, list):
        raise PoolImportError(f"{path}: {name!r} must be a list, got a JSON {type(section).__name__}.")
    for i, obj in enumerate(section):
        if not isinstance(obj, dict):
            raise PoolImportError(
                f"{_entry(path, name, i, obj)}: expected a JSON object, got a JSON {type(obj).__name__}."
            )
    return section


def _require(obj: dict[str, Any], fields: Sequence[str], where: str, example: str) -> None:
    missing = [f for f in fields if f not in obj]
    if missing:
        raise PoolImportError(
            f"{where}: missing field(s) {format_list(missing)} (fields: "
            f"{format_list(list(obj), 10) or 'none'}). Expected e.g. {example}."
        )


def _id_of(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise PoolImportError(f"{where}: 'id' must be an integer or a string, got {json.dumps(value)}.")
    return value


def _images(path: Path, images: list[dict[str, Any]]) -> list[CocoImage]:
    out: list[CocoImage] = []
    entry_of_id: dict[Any, int] = {}
    entry_of_file: dict[str, int] = {}
    for i, img in enumerate(images):
        where = _entry(path, "images", i, img)
        _require(img, ("id", "file_name"), where, '{"id": 1, "file_name": "000001.png", "width": 640, "height": 480}')
        ident = _id_of(img["id"], where)
        if ident in entry_of_id:
            raise PoolImportError(
                f"{where}: image id {ident!r} is already used by images[{entry_of_id[ident]}]; every "
                "image needs its own id."
            )
        name = scalar_key(img["file_name"], where, "file_name")
        if name in entry_of_file:
            raise PoolImportError(
                f"{where}: file_name {name!r} is already listed as images[{entry_of_file[name]}]; "
                "list every image once."
            )
        entry_of_id[ident], entry_of_file[name] = i, i
        size = None
        if "width" in img or "height" in img:
            w, h = number(img.get("width")), number(img.get("height"))
            if w is None or h is None or not (w > 0 and h > 0):
                raise PoolImportError(
                    f"{where}: 'width' and 'height' must both be positive numbers (pixels), got "
                    f"{img.get('width')!r} and {img.get('height')!r}. Fix them or remove both."
                )
            size = (w, h)
        out.append(CocoImage(ident, name, size))
    return out


def _categories(path: Path, categories: list[dict[str, Any]]) -> dict[Any, tuple[int, str]]:
    """Category id -> (entry index, name)."""
    out: dict[Any, tuple[int, str]] = {}
    for i, cat in enumerate(categories):
        where = _entry(path, "categories", i, cat)
        _require(cat, ("id", "name"), where, '{"id": 1, "name": "cat"}')
        ident = _id_of(cat["id"], where)
        if ident in out:
            raise PoolImportError(
                f"{where}: category id {ident!r} is already used by categories[{out[ident][0]}]; "
                "every category needs its own id."
            )
        out[ident] = (i, scalar_key(cat["name"], where, "name"))
    return out


def parse_coco(
    path: str | Path, data: Any, *, labels: Sequence[str] | None = None, alternative: str = ""
) -> CocoFile:
    """Check a parsed COCO object (see the module docstring).

    Parameters
    ----------
    path : path-like
        The file it came from, for the messages.
    data : object
        The parsed JSON.
    labels : sequence of str, optional
        When given, the categories that some annotation uses must be among them (the others
        may be anything).
    alternative : str
        A sentence appended to the messages about a file that is not a COCO object at all
        (e.g. the other format a reader accepts).

    Raises
    ------
    PoolImportError
        Naming the file and the entry (see the module docstring).
    """
    path = Path(path)
    alt = f" {alternative}" if alternative else ""
    if not isinstance(data, dict):
        raise PoolImportError(
            f"{path}: expected a COCO object with 'images', 'annotations' and 'categories', got a JSON "
            f"{type(data).__name__}. (A list of detections without image names cannot be matched to "
            f"images.){alt}"
        )
    raw_images, annotations, raw_categories = (_section(path, data, name, alt)
                                               for name in ("images", "annotations", "categories"))
    images = _images(path, raw_images)
    categories = _categories(path, raw_categories)
    file_of = {img.id: img.file_name for img in images}
    known = None if labels is None else set(labels)
    checked: set[Any] = set()
    boxes: list[BoxRecord] = []
    for i, ann in enumerate(annotations):
        where = _entry(path, "annotations", i, ann)
        _require(
            ann, ("image_id", "bbox", "category_id"), where,
            '{"id": 1, "image_id": 1, "bbox": [x, y, w, h], "category_id": 1, "score": 0.9}',
        )
        image_id, category_id = ann["image_id"], ann["category_id"]
        if isinstance(image_id, (dict, list, bool)) or image_id not in file_of:
            raise PoolImportError(
                f"{where}: image_id {json.dumps(image_id)} matches no entry of 'images'. Add the image "
                "to 'images' or remove the annotation."
            )
        if isinstance(category_id, (dict, list, bool)) or category_id not in categories:
            raise PoolImportError(
                f"{where}: category_id {json.dumps(category_id)} matches no entry of 'categories' "
                f"(ids: {format_list(list(categories), 20) or 'none'})."
            )
        entry, label = categories[category_id]
        if known is not None and category_id not in checked:
            if label not in known:
                where_cat = _entry(path, "categories", entry, raw_categories[entry])
                raise unknown_label(f"{where_cat} (used by annotations[{i}])", label, list(labels or ()))
            checked.add(category_id)
        box = parse_box(ann["bbox"], where, "bbox")
        boxes.append(BoxRecord(where, file_of[image_id], box, label, parse_score(ann.get("score"), where)))
    return CocoFile(path, images, [name for _, name in categories.values()], boxes)


def load_json(path: str | Path, *, alternative: str = "") -> Any:
    """The parsed JSON of the file ``path`` (UTF-8, a byte-order mark allowed), not yet checked.

    Raises
    ------
    PoolImportError
        The file is missing, not UTF-8, or not JSON (with the line and column).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PoolImportError(f"The COCO file {str(path)!r} does not exist. Check the path.")
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoolImportError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno} (character {exc.pos}): "
            f"{exc.msg}. Fix the file.{' ' + alternative if alternative else ''}"
        ) from None


def read_coco(path: str | Path, *, labels: Sequence[str] | None = None, alternative: str = "") -> CocoFile:
    """Read and check the COCO file ``path``: :func:`load_json` then :func:`parse_coco`.

    Raises
    ------
    PoolImportError
        The file is missing, not UTF-8, not JSON (with the line and column), or not a valid
        COCO object.
    """
    path = Path(path).expanduser()
    return parse_coco(path, load_json(path, alternative=alternative), labels=labels, alternative=alternative)
