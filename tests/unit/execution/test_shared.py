"""SharedArray and file_backing: which arrays travel as a file region, and that they reopen equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alloop.execution import LocalBackend
from alloop.execution.shared import SharedArray, file_backing


def _npy(tmp_path: Path, rows: int = 100, dim: int = 6) -> tuple[Path, np.ndarray]:
    X = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, X)
    return path, X


def test_a_memmap_slice_reopens_from_its_file_region(tmp_path: Path) -> None:
    path, X = _npy(tmp_path)
    M = np.load(path, mmap_mode="r")
    for view in (M, M[17:63], np.asarray(M[40:41]), M[:0]):
        backing = file_backing(view)
        assert backing is not None
        assert backing[0] == path
        sa = SharedArray(view.shape, view.dtype.str, path=str(backing[0]), offset=backing[1])
        np.testing.assert_array_equal(sa.open(), X[_rows(view, M)])


def _rows(view: np.ndarray, M: np.ndarray) -> slice:
    start = (view.__array_interface__["data"][0] - M.__array_interface__["data"][0]) // M.strides[0]
    return slice(start, start + view.shape[0])


def test_copies_and_strided_views_have_no_file(tmp_path: Path) -> None:
    path, X = _npy(tmp_path)
    M = np.load(path, mmap_mode="r")
    assert file_backing(X) is None  # built in memory
    assert file_backing(M[[1, 5, 9]]) is None  # fancy index: a copy
    assert file_backing(M[:, :3]) is None  # not C-contiguous
    assert file_backing(M[::2]) is None


def test_the_local_backend_shares_the_array_itself() -> None:
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    sa = LocalBackend().share(X)
    assert sa.path is None and sa.open() is X
    assert sa.shape == (4, 3) and sa.nbytes == 48
