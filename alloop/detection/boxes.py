"""Boxes and proposals: the shared vocabulary of the detection code.

Boxes are ``float32`` arrays of shape ``(n, 4)`` holding ``x, y, w, h`` in pixels (the COCO
convention: ``x, y`` is the top-left corner, a box ``[0, 0, 28, 28]`` covers pixel columns and
rows 0..27). :class:`Proposals` holds many objects of many images column by column::

    >>> p = Proposals(image=["a.png", "a.png"], box=[[0, 0, 10, 10], [5, 5, 10, 10]],
    ...               label=["cat", "dog"], score=[0.9, 0.4])
    >>> len(p), p.images(), round(float(box_iou(p.box[:1], p.box[1:])[0, 0]), 3)
    (2, ['a.png'], 0.143)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alloop.errors import ConfigError

__all__ = [
    "Proposals",
    "as_boxes",
    "box_iou",
    "check_boxes",
    "clip_boxes",
    "invalid_boxes",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]


def as_boxes(boxes: Any) -> np.ndarray:
    """``boxes`` as a new ``float32`` array of shape ``(n, 4)`` (an empty input gives ``(0, 4)``).

    Raises
    ------
    ConfigError
        The input is not ``n`` rows of 4 numbers.
    """
    try:
        arr = np.array(boxes, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Boxes must be rows of 4 numbers [x, y, w, h]; could not read them: {exc}.") from None
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ConfigError(
            f"Boxes must have shape (n, 4) (one [x, y, w, h] per row), got shape {arr.shape}. "
            "Pass a list of 4-number boxes, e.g. [[10, 20, 30, 40]]."
        )
    return arr


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` (``x2 = x + w``), as a new float32 array."""
    b = as_boxes(boxes)
    b[:, 2:] += b[:, :2]
    return b


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """``[x1, y1, x2, y2]`` -> ``[x, y, w, h]`` (``w = x2 - x1``), as a new float32 array."""
    b = as_boxes(boxes)
    b[:, 2:] -= b[:, :2]
    return b


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b`` (both ``xywh``).

    Returns
    -------
    ndarray of shape (len(a), len(b)), float64
        0 where the union is empty (two boxes of zero area).
    """
    a64 = as_boxes(a).astype(np.float64)
    b64 = as_boxes(b).astype(np.float64)
    ax1, ay1 = a64[:, 0:1], a64[:, 1:2]
    ax2, ay2 = ax1 + a64[:, 2:3], ay1 + a64[:, 3:4]
    bx1, by1 = b64[:, 0], b64[:, 1]
    bx2, by2 = bx1 + b64[:, 2], by1 + b64[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0.0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0.0, None)
    inter = iw * ih
    union = a64[:, 2:3] * a64[:, 3:4] + b64[:, 2] * b64[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def clip_boxes(boxes: Any, width: float, height: float) -> np.ndarray:
    """Clip ``xywh`` boxes to an image of ``width`` x ``height`` pixels.

    A box wholly outside the image comes back with ``w == 0`` or ``h == 0``; use
    :func:`invalid_boxes` to find and drop those.
    """
    xyxy = xywh_to_xyxy(boxes)
    np.clip(xyxy[:, 0::2], 0.0, float(width), out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0.0, float(height), out=xyxy[:, 1::2])
    return xyxy_to_xywh(xyxy)


def invalid_boxes(boxes: Any) -> np.ndarray:
    """Boolean mask of the boxes that are not usable: a non-finite number, or ``w <= 0`` / ``h <= 0``."""
    b = as_boxes(boxes)
    return ~np.isfinite(b).all(axis=1) | (b[:, 2] <= 0) | (b[:, 3] <= 0)


def check_boxes(boxes: Any, where: str = "boxes") -> np.ndarray:
    """``boxes`` as float32 ``(n, 4)``, or a :class:`ConfigError` naming the first bad one.

    Parameters
    ----------
    boxes : array-like of shape (n, 4)
        ``x, y, w, h`` in pixels.
    where : str
        What the boxes are, for the message (e.g. a file name).
    """
    b = as_boxes(boxes)
    bad = np.flatnonzero(invalid_boxes(b))
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"{where}: box {i} is {b[i].tolist()} but every box needs finite numbers and a positive "
            f"width and height ([x, y, w, h] in pixels); {bad.size} box(es) are invalid. Drop "
            "them, or convert [x1, y1, x2, y2] corners with xyxy_to_xywh."
        )
    return b


def _strings(values: Any, name: str) -> np.ndarray:
    if isinstance(values, str):
        raise ConfigError(f"Proposals.{name} must be a sequence of strings, got the single string {values!r}.")
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if arr.size == 0:
        return np.zeros(0, dtype="<U1")
    if arr.ndim != 1:
        raise ConfigError(f"Proposals.{name} must be one-dimensional, got shape {arr.shape}.")
    return arr.astype(str)


def _freeze(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False, init=False)  # __init__ below: it takes sequences, stores arrays
class Proposals:
    """Objects found in images (autolabels, detections, ground truth), one array per column.

    Parameters
    ----------
    image : sequence of str, shape (n,)
        Key of the image each object is in (the pool key, e.g. ``"000017.png"``).
    box : array-like, shape (n, 4)
        ``x, y, w, h`` in pixels (COCO convention); stored as float32.
    label : sequence of str, shape (n,)
        Class name of each object.
    score : array-like, shape (n,)
        Confidence of each object, stored as float32.

    All arrays are copied and made read-only. Boxes must be finite with ``w, h > 0`` and scores
    finite, otherwise a :class:`~alloop.errors.ConfigError` is raised.
    """

    image: NDArray[np.str_]
    box: NDArray[np.float32]
    label: NDArray[np.str_]
    score: NDArray[np.float32]

    def __init__(self, image: Iterable[str] | NDArray[Any], box: ArrayLike, label: Iterable[str] | NDArray[Any],
                 score: ArrayLike) -> None:
        image = _strings(image, "image")
        label = _strings(label, "label")
        box = check_boxes(box, "Proposals.box")
        try:
            score = np.array(score, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Proposals.score must be numbers: {exc}.") from None
        lengths = {"image": len(image), "box": len(box), "label": len(label), "score": len(score)}
        if len(set(lengths.values())) > 1:
            raise ConfigError(
                "Proposals columns must have one entry per object, got lengths "
                + ", ".join(f"{k}={v}" for k, v in lengths.items())
                + "."
            )
        if not np.isfinite(score).all():
            i = int(np.flatnonzero(~np.isfinite(score))[0])
            raise ConfigError(f"Proposals.score[{i}] is {score[i]}; scores must be finite numbers.")
        for name, arr in (("image", image), ("box", box), ("label", label), ("score", score)):
            object.__setattr__(self, name, _freeze(arr))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Proposals:
        """No object at all."""
        return cls(image=[], box=np.zeros((0, 4), np.float32), label=[], score=[])

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> Proposals:
        """From dicts with ``image``, ``box`` (``xywh``), ``label`` and optional ``score`` (default 1)."""
        rows = list(records)
        if not rows:
            return cls.empty()
        return cls(
            image=[r["image"] for r in rows],
            box=[r["box"] for r in rows],
            label=[r["label"] for r in rows],
            score=[r.get("score", 1.0) for r in rows],
        )

    @classmethod
    def concat(cls, parts: Sequence[Proposals]) -> Proposals:
        """All objects of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            image=np.concatenate([p.image for p in parts]),
            box=np.concatenate([p.box for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            score=np.concatenate([p.score for p in parts]),
        )

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, index: Any) -> Proposals:
        """A subset: a slice, an array of positions or a boolean mask (an int gives one object)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Proposals(self.image[index], self.box[index], self.label[index], self.score[index])

    def __repr__(self) -> str:
        labels = sorted(set(self.label.tolist()))
        return f"Proposals(n={len(self)}, images={len(set(self.image.tolist()))}, labels={labels})"

    def images(self) -> list[str]:
        """The distinct image keys, in order of first appearance."""
        return list(dict.fromkeys(self.image.tolist()))

    def of_image(self, key: str) -> Proposals:
        """The objects of one image."""
        return self[self.image == key]

    def above(self, min_score: float) -> Proposals:
        """The objects with ``score >= min_score``."""
        return self[self.score >= np.float32(min_score)]

    def xyxy(self) -> np.ndarray:
        """The boxes as ``[x1, y1, x2, y2]``."""
        return xywh_to_xyxy(self.box)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per object: ``image``, ``box`` (list of 4 floats), ``label``, ``score``."""
        return [
            {"image": i, "box": [float(v) for v in b], "label": lab, "score": float(s)}
            for i, b, lab, s in zip(self.image.tolist(), self.box, self.label.tolist(), self.score)
        ]
