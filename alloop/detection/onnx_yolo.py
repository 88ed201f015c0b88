"""A YOLOv8-style object detector exported to ONNX, run with onnxruntime: a proposal source.

:class:`OnnxYoloDetector` runs a model written by e.g. Ultralytics' ``yolo export format=onnx``
on the CPU (letterbox, decoding of the ``(1, 4 + n_classes, n_anchors)`` head, class-wise
non-maximum suppression) and returns :class:`~alloop.detection.boxes.Proposals` with boxes
``[x, y, w, h]`` in pixels of the original image. onnxruntime, torch and torchvision are
imported when a detector is built or run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from alloop.detection._records import class_names as class_names_of
from alloop.detection._records import fraction
from alloop.detection.boxes import Proposals, clip_boxes, invalid_boxes, xyxy_to_xywh
from alloop.errors import ConfigError, SampleDecodeError, format_list

__all__ = ["OnnxYoloDetector"]

#: A path to an image file, or a PIL image.
ImageInput = Union[str, "os.PathLike[str]", Any]


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"


class OnnxYoloDetector:
    """A YOLOv8-style detector exported to ONNX, run on the CPU with onnxruntime.

    The model takes one ``(1, 3, input_size, input_size)`` float tensor (RGB in [0, 1]) and
    returns, as its first output, ``(1, 4 + n_classes, n_anchors)`` (or the transposed
    ``(1, n_anchors, 4 + n_classes)``): box centre ``cx, cy``, size ``w, h`` in input pixels,
    then one score per class, as Ultralytics' ``yolo export format=onnx`` writes it.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.
    class_names : sequence of str
        One name per model class, in the model's order.
    input_size : int
        Side of the square input the model was exported for.
    conf : float
        Keep a detection when its best class score is ``> conf``.
    iou : float
        Class-wise non-maximum suppression: of two boxes of one class with IoU ``> iou``, the
        lower-scored is dropped.
    max_det : int
        At most this many detections per image (the best scored).

    Raises
    ------
    ConfigError
        Bad parameters, a missing or unloadable file, an input that is not ``(1, 3, S, S)`` with
        ``S == input_size``, an output that is not YOLO-like or whose class count differs
        from ``len(class_names)``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        class_names: Sequence[str],
        input_size: int = 640,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
    ) -> None:
        self.class_names = class_names_of(class_names, "class_names")
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 8:
            raise ConfigError(f"input_size must be an integer >= 8 (pixels), got {input_size!r}.")
        if isinstance(max_det, bool) or not isinstance(max_det, (int, np.integer)) or max_det < 1:
            raise ConfigError(f"max_det must be a positive integer, got {max_det!r}.")
        self.input_size = int(input_size)
        self.conf = fraction(conf, "conf")
        self.iou = fraction(iou, "iou")
        self.max_det = int(max_det)
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(
                f"The ONNX model {str(self.path)!r} does not exist. Export one with e.g. "
                "`yolo export model=yolov8n.pt format=onnx` and give its path."
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(
                "OnnxYoloDetector needs onnxruntime; install it with `pip install onnxruntime`."
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"{self.path}: onnxruntime cannot load the model: {exc}") from None
        self._check_input()
        out = self._session.get_outputs()[0]
        self._layout(list(out.shape))

    # -- model checks ---------------------------------------------------------------------------
    def _check_input(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(
                f"{self.path}: a YOLO model takes one input (the image), this one takes "
                f"{len(inputs)}: {format_list([i.name for i in inputs])}."
            )
        spec = inputs[0]
        shape = list(spec.shape)
        s = self.input_size
        expected = f"(1, 3, {s}, {s})"
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ConfigError(
                f"{self.path}: input {spec.name!r} has shape {_shape_text(shape)}; expected an "
                f"image batch {expected} (N, channels, height, width)."
            )
        height, width = shape[2], shape[3]
        fixed = [d for d in (height, width) if isinstance(d, int)]
        if any(d != s for d in fixed):
            hint = f" Pass input_size={height}." if height == width and isinstance(height, int) else ""
            raise ConfigError(
                f"{self.path}: the model was exported for {_shape_text(shape)} inputs but "
                f"input_size={s} asks for {expected}.{hint}"
            )
        if spec.type not in ("tensor(float)", "tensor(float16)"):
            raise ConfigError(f"{self.path}: input {spec.name!r} has type {spec.type}; expected float32 or float16.")
        self._input_name = spec.name
        self._input_dtype = np.float16 if spec.type == "tensor(float16)" else np.float32

    def _layout(self, shape: Sequence[Any]) -> bool:
        """Whether the output is ``(1, 4 + nc, anchors)`` (True) or ``(1, anchors, 4 + nc)`` (False).

        Unknown (symbolic) dimensions pass; they are checked again on the real output. When
        both dimensions equal ``4 + nc`` (as many anchors as channels), Ultralytics' layout
        ``(1, 4 + nc, anchors)`` is assumed.
        """
        nc = len(self.class_names)
        want = 4 + nc
        expected = f"(1, 4 + {nc} = {want}, n_anchors) or (1, n_anchors, {want})"
        if len(shape) != 3 or (isinstance(shape[0], int) and shape[0] != 1):
            raise ConfigError(
                f"{self.path}: the model's output has shape {_shape_text(shape)}, which is not "
                f"YOLO-like: expected {expected} for {nc} classes (YOLOv8 detection head)."
            )
        a, b = shape[1], shape[2]
        if not isinstance(a, int) or a == want:
            return True
        if not isinstance(b, int) or b == want:
            return False
        channels = min(a, b)
        guess = (
            f"; read as YOLOv8 (1, 4 + n_classes, n_anchors) it has {channels - 4} classes"
            if channels > 4 else ""
        )
        raise ConfigError(
            f"{self.path}: class count mismatch: the model's output has shape {_shape_text(shape)}"
            f"{guess}, but class_names has {nc} names, which needs {expected}. Give one name per "
            "model class, in the model's order."
        )

    # -- inference ------------------------------------------------------------------------------
    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """Resize keeping the aspect ratio and pad with 114 to the square input (Ultralytics' way).

        Returns the NCHW float array in [0, 1], the scale and the left and top padding.
        """
        import torch

        s = self.input_size
        h0, w0 = rgb.shape[:2]
        r = min(s / h0, s / w0)
        nw, nh = round(w0 * r), round(h0 * r)
        left, top = round((s - nw) / 2 - 0.1), round((s - nh) / 2 - 0.1)
        x = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None]
        if (nh, nw) != (h0, w0):
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        canvas = torch.full((1, 3, s, s), 114.0)
        canvas[:, :, top : top + nh, left : left + nw] = x
        return (canvas / 255.0).numpy().astype(self._input_dtype), r, left, top

    @staticmethod
    def _rgb(image: Any, key: str) -> np.ndarray:
        from PIL import Image, ImageOps

        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"))
        try:
            img: Image.Image  # Image.open gives an ImageFile; exif_transpose a plain Image
            with Image.open(image) as img:
                img = ImageOps.exif_transpose(img)
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise SampleDecodeError(key, f"Pillow cannot read it ({exc})") from None

    def _decode(
        self, raw: np.ndarray, r: float, left: int, top: int, w0: int, h0: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch
        from torchvision.ops import batched_nms

        channels_first = self._layout(list(raw.shape))
        pred = (raw[0].T if channels_first else raw[0]).astype(np.float32)
        scores = pred[:, 4:]
        cls = scores.argmax(axis=1)
        best = scores[np.arange(len(pred)), cls]
        keep = best > self.conf
        pred, cls, best = pred[keep], cls[keep], best[keep]
        if not len(pred):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
        xyxy = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], axis=1)
        order = batched_nms(
            torch.from_numpy(xyxy), torch.from_numpy(best), torch.from_numpy(cls), self.iou
        ).numpy()[: self.max_det]
        xyxy, cls, best = xyxy[order], cls[order], best[order]
        xyxy[:, 0::2] = (xyxy[:, 0::2] - left) / r
        xyxy[:, 1::2] = (xyxy[:, 1::2] - top) / r
        boxes = clip_boxes(xyxy_to_xywh(xyxy), w0, h0)
        ok = ~invalid_boxes(boxes)
        return boxes[ok], cls[ok], best[ok]

    def detect(self, images: Sequence[ImageInput], keys: Sequence[str] | None = None) -> Proposals:
        """Detect objects in each image.

        Parameters
        ----------
        images : sequence of PIL images or paths
            Any mode (converted to RGB). Files are read with their EXIF orientation applied.
        keys : sequence of str, optional
            The key of each image in the returned proposals; by default the path as given, or
            the position (``"0"``, ``"1"``...) for a PIL image.

        Returns
        -------
        Proposals
            Boxes ``[x, y, w, h]`` in pixels of the original image, clipped to it, grouped by
            image in input order and by decreasing score within an image.

        Raises
        ------
        SampleDecodeError
            A file cannot be read as an image.
        ConfigError
            ``keys`` has the wrong length, or the model's output is not YOLO-like.
        """
        images = list(images)
        if keys is None:
            keys = [str(n) if hasattr(img, "getpixel") else str(img) for n, img in enumerate(images)]
        elif len(keys) != len(images):
            raise ConfigError(f"detect got {len(images)} images but {len(keys)} keys; give one key per image.")
        parts = []
        for image, key in zip(images, keys):
            rgb = self._rgb(image, str(key))
            h0, w0 = rgb.shape[:2]
            tensor, r, left, top = self._letterbox(rgb)
            raw = np.asarray(self._session.run(None, {self._input_name: tensor})[0])
            boxes, cls, score = self._decode(raw, r, left, top, w0, h0)
            parts.append(
                Proposals(
                    image=[str(key)] * len(boxes),
                    box=boxes,
                    label=[self.class_names[int(c)] for c in cls],
                    score=score,
                )
            )
        return Proposals.concat(parts)
