"""JSONL / CSV pool source: one text sample per line (JSONL) or row (CSV).

The whole file is checked before anything is returned: one bad line or one duplicated key
refuses the import with a :class:`~alloop.errors.PoolImportError` that names the file, the
line number(s) and the fix.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alloop.config import TextSource
from alloop.errors import PoolImportError
from alloop.files import iter_jsonl
from alloop.pool.base import PoolItem, ScanResult, sha256_text, source_file
from alloop.progress import NULL_PROGRESS, Progress

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_TEXT_SUFFIXES", "check_unique_keys", "scan_texts"]

SUPPORTED_TEXT_SUFFIXES = (".jsonl", ".csv")
_SHOWN_DUPLICATES = 5


def _join_numbers(numbers: list[int]) -> str:
    """``[3]`` -> ``"3"``, ``[3, 9]`` -> ``"3 and 9"``, ``[3, 9, 12]`` -> ``"3, 9 and 12"``."""
    text = [str(n) for n in numbers]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def check_unique_keys(
    keys: Iterable[tuple[str, int]], where: str, unit: str = "line", hint: str = ""
) -> None:
    """Refuse duplicated keys with a message naming them and where they occur.

    Parameters
    ----------
    keys : iterable of (key, position)
        Each key with its line (or row) number, in file order.
    where : str
        The file, for the message.
    unit : str
        What a position is called (``"line"``, ``"row"``).
    hint : str
        How to fix it, appended to the message.

    Raises
    ------
    PoolImportError
        Listing the first few duplicated keys, e.g. ``duplicate key 'a17' on lines 3 and 9``.
    """
    seen: dict[str, list[int]] = {}
    for key, pos in keys:
        seen.setdefault(key, []).append(pos)
    dupes = [(k, pos) for k, pos in seen.items() if len(pos) > 1]
    if not dupes:
        return
    parts = [
        f"duplicate key {k!r} on {unit}s {_join_numbers(pos)}" for k, pos in dupes[:_SHOWN_DUPLICATES]
    ]
    more = len(dupes) - _SHOWN_DUPLICATES
    if more > 0:
        parts.append(f"... and {more} more duplicated key(s)")
    raise PoolImportError(
        f"{where}: every sample needs a unique key, but {len(dupes)} key(s) repeat: "
        + "; ".join(parts)
        + ". "
        + (hint or "Remove the repeated entries or give them distinct keys.")
    )


def _records_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file."""
    return iter_jsonl(path, error=PoolImportError,
                      expect='one object such as {"id": "a1", "text": "...", "label": "..."}')


def _records_csv(path: Path, text_field: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row dict) for each row of a CSV file with a header row."""
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise PoolImportError(
                    f"{path} is empty; expected a header row naming the columns "
                    f"(one of them {text_field!r}) followed by one row per sample."
                )
            if text_field not in header:
                raise PoolImportError(
                    f"{path}, line 1: the header has no column {text_field!r} (columns: "
                    f"{', '.join(map(repr, header))}). Rename the column or set `text_field` "
                    "in [pool.source] of alloop.toml."
                )
            for row in reader:
                lineno = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise PoolImportError(
                        f"{path}, line {lineno}: expected {len(header)} fields as in the header, "
                        f"got {len(row)}. Quote fields that contain commas or newlines "
                        '(e.g. "a, b").'
                    )
                yield lineno, dict(zip(header, row))
    except UnicodeDecodeError as exc:
        raise PoolImportError(
            f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}). Save the file as UTF-8."
        ) from None
    except csv.Error as exc:
        raise PoolImportError(f"{path}: malformed CSV: {exc}.") from None


def _key_of(value: Any, where: str, field: str) -> str | None:
    """The key string of an id value; ``None`` when the id is absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        raise PoolImportError(
            f"{where}: field {field!r} must be a string or a number, got a JSON "
            f"{type(value).__name__}. Use a scalar id."
        )
    return str(value)


def scan_texts(source: TextSource, work_dir: Path, progress: Progress = NULL_PROGRESS) -> ScanResult:
    """Read a JSONL or CSV file of texts into pool items.

    Parameters
    ----------
    source : TextSource
        ``path`` (``.jsonl``: one JSON object per line, blank lines skipped; ``.csv``: header
        row, parsed with :mod:`csv`), ``text_field``, ``id_field``, ``label_field``.
    work_dir : Path
        The project's work directory (unused: texts are stored inline).
    progress : Progress
        Reporter; one step per sample.

    Returns
    -------
    ScanResult
        Items in file order. Key = the id field's value as ``str`` when set and non-empty, else
        ``sha256(text)[:16]``; ``data = {"text": text}``; ``content_hash`` = sha256 of the
        UTF-8 text; ``reference_label`` from ``label_field`` (missing or empty -> ``None``).
        Nothing is quarantined: a bad line refuses the whole file.

    Raises
    ------
    PoolImportError
        Missing file, unsupported extension, invalid JSON, missing or non-string text,
        duplicated keys (with their line numbers), or no sample at all.
    """
    path, suffix = source_file(source.path, SUPPORTED_TEXT_SUFFIXES, "texts", "JSON lines or CSV with a header")
    records = _records_jsonl(path) if suffix == ".jsonl" else _records_csv(path, source.text_field)

    items: list[PoolItem] = []
    positions: list[tuple[str, int]] = []
    with progress.task("Reading texts", total=None) as bar:
        for lineno, rec in records:
            where = f"{path}, line {lineno}"
            if source.text_field not in rec or rec[source.text_field] is None:
                raise PoolImportError(
                    f"{where}: no {source.text_field!r} field (fields: "
                    f"{', '.join(map(repr, rec)) or 'none'}). Add the text, or set `text_field` "
                    "in [pool.source] of alloop.toml."
                )
            text = rec[source.text_field]
            if not isinstance(text, str):
                raise PoolImportError(
                    f"{where}: field {source.text_field!r} must be a string, got "
                    f"{type(text).__name__} {text!r}. Quote it in the JSON."
                )
            key = _key_of(rec.get(source.id_field), where, source.id_field) if source.id_field else None
            if key is None:
                key = sha256_text(text)[:16]
            label = rec.get(source.label_field) if source.label_field else None
            label = None if label is None or label == "" else str(label)
            items.append(PoolItem(key, "text", sha256_text(text), {"text": text}, label))
            positions.append((key, lineno))
            bar.advance()

    id_hint = (
        f"give every line a distinct {source.id_field!r} value (lines without one are keyed "
        "by a hash of their text, so identical texts collide) or remove the repeated lines."
        if source.id_field
        else "identical texts get the same key; remove the repeated lines or set `id_field` "
        "in [pool.source] of alloop.toml to a column of unique ids."
    )
    check_unique_keys(positions, str(path), "line", "Keys must be unique: " + id_hint)
    if not items:
        raise PoolImportError(
            f"{path} holds no samples (only blank lines or a header). Add one text per "
            "line/row."
        )
    labels = sorted({i.reference_label for i in items if i.reference_label is not None})
    return ScanResult(items=items, label_names=labels or None)
