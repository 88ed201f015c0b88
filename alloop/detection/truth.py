"""Ground truth of a detection pool: the boxes of a COCO file, as a project stores them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloop.detection.autolabels import coco_proposals
from alloop.detection.coco import load_json, parse_coco
from alloop.errors import PoolImportError, format_list

__all__ = ["read_coco_truth"]


def read_coco_truth(
    path: str | Path,
) -> tuple[list[str], dict[str, list[dict[str, Any]]], dict[str, tuple[int, int]]]:
    """Ground-truth boxes from a COCO file.

    Returns
    -------
    labels : list of str
        The category names, in the file's order.
    boxes : dict
        Image key (``file_name``) -> ``[{"bbox": [x, y, w, h], "label"}]`` (clipped to the image
        when the file gives its size, rounded to 0.01 pixel); every listed image appears, with
        an empty list when it has no object.
    sizes : dict
        Image key -> ``(width, height)`` for images that give them.

    Raises
    ------
    PoolImportError
        Missing or malformed file (the message names the entry, see
        :func:`alloop.detection.coco.parse_coco`), no categories, a category name used twice.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise PoolImportError(f"Ground-truth boxes must be a COCO .json file; got {str(path)!r}.")
    if not path.is_file():
        raise PoolImportError(
            f"The ground-truth file {str(path)!r} does not exist. Fix `annotations` in [pool.source] of alloop.toml."
        )
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) or not data["categories"]:
        raise PoolImportError(
            f"{path}: a COCO ground-truth file needs a non-empty 'categories' list of "
            '{"id": 1, "name": "cat"} entries; the label set is taken from it.'
        )
    doc = parse_coco(path, data)
    names = doc.categories
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PoolImportError(
            f"{path}: the categories repeat the name(s) {format_list(dupes)}; the label set is taken from "
            "the categories, so every name must appear once."
        )
    boxes: dict[str, list[dict[str, Any]]] = {img.file_name: [] for img in doc.images}
    sizes = {img.file_name: (int(img.size[0]), int(img.size[1])) for img in doc.images if img.size is not None}
    for rec in coco_proposals(doc).to_records():
        boxes.setdefault(rec["image"], []).append(
            {"bbox": [round(v, 2) for v in rec["box"]], "label": rec["label"]}
        )
    return names, boxes, sizes
