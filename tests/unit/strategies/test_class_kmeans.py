"""OFDS's per-class k-means: representatives cover the clusters, in a seeded, ordered way."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.errors import InvalidInputError
from alloop.strategies._class_kmeans import class_representatives


def blobs(seed: int, k: int, per: int, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 10 * rng.standard_normal((k, d))
    y = np.repeat(np.arange(k), per)
    return (centres[y] + 0.1 * rng.standard_normal((k * per, d))).astype(np.float32), y


@pytest.mark.parametrize("fit_size", [20000, 300])  # the second fits on a subsample
@pytest.mark.numerics
def test_representatives_cover_well_separated_blobs(fit_size):
    X, y = blobs(0, 6, 200)
    rows, sizes = class_representatives(X, 6, seed=0, fit_size=fit_size)
    assert sorted(y[rows].tolist()) == list(range(6))
    assert sizes.tolist() == [200] * 6 and rows.tolist() == sorted(rows.tolist())  # ties: lowest row
    for r in rows if fit_size > X.shape[0] else ():  # each is the member nearest its blob's mean
        members = np.flatnonzero(y == y[r])
        centre = X[members].astype(np.float64).mean(axis=0)
        assert r == members[np.argmin(((X[members] - centre) ** 2).sum(axis=1))]


@pytest.mark.numerics
def test_representatives_order_and_edge_cases():
    X, _ = blobs(1, 3, 1)
    X = np.concatenate([np.repeat(X[:1], 5, axis=0) + 0.01, X])  # blob 0 has 6 members
    rows, sizes = class_representatives(X, 3, seed=0)
    assert sizes.tolist() == [6, 1, 1]  # largest cluster first
    rows, sizes = class_representatives(X, 8, seed=0)  # k >= n: every row
    assert rows.tolist() == list(range(8)) and sizes.tolist() == [1] * 8
    rows, _ = class_representatives(X, 1, seed=0)  # one cluster: the row nearest the mean
    assert rows.tolist() == [int(np.argmin(((X - X.mean(axis=0)) ** 2).sum(axis=1)))]
    Z = np.zeros((10, 4), np.float32)  # identical rows: no failure, lowest row represents
    assert class_representatives(Z, 3, seed=0)[0][0] == 0


@pytest.mark.numerics
def test_representatives_are_seeded():
    X = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    a = class_representatives(X, 20, seed=5)
    b = class_representatives(X, 20, seed=5)
    np.testing.assert_array_equal(a[0], b[0])


def test_representatives_argument_errors():
    X, _ = blobs(2, 2, 5)
    with pytest.raises(InvalidInputError, match="k must be an integer >= 1; got 0"):
        class_representatives(X, 0, seed=0)
    with pytest.raises(InvalidInputError, match="fit_size must be an integer >= 1"):
        class_representatives(X, 2, seed=0, fit_size=0)
    with pytest.raises(InvalidInputError, match="X must be finite; row 1"):
        class_representatives(np.array([[0.0, 1.0], [np.nan, 0.0]]), 1, seed=0)
    with pytest.raises(InvalidInputError, match=r"2-D array .* got shape \(4,\)"):
        class_representatives(np.ones(4), 1, seed=0)
