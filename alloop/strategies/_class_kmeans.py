"""The k-means of one class's objects, and the member nearest each centroid (OFDS's clustering).

:func:`class_representatives` clusters one class's (normalised) object features and returns, per
cluster, the member nearest the centroid, largest clusters first. Seeding is greedy k-means++
(D^2 sampling, Arthur & Vassilvitskii 2007, with ``2 + ln k`` candidates per step as in
scikit-learn) written in float32 BLAS: scikit-learn's own seeding upcasts to float64 and is an
order of magnitude slower at hundreds of clusters. Lloyd's iterations are scikit-learn's
:class:`~sklearn.cluster.KMeans` started from those centres. :class:`ClassClusters` keeps the
centres so that a fit with more clusters (OFDS grows the counts round by round) continues the
seeding from them. The arithmetic and the order of the random draws define the picks: a change
here changes which images OFDS selects for a given seed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from alloop.checks import check_int, check_matrix
from alloop.execution.shared import SharedArray

if TYPE_CHECKING:
    from alloop.execution import Backend

__all__ = ["ClassClusters", "class_representatives", "lloyd", "lloyd_shard"]

_CHUNK = 16384  # rows per block when measuring distances to centroids


def _sq_norms(A: NDArray[np.float32]) -> NDArray[np.float32]:
    norms: NDArray[np.float32] = np.einsum("ij,ij->i", A, A)
    return norms


def _sq_dist_to_centres(
    X: NDArray[np.float32], C: NDArray[np.float64], labels: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Squared distance of each row of ``X`` to its own centre ``C[labels]`` (float64)."""
    out = np.empty(X.shape[0], np.float64)
    for s in range(0, X.shape[0], _CHUNK):
        diff = X[s : s + _CHUNK].astype(np.float64) - C[labels[s : s + _CHUNK]]
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", diff, diff)
    return out


def _nearest_centre(X: NDArray[np.float32], C: NDArray[np.float32]) -> NDArray[np.int64]:
    """Index of the nearest row of ``C`` for every row of ``X`` (float32 GEMM in blocks)."""
    qC = _sq_norms(C)
    out = np.empty(X.shape[0], np.int64)
    step = max(256, (1 << 22) // max(1, C.shape[0]))
    for s in range(0, X.shape[0], step):
        G = X[s : s + step] @ C.T
        G *= np.float32(-2.0)
        G += qC
        out[s : s + step] = G.argmin(axis=1)
    return out


def _kmeans_pp(S: NDArray[np.float32], qS: NDArray[np.float32], C: NDArray[np.float32], add: int, k: int,
               rng: np.random.Generator) -> NDArray[np.float32]:
    """Extend the centres ``C`` by ``add`` rows of ``S``: greedy k-means++ seeding.

    D^2 sampling (Arthur & Vassilvitskii, 2007) with ``2 + ln k`` candidates per step, the one
    lowering the potential most kept (scikit-learn's greedy variant), in float32 BLAS. Starting
    from existing centres it continues the seeding (used when a class gets more clusters).
    """
    m = S.shape[0]
    trials = 2 + int(np.log(max(k, 2)))
    chosen: list[int] = []
    if C.shape[0] == 0:
        first = int(rng.integers(m))
        chosen.append(first)
        mind = np.maximum(qS + qS[first] - np.float32(2.0) * (S @ S[first]), np.float32(0.0))
        add -= 1
    else:
        mind = np.full(m, np.inf, np.float32)
        qC = _sq_norms(C)
        step = max(256, (1 << 22) // max(1, C.shape[0]))
        for s in range(0, m, step):
            G = S[s : s + step] @ C.T
            G *= np.float32(-2.0)
            G += qC
            mind[s : s + step] = G.min(axis=1) + qS[s : s + step]
        np.maximum(mind, np.float32(0.0), out=mind)
    for _ in range(add):
        cum = np.cumsum(mind, dtype=np.float64)
        if cum[-1] > 0:
            cand = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
            cand = np.minimum(cand, m - 1)
        else:  # every row sits on a centre: any row will do
            cand = rng.integers(m, size=1)
        D = S @ S[cand].T
        D *= np.float32(-2.0)
        D += qS[:, None]
        D += qS[cand][None, :]
        np.maximum(D, np.float32(0.0), out=D)
        np.minimum(D, mind[:, None], out=D)
        best = int(np.argmin(D.sum(axis=0, dtype=np.float64)))
        mind = np.ascontiguousarray(D[:, best])
        chosen.append(int(cand[best]))
    return np.concatenate([C, S[chosen]]).astype(np.float32)


@dataclass(frozen=True)
class _Assign:
    """One Lloyd step's shared input: the rows (opened by each shard) and the centres."""

    X: SharedArray
    C: NDArray[np.float32]


def lloyd_shard(rows: tuple[int, int], job: _Assign) -> tuple[NDArray[np.int64], NDArray[np.float64],
                                                             float, NDArray[np.int32]]:
    """The shard work of one Lloyd step: assign the rows ``rows[0]:rows[1]`` to their nearest
    centre (float32 GEMM, ties to the lowest centre). Returns the per-centre counts, float64
    sums of the assigned rows, the float64 inertia and the labels."""
    X = np.asarray(job.X.open()[rows[0] : rows[1]])
    k = job.C.shape[0]
    labels = _nearest_centre(X, job.C)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    onehot = sp.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))), shape=(k, labels.size))
    sums = np.asarray(onehot @ X.astype(np.float64))
    inertia = float(_sq_dist_to_centres(X, job.C.astype(np.float64), labels).sum())
    return counts, sums, inertia, labels.astype(np.int32)


