"""Cluster-Margin: margin to shortlist, round-robin over clusters from the smallest.

From "Batch Active Learning at Scale" (Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan,
Rostamizadeh, Kumar, NeurIPS 2021), the method that ran with batches of 10^5 to 10^6 on ~10^7
images:

1. once: hierarchical agglomerative clustering of the pool's embeddings, reused in every later
   round;
2. each round: the ``shortlist x budget`` candidates of lowest margin (top-two probability
   gap); group them by cluster; visit the clusters from the smallest (fewest shortlisted items)
   to the largest, one item from each, again and again, until the budget is filled.

Within a cluster the items are taken by margin (lowest first; the paper draws them at random);
clusters with as many shortlisted items are visited by their lowest margin, so that a shortlist
spread over as many clusters as the budget gives margin's own picks.

The paper cuts an average-linkage tree; alloop's default is Ward's linkage. Cut at a tenth of
the pool, average linkage leaves the outliers in clusters of their own and the rest in a few
large ones, and "smallest first" then picks the outliers. On scikit-learn's digits (one label
per class per round, 30 seeds, ``benchmarks/results/label_efficiency.md``) that lost to random
(-0.034 AUBC, 5 seeds of 30 won), where Ward's compact clusters gained +0.011 (21 won).
``linkage = "average"`` gives the paper's. Pools larger than ``max_points`` are first reduced
by k-means to ``max_points`` centroids (seeded), the centroids are clustered, and each
item takes its centroid's cluster (the paper scales with a distributed HAC instead). The
clustering is keyed by the embeddings' bytes and the parameters, kept in memory for the process
and, in a project, saved in its cache folder (``cache/strategies/cluster_margin/``): every
later round reuses it, in this process or the next ``alloop run``, until the pool changes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from alloop.strategies._scores import margin
from alloop.strategies.base import PoolCache, Selection, SelectionContext, Strategy, array_digest

__all__ = ["LINKAGES", "ClusterMarginStrategy", "agglomerative_clusters", "cluster_margin_select"]

logger = logging.getLogger(__name__)

#: the linkages ``scipy.cluster.hierarchy.linkage`` is asked for
LINKAGES = ("ward", "average", "complete", "single")
Linkage = Literal["ward", "average", "complete", "single"]

#: (digest of the embeddings, n_clusters, max_points, seed, linkage) -> cluster of every row
_CLUSTERS: PoolCache[NDArray[np.int64]] = PoolCache(keep=4)


def agglomerative_clusters(X: NDArray[Any], n_clusters: int, *, method: str = "ward", max_points: int = 10_000,
                           seed: int = 0) -> NDArray[np.int64]:
    """Agglomerative clusters of the rows (``n_clusters`` of them, as
    ``scipy.cluster.hierarchy.fcluster`` ``maxclust`` cuts the ``method`` linkage tree), 0-based;
    through k-means centroids when there are more than ``max_points`` rows."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if method not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}; got {method!r}.")
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
        top = agglomerative_clusters(centres, min(n_clusters, max_points), method=method, max_points=max_points,
                                     seed=seed)
        return np.asarray(top[assign], dtype=np.int64)
    labels = fcluster(linkage(X, method=method), t=n_clusters, criterion="maxclust")
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
    # smallest first; as many shortlisted: the cluster of the more uncertain item first (the
    # shortlist is in margin order, so a group's first item is its most uncertain)
    visit = sorted(groups, key=lambda c: (len(groups[c]), groups[c][0]))
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
    linkage : {"ward", "average", "complete", "single"}, default "ward"
        How the clustering merges (``scipy.cluster.hierarchy.linkage``); the paper's is
        ``"average"`` (see the module docstring for why the default is Ward's).
    max_points : int, default 10000
        Pools above this many items are clustered through as many k-means centroids.

    Notes
    -----
    Needs the model's probabilities and ``embeddings``. The clustering costs ``O(m^2)`` time and
    memory for ``m = min(pool, max_points)`` (about ``4 m^2`` bytes: 400 MB at the default) once
    per pool; a round then costs a margin and a sort.
    """

    name: ClassVar[str] = "cluster_margin"
    requires: ClassVar[frozenset[str]] = frozenset({"proba", "embeddings"})

    shortlist: int = Field(default=10, ge=1)
    n_clusters: int | None = Field(default=None, ge=1)
    linkage: Linkage = "ward"
    max_points: int = Field(default=10_000, ge=2)

    def clusters(self, X: NDArray[Any], seed: int, cache_dir: Path | None = None) -> NDArray[np.int64]:
        """The pool's clusters: from this process's memory, else from ``cache_dir`` (a file named
        by the embeddings' digest and the parameters), else computed and kept in both."""
        n_clusters = self.n_clusters or max(2, X.shape[0] // 10)
        digest = array_digest(X)
        key = (digest, n_clusters, self.max_points, seed, self.linkage)
        file = None if cache_dir is None else (
            Path(cache_dir) / self.name / f"{digest[:32]}-{n_clusters}-{self.max_points}-{seed}-{self.linkage}.npy")
        return _CLUSTERS.get(key, lambda: self._saved_or_computed(X, n_clusters, seed, file))

    def _saved_or_computed(self, X: NDArray[Any], n_clusters: int, seed: int, file: Path | None) -> NDArray[np.int64]:
        got = _read(file, X.shape[0])
        if got is None:
            logger.info("Cluster-Margin: clustering %d items into %d clusters, %s linkage (once)", X.shape[0],
                        n_clusters, self.linkage)
            got = agglomerative_clusters(X, n_clusters, method=self.linkage, max_points=self.max_points, seed=seed)
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    np.save(f, got)
                os.replace(tmp, file)  # whole or absent, never half written
        return got

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"))
        clusters = self.clusters(np.asarray(ctx.require("embeddings")), seed=0, cache_dir=ctx.cache_dir)
        positions, scores = cluster_margin_select(proba, clusters, k, candidates=ctx.candidates,
                                                  shortlist=self.shortlist)
        return Selection(positions=positions, scores=scores)


def _read(file: Path | None, n: int) -> NDArray[np.int64] | None:
    """A saved clustering of ``n`` rows, or None (none saved, or unreadable: then recomputed)."""
    if file is None or not file.is_file():
        return None
    try:
        got = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("Cluster-Margin: ignoring the unreadable saved clustering %s (%s); computing it again",
                       file, exc)
        return None
    if got.shape != (n,) or got.dtype.kind != "i":
        logger.warning("Cluster-Margin: ignoring the saved clustering %s (shape %s, expected (%d,))", file,
                       got.shape, n)
        return None
    return np.asarray(got, dtype=np.int64)
