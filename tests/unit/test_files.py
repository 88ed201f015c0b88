"""alloop.files: JSON-lines reading (errors naming the line, a line still being written, bad lines
skipped where they only cost work) and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloop.files import atomic_write, iter_jsonl, read_jsonl, write_jsonl


def test_lines_objects_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n   \n{"a": 2}\n')
    assert read_jsonl(path) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a": 1}\n{"a": \n', r"a.jsonl, line 2: invalid JSON \(.*\)\. Each line must be an object with 'a'\."),
        (b'{"a": 1}\n[1]\n', r"line 2: expected a JSON object, got a JSON list\. Each line must be"),
        (b'{"a": 1}\n{"a": "\xe9"}\n', r"line 2: not valid UTF-8"),
    ],
)
def test_a_bad_line_raises_the_callers_error_naming_the_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(KeyError, match=expected):
        read_jsonl(path, error=KeyError, expect="an object with 'a'")


def test_a_line_still_being_written_ends_the_file_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2')
    assert read_jsonl(path, partial_last_line=True) == [(1, {"a": 1})]
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_jsonl(path)
    path.write_bytes(b'{"a": 1}\n{"a": 2\n{"a": 3}\n')  # a complete bad line is not a partial one
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_jsonl(path, partial_last_line=True)


def test_bad_lines_anywhere_are_skipped_and_reported_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2, "b\n{"a": 3}\n7\n\xff\n{"a": 4')
    seen: list[tuple[int, str]] = []
    rows = read_jsonl(path, skip_bad_line=lambda n, why: seen.append((n, why)))
    assert rows == [(1, {"a": 1}), (3, {"a": 3})]
    assert [n for n, _ in seen] == [2, 4, 5, 6]
    assert "invalid JSON" in seen[0][1] and "got a JSON int" in seen[1][1] and "UTF-8" in seen[2][1]


def test_atomic_writes_leave_no_temporary_file(tmp_path: Path) -> None:
    atomic_write(tmp_path / "sub" / "x.txt", "héllo")
    assert (tmp_path / "sub" / "x.txt").read_text(encoding="utf-8") == "héllo"
    assert write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, {"b": 2}]) == 2
    assert write_jsonl(tmp_path / "r.jsonl", [{"c": 3}], append=True) == 1
    assert [row for _, row in iter_jsonl(tmp_path / "r.jsonl")] == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.jsonl", "sub", "x.txt"]
