"""Object features: an image encoder applied to the crops of object proposals, cached.

Object-level strategies (:mod:`alloop.strategies.ofds`) need one feature vector per detected
object. :func:`object_features` crops each box out of its image (padded by a few pixels,
clipped to the image) and embeds the crops with any image encoder (``pixels``, ``open_clip``,
``timm``...: anything with ``fingerprint()`` and ``encode(samples)`` reading
``{"path": file}`` samples).

Caching goes through the regular :class:`alloop.features.cache.FeatureCache`: a crop is a
sample whose content hash is ``sha256(image content hash | padded integer box)``, encoded by a
wrapper whose fingerprint is ``crops-v1-<encoder fingerprint>``. So crops are cached per
(image content, box, encoder) in their own folder of the cache, next to the whole-image
features, and re-running encodes only the crops the cache lacks. Crops are written as
lossless PNG files in a temporary folder, one batch at a time, for the encoder to read.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alloop.errors import ConfigError, SampleDecodeError
from alloop.features._io import read_rgb
from alloop.features.cache import FeatureCache
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

__all__ = ["CropEncoder", "crop_box", "crop_hash", "object_features"]

CROPS_VERSION = "1"


def crop_box(box: Sequence[float], pad: int = 4) -> tuple[int, int, int, int]:
    """The integer pixel box a proposal is cropped to, before clipping to the image.

    ``(floor(x0) - pad, floor(y0) - pad, ceil(x1) + pad, ceil(y1) + pad)``, with at least one
    pixel each way (``x1 > x0``, ``y1 > y0``), in Pillow's convention (``x1``/``y1`` exclusive).
    It is also the cache key of the crop, so two boxes that crop the same pixels share a row.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    a, b = math.floor(x0) - pad, math.floor(y0) - pad
    c, d = max(math.ceil(x1) + pad, a + 1), max(math.ceil(y1) + pad, b + 1)
    return a, b, c, d


def crop_hash(content_hash: str, box: tuple[int, int, int, int]) -> str:
    """Cache key of a crop: sha256 of the image content hash and the integer box."""
    return hashlib.sha256(f"{content_hash}|{','.join(map(str, box))}".encode()).hexdigest()


