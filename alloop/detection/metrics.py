"""Detection quality on held-out images: COCO mAP with pycocotools (the reference implementation)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from typing import Any

from alloop.detection.boxes import Proposals
from alloop.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["coco_map", "evaluate_detections"]


def coco_map(
    truth: Sequence[tuple[str, tuple[int, int], Sequence[dict[str, Any]]]],
    detections: Proposals,
    labels: Sequence[str],
) -> dict[str, float]:
    """COCO box AP of ``detections`` against ``truth``.

    Parameters
    ----------
    truth : sequence of (key, (width, height), boxes)
        Each held-out image with its ground-truth boxes ``[{"bbox": [x, y, w, h], "label"}]``.
    detections : Proposals
        Detections (any images; those not in ``truth`` are ignored).
    labels : sequence of str

    Returns
    -------
    dict
        ``map`` (AP averaged over IoU 0.50:0.95), ``map50``, ``map75`` (-1 when undefined: no
        ground-truth object) and ``n_test_images``.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError(
            "Detection metrics need pycocotools: `pip install 'alloop[detection]'` (or pycocotools)."
        ) from None
    if not truth:
        return {}
    cat = {lb: j + 1 for j, lb in enumerate(labels)}
    image_id = {key: i + 1 for i, (key, _, _) in enumerate(truth)}
    gt: dict[str, Any] = {
        "images": [{"id": image_id[k], "width": w, "height": h} for k, (w, h), _ in truth],
        "annotations": [],
        "categories": [{"id": j, "name": lb} for lb, j in cat.items()],
    }
    for key, _, boxes in truth:
        for b in boxes:
            x, y, w, h = (float(v) for v in b["bbox"])
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id[key],
                                      "category_id": cat[b["label"]], "bbox": [x, y, w, h], "area": w * h,
                                      "iscrowd": 0})
    results = [
        {"image_id": image_id[r["image"]], "category_id": cat[r["label"]], "bbox": r["box"], "score": r["score"]}
        for r in detections.to_records() if r["image"] in image_id and r["label"] in cat
    ]
    out = {"n_test_images": float(len(truth))}
    if not gt["annotations"]:
        return {**out, "map": -1.0, "map50": -1.0, "map75": -1.0}
    if not results:
        return {**out, "map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {**out, "map": round(float(ev.stats[0]), 4), "map50": round(float(ev.stats[1]), 4),
            "map75": round(float(ev.stats[2]), 4)}


def evaluate_detections(detections: Proposals | None, test: Sequence[Any], labels: Sequence[str]) -> dict[str, float]:
    """:func:`coco_map` of a model's detections on held-out samples with ``reference_boxes``."""
    from alloop.detection.annotations import image_size

    if detections is None or not test:
        return {}
    truth = [(smp.key, image_size(smp.data, smp.key), smp.data["reference_boxes"]) for smp in test]
    return coco_map(truth, detections, labels)
