"""Autolabels: proposals (boxes, classes, scores) written by any detector, read from a file.

:func:`read_autolabels` reads what an open-vocabulary model, a labeling tool export or a
previous run wrote, as COCO JSON (through :mod:`alloop.detection.coco`) or as JSON lines (through
:func:`alloop.files.iter_jsonl`), and returns :class:`~alloop.detection.boxes.Proposals` with
boxes ``[x, y, w, h]`` in pixels of the original image. :func:`coco_proposals` does the same for
an already read COCO file (the ground-truth reader uses it).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from alloop.detection._records import (
    BoxRecord,
    class_names,
    fraction,
    parse_box,
    parse_score,
    read_text,
    scalar_key,
    unknown_label,
)
from alloop.detection.boxes import Proposals, invalid_boxes, xywh_to_xyxy, xyxy_to_xywh
from alloop.detection.coco import CocoFile, parse_coco
from alloop.errors import ConfigError, PoolImportError, format_list
from alloop.files import iter_jsonl

logger = logging.getLogger(__name__)

__all__ = ["AUTOLABEL_SUFFIXES", "coco_proposals", "read_autolabels"]

#: Extensions :func:`read_autolabels` accepts.
AUTOLABEL_SUFFIXES = (".json", ".jsonl")
_JSONL_EXAMPLE = '{"image": "000017.png", "box": [12, 30, 40, 22], "label": "cat", "score": 0.87}'
_OR_JSONL = f"Or write the proposals as JSON lines (.jsonl), one object per line such as {_JSONL_EXAMPLE}."


def _read_jsonl(path: Path, labels: Sequence[str]) -> list[BoxRecord]:
    known = set(labels)
    rows = []
    for lineno, obj in iter_jsonl(path, error=PoolImportError, expect=f"one JSON object, e.g. {_JSONL_EXAMPLE}"):
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
        image = scalar_key(obj["image"], where, "image")
        box = parse_box(obj[box_field], where, box_field)
        label = scalar_key(obj["label"], where, "label")
        if label not in known:
            raise unknown_label(where, label, labels)
        rows.append(BoxRecord(where, image, box, label, parse_score(obj.get("score"), where)))
    return rows


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


def _proposals(
    rows: Sequence[BoxRecord], sizes: Mapping[str, tuple[float, float]], strict: bool
) -> Proposals:
    """The rows as Proposals, boxes clipped to their image when its size is known.

    ``strict``: every image must have a size (the caller gave ``image_sizes``).
    """
    if not rows:
        return Proposals.empty()
    keys = [r.image for r in rows]
    box = np.asarray([r.box for r in rows], dtype=np.float32)
    if strict:
        missing = [i for i, key in enumerate(keys) if key not in sizes]
        if missing:
            i, key = missing[0], keys[missing[0]]
            hint = difflib.get_close_matches(key, list(sizes), n=1)
            raise PoolImportError(
                f"{rows[i].where}: image {key!r} is not one of the {len(sizes)} known images"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; {len(missing)} proposal(s) name unknown images. Image keys must match the "
                "pool's keys (paths relative to the image folder)."
            )
    if sizes:
        known_size = np.array([key in sizes for key in keys])
        wh = np.array([sizes.get(key, (0.0, 0.0)) for key in keys], dtype=np.float32)
        xyxy = xywh_to_xyxy(box)
        lo = np.zeros_like(wh)
        clipped = np.concatenate([np.clip(xyxy[:, :2], lo, wh), np.clip(xyxy[:, 2:], lo, wh)], axis=1)
        box = np.where(known_size[:, None], xyxy_to_xywh(clipped), box)
        outside = np.flatnonzero(invalid_boxes(box))
        if outside.size:
            i = int(outside[0])
            w, h = sizes[keys[i]]
            raise PoolImportError(
                f"{rows[i].where}: box {rows[i].box} lies outside its {w:g}x{h:g} image "
                f"{keys[i]!r}. Boxes are [x, y, w, h] in pixels (not fractions of the image size)."
            )
    return Proposals(image=keys, box=box, label=[r.label for r in rows], score=[r.score for r in rows])


def coco_proposals(doc: CocoFile, *, image_sizes: Mapping[str, tuple[float, float]] | None = None) -> Proposals:
    """The boxes of a read COCO file as Proposals, clipped to their image.

    The image sizes are ``image_sizes`` when given (then every box's image must be in it),
    else the file's ``width``/``height``. A box wholly outside its image is a PoolImportError.
    """
    if image_sizes is not None:
        return _proposals(doc.boxes, _image_sizes(image_sizes), strict=True)
    return _proposals(doc.boxes, doc.sizes(), strict=False)


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
    known = class_names(labels, "labels")
    threshold = fraction(min_score, "min_score")
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in AUTOLABEL_SUFFIXES:
        raise PoolImportError(
            f"Cannot read autolabels from {str(path)!r}: unsupported extension {suffix or '(none)'!r}. "
            "Supported: .json (COCO) and .jsonl (one JSON object per line)."
        )
    if not path.is_file():
        raise PoolImportError(f"The autolabels file {str(path)!r} does not exist. Check the path.")
    text = read_text(path)
    if not text.strip():
        return Proposals.empty()

    try:
        whole, error = json.loads(text), None
    except json.JSONDecodeError as exc:
        whole, error = None, exc
    one_record = isinstance(whole, dict) and "image" in whole and ("box" in whole or "bbox" in whole)
    is_coco = error is None and (
        (isinstance(whole, dict) and ("images" in whole or "annotations" in whole))
        or (suffix == ".json" and not one_record)
    )
    if error is not None and not _is_jsonl(text):
        raise PoolImportError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno} (character "
            f"{error.pos}): {error.msg}. Fix the file, or write one JSON object per line in a "
            ".jsonl file."
        )
    if is_coco:
        proposals = coco_proposals(parse_coco(path, whole, labels=known, alternative=_OR_JSONL),
                                   image_sizes=image_sizes)
    else:
        rows = _read_jsonl(path, known)
        sizes = {} if image_sizes is None else _image_sizes(image_sizes)
        proposals = _proposals(rows, sizes, strict=image_sizes is not None)
    kept = proposals.above(threshold)
    logger.debug("%s: %d proposals, %d with score >= %g", path, len(proposals), len(kept), threshold)
    return kept
