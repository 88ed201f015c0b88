"""Exact Euclidean neighbour queries in blocks (bounded memory, float64 results).

Small, dependency-free kernels for the low-budget strategies (TypiClust, ProbCover): the
distances from a block of query rows to every reference row are computed with one matrix
product per block, ``|q|^2 + |r|^2 - 2 q.r`` in float64, clipped at 0. Memory: one
``(block_rows, n_reference)`` float64 matrix at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

__all__ = ["blocks", "knn_mean_distance", "nearest_other", "radius_graph"]

#: bytes of one block of query-to-reference distances
BLOCK_BYTES = 64 << 20


def _rows_per_block(n_reference: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(1, n_reference)))


def blocks(Q: NDArray[Any], R: NDArray[Any]) -> Iterator[tuple[int, NDArray[np.float64]]]:
    """``(start, D)`` for consecutive blocks of ``Q``'s rows: ``D[i, j]`` = Euclidean distance
    from ``Q[start + i]`` to ``R[j]``."""
    Q = np.asarray(Q, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    rn = np.einsum("ij,ij->i", R, R)
    step = _rows_per_block(R.shape[0])
    for a in range(0, Q.shape[0], step):
        q = Q[a : a + step]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + rn[None, :] - 2.0 * (q @ R.T)
        np.maximum(d2, 0.0, out=d2)
        yield a, np.sqrt(d2, out=d2)


def knn_mean_distance(X: NDArray[Any], k: int) -> NDArray[np.float64]:
    """Mean distance from each row of ``X`` to its ``k`` nearest other rows (itself excluded);
    ``k`` is capped at ``len(X) - 1`` (0 rows to compare: +inf)."""
    n = X.shape[0]
    k = min(int(k), n - 1)
    out = np.empty(n, np.float64)
    if k <= 0:
        out.fill(np.inf)
        return out
    for a, D in blocks(X, X):
        rows = np.arange(D.shape[0])
        D[rows, a + rows] = np.inf  # not its own neighbour
        part = np.partition(D, k - 1, axis=1)[:, :k]
        out[a : a + D.shape[0]] = part.mean(axis=1)
    return out


def nearest_other(Q: NDArray[Any], q_labels: NDArray[Any], R: NDArray[Any],
                  r_labels: NDArray[Any]) -> NDArray[np.float64]:
    """For each query row, the distance to the nearest reference row with another label
    (+inf when every reference row shares its label)."""
    out = np.empty(Q.shape[0], np.float64)
    for a, D in blocks(Q, R):
        same = q_labels[a : a + D.shape[0], None] == r_labels[None, :]
        D[same] = np.inf
        out[a : a + D.shape[0]] = D.min(axis=1) if D.shape[1] else np.inf
    return out


def radius_graph(X: NDArray[Any], radius: float) -> sp.csr_matrix:
    """The symmetric δ-ball graph: row ``i`` holds the rows within ``radius`` of ``X[i]``
    (itself included), as a CSR matrix of ones."""
    n = X.shape[0]
    indptr = [0]
    cols: list[NDArray[np.int64]] = []
    for a, dist in blocks(X, X):
        rows = np.arange(dist.shape[0])
        dist[rows, a + rows] = 0.0  # every point is in its own ball (rounding may say otherwise)
        r, c = np.nonzero(dist <= radius)
        counts = np.bincount(r, minlength=dist.shape[0])
        indptr.extend((indptr[-1] + np.cumsum(counts)).tolist())
        cols.append(c.astype(np.int64))
    indices = np.concatenate(cols) if cols else np.empty(0, np.int64)
    data = np.ones(indices.size, dtype=np.int8)
    return sp.csr_matrix((data, indices, np.asarray(indptr, dtype=np.int64)), shape=(n, n))