def lloyd(X: SharedArray, C0: NDArray[np.float32], *, max_iter: int, backend: Backend,
          shard_rows: int) -> tuple[NDArray[np.float32], NDArray[np.int64], float]:
    """Lloyd's algorithm from the centres ``C0``, each step's assignment run per shard.

    A step sends the centres to :func:`lloyd_shard` on row ranges of ``shard_rows`` rows
    (:meth:`Backend.map_shards <alloop.execution.Backend.map_shards>`; the rows were shared once);
    the driver adds the shards' counts and sums in shard order and moves each centre to the
    mean of its rows (float64, stored as float32; a centre left without rows stays where it
    is). It stops when no label changes or after ``max_iter`` updates (then the rows are
    assigned once more). The result is a function of ``X``, ``C0`` and ``shard_rows``: the same
    on every backend.

    Returns
    -------
    centres : ndarray of shape (k, d), float32
    labels : ndarray of shape (n,), int64
        The nearest centre of every row.
    inertia : float
        Sum of the squared distances of the rows to their centres.
    """
    n = X.shape[0]
    shards = [(s, min(n, s + shard_rows)) for s in range(0, n, shard_rows)]
    C = np.ascontiguousarray(C0, dtype=np.float32)

    def step(C: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float64], float, NDArray[np.int64]]:
        parts = backend.map_shards(lloyd_shard, shards, _Assign(X, C), what="OFDS: k-means step")
        counts = np.sum([p[0] for p in parts], axis=0)
        sums = parts[0][1].copy()
        for p in parts[1:]:
            sums += p[1]
        return counts, sums, float(sum(p[2] for p in parts)), np.concatenate([p[3] for p in parts]).astype(np.int64)

    prev: NDArray[np.int64] | None = None
    for _ in range(max_iter):
        counts, sums, inertia, labels = step(C)
        if prev is not None and np.array_equal(labels, prev):
            return C, labels, inertia
        means = sums / np.maximum(counts, 1)[:, None]
        C = np.where(counts[:, None] > 0, means, C).astype(np.float32)
        prev = labels
    _, _, inertia, labels = step(C)
    return C, labels, inertia


