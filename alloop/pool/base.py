"""The records a pool source produces, before they reach the database.

A *source* (folder of images, JSONL/CSV of texts, vectors, bundled dataset) scans its input
and returns a :class:`ScanResult`: the readable items and the quarantined ones (with a
reason). It never writes to the database: :func:`alloop.pool.importer.import_pool` does,
idempotently, keyed by the stable sample key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

SampleKind = Literal["image", "text", "vector"]


@dataclass(frozen=True)
class PoolItem:
    """One sample as read from a source.

    Attributes
    ----------
    key : str
        Stable external key (relative path, id column, ...). Unique within a project.
    kind : {"image", "text", "vector"}
    content_hash : str
        sha256 hex digest of the content (file bytes, utf-8 text, float32 row bytes).
    data : dict
        How to get the content back: ``{"path": "/abs/file.png"}``, ``{"text": "..."}``,
        or ``{"vectors": "pool/vectors-<hash>.npy", "row": 12}`` (relative to the work dir).
    reference_label : str or None
        The known label, if the source has one (used by the simulated annotator and for
        held-out evaluation; never shown to a strategy).
    """

    key: str
    kind: SampleKind
    content_hash: str
    data: dict[str, Any]
    reference_label: str | None = None


@dataclass(frozen=True)
class QuarantinedItem:
    """A sample that could not be read; kept with its reason, never selected."""

    key: str
    kind: SampleKind
    reason: str
    data: dict[str, Any]
    content_hash: str = ""


@dataclass
class ScanResult:
    items: list[PoolItem] = field(default_factory=list)
    quarantined: list[QuarantinedItem] = field(default_factory=list)
    #: labels in the order the source defines them (e.g. sklearn target_names), if any
    label_names: list[str] | None = None


def source_file(path: Path, suffixes: tuple[str, ...], what: str, formats: str = "") -> tuple[Path, str]:
    """The source file and its lower-case suffix, or a PoolImportError saying what to fix."""
    from alloop.errors import PoolImportError

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise PoolImportError(
            f"Cannot read {what} from {str(path)!r}: unsupported extension {suffix or '(none)'!r}. "
            f"Supported: {', '.join(suffixes)}{f' ({formats})' if formats else ''}."
        )
    if not path.is_file():
        raise PoolImportError(
            f"The {what} file {str(path)!r} does not exist. Fix `path` in the [pool.source] section "
            "of alloop.toml (relative paths are resolved against the folder of alloop.toml)."
        )
    return path, suffix


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_keys(prefix: str, n: int) -> list[str]:
    """Default keys ``"<prefix>-000000"``, ``"<prefix>-000001"``, ... (at least 6 digits)."""
    return [f"{prefix}-{i:06d}" for i in range(n)]


def label_str(value: Any) -> str | None:
    """A label value as a string: ``None``/NaN/empty -> ``None``, ``3.0`` -> ``"3"``."""
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    text = str(value).strip()
    return text or None
