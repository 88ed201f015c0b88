"""JSONL/CSV text source: keys, hashes, labels, bad lines and duplicate keys refuse the import."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from alloop.config import TextSource
from alloop.errors import PoolImportError
from alloop.pool.sources import scan_source
from alloop.pool.texts import scan_texts


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_jsonl_keys_labels_hashes(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"id": "a1", "text": "Hello world", "label": "pos"},
            "",
            {"id": 17, "text": "Ünïcödé ✓", "label": ""},
            "   ",
            {"text": "no id here", "label": 3},
            {"id": "b2", "text": "", "label": None},
        ],
    )
    result = scan_texts(TextSource(path=path), tmp_path)
    assert [i.key for i in result.items] == ["a1", "17", sha("no id here")[:16], "b2"]
    assert [i.reference_label for i in result.items] == ["pos", None, "3", None]
    assert [i.data for i in result.items] == [
        {"text": "Hello world"}, {"text": "Ünïcödé ✓"}, {"text": "no id here"}, {"text": ""}
    ]
    assert [i.content_hash for i in result.items] == [sha(i.data["text"]) for i in result.items]
    assert result.items[1].content_hash == hashlib.sha256("Ünïcödé ✓".encode()).hexdigest()
    assert all(i.kind == "text" for i in result.items)
    assert result.quarantined == []
    assert result.label_names == ["3", "pos"]


def test_custom_fields_and_no_id_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"body": "one", "y": "a", "id": "x"}, {"body": "two", "y": "b"}])
    result = scan_texts(TextSource(path=path, text_field="body", id_field=None, label_field="y"), tmp_path)
    assert [i.key for i in result.items] == [sha("one")[:16], sha("two")[:16]]
    assert [i.reference_label for i in result.items] == ["a", "b"]
    no_labels = scan_texts(TextSource(path=path, text_field="body", label_field=None), tmp_path)
    assert [i.reference_label for i in no_labels.items] == [None, None]


def test_csv_with_header_quotes_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        w.writerow(["r1", "comma, inside", "spam"])
        w.writerow(["r2", "two\nlines", ""])
        w.writerow(["", "hashed key", "ham"])
    result = scan_texts(TextSource(path=path), tmp_path)
    assert [i.key for i in result.items] == ["r1", "r2", sha("hashed key")[:16]]
    assert [i.data["text"] for i in result.items] == ["comma, inside", "two\nlines", "hashed key"]
    assert [i.reference_label for i in result.items] == ["spam", None, "ham"]


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}, "", '{"text": "b",}'])
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path), tmp_path)
    msg = str(exc.value)
    assert "bad.jsonl, line 3" in msg and "invalid JSON" in msg


def test_missing_text_field_names_line_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"body": "b", "id": "x"}])
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path), tmp_path)
    msg = str(exc.value)
    assert "line 2" in msg and "no 'text' field" in msg and "'body'" in msg and "text_field" in msg


def test_non_string_text_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": 42}])
    with pytest.raises(PoolImportError, match=r"line 1: field 'text' must be a string, got int 42"):
        scan_texts(TextSource(path=path), tmp_path)


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, ["text", "b"]])
    with pytest.raises(PoolImportError, match="line 2: expected a JSON object, got a JSON list"):
        scan_texts(TextSource(path=path), tmp_path)


def test_duplicate_ids_name_keys_and_lines(tmp_path: Path) -> None:
    rows = [{"id": f"k{i}", "text": f"t{i}"} for i in range(10)]
    rows[2]["id"] = "a17"
    rows[8]["id"] = "a17"
    rows[4]["id"] = "z"
    rows[5]["id"] = "z"
    rows[9]["id"] = "z"
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path), tmp_path)
    msg = str(exc.value)
    assert "duplicate key 'a17' on lines 3 and 9" in msg
    assert "duplicate key 'z' on lines 5, 6 and 10" in msg
    assert "2 key(s) repeat" in msg and "distinct 'id' value" in msg


def test_many_duplicates_are_summarised(tmp_path: Path) -> None:
    rows = [{"id": f"d{i // 2}", "text": str(i)} for i in range(16)]  # 8 duplicated keys
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path), tmp_path)
    msg = str(exc.value)
    assert "duplicate key 'd0' on lines 1 and 2" in msg
    assert "'d5'" not in msg and "3 more duplicated key(s)" in msg


def test_identical_texts_without_ids_collide(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "same"}, {"text": "other"}, {"text": "same"}])
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path, id_field=None), tmp_path)
    assert f"duplicate key '{sha('same')[:16]}' on lines 1 and 3" in str(exc.value)
    assert "identical texts" in str(exc.value)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello\n")
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path), tmp_path)
    assert "'.txt'" in str(exc.value) and ".jsonl" in str(exc.value) and ".csv" in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PoolImportError, match=r"does not exist.*\[pool.source\]"):
        scan_texts(TextSource(path=tmp_path / "none.jsonl"), tmp_path)


def test_csv_without_text_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,body\n1,hello\n", encoding="utf-8")
    with pytest.raises(PoolImportError) as exc:
        scan_texts(TextSource(path=path), tmp_path)
    assert "no column 'text'" in str(exc.value) and "'id', 'body'" in str(exc.value)


def test_csv_row_with_extra_fields_names_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,fine\n2,not, quoted\n", encoding="utf-8")
    with pytest.raises(PoolImportError, match="line 3: expected 2 fields as in the header, got 3"):
        scan_texts(TextSource(path=path), tmp_path)


def test_empty_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(PoolImportError, match="no samples"):
        scan_texts(TextSource(path=tmp_path / "e.jsonl"), tmp_path)
    (tmp_path / "e.csv").write_text("", encoding="utf-8")
    with pytest.raises(PoolImportError, match="header row"):
        scan_texts(TextSource(path=tmp_path / "e.csv"), tmp_path)


def test_non_utf8_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(PoolImportError, match="line 2: not valid UTF-8"):
        scan_texts(TextSource(path=path), tmp_path)


def test_rescan_is_identical_and_dispatch_works(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"id": i, "text": f"text {i}", "label": "ab"[i % 2]} for i in range(5)])
    source = TextSource(path=path)
    first = scan_texts(source, tmp_path)
    assert scan_texts(source, tmp_path) == first
    assert scan_source(source, tmp_path) == first
    assert [i.key for i in first.items] == ["0", "1", "2", "3", "4"]
