"""Vector source: .npy (+ labels/keys files) and .parquet, stored content-addressed as float32."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alloop.config import VectorSource
from alloop.errors import PoolImportError
from alloop.pool.sources import scan_source
from alloop.pool.vectors import scan_vectors


@pytest.fixture
def matrix() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, 3))  # float64 on purpose


def save(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def test_npy_items_keys_hashes_and_stored_copy(tmp_path: Path, matrix: np.ndarray) -> None:
    work = tmp_path / "work"
    result = scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix)), work)
    f32 = matrix.astype(np.float32)
    digest = hashlib.sha256(f32.tobytes()).hexdigest()[:16]
    rel = f"pool/vectors-{digest}.npy"
    assert [i.key for i in result.items] == [f"row-{i:06d}" for i in range(5)]
    assert [i.data for i in result.items] == [{"vectors": rel, "row": i} for i in range(5)]
    assert [i.content_hash for i in result.items] == [hashlib.sha256(r.tobytes()).hexdigest() for r in f32]
    assert all(i.kind == "vector" and i.reference_label is None for i in result.items)
    stored = np.load(work / rel)
    assert stored.dtype == np.float32 and np.array_equal(stored, f32)
    assert sorted(p.name for p in (work / "pool").iterdir()) == [f"vectors-{digest}.npy"]  # no temp left


def test_labels_npy_and_keys_txt(tmp_path: Path, matrix: np.ndarray) -> None:
    labels = save(tmp_path / "y.npy", np.array([0, 1, 1, 0, 2]))
    keys = tmp_path / "k.txt"
    keys.write_text("a\nb\nc\nd\ne\n")
    result = scan_vectors(
        VectorSource(path=save(tmp_path / "x.npy", matrix), labels_path=labels, keys_path=keys), tmp_path
    )
    assert [i.key for i in result.items] == ["a", "b", "c", "d", "e"]
    assert [i.reference_label for i in result.items] == ["0", "1", "1", "0", "2"]
    assert result.label_names == ["0", "1", "2"]


def test_labels_txt_with_empty_line_means_no_label(tmp_path: Path, matrix: np.ndarray) -> None:
    labels = tmp_path / "y.txt"
    labels.write_text("cat\ndog\n\ncat\n bird \n")
    result = scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix), labels_path=labels), tmp_path)
    assert [i.reference_label for i in result.items] == ["cat", "dog", None, "cat", "bird"]


def test_float_labels_that_are_integers_read_as_integers(tmp_path: Path, matrix: np.ndarray) -> None:
    labels = save(tmp_path / "y.npy", np.array([0.0, 1.0, np.nan, 2.5, 1.0]))
    result = scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix), labels_path=labels), tmp_path)
    assert [i.reference_label for i in result.items] == ["0", "1", None, "2.5", "1"]


def test_label_count_mismatch_names_both_numbers(tmp_path: Path, matrix: np.ndarray) -> None:
    labels = save(tmp_path / "y.npy", np.arange(4))
    with pytest.raises(PoolImportError) as exc:
        scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix), labels_path=labels), tmp_path)
    assert "has 4 labels" in str(exc.value) and "5 rows" in str(exc.value)


def test_key_count_mismatch_names_both_numbers(tmp_path: Path, matrix: np.ndarray) -> None:
    keys = tmp_path / "k.txt"
    keys.write_text("a\nb\nc\nd\ne\nf\n")
    with pytest.raises(PoolImportError) as exc:
        scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix), keys_path=keys), tmp_path)
    assert "has 6 keys" in str(exc.value) and "5 rows" in str(exc.value)


def test_one_dimensional_array_is_refused_with_shape(tmp_path: Path) -> None:
    with pytest.raises(PoolImportError) as exc:
        scan_vectors(VectorSource(path=save(tmp_path / "x.npy", np.arange(7.0))), tmp_path)
    assert "2-D" in str(exc.value) and "(7,)" in str(exc.value) and "reshape" in str(exc.value)


def test_duplicate_keys_in_keys_file(tmp_path: Path, matrix: np.ndarray) -> None:
    keys = tmp_path / "k.txt"
    keys.write_text("a\nb\na\nc\nb\n")
    with pytest.raises(PoolImportError) as exc:
        scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix), keys_path=keys), tmp_path)
    assert "duplicate key 'a' on lines 1 and 3" in str(exc.value)
    assert "duplicate key 'b' on lines 2 and 5" in str(exc.value)


def test_nan_and_inf_rows_are_quarantined(tmp_path: Path, matrix: np.ndarray) -> None:
    matrix[1, 2] = np.nan
    matrix[3, 0] = np.inf
    matrix[4, 0] = -np.inf
    matrix[4, 1] = np.nan
    result = scan_vectors(VectorSource(path=save(tmp_path / "x.npy", matrix)), tmp_path)
    assert [i.key for i in result.items] == ["row-000000", "row-000002"]
    assert [i.data["row"] for i in result.items] == [0, 2]
    q = {x.key: x for x in result.quarantined}
    assert list(q) == ["row-000001", "row-000003", "row-000004"]
    assert q["row-000001"].reason.startswith("row 1 has non-finite values (1 NaN, 0 inf) in column(s) 2")
    assert "(0 NaN, 1 inf) in column(s) 0;" in q["row-000003"].reason
    assert "(1 NaN, 1 inf) in column(s) 0, 1" in q["row-000004"].reason
    assert q["row-000004"].data["row"] == 4 and q["row-000004"].kind == "vector"


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(PoolImportError, match=r"unsupported extension '\.csv'.*\.npy, \.parquet"):
        scan_vectors(VectorSource(path=tmp_path / "x.csv"), tmp_path)
    with pytest.raises(PoolImportError, match="does not exist"):
        scan_vectors(VectorSource(path=tmp_path / "missing.npy"), tmp_path)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(PoolImportError, match="Cannot read"):
        scan_vectors(VectorSource(path=tmp_path / "junk.npy"), tmp_path)
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(PoolImportError, match="numeric"):
        scan_vectors(VectorSource(path=tmp_path / "s.npy"), tmp_path)


def test_rescan_is_identical_and_does_not_rewrite(tmp_path: Path, matrix: np.ndarray) -> None:
    source = VectorSource(path=save(tmp_path / "x.npy", matrix))
    first = scan_vectors(source, tmp_path)
    stored = tmp_path / first.items[0].data["vectors"]
    mtime = stored.stat().st_mtime_ns
    assert scan_source(source, tmp_path) == first
    assert stored.stat().st_mtime_ns == mtime


def write_parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_with_keys_labels_and_null_vector(tmp_path: Path) -> None:
    vectors = pa.array([[1.0, 2.0], [3.0, 4.0], None, [5.0, float("nan")]], pa.list_(pa.float64()))
    path = write_parquet(
        tmp_path / "v.parquet",
        {"key": ["a", "b", "c", "d"], "label": ["x", None, "y", "x"], "vector": vectors},
    )
    result = scan_vectors(VectorSource(path=path), tmp_path)
    assert [i.key for i in result.items] == ["a", "b"]
    assert [i.reference_label for i in result.items] == ["x", None]
    q = {x.key: x.reason for x in result.quarantined}
    assert q["c"] == "row 2: the vector is null (missing)"
    assert q["d"].startswith("row 3 has non-finite values (1 NaN")
    stored = np.load(tmp_path / result.items[0].data["vectors"])
    assert np.array_equal(stored[:2], np.array([[1, 2], [3, 4]], np.float32))
    assert result.items[1].content_hash == hashlib.sha256(np.array([3, 4], np.float32).tobytes()).hexdigest()


def test_parquet_fixed_size_list_and_default_keys(tmp_path: Path) -> None:
    vectors = pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int32(), 3))
    path = write_parquet(tmp_path / "v.parquet", {"emb": vectors})
    result = scan_vectors(VectorSource(path=path, vector_column="emb"), tmp_path)
    assert [i.key for i in result.items] == ["row-000000", "row-000001"]
    assert all(i.reference_label is None for i in result.items)
    assert np.array_equal(np.load(tmp_path / result.items[0].data["vectors"]), [[1, 2, 3], [4, 5, 6]])


def test_parquet_errors(tmp_path: Path) -> None:
    ragged = write_parquet(tmp_path / "r.parquet", {"vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    with pytest.raises(PoolImportError, match="row 0 has 2 values but row 1 has 3"):
        scan_vectors(VectorSource(path=ragged), tmp_path)
    with pytest.raises(PoolImportError) as exc:
        scan_vectors(VectorSource(path=ragged, vector_column="emb"), tmp_path)
    assert "no column 'emb'" in str(exc.value) and "'vector'" in str(exc.value)
    with pytest.raises(PoolImportError, match="no column 'id'.*key_column"):
        scan_vectors(VectorSource(path=ragged, key_column="id"), tmp_path)
    scalar = write_parquet(tmp_path / "s.parquet", {"vector": [1.0, 2.0]})
    with pytest.raises(PoolImportError, match="list of numbers per row, got type double"):
        scan_vectors(VectorSource(path=scalar), tmp_path)


def test_parquet_duplicate_keys_name_rows(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "v.parquet", {"key": ["a", "b", "a"], "vector": [[1.0], [2.0], [3.0]]})
    with pytest.raises(PoolImportError, match="duplicate key 'a' on rows 0 and 2"):
        scan_vectors(VectorSource(path=path), tmp_path)


def test_parquet_explicit_label_column_must_exist(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "v.parquet", {"vector": [[1.0], [2.0]], "y": ["a", "b"]})
    assert scan_vectors(VectorSource(path=path), tmp_path).label_names is None  # default "label" absent
    with pytest.raises(PoolImportError, match="no column 'target'.*label_column"):
        scan_vectors(VectorSource(path=path, label_column="target"), tmp_path)
    result = scan_vectors(VectorSource(path=path, label_column="y"), tmp_path)
    assert [i.reference_label for i in result.items] == ["a", "b"]


@pytest.mark.parametrize("layout", ["C", "F", ">f4", "float64", "int16"])
def test_large_files_are_read_in_chunks_with_the_same_result(tmp_path: Path, monkeypatch, layout: str) -> None:
    from alloop.pool import vectors

    monkeypatch.setattr(vectors, "CHUNK_BYTES", 3 * 4 * 4)  # 3 rows of 4 values per chunk: 4 chunks
    base = np.random.default_rng(3).normal(size=(11, 4)) * 100
    if layout == "int16":
        arr = base.astype(np.int16)
    else:
        base[4, 1] = np.nan
        arr = {"C": base.astype(np.float32), "F": np.asfortranarray(base.astype(np.float32)),
               ">f4": base.astype(">f4"), "float64": base}[layout]
    np.save(tmp_path / "x.npy", arr)
    result = scan_vectors(VectorSource(path=tmp_path / "x.npy"), tmp_path / "work")
    f32 = np.ascontiguousarray(arr, dtype=np.float32)
    stored = tmp_path / "work" / result.path
    assert result.path == f"pool/vectors-{hashlib.sha256(f32.tobytes()).hexdigest()[:16]}.npy"
    assert stored.read_bytes() == (tmp_path / "x.npy").read_bytes() if layout == "C" else np.array_equal(
        np.load(stored), f32, equal_nan=True)
    assert [i.content_hash for i in result.items] + [q.content_hash for q in result.quarantined] == [
        hashlib.sha256(f32[i].tobytes()).hexdigest() for i in range(11) if i != 4 or layout == "int16"
    ] + ([] if layout == "int16" else [hashlib.sha256(f32[4].tobytes()).hexdigest()])
    assert list(result.reasons) == ([] if layout == "int16" else [4])
    assert sorted(p.name for p in (tmp_path / "work" / "pool").iterdir()) == [stored.name]  # no temporary left


def test_a_truncated_npy_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((100, 8), np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) - 40])
    with pytest.raises(PoolImportError, match="Cannot read .*x.npy"):
        scan_vectors(VectorSource(path=tmp_path / "x.npy"), tmp_path / "work")
    assert not (tmp_path / "work" / "pool").exists() or list((tmp_path / "work" / "pool").iterdir()) == []


def test_a_file_cut_short_while_it_is_read_is_refused(tmp_path: Path, monkeypatch) -> None:
    from alloop.pool import vectors

    monkeypatch.setattr(vectors, "CHUNK_BYTES", 10 * 8 * 4)
    path = tmp_path / "x.npy"
    np.save(path, np.ones((100, 8), np.float32))
    rows = vectors._read_npy_source(VectorSource(path=path), path)[0]
    size = path.stat().st_size
    with path.open("r+b") as fh:  # another program shortens the file after its header was read
        fh.truncate(size - 40)
    with pytest.raises(PoolImportError, match="ends before row 100 of the 100 its header announces: the file is "
                                              "truncated"):
        vectors._scan_rows(rows, vectors.RowKeys("row", 100), None, [], tmp_path / "work", label_names=None,
                           reasons=None, progress=vectors.NULL_PROGRESS)
    assert list((tmp_path / "work" / "pool").iterdir()) == []


def test_a_second_matrix_of_the_same_shape_is_stored_next_to_the_first(tmp_path: Path) -> None:
    a, b = np.zeros((6, 3), np.float32), np.ones((6, 3), np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    first = scan_vectors(VectorSource(path=tmp_path / "a.npy"), tmp_path / "w")
    second = scan_vectors(VectorSource(path=tmp_path / "b.npy"), tmp_path / "w")  # hashed first, then written
    assert first.path != second.path
    assert np.array_equal(np.load(tmp_path / "w" / first.path), a)
    assert np.array_equal(np.load(tmp_path / "w" / second.path), b)
    assert len(list((tmp_path / "w" / "pool").iterdir())) == 2
