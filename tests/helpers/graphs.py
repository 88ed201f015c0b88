"""Data and comparisons shared by the neighbour-graph tests (unit and on the Ray cluster)."""

from __future__ import annotations

import numpy as np


def blobs(n: int, d: int, seed: int = 0, clusters: int = 10) -> np.ndarray:
    """``n`` float32 points around ``clusters`` Gaussian centres in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)) * 3
    return (centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, d))).astype(np.float32)


def same_graph(A, B) -> bool:
    """Two CSR graphs with the same structure and bit-identical weights."""
    return (A.shape == B.shape and np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)
            and np.array_equal(A.data, B.data))
