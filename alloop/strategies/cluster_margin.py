"""Cluster-Margin: margin to shortlist, round-robin over clusters from the smallest.

From "Batch Active Learning at Scale" (Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan,
Rostamizadeh, Kumar, NeurIPS 2021), the method that ran with batches of 10^5 to 10^6 on ~10^7
images:

1. once: hierarchical agglomerative clustering of the pool's embeddings (average linkage),
   reused in every later round;
2. each round: the ``shortlist x budget`` candidates of lowest margin (top-two probability
   gap); group them by cluster; visit the clusters from the smallest (fewest shortlisted items)
   to the largest, one item from each, again and again, until the budget is filled.

Within a cluster the items are taken by margin (lowest first; the paper draws them at random);
ties in cluster size go to the lower cluster id. Pools larger than ``max_points`` are first
reduced by k-means to ``max_points`` centroids (seeded), the centroids are clustered, and each
item takes its centroid's cluster (the paper scales with a distributed HAC instead). The
clustering is kept in memory for the process, keyed by the embeddings' bytes and the
parameters: a long-running ``alloop serve`` or ``alloop run`` computes it once.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from alloop.strategies._scores import margin
from alloop.strategies.base import Selection, SelectionContext, Strategy

__all__ = ["ClusterMarginStrategy", "average_linkage_clusters", "cluster_margin_select"]

logger = logging.getLogger(__name__)

#: (digest of the embeddings, n_clusters, max_points, seed) -> cluster of every row
_CLUSTERS: dict[tuple[str, int, int, int], NDArray[np.int64]] = {}
_KEEP = 4


def average_linkage_clusters(X: NDArray[Any], n_clusters: int, *, max_points: int = 5000,
                             seed: int = 0) -> NDArray[np.int64]:
    """Average-linkage agglomerative clusters of the rows (``n_clusters`` of them, as
    ``scipy.cluster.hierarchy.fcluster`` ``maxclust`` cuts the tree), 0-based; through k-means
    centroids when there are more than ``max_points`` rows."""
    from scipy.cluster.hierarchy import fcluster, linkage

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    n_clusters = max(1, min(int(n_clusters), n))
    if n == 1:
        return np.zeros(1, np.int64)
    if n > max_points:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=max_points, random_state=seed, n_init=1, batch_size=4096)
        assign = km.fit_predict(X)
        centres = km.cluster_centers_
        top = average_linkage_clusters(centres, min(n_clusters, max_points), max_points=max_points, seed=seed)
        return np.asarray(top[assign], dtype=np.int64)
    labels = fcluster(linkage(X, method="average"), t=n_clusters, criterion="maxclust")
    return np.asarray(labels, dtype=np.int64) - 1


def cluster_margin_select(
    proba: NDArray[Any],
    clusters: NDArray[np.int64],
    k: int,
    *,
    candidates: NDArray[np.int64],
    shortlist: int = 10,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Cluster-Margin's picks: ``(positions, 1 - margin)`` (margin: the top-two probability gap)."""
    cand = np.asarray(candidates, dtype=np.int64)
    inf = margin(np.asarray(proba)[cand])  # 1 - gap: higher = more uncertain
    order = np.lexsort((cand, -inf))[: min(cand.size, shortlist * k)]  # lowest gap first, ties: position
    short, ms = cand[order], inf[order]
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(clusters[short].tolist()):
        groups.setdefault(c, []).append(i)
    visit = sorted(groups, key=lambda c: (len(groups[c]), c))
    picked: list[int] = []
    depth = 0
    while len(picked) < k:
        for c in visit:
            if depth < len(groups[c]):
                picked.append(groups[c][depth])
                if len(picked) == k:
                    break
        depth += 1
    idx = np.array(picked, dtype=np.int64)
    return short[idx], ms[idx]


class ClusterMarginStrategy(Strategy):
    """Uncertain and diverse batches at scale (Cluster-Margin, Citovsky et al., NeurIPS 2021).

    Parameters
    ----------
    shortlist : int
        The margin shortlist holds ``shortlist x budget`` candidates (the paper's k_m; 10).
    n_clusters : int, optional
        Clusters of the pool (default: a tenth of the pool, at least 2: clusters of about ten).
    max_points : int
        Pools above this many items are clustered through as many k-means centroids.

    Notes
    -----
    Needs the model's probabilities and ``embeddings``. The clustering costs ``O(m^2)`` time and
    memory for ``m = min(pool, max_points)`` once per process; a round then costs a margin and a
    sort.
    """

    name: ClassVar[str] = "cluster_margin"
    requires: ClassVar[frozenset[str]] = frozenset({"proba", "embeddings"})

    shortlist: int = Field(default=10, ge=1)
    n_clusters: int | None = Field(default=None, ge=1)
    max_points: int = Field(default=5000, ge=2)

    def clusters(self, X: NDArray[Any], seed: int) -> NDArray[np.int64]:
        """The pool's clusters (kept for the process)."""
        X = np.ascontiguousarray(X)
        n_clusters = self.n_clusters or max(2, X.shape[0] // 10)
        digest = hashlib.sha256(X.data).hexdigest() + f"{X.shape}{X.dtype}"
        key = (digest, n_clusters, self.max_points, seed)
        if key not in _CLUSTERS:
            logger.info("Cluster-Margin: clustering %d items into %d clusters (once)", X.shape[0], n_clusters)
            while len(_CLUSTERS) >= _KEEP:
                _CLUSTERS.pop(next(iter(_CLUSTERS)))
            _CLUSTERS[key] = average_linkage_clusters(X, n_clusters, max_points=self.max_points, seed=seed)
        return _CLUSTERS[key]

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"))
        clusters = self.clusters(np.asarray(ctx.require("embeddings")), seed=0)
        positions, scores = cluster_margin_select(proba, clusters, k, candidates=ctx.candidates,
                                                  shortlist=self.shortlist)
        return Selection(positions=positions, scores=scores)
