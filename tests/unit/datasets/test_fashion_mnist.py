"""Fashion-MNIST files are found, not assumed: the argument, the variables, the known folders;
the error lists where it looked. And the IDX reader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from alloop.datasets import fashion_mnist
from alloop.datasets.fashion_mnist import (
    FILES,
    DatasetNotFoundError,
    find_fashion_mnist,
    load_fashion_mnist,
)
from alloop.datasets.idx import read_idx
from alloop.errors import ConfigError


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.uint8)
    return b"\x00\x00\x08" + bytes([a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()


def fake_folder(path: Path, splits=("train", "test"), n: int = 3) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for split in splits:
        images, labels = FILES[split]
        (path / images).write_bytes(gzip.compress(idx_bytes(np.full((n, 28, 28), 7))))
        (path / labels).write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10)))
    return path


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable set, the known folder empty, dpkg listing nothing."""
    for name in fashion_mnist.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    known = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setattr(fashion_mnist, "KNOWN_FOLDERS", (known,))
    monkeypatch.setattr(fashion_mnist, "_from_dpkg", lambda: None)
    return known


def test_a_missing_folder_says_where_it_looked_and_how_to_install(tmp_path: Path) -> None:
    missing = tmp_path / "not-here"
    with pytest.raises(DatasetNotFoundError) as exc:
        find_fashion_mnist(missing)
    msg = str(exc.value)
    assert f"in {missing} (the folder argument)." in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert "`sudo apt-get install dataset-fashion-mnist`" in msg and "ALLOOP_FASHION_MNIST_DIR" in msg
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, FileNotFoundError)


def test_the_argument_then_the_variables_then_the_known_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowhere: Path
) -> None:
    with pytest.raises(DatasetNotFoundError, match=f"in {nowhere} \\(Debian's dataset-fashion-mnist\\)"):
        find_fashion_mnist()
    fake_folder(nowhere)
    assert find_fashion_mnist() == nowhere
    legacy = fake_folder(tmp_path / "legacy")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(legacy))
    assert find_fashion_mnist() == legacy
    new = fake_folder(tmp_path / "new")
    monkeypatch.setenv("ALLOOP_FASHION_MNIST_DIR", str(new))
    assert find_fashion_mnist() == new
    given = fake_folder(tmp_path / "given")
    assert find_fashion_mnist(given) == given
    monkeypatch.setenv("ALLOOP_FASHION_MNIST_DIR", str(tmp_path / "typo"))  # a variable set wrong is not skipped
    with pytest.raises(DatasetNotFoundError, match=r"typo \(\$ALLOOP_FASHION_MNIST_DIR\)"):
        find_fashion_mnist()


def test_only_the_splits_asked_for_must_be_there(tmp_path: Path, nowhere: Path) -> None:
    test_only = fake_folder(tmp_path / "t", splits=("test",))
    assert find_fashion_mnist(test_only, splits=("test",)) == test_only
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz"):
        find_fashion_mnist(test_only)


def test_load_checks_the_split_and_the_shapes(tmp_path: Path) -> None:
    small = fake_folder(tmp_path / "small")
    with pytest.raises(ValueError, match=r"unexpected shapes \(3, 28, 28\) / \(3,\) for the test split"):
        load_fashion_mnist("test", small)
    with pytest.raises(ConfigError, match="split must be 'train' or 'test', got 'val'"):
        load_fashion_mnist("val", small)  # type: ignore[arg-type]


def test_read_idx_plain_gzipped_and_broken(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), a)
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x09\x01" + bytes(8))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(idx_bytes(a)[:-1])
    with pytest.raises(ValueError, match=r"header says shape \(2, 3, 4\) but holds 23 values"):
        read_idx(tmp_path / "short.idx")
