"""Boxes as a detection project stores them: ground truth and annotations.

Three conventions meet here:

- **pixels** ``[x, y, w, h]`` (COCO): ground truth, proposals, exports, the command learner
  (COCO files are written and read by :mod:`alloop.detection.coco`);
- **percent** of the image (Label Studio): ``{"x", "y", "width", "height", "rotation",
  "label"}``. An :class:`~alloop.store.models.Annotation` of a detection project stores
  ``value = {"boxes": [...]}`` in this form, whichever connector it came from, so a box
  means the same from Label Studio and from the simulated annotator;
- the image size, from the sample's ``data`` (``width``, ``height``) or read from the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alloop.errors import PoolImportError, SampleDecodeError, format_list

__all__ = [
    "image_size",
    "percent_boxes",
    "pixel_boxes",
    "read_coco_truth",
]


def image_size(data: Mapping[str, Any], key: str = "") -> tuple[int, int]:
    """``(width, height)`` of a sample's image: from ``data`` or read from ``data["path"]``."""
    w, h = data.get("width"), data.get("height")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
        return int(w), int(h)
    from PIL import Image

    path = data.get("path")
    try:
        with Image.open(str(path)) as img:
            return int(img.width), int(img.height)
    except (OSError, ValueError, TypeError) as exc:
        raise SampleDecodeError(key or str(path), f"{type(exc).__name__}: {exc}") from None


def percent_boxes(boxes: Sequence[Mapping[str, Any]], size: tuple[int, int]) -> list[dict[str, Any]]:
    """Pixel boxes (``{"bbox": [x, y, w, h], "label", "score"?}``) in percent of the image."""
    W, H = size
    out = []
    for b in boxes:
        x, y, w, h = (float(v) for v in b["bbox"])
        row = {"x": 100.0 * x / W, "y": 100.0 * y / H, "width": 100.0 * w / W, "height": 100.0 * h / H,
               "rotation": 0, "label": str(b["label"])}
        if b.get("score") is not None:
            row["score"] = float(b["score"])
        out.append(row)
    return out


def pixel_boxes(boxes: Sequence[Mapping[str, Any]], size: tuple[int, int]) -> list[dict[str, Any]]:
    """Percent boxes (an annotation's ``value["boxes"]``) in pixels, clipped to the image.

    Rotated boxes are replaced by their axis-aligned hull. Boxes with no area left are dropped.
    """
    import math

    W, H = size
    out = []
    for b in boxes:
        x, y = float(b["x"]) * W / 100.0, float(b["y"]) * H / 100.0
        w, h = float(b["width"]) * W / 100.0, float(b["height"]) * H / 100.0
        angle = math.radians(float(b.get("rotation") or 0.0))
        if angle:  # Label Studio rotates around the top-left corner
            c, s = math.cos(angle), math.sin(angle)
            xs = [x, x + w * c, x + w * c - h * s, x - h * s]
            ys = [y, y + w * s, y + w * s + h * c, y + h * c]
            x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
        x0, y0 = min(max(x, 0.0), W), min(max(y, 0.0), H)
        x1, y1 = min(max(x + w, 0.0), W), min(max(y + h, 0.0), H)
        if x1 - x0 > 0 and y1 - y0 > 0:
            out.append({"bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                        "label": str(b["label"])})
    return out


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
    from alloop.detection.autolabels import coco_proposals
    from alloop.detection.coco import load_json, parse_coco

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
