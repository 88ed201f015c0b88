"""Object detection building blocks: boxes, proposals (autolabels) and where they come from.

- :mod:`alloop.detection.boxes`: :class:`Proposals` (many objects, column by column) and box
  helpers (IoU, ``xywh`` <-> ``xyxy``, clipping, validation).
- proposal sources: :func:`read_autolabels` (:mod:`alloop.detection.autolabels`: COCO JSON or
  JSON lines written by any detector) and :class:`OnnxYoloDetector`
  (:mod:`alloop.detection.onnx_yolo`: a YOLOv8-style ONNX model run with onnxruntime).
- :mod:`alloop.detection.coco`: the one COCO writer (:func:`~alloop.detection.coco.coco_document`)
  and reader (:func:`~alloop.detection.coco.read_coco`).
- :mod:`alloop.detection.annotations`: pixel <-> percent boxes, image sizes, ground truth;
  :mod:`alloop.detection.source`: a project's proposals over its pool.
"""

from alloop.detection.autolabels import read_autolabels
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
from alloop.detection.onnx_yolo import OnnxYoloDetector

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
