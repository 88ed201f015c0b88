"""Files written and read the same way everywhere: atomic writes and JSON-lines.

Atomic writes go to a hidden temporary file in the target's folder, are flushed and fsynced,
then renamed over the target (:func:`os.replace`), so a reader or a process killed mid-write
sees the old file or the new one, never a part. The temporary file is removed when the write
fails. Names start with a dot: pool scanners skip them.

JSON-lines files are read with one error text: ``<path>, line <n>: ...`` saying what the line
should hold. A last line without its newline is a line still being written (a hand-off file
appended by another program): :func:`read_jsonl` can stop there instead of failing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file", "atomic_write", "iter_jsonl", "read_jsonl", "write_jsonl"]

ErrorFactory = Callable[[str], Exception]
_BLANK = object()  # what a blank line parses to


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    The parent folder is created. On an exception the temporary file is deleted and ``path`` is
    left as it was.

    Examples
    --------
    >>> with atomic_file(tmp / "a.npy") as fh:          # doctest: +SKIP
    ...     np.save(fh, X)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = True) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically."""
    with atomic_file(path, fsync=fsync) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def iter_jsonl(
    path: str | os.PathLike[str],
    *,
    error: ErrorFactory = ValueError,
    expect: str = "one JSON object",
    partial_last_line: bool = False,
    skip_bad_line: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSON-lines file.

    Parameters
    ----------
    path : path-like
    error : callable
        Builds the exception raised for a bad line from its message (e.g. ``PoolImportError``).
    expect : str
        What each line should hold, for the message (e.g. ``'{"key": ..., "label": ...}'``).
    partial_last_line : bool
        Stop quietly at a last line that has no newline and is not valid JSON (a writer is
        still appending it) instead of raising.
    skip_bad_line : callable, optional
        For files where a bad line may be anywhere and is only lost work (a cache appended by
        processes that can be killed mid-line): called with the line number and the message of
        each line that is not valid UTF-8, not JSON or not an object, which is then skipped
        instead of raising.

    Raises
    ------
    Exception
        Built by ``error``: invalid JSON or a line that is not an object, naming the file and line.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
                obj = json.loads(line) if line.strip() else _BLANK
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                if partial_last_line and not raw.endswith(b"\n"):
                    return
                if isinstance(exc, UnicodeDecodeError):
                    message = f"not valid UTF-8 ({exc.reason} at byte {exc.start}). Save the file as UTF-8."
                else:
                    message = f"invalid JSON ({exc.msg} at column {exc.colno}). Each line must be {expect}."
            else:
                if obj is _BLANK:
                    continue
                if isinstance(obj, dict):
                    yield lineno, obj
                    continue
                message = f"expected a JSON object, got a JSON {type(obj).__name__}. Each line must be {expect}."
            if skip_bad_line is None:
                raise error(f"{path}, line {lineno}: {message}")
            skip_bad_line(lineno, message)


def read_jsonl(
    path: str | os.PathLike[str],
    *,
    error: ErrorFactory = ValueError,
    expect: str = "one JSON object",
    partial_last_line: bool = False,
    skip_bad_line: Callable[[int, str], None] | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """:func:`iter_jsonl` as a list."""
    return list(iter_jsonl(path, error=error, expect=expect, partial_last_line=partial_last_line,
                           skip_bad_line=skip_bad_line))


def write_jsonl(
    path: str | os.PathLike[str], rows: Iterable[Any], *, append: bool = False, sort_keys: bool = False
) -> int:
    """Write one JSON document per line; return the number of lines.

    A new file is written atomically; ``append=True`` appends and fsyncs (a hand-off file that
    another program reads as it grows: a reader sees whole lines or a partial last one).
    """
    lines = [json.dumps(row, sort_keys=sort_keys) + "\n" for row in rows]
    if not append:
        atomic_write(path, "".join(lines))
        return len(lines)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)
