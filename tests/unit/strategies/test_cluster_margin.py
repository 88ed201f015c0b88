"""Cluster-Margin against a direct computation; the clustering is scipy's (Ward by default), kept per process."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from alloop.strategies import cluster_margin as cm
from alloop.strategies.base import SelectionContext
from alloop.strategies.cluster_margin import ClusterMarginStrategy, agglomerative_clusters, cluster_margin_select


def direct(proba, clusters, k, candidates, shortlist):
    top2 = np.sort(proba, axis=1)[:, -2:]
    gap = {int(i): top2[i, 1] - top2[i, 0] for i in candidates}
    short = sorted(candidates.tolist(), key=lambda i: (gap[i], i))[: shortlist * k]
    by = {}
    for i in short:
        by.setdefault(int(clusters[i]), []).append(i)
    # smallest first; as many shortlisted items: the one holding the lower-margin item first
    visit = sorted(by, key=lambda c: (len(by[c]), short.index(by[c][0])))
    out = []
    while len(out) < k:
        for c in visit:
            if by[c]:
                out.append(by[c].pop(0))
                if len(out) == k:
                    break
    return out


def test_picks_equal_the_direct_round_robin():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(4), 400)
    clusters = rng.integers(0, 25, 400)
    cand = np.sort(rng.choice(400, 300, replace=False))
    for k, short in ((1, 10), (7, 3), (30, 10), (50, 2)):
        got, scores = cluster_margin_select(proba, clusters, k, candidates=cand, shortlist=short)
        assert got.tolist() == direct(proba, clusters, k, cand, short), (k, short)
        top2 = np.sort(proba[got], axis=1)[:, -2:]
        assert np.allclose(scores, 1 - (top2[:, 1] - top2[:, 0]))


def test_a_shortlist_in_distinct_clusters_gives_margins_own_picks():
    rng = np.random.default_rng(4)
    proba = rng.dirichlet(np.ones(3), 200)
    clusters = np.arange(200)  # every item its own cluster
    got, _ = cluster_margin_select(proba, clusters, 15, candidates=np.arange(200), shortlist=4)
    top2 = np.sort(proba, axis=1)[:, -2:]
    assert got.tolist() == np.lexsort((np.arange(200), top2[:, 1] - top2[:, 0]))[:15].tolist()


@pytest.mark.parametrize("method", ["ward", "average"])
def test_clusters_are_scipys_and_large_pools_go_through_centroids(method):
    X = np.random.default_rng(1).standard_normal((300, 5))
    want = fcluster(linkage(X, method=method), t=12, criterion="maxclust") - 1
    assert np.array_equal(agglomerative_clusters(X, 12, method=method), want)
    big = agglomerative_clusters(X, 12, method=method, max_points=50, seed=3)
    assert big.shape == (300,) and len(np.unique(big)) <= 12
    assert np.array_equal(big, agglomerative_clusters(X, 12, method=method, max_points=50, seed=3))


def test_the_default_linkage_is_ward_and_an_unknown_one_is_refused():
    assert ClusterMarginStrategy().linkage == "ward"
    with pytest.raises(ValueError, match="linkage must be one of ward, average"):
        agglomerative_clusters(np.zeros((5, 2)), 2, method="centroid")


def test_the_clustering_is_computed_once_per_pool(monkeypatch):
    calls = []
    real = cm.agglomerative_clusters
    monkeypatch.setattr(cm, "agglomerative_clusters", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    cm._CLUSTERS.clear()
    rng = np.random.default_rng(2)
    X, proba = rng.standard_normal((200, 4)), rng.dirichlet(np.ones(3), 200)
    s = ClusterMarginStrategy()
    for r in range(3):  # three rounds, fewer candidates each time
        ctx = SelectionContext(200, np.arange(10 * r, 200), np.arange(10 * r), rng, proba=proba, embeddings=X)
        assert len(s.select(ctx, 10)) == 10
    assert len(calls) == 1


def test_a_project_keeps_the_clustering_in_its_cache_for_later_processes(monkeypatch, tmp_path):
    calls = []
    real = cm.agglomerative_clusters
    monkeypatch.setattr(cm, "agglomerative_clusters", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    rng = np.random.default_rng(5)
    X, proba = rng.standard_normal((120, 3)), rng.dirichlet(np.ones(3), 120)

    def pick():
        ctx = SelectionContext(120, np.arange(120), np.arange(0), rng, proba=proba, embeddings=X, cache_dir=tmp_path)
        return ClusterMarginStrategy().select(ctx, 6).positions.tolist()

    cm._CLUSTERS.clear()
    first = pick()
    (saved,) = (tmp_path / "cluster_margin").glob("*.npy")
    assert np.array_equal(np.load(saved), real(X, 12, method="ward"))
    cm._CLUSTERS.clear()  # a new process: read back, not recomputed
    assert pick() == first and len(calls) == 1
    saved.write_bytes(b"not an array")  # a damaged file is computed again and replaced
    cm._CLUSTERS.clear()
    assert pick() == first and len(calls) == 2
    assert np.array_equal(np.load(saved), real(X, 12, method="ward"))
    assert not list((tmp_path / "cluster_margin").glob(".*.tmp"))
