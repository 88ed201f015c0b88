"""TypiClust against a direct computation: typicality, cluster order, picks; determinism per seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from alloop.strategies.base import SelectionContext
from alloop.strategies.typiclust import TypiClustStrategy, cluster_pool, typicality, typiclust_select


def direct_typicality(X: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    k = max(1, min(n_neighbors, len(X) // 2))
    D = cdist(X, X)
    out = []
    for i in range(len(X)):
        others = np.delete(D[i], i)
        out.append(1.0 / np.sort(others)[:k].mean() if len(others) else 0.0)
    return np.array(out)


def direct_picks(X, k, clusters, candidates, n_neighbors=20, min_cluster_size=5):
    """The paper's loop, written plainly: recompute everything at every pick."""
    open_ = set(candidates.tolist())
    n_c = clusters.max() + 1
    picks, scores = [], []
    count = [sum(1 for i in range(len(X)) if clusters[i] == c and i not in open_) for c in range(n_c)]
    for _ in range(k):
        usable = [c for c in range(n_c) if any(clusters[i] == c for i in open_)]
        size = {c: int((clusters == c).sum()) for c in usable}
        c = min(usable, key=lambda c: (size[c] <= min_cluster_size, count[c], -size[c], c))
        rows = np.flatnonzero(clusters == c)
        typ = direct_typicality(X[rows], n_neighbors)
        best = max((i for i in range(len(rows)) if rows[i] in open_), key=lambda i: (typ[i], -i))
        picks.append(int(rows[best]))
        scores.append(typ[best])
        open_.discard(int(rows[best]))
        count[c] += 1
    return np.array(picks), np.array(scores)


def blobs(n_per: int, centres: np.ndarray, seed: int = 0, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.standard_normal((n_per, centres.shape[1])) for c in centres])
    return X, np.repeat(np.arange(len(centres)), n_per)


@pytest.mark.parametrize("n", [1, 2, 7, 60])
def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours(n: int) -> None:
    X = np.random.default_rng(n).standard_normal((n, 5))
    got = typicality(X)
    if n == 1:
        assert got[0] == 0.0
    else:
        assert np.allclose(got, direct_typicality(X), rtol=1e-9)


def test_picks_equal_the_direct_loop_with_covered_small_and_exhausted_clusters() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 4))
    clusters = np.concatenate([np.zeros(40, int), np.ones(25, int), np.full(20, 2), np.full(5, 3)])
    clusters = clusters[rng.permutation(90)]
    candidates = np.sort(rng.choice(90, 60, replace=False))
    for k in (1, 4, 9, 30):
        got = typiclust_select(X, k, clusters=clusters, candidates=candidates)
        want = direct_picks(X, k, clusters, candidates)
        assert np.array_equal(got[0], want[0]) and np.allclose(got[1], want[1], rtol=1e-9), k


def test_one_pick_per_blob_and_each_the_blobs_densest_point() -> None:
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 20]], float)
    X, truth = blobs(40, centres)
    ctx = SelectionContext(len(X), np.arange(len(X)), np.empty(0, np.int64), np.random.default_rng(0), embeddings=X)
    sel = TypiClustStrategy().select(ctx, 5)
    assert sorted(truth[sel.positions]) == [0, 1, 2, 3, 4]
    for p in sel.positions:  # the most typical point of its blob: close to the blob's centre
        rows = np.flatnonzero(truth == truth[p])
        assert p == rows[np.argmax(direct_typicality(X[rows]))]


def test_blobs_already_covered_are_left_for_the_uncovered_ones() -> None:
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    X, truth = blobs(30, centres, seed=2)
    labeled = np.array([0, 30])  # one point of blobs 0 and 1
    candidates = np.setdiff1d(np.arange(len(X)), labeled)
    ctx = SelectionContext(len(X), candidates, labeled, np.random.default_rng(0), embeddings=X)
    sel = TypiClustStrategy().select(ctx, 2)
    assert sorted(truth[sel.positions]) == [2, 3]


def test_the_same_seed_gives_the_same_picks() -> None:
    X = np.random.default_rng(5).standard_normal((300, 8))
    cand = np.arange(20, 300)

    def run(seed: int) -> np.ndarray:
        ctx = SelectionContext(300, cand, np.arange(20), np.random.default_rng(seed), embeddings=X)
        return TypiClustStrategy().select(ctx, 15).positions

    assert np.array_equal(run(3), run(3))
    assert np.array_equal(cluster_pool(X, 12, 7), cluster_pool(X, 12, 7))
