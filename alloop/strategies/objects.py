"""The input of object-level strategies: a pool's object proposals as columns (:class:`ObjectSet`).

One row per detected object: the pool position of its image, its predicted class, the
detector's confidence, a feature vector (e.g. the embedding of its crop,
:func:`alloop.features.objects.object_features`) and optionally its box. OFDS
(:mod:`alloop.strategies.ofds`) selects images through these rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alloop.errors import InvalidInputError

__all__ = ["ObjectSet"]


def _int_column(a: ArrayLike, name: str, n: int | None) -> NDArray[np.int64]:
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer))):
        raise InvalidInputError(
            f"ObjectSet.{name} must be a 1-D array of non-negative integers, one per object; got "
            f"dtype {arr.dtype} and shape {arr.shape}. Convert it with np.asarray(..., dtype=np.int64)."
        )
    if n is not None and arr.size != n:
        raise InvalidInputError(
            f"ObjectSet.{name} has {arr.size} rows but ObjectSet.image has {n}; every column needs "
            "one row per object."
        )
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise InvalidInputError(
            f"ObjectSet.{name} must be non-negative; object {int(np.flatnonzero(arr < 0)[0])} has "
            f"{int(arr.min())}. Drop objects without an image or a class."
        )
    return arr


def _real_array(a: ArrayLike, name: str, shape: tuple[int | None, ...], what: str) -> NDArray[np.float32]:
    arr = np.asarray(a)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InvalidInputError(f"ObjectSet.{name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, arr.shape)):
        raise InvalidInputError(f"ObjectSet.{name} must have shape {what}; got shape {arr.shape}.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))[0])
        raise InvalidInputError(
            f"ObjectSet.{name} must be finite; object {bad} holds NaN or inf (or a value too large "
            "for float32). Drop that object or fix its proposal."
        )
    return arr


@dataclass(frozen=True)
class ObjectSet:
    """Object proposals of a pool, as columns over ``n`` objects.

    Attributes
    ----------
    image : ndarray of shape (n,), int64
        Pool position of the image each object is in.
    label : ndarray of shape (n,), int64
        Predicted class index of each object (any non-negative integers; need not be dense).
    score : ndarray of shape (n,), float32
        Detector confidence of each object.
    features : ndarray of shape (n, d), float32
        One feature vector per object (e.g. the embedding of its crop); finite.
    box : ndarray of shape (n, 4), float32, optional
        ``(x0, y0, x1, y1)`` of each object, for reference; OFDS does not read it.

    Arrays are converted (no copy when they already have the dtype) and are not copied
    otherwise: do not modify them afterwards. Positions are checked against the pool by
    :meth:`check_positions` (``ofds_select`` does it).

    Raises
    ------
    InvalidInputError
        A column of the wrong dtype, shape or length, a negative image or class, a non-finite
        score or feature, a box with ``x1 < x0`` or ``y1 < y0``.
    """

    image: NDArray[np.int64]
    label: NDArray[np.int64]
    score: NDArray[np.float32]
    features: NDArray[np.float32]
    box: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        image = _int_column(self.image, "image", None)
        n = int(image.size)
        label = _int_column(self.label, "label", n)
        score = _real_array(self.score, "score", (n,), f"({n},) (one per object)")
        features = np.asarray(self.features)
        if features.ndim != 2 or features.shape[0] != n or (features.shape[1] == 0):
            raise InvalidInputError(
                f"ObjectSet.features must have shape ({n}, d) with d >= 1 (one row per object); "
                f"got shape {features.shape}."
            )
        features = _real_array(features, "features", (n, None), f"({n}, d)")
        box = None
        if self.box is not None:
            box = _real_array(self.box, "box", (n, 4), f"({n}, 4) as (x0, y0, x1, y1)")
            bad = np.flatnonzero((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1]))
            if bad.size:
                raise InvalidInputError(
                    f"ObjectSet.box rows must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; object "
                    f"{int(bad[0])} has {box[bad[0]].tolist()}. Convert (x, y, w, h) boxes first."
                )
        for name, value in (("image", image), ("label", label), ("score", score),
                            ("features", features), ("box", box)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.image.size)

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""
        return int(self.features.shape[1])

    def check_positions(self, n_samples: int) -> None:
        """Raise InvalidInputError unless every ``image`` lies in ``[0, n_samples)``."""
        if self.image.size and self.image.max() >= n_samples:
            i = int(np.flatnonzero(self.image >= n_samples)[0])
            raise InvalidInputError(
                f"ObjectSet.image must hold pool positions in [0, {n_samples}); object {i} is in "
                f"image {int(self.image[i])}. Build the objects against the same pool as the "
                "selection context."
            )
