"""Boxes as a detection project stores them: ground truth and annotations.

Three conventions meet here:

- **pixels** ``[x, y, w, h]`` (COCO): ground truth, proposals, exports, the command learner
  (COCO files are written and read by :mod:`alloop.detection.coco`; ground truth by
  :func:`alloop.detection.truth.read_coco_truth`);
- **percent** of the image (Label Studio): ``{"x", "y", "width", "height", "rotation",
  "label"}``. An :class:`~alloop.store.models.Annotation` of a detection project stores
  ``value = {"boxes": [...]}`` in this form, whichever connector it came from, so a box
  means the same from Label Studio and from the simulated annotator;
- the image size, from the sample's ``data`` (``width``, ``height``) or read from the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alloop.errors import SampleDecodeError

__all__ = [
    "image_size",
    "percent_boxes",
    "pixel_boxes",
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
