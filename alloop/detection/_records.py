"""Boxes read from detection files, and the checks of the values they hold.

The COCO reader (:mod:`alloop.detection.coco`) and the autolabel reader
(:mod:`alloop.detection.autolabels`) turn each object of a file into a :class:`BoxRecord` that
remembers where it came from (``"<path>, line 4"``, ``"<path>, annotations[2] (id 7)"``), so every
later error names the file and the line or the entry. The argument checks shared with the ONNX
detector (class names, fractions) are here too.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alloop.errors import ConfigError, PoolImportError, format_list

__all__ = [
    "BoxRecord",
    "class_names",
    "fraction",
    "number",
    "parse_box",
    "parse_score",
    "read_text",
    "scalar_key",
    "unknown_label",
]


@dataclass(frozen=True)
class BoxRecord:
    """One object read from a file.

    Attributes
    ----------
    where : str
        The file and the line or entry it came from, for error messages.
    image : str
        The image key (a JSON-lines ``image``, a COCO ``file_name``).
    box : list of float
        ``[x, y, w, h]`` in pixels, finite, ``w, h > 0``.
    label : str
    score : float
        In ``[0, 1]``; 1 when the file gives none.
    """

    where: str
    image: str
    box: list[float]
    label: str
    score: float


def read_text(path: Path) -> str:
    """The whole file as text (UTF-8, a byte-order mark dropped), or a PoolImportError."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PoolImportError(
            f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}). Save the file as UTF-8."
        ) from None


def class_names(names: Sequence[str], what: str) -> list[str]:
    """``names`` as a non-empty list of distinct strings, or a ConfigError naming ``what``."""
    if isinstance(names, str) or (not isinstance(names, Sequence) and not isinstance(names, np.ndarray)):
        raise ConfigError(f"{what} must be a list of class names, got {type(names).__name__} {names!r}.")
    out = [str(n) for n in names]
    if not out:
        raise ConfigError(f"{what} is empty; give the class names, e.g. ['cat', 'dog'].")
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ConfigError(f"{what} repeats {format_list(dupes)}; every class name must appear once.")
    return out


def fraction(value: float, name: str) -> float:
    """``value`` as a float in ``[0, 1]``, or a ConfigError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number between 0 and 1, got {value!r}.") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, got {value!r}.")
    return v


def unknown_label(where: str, name: str, known: Sequence[str]) -> PoolImportError:
    """The error for a label that is not one of ``known`` (with a close match when there is one)."""
    hint = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    msg = f"{where}: label {name!r} is not one of the classes ({format_list(known, 20)})."
    if hint:
        msg += f" Did you mean {hint[0]!r}?"
    return PoolImportError(msg + " Fix the label in the file, or add the class to `labels`.")


def number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_box(value: Any, where: str, field: str) -> list[float]:
    """A JSON ``[x, y, w, h]``: 4 finite numbers with ``w, h > 0``, or a PoolImportError."""
    nums = [number(v) for v in value] if isinstance(value, list) else []
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


def parse_score(value: Any, where: str) -> float:
    """A JSON score in ``[0, 1]`` (``None``: 1), or a PoolImportError."""
    if value is None:
        return 1.0
    s = number(value)
    if s is None or not math.isfinite(s) or not 0.0 <= s <= 1.0:
        raise PoolImportError(f"{where}: 'score' must be a number between 0 and 1, got {value!r}.")
    return s


def scalar_key(value: Any, where: str, field: str) -> str:
    """A JSON string or number as a non-empty string, or a PoolImportError."""
    if value is None or value == "" or isinstance(value, (bool, dict, list)):
        raise PoolImportError(
            f"{where}: {field!r} must be a non-empty string or number, got {json.dumps(value)}."
        )
    return str(value)
