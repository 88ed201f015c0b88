"""Object detection building blocks: boxes, proposals (autolabels) and where they come from.

- :mod:`alloop.detection.boxes`: :class:`Proposals` (many objects, column by column) and box
  helpers (IoU, ``xywh`` <-> ``xyxy``, clipping, validation).
- :mod:`alloop.detection.proposals`: proposal sources, i.e. :func:`read_autolabels` (COCO JSON
  or JSON lines written by any detector) and :class:`OnnxYoloDetector` (a YOLOv8-style ONNX
  model run with onnxruntime).
"""

from alloop.detection.boxes import (
    Proposals,
    as_boxes,
    box_iou,
    check_boxes,
    clip_boxes,
    invalid_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from alloop.detection.proposals import OnnxYoloDetector, read_autolabels

__all__ = [
    "OnnxYoloDetector",
    "Proposals",
    "as_boxes",
    "box_iou",
    "check_boxes",
    "clip_boxes",
    "invalid_boxes",
    "read_autolabels",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]
