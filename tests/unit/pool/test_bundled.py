"""Bundled scikit-learn datasets: digits as real PNG files, tabular sets as vectors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import datasets

from alloop.config import BundledSource
from alloop.pool.bundled import scan_bundled
from alloop.pool.sources import scan_source


@pytest.fixture(scope="module")
def digits_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits-work")


@pytest.fixture(scope="module")
def digits_scan(digits_work: Path):
    return scan_bundled(BundledSource(name="digits"), digits_work)


def _index(key: str) -> int:
    return int(key.split("/")[1].removesuffix(".png"))


def test_digits_items_keys_and_labels_match_sklearn(digits_scan) -> None:
    sk = datasets.load_digits()
    assert len(digits_scan.items) == 1797 and digits_scan.quarantined == []
    assert all(re.fullmatch(r"[0-9]/[0-9]{4}\.png", i.key) for i in digits_scan.items)
    assert sorted(_index(i.key) for i in digits_scan.items) == list(range(1797))
    for item in digits_scan.items:
        assert item.reference_label == str(sk.target[_index(item.key)])
        assert item.key.split("/")[0] == item.reference_label
        assert item.kind == "image"
    assert digits_scan.label_names == [str(d) for d in range(10)]


def test_digits_pngs_hold_rounded_pixels(digits_work: Path, digits_scan) -> None:
    sk = datasets.load_digits()
    for i in (0, 42, 1796):
        path = digits_work / "pool" / "digits" / str(sk.target[i]) / f"{i:04d}.png"
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "L" and img.size == (8, 8)
            pixels = np.asarray(img)
        assert np.array_equal(pixels, np.round(sk.images[i] * 255 / 16).astype(np.uint8))
    assert digits_scan.items[0].data["path"] == str((digits_work / "pool/digits/0/0000.png").resolve())


def test_digits_are_written_once(digits_work: Path, digits_scan) -> None:
    files = sorted((digits_work / "pool" / "digits").rglob("*.png"))
    assert len(files) == 1797
    before = {f: f.stat().st_mtime_ns for f in files}
    again = scan_source(BundledSource(name="digits"), digits_work)
    assert again == digits_scan
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert not [p for p in (digits_work / "pool" / "digits").rglob("*") if p.name.startswith(".")]


def test_changed_digit_file_is_rewritten_but_same_pixels_are_kept(tmp_path: Path) -> None:
    first = scan_bundled(BundledSource(name="digits"), tmp_path)
    root = tmp_path / "pool" / "digits"
    broken, recoded = root / "0" / "0000.png", root / "1" / "0001.png"
    broken.write_bytes(b"garbage")
    with Image.open(recoded) as img:
        pixels = np.asarray(img).copy()
    Image.fromarray(pixels).save(recoded, compress_level=0)  # same pixels, other bytes
    recoded_bytes = recoded.read_bytes()
    second = scan_bundled(BundledSource(name="digits"), tmp_path)
    assert recoded.read_bytes() == recoded_bytes  # left alone
    assert second.items[0] == first.items[0]  # garbage replaced by the original PNG
    assert len(second.items) == 1797 and second.quarantined == []


@pytest.mark.parametrize(
    ("name", "loader", "n"),
    [("iris", datasets.load_iris, 150), ("wine", datasets.load_wine, 178),
     ("breast_cancer", datasets.load_breast_cancer, 569)],
)
def test_tabular_sets(tmp_path: Path, name: str, loader, n: int) -> None:
    sk = loader()
    result = scan_bundled(BundledSource(name=name), tmp_path)
    names = [str(t) for t in sk.target_names]
    assert len(result.items) == n and result.quarantined == []
    assert [i.key for i in result.items] == [f"{name}-{i:06d}" for i in range(n)]
    assert [i.reference_label for i in result.items] == [names[t] for t in sk.target]
    assert result.label_names == names
    stored = np.load(tmp_path / result.items[0].data["vectors"])
    assert np.array_equal(stored, sk.data.astype(np.float32))
    assert [i.data["row"] for i in result.items] == list(range(n))
    assert scan_source(BundledSource(name=name), tmp_path) == result