class ClassClusters:
    """k-means of one class's rows, re-run with more clusters as the selection grows.

    The first fit seeds ``n_init`` times (greedy k-means++) and runs Lloyd's algorithm
    (:class:`sklearn.cluster.KMeans`) from each, keeping the lowest inertia; a fit with more
    clusters continues the seeding from the previous centroids and runs Lloyd from there
    (warm start: cheap, and most representatives survive). Classes with more than
    ``fit_size`` rows are fitted on a seeded subsample of ``max(fit_size, 4 k)`` rows, then
    every row is assigned to its nearest centroid. When the rows fitted exceed
    ``shard_rows``, Lloyd's iterations run per shard of ``shard_rows`` rows on ``backend``
    (:func:`lloyd`) instead of scikit-learn's, from the same seeding. Arguments are not
    checked here (:func:`class_representatives` and :func:`~alloop.strategies.ofds.ofds_select`
    do it).
    """

    def __init__(self, X: NDArray[np.float32], seed: int, *, n_init: int, max_iter: int, fit_size: int,
                 backend: Backend | None = None, shard_rows: int | None = None) -> None:
        self.X, self.n = X, int(X.shape[0])
        self.rng = np.random.default_rng(seed)
        self.n_init, self.max_iter, self.fit_size = n_init, max_iter, fit_size
        self.backend, self.shard_rows = backend, shard_rows
        self.C: NDArray[np.float32] | None = None
        self.sample: NDArray[np.int64] = np.empty(0, np.int64)

    def _fit(self, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Centroids (k, d) and the label of every row."""
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        X, n = self.X, self.n
        if k == 1:
            return X.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32), np.zeros(n, np.int64)
        m = min(n, max(self.fit_size, 4 * k))
        if self.sample.size < m:
            self.sample = np.arange(n) if m == n else np.sort(self.rng.choice(n, m, replace=False))
        S = X if m == n else np.ascontiguousarray(X[self.sample])
        qS = _sq_norms(S)
        prev = self.C if self.C is not None and self.C.shape[0] < k else None
        sharded = self.shard_rows is not None and S.shape[0] > self.shard_rows
        if sharded:
            from alloop.execution import LocalBackend

            backend = self.backend if self.backend is not None else LocalBackend()
            shared = backend.share(S)
        best: tuple[NDArray[np.float32], NDArray[np.int64], float] | None = None
        for _ in range(1 if prev is not None else self.n_init):
            C0 = prev if prev is not None else np.empty((0, X.shape[1]), np.float32)
            C0 = _kmeans_pp(S, qS, C0, k - C0.shape[0], k, self.rng)
            if sharded:
                assert self.shard_rows is not None
                fit = lloyd(shared, C0, max_iter=self.max_iter, backend=backend, shard_rows=self.shard_rows)
            else:
                km = KMeans(n_clusters=k, init=C0, n_init=1, max_iter=self.max_iter, algorithm="lloyd")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct rows than k
                    km.fit(S)
                fit = (np.ascontiguousarray(km.cluster_centers_, dtype=np.float32), np.asarray(km.labels_, np.int64),
                       float(km.inertia_))
            if best is None or fit[2] < best[2]:
                best = fit
        assert best is not None  # n_init >= 1 (checked by the callers): the loop ran
        C = best[0]
        labels = best[1] if m == n else _nearest_centre(X, C)
        return C, labels

    def representatives(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """See :func:`class_representatives`."""
        n = self.n
        if k >= n:
            return np.arange(n, dtype=np.int64), np.ones(n, np.int64)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):  # many small GEMMs: threads only contend
            C, labels = self._fit(k)
        self.C = C
        d2 = _sq_dist_to_centres(self.X, C.astype(np.float64), labels)
        order = np.lexsort((np.arange(n), d2, labels))  # by cluster, then distance, then row
        lab = labels[order]
        first = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        rows, sizes = order[first], np.bincount(labels, minlength=C.shape[0])[lab[first]]
        rank = np.lexsort((rows, -sizes))
        return rows[rank].astype(np.int64), sizes[rank].astype(np.int64)


def class_representatives(
    X: NDArray[Any],
    k: int,
    *,
    seed: int,
    n_init: int = 1,
    max_iter: int = 50,
    fit_size: int = 20000,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Cluster the rows ``X`` into ``k`` groups; return one representative row per cluster.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32
        One class's (normalised) object features.
    k : int
        Clusters, ``k >= 1``; ``k >= n`` makes every row its own cluster (no k-means), ``k = 1``
        has the mean as its centroid.
    seed : int
        Seeds the k-means++ seeding and the subsample.
    n_init : int
        Independent seedings, each followed by Lloyd's algorithm; the lowest inertia is kept.
    max_iter : int
        Lloyd iterations at most.
    fit_size : int
        Rows above which k-means is fitted on a seeded subsample of ``max(fit_size, 4 k)``
        rows; every row is then assigned to its nearest centroid.

    Returns
    -------
    rows : ndarray of shape (r,), int64
        For each non-empty cluster, its member nearest the centroid (ties: lowest row), ordered
        by cluster size, largest first (ties: lowest row). ``r <= k``.
    sizes : ndarray of shape (r,), int64
        The clusters' sizes.

    Raises
    ------
    InvalidInputError
        ``X`` not a finite real 2-D array; ``k``, ``n_init``, ``max_iter`` or ``fit_size`` not an
        integer ``>= 1``.
    """
    X = np.ascontiguousarray(check_matrix(X, "X"), dtype=np.float32)
    k = check_int("k", k, 1)
    for name, value in (("n_init", n_init), ("max_iter", max_iter), ("fit_size", fit_size)):
        check_int(name, value, 1)
    return ClassClusters(X, seed, n_init=n_init, max_iter=max_iter, fit_size=fit_size).representatives(int(k))
