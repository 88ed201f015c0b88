"""OFDS's per-class k-means with Lloyd's steps per shard on an execution backend."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.execution import LocalBackend, SharedArray
from alloop.strategies._class_kmeans import ClassClusters, _kmeans_pp, _sq_norms, lloyd
from alloop.strategies.ofds import OfdsStrategy, ofds_select
from tests.unit.strategies.test_ofds import make_objects


def blobs(n: int, d: int = 12, k: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 2
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


def numpy_lloyd(X: np.ndarray, C0: np.ndarray, max_iter: int):
    """Lloyd's algorithm in plain float64 numpy: assign, stop when no label changes, move."""
    X64, C = X.astype(np.float64), C0.astype(np.float64)
    prev = None
    for it in range(max_iter + 1):  # at most max_iter moves, then a last assignment
        labels = ((X64[:, None, :] - C[None]) ** 2).sum(axis=2).argmin(axis=1)
        if it == max_iter or (prev is not None and np.array_equal(labels, prev)):
            break
        counts = np.bincount(labels, minlength=len(C))
        means = np.array([X64[labels == j].mean(axis=0) if counts[j] else C[j] for j in range(len(C))])
        C, prev = means, labels
    return C, labels


@pytest.mark.parametrize("shard_rows", [97, 500, 5000])
def test_sharded_lloyd_equals_a_direct_numpy_lloyd_from_the_same_seeds(shard_rows):
    X = blobs(3000, seed=1)
    C0 = _kmeans_pp(X, _sq_norms(X), np.empty((0, X.shape[1]), np.float32), 8, 8, np.random.default_rng(5))
    C, labels, inertia = lloyd(SharedArray.in_process(X), C0, max_iter=100, backend=LocalBackend(),
                               shard_rows=shard_rows)
    C_ref, labels_ref = numpy_lloyd(X, C0, 100)
    assert np.array_equal(labels, labels_ref)
    assert np.allclose(C, C_ref, rtol=0, atol=1e-5)
    d2 = ((X.astype(np.float64) - C.astype(np.float64)[labels]) ** 2).sum()
    assert inertia == pytest.approx(d2, rel=1e-5)


def test_sharded_lloyd_stops_at_max_iter_and_keeps_an_empty_centre():
    X = blobs(400, seed=2)
    far = np.full((1, X.shape[1]), 100.0, np.float32)  # no row ever comes near it
    C0 = np.concatenate([X[:3], far])
    C, labels, _ = lloyd(SharedArray.in_process(X), C0, max_iter=1, backend=LocalBackend(), shard_rows=64)
    C_ref, _ = numpy_lloyd(X, C0, 1)
    assert np.array_equal(C[3], far[0]) and not (labels == 3).any()
    assert np.allclose(C, C_ref, rtol=0, atol=1e-5)


def test_class_clusters_on_shards_are_seeded_and_cover_the_blobs():
    X = blobs(2000, k=5, seed=3)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    runs = []
    for _ in range(2):
        cc = ClassClusters(X, 11, n_init=2, max_iter=50, fit_size=20000, backend=LocalBackend(), shard_rows=300)
        runs.append(cc.representatives(5))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][1].sum() == 2000 and runs[0][0].size == 5


def test_ofds_with_shard_objects_is_valid_and_the_default_path_is_unchanged():
    objects = make_objects(4, n_images=400)
    ref = ofds_select(objects, 30, n_samples=400, rng=7)
    assert np.array_equal(ofds_select(objects, 30, n_samples=400, rng=7, shard_objects=None,
                                      backend=LocalBackend())[0], ref[0])
    a = ofds_select(objects, 30, n_samples=400, rng=7, shard_objects=50, backend=LocalBackend())
    b = ofds_select(objects, 30, n_samples=400, rng=7, shard_objects=50)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].size == 30 and np.unique(a[0]).size == 30
    assert OfdsStrategy.uses_backend and OfdsStrategy(shard_objects=50).shard_objects == 50
