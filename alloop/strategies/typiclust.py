"""TypiClust: the most typical point of the largest uncovered clusters (a low-budget cold start).

From "Active Learning on a Budget: Opposite Strategies Suit High and Low Budgets" (Hacohen,
Dekel, Weinshall, ICML 2022). With a few labels per class, typical and diverse picks beat
uncertainty and random; no trained model is needed, so it is a cold start for round 0 of any
project whose items have embeddings:

1. k-means of the pool's embeddings into ``min(covered + budget, max_clusters)`` clusters,
   ``covered`` = the items labeled or picked before (not candidates)
   (mini-batch k-means above ``minibatch_above`` clusters, as the paper's code does);
2. typicality of a point: ``1 / mean Euclidean distance to its K nearest neighbours in its
   cluster``, ``K = min(n_neighbors, cluster size // 2)`` (the paper's rule);
3. ``budget`` times: take the cluster with the fewest covered or picked points, the largest
   among those (clusters of at most ``min_cluster_size`` points come last), and pick its most
   typical candidate.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from alloop.strategies._neighbors import knn_mean_distance
from alloop.strategies.base import Selection, SelectionContext, Strategy

__all__ = ["TypiClustStrategy", "cluster_pool", "typicality", "typiclust_select"]

logger = logging.getLogger(__name__)


def typicality(X: NDArray[Any], n_neighbors: int = 20) -> NDArray[np.float64]:
    """``1 / mean distance to the K nearest other rows``, ``K = min(n_neighbors, len(X) // 2)``
    (at least 1); a single row has typicality 0."""
    k = max(1, min(int(n_neighbors), X.shape[0] // 2))
    with np.errstate(divide="ignore"):
        return 1.0 / (knn_mean_distance(X, k) + 1e-12)


def cluster_pool(X: NDArray[Any], n_clusters: int, seed: int, *, minibatch_above: int = 50) -> NDArray[np.int64]:
    """k-means cluster of every row (seeded; mini-batch k-means for many clusters)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n_clusters = max(1, min(int(n_clusters), X.shape[0]))
    if n_clusters == 1:
        return np.zeros(X.shape[0], np.int64)
    data = np.asarray(X, dtype=np.float32)
    if n_clusters > minibatch_above:
        model: Any = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=4096)
    else:
        model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1)
    return np.asarray(model.fit_predict(data), dtype=np.int64)


def typiclust_select(
    X: NDArray[Any],
    k: int,
    *,
    clusters: NDArray[np.int64],
    candidates: NDArray[np.int64],
    n_neighbors: int = 20,
    min_cluster_size: int = 5,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """TypiClust's picks over given clusters: ``(positions, typicality of each pick)``.

    Every row that is not a candidate (labeled, or picked before) counts as covering its cluster.

    Typicality is computed once per cluster, over all the cluster's rows (labeled ones too: it
    is a density), the first time the cluster is picked from.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    n_c = int(clusters.max()) + 1 if clusters.size else 0
    size = np.bincount(clusters, minlength=n_c)
    open_ = np.zeros(clusters.size, bool)
    open_[candidates] = True
    count = np.bincount(clusters[~open_], minlength=n_c)  # labeled, or picked before and not labeled yet
    left = np.bincount(clusters[candidates], minlength=n_c)
    small = size <= min_cluster_size
    typ: dict[int, NDArray[np.float64]] = {}
    members: dict[int, NDArray[np.int64]] = {}
    picks, scores = np.empty(k, np.int64), np.empty(k, np.float64)
    for t in range(k):
        usable = np.flatnonzero(left > 0)
        # fewest labeled or picked first, then the largest, small clusters last, then the lowest id
        order = np.lexsort((usable, -size[usable], count[usable], small[usable]))
        c = int(usable[order[0]])
        if c not in typ:
            rows = np.flatnonzero(clusters == c)
            members[c] = rows
            typ[c] = typicality(X[rows], n_neighbors)
        rows, values = members[c], typ[c]
        avail = open_[rows]
        best = int(np.flatnonzero(avail)[np.argmax(values[avail])])
        p = int(rows[best])
        picks[t], scores[t] = p, values[best]
        open_[p] = False
        left[c] -= 1
        count[c] += 1
    return picks, scores


class TypiClustStrategy(Strategy):
    """Typical and diverse picks for small budgets (TypiClust, Hacohen et al., ICML 2022).

    Parameters
    ----------
    n_neighbors : int
        Neighbours of the typicality estimate (the paper's 20; ``cluster size // 2`` in small
        clusters).
    max_clusters : int
        At most this many k-means clusters (the paper's 500); there are ``covered + budget``
        otherwise (covered: labeled or picked before).
    min_cluster_size : int
        Clusters of at most this many points are picked from only when no larger one has a
        candidate left (the paper drops them).

    Notes
    -----
    Needs ``embeddings`` (an encoder's features: CLIP, a sentence encoder, given vectors). Cost:
    k-means over the pool, then exact neighbour distances inside each cluster picked from
    (``cluster size^2 x n_features`` each): meant for the low-budget regime on pools of up to
    about 10^5 items. Scores are the picks' typicality.
    """

    name: ClassVar[str] = "typiclust"
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    n_neighbors: int = Field(default=20, ge=1)
    max_clusters: int = Field(default=500, ge=1)
    min_cluster_size: int = Field(default=5, ge=0)

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        X = np.asarray(ctx.require("embeddings"))
        n_clusters = min(ctx.n_samples - ctx.candidates.size + k, self.max_clusters)
        seed = int(ctx.rng.integers(2**31 - 1))
        clusters = cluster_pool(X, n_clusters, seed)
        positions, scores = typiclust_select(
            X, k, clusters=clusters, candidates=ctx.candidates, n_neighbors=self.n_neighbors,
            min_cluster_size=self.min_cluster_size,
        )
        logger.info("TypiClust: %d clusters, picked from %d of them", n_clusters, np.unique(clusters[positions]).size)
        return Selection(positions=positions, scores=scores)
