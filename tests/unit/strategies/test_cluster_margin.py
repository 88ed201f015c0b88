"""Cluster-Margin against a direct computation; the clustering is average linkage, kept per process."""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from alloop.strategies import cluster_margin as cm
from alloop.strategies.base import SelectionContext
from alloop.strategies.cluster_margin import ClusterMarginStrategy, average_linkage_clusters, cluster_margin_select


def direct(proba, clusters, k, candidates, shortlist):
    top2 = np.sort(proba, axis=1)[:, -2:]
    gap = {int(i): top2[i, 1] - top2[i, 0] for i in candidates}
    short = sorted(candidates.tolist(), key=lambda i: (gap[i], i))[: shortlist * k]
    by = {}
    for i in short:
        by.setdefault(int(clusters[i]), []).append(i)
    out = []
    while len(out) < k:
        for c in sorted(by, key=lambda c: (len(by[c]), c)):
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


def test_clusters_are_scipys_average_linkage_and_large_pools_go_through_centroids():
    X = np.random.default_rng(1).standard_normal((300, 5))
    want = fcluster(linkage(X, method="average"), t=12, criterion="maxclust") - 1
    assert np.array_equal(average_linkage_clusters(X, 12), want)
    big = average_linkage_clusters(X, 12, max_points=50, seed=3)
    assert big.shape == (300,) and len(np.unique(big)) <= 12
    assert np.array_equal(big, average_linkage_clusters(X, 12, max_points=50, seed=3))


def test_the_clustering_is_computed_once_per_pool(monkeypatch):
    calls = []
    real = cm.average_linkage_clusters
    monkeypatch.setattr(cm, "average_linkage_clusters", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    cm._CLUSTERS.clear()
    rng = np.random.default_rng(2)
    X, proba = rng.standard_normal((200, 4)), rng.dirichlet(np.ones(3), 200)
    s = ClusterMarginStrategy()
    for r in range(3):  # three rounds, fewer candidates each time
        ctx = SelectionContext(200, np.arange(10 * r, 200), np.arange(10 * r), rng, proba=proba, embeddings=X)
        assert len(s.select(ctx, 10)) == 10
    assert len(calls) == 1
