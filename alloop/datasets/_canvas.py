"""Canvases of a generated detection pool: backgrounds, resized crops, placement, PNG files.

:func:`draw` pastes each canvas's objects (seeded per canvas), writes its PNG and returns the
COCO ``images`` and ``annotations`` with the exact box and pixel area of each pasted object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alloop.detection.boxes import box_iou
from alloop.errors import ConfigError
from alloop.rng import derive_rng

__all__ = ["BACKGROUNDS", "INK_THRESHOLD", "draw"]

#: Canvas backgrounds: i.i.d. noise, a smooth texture plus fine noise, or plain black.
BACKGROUNDS = ("noise", "texture", "black")
#: Resized crop pixels below this value are background; the rest is the object.
INK_THRESHOLD = 24
_BACKGROUND_MAX = 64  # backgrounds stay in 0..63, objects are mostly much brighter
_PLACEMENT_TRIES = 4
_CANDIDATES = 64


def _background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "black":
        return np.zeros((height, width), np.uint8)
    if kind == "noise":
        return rng.integers(0, _BACKGROUND_MAX, size=(height, width), dtype=np.uint8)
    from PIL import Image

    coarse = rng.uniform(0, _BACKGROUND_MAX - 16, size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC))
    fine = rng.integers(0, 16, size=(height, width))
    return np.clip(smooth + fine, 0, _BACKGROUND_MAX - 1).astype(np.uint8)


def _object(crop: np.ndarray, size: int) -> np.ndarray:
    """The crop resized to ``size`` x ``size``, faint pixels zeroed, cut to its tight box."""
    from PIL import Image

    img = crop if size == crop.shape[0] else np.asarray(
        Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR)
    )
    img = np.where(img >= INK_THRESHOLD, img, 0).astype(np.uint8)
    rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
    if not rows.size:
        return img[:0, :0]
    return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _place(
    w: int, h: int, placed: list[list[int]], width: int, height: int, max_iou: float,
    rng: np.random.Generator,
) -> tuple[int, int] | None:
    """A top-left corner for a ``w`` x ``h`` object whose IoU with every placed box is < max_iou."""
    for _ in range(_PLACEMENT_TRIES):
        xs = rng.integers(0, width - w + 1, size=_CANDIDATES)
        ys = rng.integers(0, height - h + 1, size=_CANDIDATES)
        if not placed:
            return int(xs[0]), int(ys[0])
        cand = np.stack([xs, ys, np.full_like(xs, w), np.full_like(ys, h)], axis=1)
        ok = np.flatnonzero(box_iou(cand, placed).max(axis=1) < max_iou)
        if ok.size:
            return int(xs[ok[0]]), int(ys[ok[0]])
    return None


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def draw(
    images: np.ndarray, pool_of_class: list[np.ndarray], object_class: np.ndarray,
    per_image: np.ndarray, images_dir: Path, digits: int, width: int, height: int,
    background: str, scale: tuple[float, float], max_iou: float, seed: int, written: list[Path],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Paste the objects canvas by canvas, write the PNGs; the COCO images and annotations."""
    lo_s, hi_s = scale
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    start = 0
    for i in range(len(per_image)):
        key = f"{i:0{digits}d}"
        crng = derive_rng(seed, "detection-pool", "canvas", i)
        canvas = _background(background, width, height, crng)
        placed: list[list[int]] = []
        for c in object_class[start : start + int(per_image[i])]:
            obj = np.zeros((0, 0), np.uint8)
            while not obj.size:
                crop = images[pool_of_class[c][crng.integers(len(pool_of_class[c]))]]
                obj = _object(crop, max(1, round(28 * crng.uniform(lo_s, hi_s))))
            h, w = obj.shape
            corner = _place(w, h, placed, width, height, max_iou, crng)
            if corner is None:
                raise ConfigError(
                    f"Could not place {int(per_image[i])} objects on canvas {key} with IoU < {max_iou}: "
                    f"the {width}x{height} canvas is too crowded. Lower objects_per_image or scale, or "
                    "raise canvas_size or max_iou."
                )
            x, y = corner
            mask = obj > 0
            region = canvas[y : y + h, x : x + w]
            region[mask] = obj[mask]
            placed.append([x, y, w, h])
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                "bbox": [x, y, w, h], "area": int(mask.sum()), "iscrowd": 0,
            })
        start += int(per_image[i])
        png = images_dir / f"{key}.png"
        written.append(png)
        png.write_bytes(_png(canvas))
        coco_images.append({"id": i + 1, "file_name": f"{key}.png", "width": width, "height": height})

    return coco_images, annotations
