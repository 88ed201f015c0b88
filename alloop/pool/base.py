"""The records a pool source produces, before they reach the database.

A *source* (folder of images, JSONL/CSV of texts, vectors, bundled dataset) scans its input
and returns a :class:`ScanResult`: the readable items and the quarantined ones (with a
reason). Vector sources return a :class:`VectorScan` instead: the same information as columns
(one array or list per field, no object per row), so a pool of millions of rows costs bytes per
row, not an object per row. A scan never writes to the database:
:func:`alloop.pool.importer.import_pool` does, idempotently, keyed by the stable sample key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

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


class RowKeys(Sequence[str]):
    """The default keys ``"<prefix>-000000"``, ``"<prefix>-000001"``, ... made when asked for.

    A sequence of ``n`` keys without ``n`` strings in memory; equal to a list of the same keys.
    """

    def __init__(self, prefix: str, n: int) -> None:
        self.prefix, self.n = prefix, int(n)

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [f"{self.prefix}-{j:06d}" for j in range(*i.indices(self.n))]
        j = int(i) + self.n if int(i) < 0 else int(i)
        if not 0 <= j < self.n:
            raise IndexError(i)
        return f"{self.prefix}-{j:06d}"

    def __iter__(self) -> Iterator[str]:
        return (f"{self.prefix}-{j:06d}" for j in range(self.n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowKeys):
            return (self.prefix, self.n) == (other.prefix, other.n)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == self.n and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RowKeys({self.prefix!r}, {self.n})"


def encode_labels(labels: Sequence[str | None]) -> tuple[NDArray[np.int32], list[str]]:
    """Labels as codes: ``codes[i]`` indexes ``values`` (-1: no label); values in first-seen order."""
    values = [v for v in dict.fromkeys(labels) if v is not None]
    index: dict[str | None, int] = {v: i for i, v in enumerate(values)}
    index[None] = -1
    codes = np.fromiter(map(index.__getitem__, labels), dtype=np.int32, count=len(labels))
    return codes, values


@dataclass(eq=False)
class VectorScan:
    """A scanned vector source, as columns: one float32 file, one entry per row in each column.

    Attributes
    ----------
    path : str
        The stored float32 matrix, relative to the work dir (``pool/vectors-<sha16>.npy``).
    dim : int
        Values per row.
    keys : sequence of str, length n
        Unique keys, row order (a :class:`RowKeys` for default keys).
    digests : ndarray of shape (n, 32), uint8
        sha256 of each row's float32 bytes (``content_hash`` is its hex form).
    label_codes : ndarray of shape (n,), int32, or None
        Index into ``label_values`` per row, -1 for no label; ``None`` when the source has no labels.
    label_values : list of str
        The distinct labels the codes index.
    reasons : dict of int to str
        Quarantined rows (NaN/inf values, null vectors) and why; the other rows are readable.
    label_names : list of str or None
        Label order the source defines, if any.
    pending : object or None
        The stored matrix's copy while it still runs (see :meth:`wait_stored`).
    """

    path: str
    dim: int
    keys: Sequence[str]
    digests: NDArray[np.uint8]
    label_codes: NDArray[np.int32] | None = None
    label_values: list[str] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    label_names: list[str] | None = None
    kind: SampleKind = "vector"
    pending: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def wait_stored(self) -> None:
        """Return once the stored matrix is complete on disk under :attr:`path` (a scan with
        ``wait=False`` returns while it is still being copied); raise the copy's error."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.wait()

    def hashes(self, rows: NDArray[np.intp]) -> list[str]:
        """The hex ``content_hash`` of the given rows."""
        text = self.digests[rows].tobytes().hex()
        return [text[k : k + 64] for k in range(0, len(text), 64)]

    def labels(self, rows: NDArray[np.intp]) -> list[str | None]:
        """The reference label of the given rows (``None``: no label)."""
        if self.label_codes is None:
            return [None] * len(rows)
        table: list[str | None] = [*self.label_values, None]  # code -1 -> the last entry
        return [table[c] for c in self.label_codes[rows].tolist()]

    def data_json(self, rows: NDArray[np.intp]) -> list[str]:
        """``{"vectors": path, "row": i}`` of the given rows, serialised as :func:`json.dumps` does."""
        head = '{"vectors": ' + json.dumps(self.path) + ', "row": '
        return [f"{head}{i}}}" for i in rows.tolist()]

    def ok_rows(self) -> NDArray[np.intp]:
        """The readable rows (not quarantined), ascending."""
        ok = np.ones(len(self), dtype=bool)
        ok[list(self.reasons)] = False
        return np.flatnonzero(ok)

    def quarantined_rows(self) -> NDArray[np.intp]:
        return np.array(sorted(self.reasons), dtype=np.intp)

    @property
    def items(self) -> list[PoolItem]:
        """The readable rows as :class:`PoolItem` (one object per row: for small pools and tests)."""
        rows = self.ok_rows()
        return [
            PoolItem(self.keys[i], self.kind, h, {"vectors": self.path, "row": i}, lab)
            for i, h, lab in zip(rows.tolist(), self.hashes(rows), self.labels(rows))
        ]

    @property
    def quarantined(self) -> list[QuarantinedItem]:
        """The quarantined rows as :class:`QuarantinedItem` (row order)."""
        rows = self.quarantined_rows()
        return [
            QuarantinedItem(self.keys[i], self.kind, self.reasons[i], {"vectors": self.path, "row": i}, h)
            for i, h in zip(rows.tolist(), self.hashes(rows))
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorScan):
            return NotImplemented
        return (
            (self.path, self.dim, self.kind, self.reasons, self.label_names)
            == (other.path, other.dim, other.kind, other.reasons, other.label_names)
            and list(self.keys) == list(other.keys)
            and np.array_equal(self.digests, other.digests)
            and self.labels(np.arange(len(self))) == other.labels(np.arange(len(other)))
        )

    __hash__ = None  # type: ignore[assignment]


#: what a scanner returns
Scan = ScanResult | VectorScan


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