def _clip(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """Clip to the image, keeping at least one pixel (a box outside the image gives the nearest
    edge pixel)."""
    x0 = min(max(box[0], 0), width - 1)
    y0 = min(max(box[1], 0), height - 1)
    x1 = max(min(box[2], width), x0 + 1)
    y1 = max(min(box[3], height), y0 + 1)
    return x0, y0, x1, y1


class CropEncoder:
    """An image encoder seen through crops: each sample is one box of one source image.

    Samples are :class:`SampleRef` with ``data = {"image": <image key>, "box": [x0, y0, x1,
    y1]}`` (integer, before clipping); ``sources`` maps the image key to a file path (relative
    to ``work_dir``) or a PIL image. Images are decoded upright (EXIF) in RGB, once per batch.

    Parameters
    ----------
    encoder : object
        The image encoder (``fingerprint()`` and ``encode(samples)``).
    sources : mapping
        Image key -> path or PIL image.
    work_dir : Path
        Folder that relative paths are relative to.
    """

    def __init__(self, encoder: Any, sources: Mapping[str, Any], work_dir: Path) -> None:
        for attr in ("fingerprint", "encode"):
            if not callable(getattr(encoder, attr, None)):
                raise ConfigError(
                    f"object_features needs an image encoder with fingerprint() and encode(samples); "
                    f"{type(encoder).__name__} has no {attr}(). Pass e.g. "
                    "alloop.registry.create('encoder', 'open_clip')."
                )
        self.encoder, self.sources, self.work_dir = encoder, sources, Path(work_dir)

    def fingerprint(self) -> str:
        return f"crops-v{CROPS_VERSION}-{self.encoder.fingerprint()}"

    def _image(self, key: str) -> Any:
        from PIL import Image, ImageOps

        src = self.sources[key]
        if isinstance(src, Image.Image):
            return ImageOps.exif_transpose(src).convert("RGB")
        return read_rgb(SampleRef(key, "image", "", {"path": str(src)}, self.work_dir))

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Crop, write the crops as PNG in a temporary folder, encode them in input order.

        Raises :class:`SampleDecodeError` (naming the image) when a source cannot be read.
        """
        images: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="alloop-crops-") as tmp:
            refs = []
            for i, s in enumerate(samples):
                key = s.data["image"]
                if key not in images:
                    images[key] = self._image(key)
                img = images[key]
                box = _clip(tuple(s.data["box"]), img.width, img.height)
                name = f"crop{i:06d}.png"
                img.crop(box).save(Path(tmp) / name)
                refs.append(SampleRef(s.key, "image", s.content_hash, {"path": name}, Path(tmp)))
            return np.asarray(self.encoder.encode(refs), dtype=np.float32)


def _source(value: Any, key: str) -> tuple[Any, str]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], str) and value[1]):
        raise ConfigError(
            f"images[{key!r}] must be a pair (path or PIL image, content hash); got {value!r}. The "
            "content hash (e.g. the pool item's) keys the crop cache."
        )
    return value[0], value[1]


def object_features(
    images: Mapping[str, tuple[Any, str]],
    keys: Sequence[str],
    boxes,
    encoder: Any,
    cache_dir: Path | str | FeatureCache | None = None,
    *,
    pad: int = 4,
    box_format: str = "xyxy",
    work_dir: Path | str = ".",
    batch_size: int = 256,
    progress: Progress = NULL_PROGRESS,
) -> np.ndarray:
    """Features of object proposals: ``encoder`` applied to each box's crop.

    Parameters
    ----------
    images : mapping
        Image key -> ``(path or PIL image, content hash)``. Paths may be relative to
        ``work_dir``; the content hash is the image's (e.g. the pool item's ``content_hash``).
    keys : sequence of str, length n
        The image key of each object.
    boxes : array_like of shape (n, 4)
        Each object's box in pixels of the upright image: ``(x0, y0, x1, y1)`` (``x1 >= x0``),
        or ``(x, y, w, h)`` with ``box_format="xywh"`` (COCO, and
        :class:`alloop.detection.boxes.Proposals`). Normalised boxes must be scaled first.
    encoder : object
        An image encoder (``fingerprint()``, ``encode(samples)``), e.g.
        ``alloop.registry.create("encoder", "open_clip", {...})``.
    cache_dir : Path, FeatureCache or None
        Feature cache root (the project's ``<work_dir>/cache/features`` is fine: crops get their
        own folder) or a :class:`FeatureCache`; None caches in a temporary folder for this call
        only.
    pad : int, default 4
        Pixels added on each side of a box before clipping it to the image.
    box_format : {"xyxy", "xywh"}, default "xyxy"
        How ``boxes`` are written.
    work_dir : Path
        Folder that relative image paths are relative to.
    batch_size : int, default 256
        Crops per encoder call.
    progress : Progress

    Returns
    -------
    ndarray of shape (n, d), float32
        One row per object, in input order. Identical boxes (after rounding and padding) of
        the same content are encoded once.

    Raises
    ------
    ConfigError
        Bad shapes, a key not in ``images``, non-finite or inverted boxes, a bad encoder.
    SampleDecodeError
        An image cannot be read; names the image key.
    """
    keys = list(keys)
    B = np.asarray(boxes, dtype=np.float64)
    if B.shape != (len(keys), 4):
        raise ConfigError(
            f"boxes must have shape ({len(keys)}, 4), one (x0, y0, x1, y1) per key; got {B.shape}."
        )
    if box_format not in ("xyxy", "xywh"):
        raise ConfigError(f"box_format must be 'xyxy' or 'xywh'; got {box_format!r}.")
    if box_format == "xywh":
        B = np.concatenate([B[:, :2], B[:, :2] + B[:, 2:]], axis=1)
    if B.size and not np.isfinite(B).all():
        raise ConfigError(f"boxes must be finite; box {int(np.flatnonzero(~np.isfinite(B).all(1))[0])} is not.")
    bad = np.flatnonzero((B[:, 2] < B[:, 0]) | (B[:, 3] < B[:, 1]))
    if bad.size:
        raise ConfigError(
            f"boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; box {int(bad[0])} is "
            f"{B[bad[0]].tolist()}. For (x, y, w, h) boxes pass box_format='xywh'."
        )
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"pad must be a non-negative integer number of pixels; got {pad!r}.")
    missing = [k for k in dict.fromkeys(keys) if k not in images]
    if missing:
        raise ConfigError(f"Object keys {missing[:5]!r} are not in images ({len(missing)} missing). "
                          "Every object's image needs a (path or PIL image, content hash) entry.")
    sources = {k: _source(images[k], k) for k in dict.fromkeys(keys)}
    wrapped = CropEncoder(encoder, {k: v[0] for k, v in sources.items()}, Path(work_dir))
    refs = []
    for i, (key, box) in enumerate(zip(keys, B)):
        ibox = crop_box(box, pad)
        refs.append(SampleRef(f"{key}#{i}", "image", crop_hash(sources[key][1], ibox),
                              {"image": key, "box": list(ibox)}, Path(work_dir)))
    if not refs:
        return np.zeros((0, 0), np.float32)
    order = sorted(range(len(refs)), key=lambda i: (keys[i], i))  # a batch decodes few images
    with tempfile.TemporaryDirectory(prefix="alloop-object-cache-") as tmp:
        if isinstance(cache_dir, FeatureCache):
            cache = cache_dir
        else:
            cache = FeatureCache(Path(tmp) if cache_dir is None else Path(cache_dir), batch_size=batch_size)
        feats, failures = cache.get([refs[i] for i in order], wrapped, progress)
    if failures:
        first = next(iter(failures))
        raise SampleDecodeError(first.rsplit("#", 1)[0], failures[first])
    out = np.empty_like(feats)
    out[np.asarray(order)] = feats
    return out
