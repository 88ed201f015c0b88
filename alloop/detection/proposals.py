"""Proposal sources: where the boxes that describe each pool image (autolabels) come from.

- :func:`read_autolabels` reads boxes written by any detector (an open-vocabulary model, a
  labeling tool export, a previous run) as COCO JSON or JSON lines.
- :class:`OnnxYoloDetector` runs a YOLOv8-style ONNX model (e.g. ``yolo export format=onnx``)
  with onnxruntime.

Both return :class:`~alloop.detection.boxes.Proposals` with boxes ``[x, y, w, h]`` in pixels of
the original image.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from alloop.detection.boxes import (
    Proposals,
    clip_boxes,
    invalid_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from alloop.errors import ConfigError, PoolImportError, SampleDecodeError, format_list

logger = logging.getLogger(__name__)

__all__ = ["AUTOLABEL_SUFFIXES", "OnnxYoloDetector", "read_autolabels"]

#: Extensions :func:`read_autolabels` accepts.
AUTOLABEL_SUFFIXES = (".json", ".jsonl")
_JSONL_EXAMPLE = '{"image": "000017.png", "box": [12, 30, 40, 22], "label": "cat", "score": 0.87}'

#: A path to an image file, or a PIL image.
ImageInput = Union[str, "os.PathLike[str]", Any]


# ---------------------------------------------------------------------------------------------
# shared argument and value checks
# ---------------------------------------------------------------------------------------------
def _class_names(names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence) and not isinstance(names, np.ndarray):
        raise ConfigError(f"{what} must be a list of class names, got {type(names).__name__} {names!r}.")
    out = [str(n) for n in names]
    if not out:
        raise ConfigError(f"{what} is empty; give the class names, e.g. ['cat', 'dog'].")
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ConfigError(f"{what} repeats {format_list(dupes)}; every class name must appear once.")
    return out


def _fraction(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number between 0 and 1, got {value!r}.") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, got {value!r}.")
    return v


def _unknown_label(where: str, name: str, known: Sequence[str]) -> PoolImportError:
    hint = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    msg = f"{where}: label {name!r} is not one of the classes ({format_list(known, 20)})."
    if hint:
        msg += f" Did you mean {hint[0]!r}?"
    return PoolImportError(msg + " Fix the label in the file, or add the class to `labels`.")


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _parse_box(value: Any, where: str, field: str) -> list[float]:
    nums = [_number(v) for v in value] if isinstance(value, list) else []
    if len(nums) != 4 or any(n is None for n in nums):
        raise PoolImportError(
            f"{where}: {field!r} must be a list of 4 numbers [x, y, w, h] in pixels, got {value!r}."
        )
    box = [float(n) for n in nums]  # type: ignore[arg-type]
    if not all(math.isfinite(v) for v in box):
        raise PoolImportError(f"{where}: {field!r} {value!r} holds a non-finite number; boxes need finite pixels.")
    if box[2] <= 0 or box[3] <= 0:
        raise PoolImportError(
            f"{where}: {field!r} {value!r} has a non-positive width or height; boxes are [x, y, w, h] "
            "with w, h > 0 (for [x1, y1, x2, y2] corners write [x1, y1, x2 - x1, y2 - y1])."
        )
    return box


def _parse_score(value: Any, where: str) -> float:
    if value is None:
        return 1.0
    s = _number(value)
    if s is None or not math.isfinite(s) or not 0.0 <= s <= 1.0:
        raise PoolImportError(f"{where}: 'score' must be a number between 0 and 1, got {value!r}.")
    return s


def _scalar_key(value: Any, where: str, field: str) -> str:
    if value is None or value == "" or isinstance(value, (bool, dict, list)):
        raise PoolImportError(
            f"{where}: {field!r} must be a non-empty string or number, got {json.dumps(value)}."
        )
    return str(value)


# ---------------------------------------------------------------------------------------------
# read_autolabels
# ---------------------------------------------------------------------------------------------
class _Rows:
    """Proposals being read, with where each one came from (for error messages)."""

    def __init__(self) -> None:
        self.where: list[str] = []
        self.image: list[str] = []
        self.box: list[list[float]] = []
        self.label: list[str] = []
        self.score: list[float] = []

    def add(self, where: str, image: str, box: list[float], label: str, score: float) -> None:
        self.where.append(where)
        self.image.append(image)
        self.box.append(box)
        self.label.append(label)
        self.score.append(score)


def _jsonl_objects(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PoolImportError(
                f"{path}, line {lineno}: invalid JSON ({exc.msg} at column {exc.colno}). Each line "
                f"must be one JSON object, e.g. {_JSONL_EXAMPLE}."
            ) from None
        if not isinstance(obj, dict):
            raise PoolImportError(
                f"{path}, line {lineno}: expected a JSON object, got a JSON {type(obj).__name__}. "
                f"Each line must be one object such as {_JSONL_EXAMPLE}."
            )
        yield lineno, obj


def _read_jsonl(path: Path, text: str, labels: Sequence[str]) -> _Rows:
    known = set(labels)
    rows = _Rows()
    for lineno, obj in _jsonl_objects(path, text):
        where = f"{path}, line {lineno}"
        if "box" in obj and "bbox" in obj:
            raise PoolImportError(f"{where}: give the box once, as 'box' or as 'bbox', not both.")
        box_field = "bbox" if "bbox" in obj else "box"
        missing = [f for f in ("image", box_field, "label") if f not in obj]
        if missing:
            raise PoolImportError(
                f"{where}: missing field(s) {format_list(missing)} (fields: "
                f"{format_list(list(obj), 10) or 'none'}). Each line needs 'image', 'box' (or "
                f"'bbox'), 'label' and optionally 'score', e.g. {_JSONL_EXAMPLE}."
            )
        image = _scalar_key(obj["image"], where, "image")
        box = _parse_box(obj[box_field], where, box_field)
        label = _scalar_key(obj["label"], where, "label")
        if label not in known:
            raise _unknown_label(where, label, labels)
        rows.add(where, image, box, label, _parse_score(obj.get("score"), where))
    return rows


def _entry(path: Path, section: str, index: int, obj: Any) -> str:
    ident = obj.get("id") if isinstance(obj, dict) else None
    return f"{path}, {section}[{index}]" + (f" (id {ident!r})" if ident is not None else "")


def _coco_section(path: Path, data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    if name not in data:
        raise PoolImportError(
            f"{path}: a COCO file needs a top-level {name!r} list (keys found: "
            f"{format_list(list(data), 10) or 'none'}). Add it, or write the proposals as JSON lines "
            f"(.jsonl), one object per line such as {_JSONL_EXAMPLE}."
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


def _read_coco(
    path: Path, data: Any, labels: Sequence[str]
) -> tuple[_Rows, dict[str, tuple[float, float]]]:
    if not isinstance(data, dict):
        raise PoolImportError(
            f"{path}: expected a COCO object with 'images', 'annotations' and 'categories', got a JSON "
            f"{type(data).__name__}. (A list of detections without image names cannot be matched to "
            f"images; write JSON lines instead, e.g. {_JSONL_EXAMPLE}.)"
        )
    images = _coco_section(path, data, "images")
    annotations = _coco_section(path, data, "annotations")
    categories = _coco_section(path, data, "categories")

    file_of: dict[Any, str] = {}
    image_entry: dict[Any, int] = {}
    entry_of_file: dict[str, int] = {}
    sizes: dict[str, tuple[float, float]] = {}
    for i, img in enumerate(images):
        where = _entry(path, "images", i, img)
        _require(img, ("id", "file_name"), where, '{"id": 1, "file_name": "000001.png", "width": 640, "height": 480}')
        ident = _id_of(img["id"], where)
        if ident in image_entry:
            raise PoolImportError(
                f"{where}: image id {ident!r} is already used by images[{image_entry[ident]}]; every "
                "image needs its own id."
            )
        name = _scalar_key(img["file_name"], where, "file_name")
        if name in entry_of_file:
            raise PoolImportError(
                f"{where}: file_name {name!r} is already listed as images[{entry_of_file[name]}]; "
                "list every image once."
            )
        image_entry[ident], file_of[ident], entry_of_file[name] = i, name, i
        if "width" in img or "height" in img:
            w, h = _number(img.get("width")), _number(img.get("height"))
            if w is None or h is None or not (w > 0 and h > 0):
                raise PoolImportError(
                    f"{where}: 'width' and 'height' must both be positive numbers (pixels), got "
                    f"{img.get('width')!r} and {img.get('height')!r}. Fix them or remove both."
                )
            sizes[name] = (w, h)

    category_name: dict[Any, str] = {}
    category_entry: dict[Any, int] = {}
    for i, cat in enumerate(categories):
        where = _entry(path, "categories", i, cat)
        _require(cat, ("id", "name"), where, '{"id": 1, "name": "cat"}')
        ident = _id_of(cat["id"], where)
        if ident in category_entry:
            raise PoolImportError(
                f"{where}: category id {ident!r} is already used by categories[{category_entry[ident]}]; "
                "every category needs its own id."
            )
        category_entry[ident] = i
        category_name[ident] = _scalar_key(cat["name"], where, "name")

    known = set(labels)
    checked: set[Any] = set()
    rows = _Rows()
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
        if isinstance(category_id, (dict, list, bool)) or category_id not in category_name:
            raise PoolImportError(
                f"{where}: category_id {json.dumps(category_id)} matches no entry of 'categories' "
                f"(ids: {format_list(list(category_name), 20) or 'none'})."
            )
        label = category_name[category_id]
        if category_id not in checked:
            if label not in known:
                raise _unknown_label(
                    f"{_entry(path, 'categories', category_entry[category_id], categories[category_entry[category_id]])}"
                    f" (used by annotations[{i}])",
                    label,
                    labels,
                )
            checked.add(category_id)
        box = _parse_box(ann["bbox"], where, "bbox")
        rows.add(where, file_of[image_id], box, label, _parse_score(ann.get("score"), where))
    return rows, sizes


def _decode(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PoolImportError(
            f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}). Save the file as UTF-8."
        ) from None


def _is_jsonl(text: str) -> bool:
    """Whether ``text`` looks like JSON lines: its first non-blank line is a whole JSON object."""
    for line in text.splitlines():
        if line.strip():
            try:
                return isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                return False
    return True  # empty file: no proposals either way


def _image_sizes(image_sizes: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    out = {}
    for key, size in image_sizes.items():
        try:
            w, h = (float(v) for v in size)
        except (TypeError, ValueError):
            raise ConfigError(f"image_sizes[{key!r}] must be (width, height), got {size!r}.") from None
        if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
            raise ConfigError(f"image_sizes[{key!r}] must be positive (width, height) in pixels, got {size!r}.")
        out[str(key)] = (w, h)
    return out


def read_autolabels(
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str],
    min_score: float = 0.0,
    image_sizes: Mapping[str, tuple[float, float]] | None = None,
) -> Proposals:
    """Read proposals (boxes, classes, scores) written by a detector.

    Two formats are read, chosen by the extension and confirmed by the content (a ``.json``
    file holding JSON lines, or a ``.jsonl`` file holding one COCO object, is read as what it is):

    - **COCO JSON** (``.json``): ``images`` (``id``, ``file_name``, optional ``width`` and
      ``height``), ``annotations`` (``image_id``, ``bbox`` ``[x, y, w, h]``, ``category_id``,
      optional ``score``, default 1) and ``categories`` (``id``, ``name``). An image's key is its
      ``file_name``. Only categories some annotation uses must be in ``labels``.
    - **JSON lines** (``.jsonl``): one object per line, ``{"image": key, "box": [x, y, w, h],
      "label": name, "score": s}``; ``"bbox"`` is accepted for ``"box"``, ``score`` defaults to
      1, other fields are ignored, blank lines are skipped.

    Parameters
    ----------
    path : path-like
        The file.
    labels : sequence of str
        The known class names; every proposal's label must be one of them.
    min_score : float
        Proposals with ``score < min_score`` are dropped (after the whole file is checked).
    image_sizes : mapping of str to (width, height), optional
        Pixel size of each image (e.g. of every pool image). Boxes are clipped to their image,
        and a proposal for an image not in the mapping is an error. Without it, the COCO
        ``width``/``height`` (when given) are used for clipping.

    Returns
    -------
    Proposals
        In file order. An empty file gives no proposals.

    Raises
    ------
    ConfigError
        ``labels`` empty or repeated, ``min_score`` outside [0, 1].
    PoolImportError
        Missing file or other extension; invalid UTF-8 or JSON (with the line and column);
        missing fields; a box that is not 4 finite numbers with ``w, h > 0``; a score outside
        [0, 1]; a label not in ``labels`` (with a close match when there is one); an annotation
        whose image or category does not exist; repeated COCO image or category ids; a box
        wholly outside its image. Every message names the file and the line or the entry.
    """
    known = _class_names(labels, "labels")
    threshold = _fraction(min_score, "min_score")
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in AUTOLABEL_SUFFIXES:
        raise PoolImportError(
            f"Cannot read autolabels from {str(path)!r}: unsupported extension {suffix or '(none)'!r}. "
            "Supported: .json (COCO) and .jsonl (one JSON object per line)."
        )
    if not path.is_file():
        raise PoolImportError(f"The autolabels file {str(path)!r} does not exist. Check the path.")
    text = _decode(path)
    if not text.strip():
        return Proposals.empty()

    try:
        whole, error = json.loads(text), None
    except json.JSONDecodeError as exc:
        whole, error = None, exc
    one_record = isinstance(whole, dict) and "image" in whole and ("box" in whole or "bbox" in whole)
    is_coco = error is None and (
        isinstance(whole, dict) and ("images" in whole or "annotations" in whole)
        or suffix == ".json" and not one_record
    )
    if error is not None and not _is_jsonl(text):
        raise PoolImportError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno} (character "
            f"{error.pos}): {error.msg}. Fix the file, or write one JSON object per line in a "
            ".jsonl file."
        )

    sizes: dict[str, tuple[float, float]] = {}
    if is_coco:
        rows, sizes = _read_coco(path, whole, known)
    else:
        rows = _read_jsonl(path, text, known)
    if image_sizes is not None:
        sizes = _image_sizes(image_sizes)

    if not rows.image:
        return Proposals.empty()
    box = np.asarray(rows.box, dtype=np.float32)
    if image_sizes is not None:
        missing = [i for i, key in enumerate(rows.image) if key not in sizes]
        if missing:
            i, key = missing[0], rows.image[missing[0]]
            hint = difflib.get_close_matches(key, list(sizes), n=1)
            raise PoolImportError(
                f"{rows.where[i]}: image {key!r} is not one of the {len(sizes)} known images"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; {len(missing)} proposal(s) name unknown images. Image keys must match the "
                "pool's keys (paths relative to the image folder)."
            )
    if sizes:
        known_size = np.array([key in sizes for key in rows.image])
        wh = np.array([sizes.get(key, (0.0, 0.0)) for key in rows.image], dtype=np.float32)
        xyxy = xywh_to_xyxy(box)
        lo = np.zeros_like(wh)
        clipped = np.concatenate([np.clip(xyxy[:, :2], lo, wh), np.clip(xyxy[:, 2:], lo, wh)], axis=1)
        box = np.where(known_size[:, None], xyxy_to_xywh(clipped), box)
        outside = np.flatnonzero(invalid_boxes(box))
        if outside.size:
            i = int(outside[0])
            w, h = sizes[rows.image[i]]
            raise PoolImportError(
                f"{rows.where[i]}: box {rows.box[i]} lies outside its {w:g}x{h:g} image "
                f"{rows.image[i]!r}. Boxes are [x, y, w, h] in pixels (not fractions of the image size)."
            )
    proposals = Proposals(image=rows.image, box=box, label=rows.label, score=rows.score)
    kept = proposals.above(threshold)
    logger.debug("%s: %d proposals, %d with score >= %g", path, len(proposals), len(kept), threshold)
    return kept


# ---------------------------------------------------------------------------------------------
# OnnxYoloDetector
# ---------------------------------------------------------------------------------------------
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
        self.class_names = _class_names(class_names, "class_names")
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 8:
            raise ConfigError(f"input_size must be an integer >= 8 (pixels), got {input_size!r}.")
        if isinstance(max_det, bool) or not isinstance(max_det, (int, np.integer)) or max_det < 1:
            raise ConfigError(f"max_det must be a positive integer, got {max_det!r}.")
        self.input_size = int(input_size)
        self.conf = _fraction(conf, "conf")
        self.iou = _fraction(iou, "iou")
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
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
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
            with Image.open(image) as img:
                img = ImageOps.exif_transpose(img)
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise SampleDecodeError(key, f"Pillow cannot read it ({exc})") from None

    def _decode(self, raw: np.ndarray, r: float, left: int, top: int, w0: int, h0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
