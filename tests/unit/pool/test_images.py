"""Folder-of-images source: keys, hashes, labels, quarantine of corrupt files, errors."""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alloop.config import FolderSource
from alloop.errors import ConfigError, PoolImportError
from alloop.pool.images import scan_folder
from alloop.pool.sources import scan_source


class RecordingProgress:
    """A Progress that remembers every task and how far it advanced."""

    def __init__(self) -> None:
        self.tasks: list[dict] = []

    @contextmanager
    def task(self, description, total=None):
        rec = {"description": description, "total": total, "done": 0}
        self.tasks.append(rec)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                rec["done"] += n

        yield _Bar()


def write_png(path: Path, size=(16, 16), seed=0, mode="RGB") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_png(root / "cats" / "a.png", seed=1)
    sub = root / "cats" / "sub" / "b.JPG"
    sub.parent.mkdir(parents=True)
    Image.fromarray(np.full((12, 12, 3), 120, np.uint8)).save(sub, format="JPEG")
    write_png(root / "dogs" / "c.png", seed=2, mode="L")
    write_png(root / "top.png", seed=3)
    (root / "notes.txt").write_text("not an image")
    write_png(root / ".hidden" / "x.png", seed=4)
    (root / "dogs" / "._c.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    # corrupt ones
    good = write_png(tmp_path / "full.png", size=(64, 64), seed=5)
    (root / "dogs" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "dogs" / "random.png").write_bytes(np.random.default_rng(6).bytes(500))
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    return root


def test_keys_are_sorted_posix_relative_paths(folder: Path, tmp_path: Path) -> None:
    result = scan_folder(FolderSource(path=folder), tmp_path)
    assert [i.key for i in result.items] == ["cats/a.png", "cats/sub/b.JPG", "dogs/c.png", "top.png"]
    assert [q.key for q in result.quarantined] == ["dogs/empty.jpg", "dogs/random.png", "dogs/trunc.png"]
    assert all(i.kind == "image" for i in result.items)


def test_hash_is_sha256_of_file_bytes_and_path_is_absolute(folder: Path, tmp_path: Path) -> None:
    result = scan_folder(FolderSource(path=folder), tmp_path)
    for item in result.items:
        path = Path(item.data["path"])
        assert path.is_absolute()
        assert path == folder.resolve() / item.key
        assert item.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    trunc = next(q for q in result.quarantined if q.key == "dogs/trunc.png")
    assert trunc.content_hash == hashlib.sha256((folder / "dogs/trunc.png").read_bytes()).hexdigest()


def test_labels_from_subfolders_use_first_component(folder: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="alloop.pool.images"):
        result = scan_folder(FolderSource(path=folder, labels_from_subfolders=True), tmp_path)
    labels = {i.key: i.reference_label for i in result.items}
    assert labels == {"cats/a.png": "cats", "cats/sub/b.JPG": "cats", "dogs/c.png": "dogs", "top.png": None}
    assert result.label_names == ["cats", "dogs"]
    assert "top.png" in caplog.text and "no reference label" in caplog.text


def test_no_labels_without_the_flag(folder: Path, tmp_path: Path) -> None:
    result = scan_folder(FolderSource(path=folder), tmp_path)
    assert all(i.reference_label is None for i in result.items)
    assert result.label_names is None


def test_corrupt_files_are_quarantined_with_precise_reasons(folder: Path, tmp_path: Path) -> None:
    result = scan_folder(FolderSource(path=folder), tmp_path)
    reasons = {q.key: q.reason for q in result.quarantined}
    assert reasons["dogs/empty.jpg"] == "empty file (0 bytes)"
    assert reasons["dogs/random.png"].startswith("UnidentifiedImageError: cannot identify image file")
    assert reasons["dogs/trunc.png"].startswith("OSError: ")
    assert "runcated" in reasons["dogs/trunc.png"]
    assert all(q.kind == "image" and Path(q.data["path"]).is_file() for q in result.quarantined)


def test_pixel_data_is_decoded_not_just_the_header(tmp_path: Path) -> None:
    """Files whose structure and checksums are fine but whose pixels cannot be decoded."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    at = png.index(b"IDAT")
    length = struct.unpack(">I", png[at - 4 : at])[0]
    junk = rng.bytes(length)  # garbage zlib stream with a valid CRC: verify() accepts it
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "idat.png").write_bytes(
        png[: at + 4] + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk)) + png[at + 8 + length :]
    )
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "cut.jpeg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    write_png(root / "ok.png")
    result = scan_folder(FolderSource(path=root), tmp_path)
    assert [i.key for i in result.items] == ["ok.png"]
    reasons = {q.key: q.reason for q in result.quarantined}
    assert reasons == {
        "cut.jpeg": reasons["cut.jpeg"], "idat.png": "OSError: broken data stream when reading image file"
    }
    assert reasons["cut.jpeg"].startswith("OSError: image file is truncated")


def test_rescan_is_identical(folder: Path, tmp_path: Path) -> None:
    first = scan_folder(FolderSource(path=folder, labels_from_subfolders=True), tmp_path)
    second = scan_folder(FolderSource(path=folder, labels_from_subfolders=True), tmp_path)
    assert first == second


def test_extensions_are_case_insensitive_and_dot_optional(folder: Path, tmp_path: Path) -> None:
    result = scan_folder(FolderSource(path=folder, extensions=("JPG", ".Jpeg")), tmp_path)
    assert [i.key for i in result.items] == ["cats/sub/b.JPG"]
    assert [q.key for q in result.quarantined] == ["dogs/empty.jpg"]


def test_missing_folder_says_where_and_how_to_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(PoolImportError) as exc:
        scan_folder(FolderSource(path=missing), tmp_path)
    assert str(missing) in str(exc.value)
    assert "[pool.source]" in str(exc.value) and "alloop.toml" in str(exc.value)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    f = tmp_path / "one.png"
    write_png(f)
    with pytest.raises(PoolImportError, match="is a file"):
        scan_folder(FolderSource(path=f), tmp_path)


def test_empty_folder_is_an_import_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoolImportError, match="No image files") as exc:
        scan_folder(FolderSource(path=tmp_path / "empty"), tmp_path)
    assert "It is empty" in str(exc.value)


def test_folder_without_images_names_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    (tmp_path / "docs" / "b.csv").write_text("x")
    with pytest.raises(PoolImportError) as exc:
        scan_folder(FolderSource(path=tmp_path / "docs"), tmp_path)
    assert ".csv, .txt" in str(exc.value)
    assert ".png" in str(exc.value)


def test_progress_counts_every_file(folder: Path, tmp_path: Path) -> None:
    progress = RecordingProgress()
    scan_folder(FolderSource(path=folder), tmp_path, progress)
    assert progress.tasks == [{"description": "Scanning images", "total": 7, "done": 7}]


def test_scan_source_dispatches_on_type(folder: Path, tmp_path: Path) -> None:
    source = FolderSource(path=folder, labels_from_subfolders=True)
    assert scan_source(source, tmp_path) == scan_folder(source, tmp_path)


def test_scan_source_rejects_unknown_type(tmp_path: Path) -> None:
    class Odd:
        type = "audio"

    with pytest.raises(ConfigError, match="audio") as exc:
        scan_source(Odd(), tmp_path)
    assert "folder" in str(exc.value) and "bundled" in str(exc.value)
