"""The IDEAL similarity graph: a directed k-nearest-neighbour graph with influence weights.

:func:`knn_graph` links every row to its ``k`` most cosine-similar other rows (of the
mean-centred embeddings) and weights each edge ``i -> j`` by ``cos(i, j) / sum over i's kept
neighbours``, so a node's out-weights sum to 1 and can serve as independent-cascade
probabilities (:mod:`alloop.strategies._influence`).

Neighbour search, ``neighbors=``:

* ``"exact"``: float32 BLAS in blocks of rows. Each block's similarities to every row are one
  matrix product; the top ``k`` per row are found exactly, ties to the lowest column, via a
  threshold (the ``k``-th largest maximum over ``_GROUPS`` disjoint column groups bounds the
  ``k``-th largest value from below, so only the few entries above it are sorted). Block rows
  are padded to a multiple of 16 so a row's similarities do not depend on its block;
  the graph does not depend on ``block_rows``.
* ``"faiss-exact"`` (``IndexFlatIP``) and ``"faiss-ivf"`` (``IndexIVFFlat``, approximate,
  ``nlist`` / ``nprobe``): faiss orders ties its own way; IVF may return fewer than ``k``
  neighbours for a few rows and then keeps those it found.
* ``"auto"``: ``"exact"`` below :data:`AUTO_FAISS_ROWS` rows, ``"faiss-ivf"`` from there on
  (exact search costs O(n^2 d): about 1 min at n = 1e5, d = 384 on 2 cores, hours at 1e6);
  ``"exact"`` when faiss is not installed. The faiss-cpu wheel carries its own OpenBLAS,
  which may choose generic kernels on a CPU it does not know (measured here: 2.5x slower than
  with ``OPENBLAS_CORETYPE=SkylakeX`` set before faiss loads).

Non-positive similarities: after mean-centring, a row's nearest neighbours may have cosine
<= 0 (an outlier, or a row equal to the mean, whose unit vector is taken as 0). Such edges
are **dropped** before normalising: a cosine <= 0 is no evidence of similarity, and a
probability must be >= 0. A floor (clamping to a small positive value) would instead give a
node with no similar neighbour the same uniform 1/k influence as a node inside a dense
cluster. So every node with at least one positive neighbour has out-weights summing to 1; a
node with none has no out-edge (it can only activate itself).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from alloop.errors import ConfigError, InvalidInputError

__all__ = ["knn_graph", "NEIGHBORS", "AUTO_FAISS_ROWS"]

log = logging.getLogger(__name__)

NEIGHBORS = ("auto", "exact", "faiss-exact", "faiss-ivf")
AUTO_FAISS_ROWS = 50_000
_F32 = np.float32
_PAD = 16  # BLAS row granularity: a row's values must not depend on its block
_BLOCK_ELEMS = 1 << 24  # similarities per block when block_rows is None (64 MiB)
_GROUPS = 64  # column groups whose maxima bound the k-th largest similarity
_SENTINEL = _F32(-3.0)  # below any cosine: self and padding columns


def knn_graph(
    X: np.ndarray,
    k: int = 10,
    *,
    neighbors: str = "auto",
    block_rows: int | None = None,
    nlist: int | None = None,
    nprobe: int = 16,
) -> sp.csr_matrix:
    """Directed cosine kNN graph of the mean-centred rows, out-weights normalised to 1.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        Embeddings; real and finite. Centred on their mean (float64), then L2-normalised in
        float32 (a row equal to the mean becomes 0: cosine 0 with every row).
    k : int
        Neighbours per row, self excluded; ``min(k, n_samples - 1)`` are kept.
    neighbors : {"auto", "exact", "faiss-exact", "faiss-ivf"}
        Neighbour search (see the module docstring).
    block_rows : int, optional
        Rows per block of the exact search; default: about ``2**24 / n_samples`` (64 MiB of
        similarities). Bounds temporary memory to ``O(block_rows * n_samples)``.
    nlist, nprobe : int
        IVF lists (default ``4 sqrt(n)``, at most ``n / 39`` so that faiss trains on at least
        39 rows per list) and lists searched per query.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_samples, n_samples), float64
        ``G[i, j] = cos(i, j) / sum_j' cos(i, j')`` over i's kept neighbours with positive
        cosine; sorted column indices, no explicit zeros. Row sums are 1, or 0 for a row with
        no positive neighbour.

    Raises
    ------
    InvalidInputError
        Bad shape, dtype, non-finite values, ``k``, ``neighbors``, ``block_rows``, ``nlist``
        or ``nprobe``; faiss requested but not installed.
    """
    U = _unit_rows(X)
    n = U.shape[0]
    _check_int("k", k, 1)
    _check_int("nprobe", nprobe, 1)
    if block_rows is not None:
        _check_int("block_rows", block_rows, 1)
    if nlist is not None:
        _check_int("nlist", nlist, 1)
    if neighbors not in NEIGHBORS:
        raise InvalidInputError(f"neighbors must be one of {', '.join(NEIGHBORS)}; got {neighbors!r}.")
    kk = min(int(k), n - 1)
    if kk == 0:
        return sp.csr_matrix((n, n), dtype=np.float64)
    method = _resolve(neighbors, n)
    if method == "exact":
        nbr, sim = _exact_knn(U, kk, block_rows)
    else:
        nbr, sim = _faiss_knn(U, kk, method, nlist, nprobe)
    return _weights(nbr, sim, n)


def _check_int(name: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InvalidInputError(f"{name} must be an integer >= {lo}; got {v!r}.")


def _unit_rows(X) -> np.ndarray:
    """Mean-centred, L2-normalised float32 copy of ``X`` (zero rows stay 0)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidInputError(
            f"embeddings must be a 2-D array of shape (n_samples, n_features) with at least one "
            f"row and one feature; got shape {X.shape}."
        )
    if X.dtype == bool or not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise InvalidInputError(f"embeddings must hold real numbers; got dtype {X.dtype}.")
    if not np.isfinite(X).all():
        bad = int(np.argwhere(~np.isfinite(X))[0, 0])
        raise InvalidInputError(
            f"embeddings must be finite; row {bad} contains NaN or inf. Check the encoder's output."
        )
    mean = X.mean(axis=0, dtype=np.float64)
    U = np.empty(X.shape, _F32)
    for s in range(0, X.shape[0], 1 << 14):  # centre in float64, bounded scratch
        U[s : s + (1 << 14)] = X[s : s + (1 << 14)] - mean
    norm = np.sqrt(np.einsum("ij,ij->i", U, U, dtype=np.float64))
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    U *= inv.astype(_F32)[:, None]
    return U


def _resolve(neighbors: str, n: int) -> str:
    if neighbors != "auto":
        return neighbors
    if n < AUTO_FAISS_ROWS:
        return "exact"
    try:
        import faiss  # noqa: F401
    except ImportError:
        log.warning("faiss is not installed; exact BLAS kNN for %d rows (O(n^2) time).", n)
        return "exact"
    return "faiss-ivf"


def _exact_knn(U: np.ndarray, k: int, block_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours, ties to the lowest column. Returns (n, k) arrays."""
    n = U.shape[0]
    b = block_rows or max(1, _BLOCK_ELEMS // n)
    b = -(-min(b, n) // _PAD) * _PAD
    width = -(-n // _GROUPS) * _GROUPS  # padded columns: whole groups
    S = np.full((b, width), _SENTINEL, _F32)
    mask = np.empty((b, width), bool)
    rows = np.zeros((b, U.shape[1]), _F32)
    nbr, sim = np.empty((n, k), np.int64), np.empty((n, k), _F32)
    for s in range(0, n, b):
        m = min(b, n - s)
        m16 = -(-m // _PAD) * _PAD
        rows[:m] = U[s : s + m]
        rows[m:m16] = 0
        np.matmul(rows[:m16], U.T, out=S[:m16, :n])
        S[np.arange(m), np.arange(s, s + m)] = _SENTINEL  # self excluded
        nbr[s : s + m], sim[s : s + m] = _top_k(S[:m], mask[:m], k)
    return nbr, sim


def _top_k(S: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each row of ``S`` (m, width), by (-value, column). ``mask`` is scratch.

    The ``_GROUPS`` column groups ``{j : j mod (width / _GROUPS) = g}`` are disjoint; the
    ``k``-th largest group maximum ``t`` is at most the ``k``-th largest value (k groups each
    hold a value >= t), so every entry that can be in the top ``k``, ties included, is >= t.
    """
    m, width = S.shape
    groups = S.reshape(m, _GROUPS, width // _GROUPS).max(axis=2) if k < _GROUPS else None
    if groups is None:  # few groups per k: every real entry is a candidate
        thr = np.full(m, _SENTINEL, _F32)
    else:
        thr = -np.partition(-groups, k - 1, axis=1)[:, k - 1]
    np.greater_equal(S, thr[:, None], out=mask)
    flat = np.flatnonzero(mask)
    r, c = np.divmod(flat, width)
    v = S.reshape(-1)[flat]
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    rank = np.arange(r.size) - np.searchsorted(r, r)  # position within its row
    keep = rank < k
    return c[keep].reshape(m, k), v[keep].reshape(m, k)


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "neighbors='faiss-exact' / 'faiss-ivf' needs the faiss-cpu package, which is not "
            "installed. Install it (pip install 'faiss-cpu>=1.8') or use neighbors='exact'."
        ) from None
    return faiss


def _faiss_knn(U, k: int, method: str, nlist, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours by faiss inner product; missing neighbours are marked -1."""
    faiss = _import_faiss()
    n, d = U.shape
    if method == "faiss-exact":
        index = faiss.IndexFlatIP(d)
    else:
        cap = max(1, n // 39)
        lists = min(int(nlist) if nlist else max(1, round(4 * np.sqrt(n))), cap)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(U)
        index.nprobe = min(int(nprobe), lists)
    index.add(U)
    D, Idx = index.search(U, k + 1)
    is_self = Idx == np.arange(n)[:, None]
    # drop self where found, else the last (k+1-th) neighbour
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones(Idx.shape, bool)
    keep[np.arange(n), drop] = False
    nbr = Idx[keep].reshape(n, k).astype(np.int64)
    sim = D[keep].reshape(n, k).astype(_F32)
    sim[nbr < 0] = _SENTINEL
    return nbr, sim


def _weights(nbr: np.ndarray, sim: np.ndarray, n: int) -> sp.csr_matrix:
    """CSR of ``sim / row sum`` over the positive entries; rows sorted by column."""
    w = sim.astype(np.float64)
    w[(w <= 0) | (nbr < 0)] = 0.0
    tot = w.sum(axis=1, keepdims=True)
    w = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
    rows = np.repeat(np.arange(n), nbr.shape[1])
    keep = w.reshape(-1) > 0
    G = sp.csr_matrix((w.reshape(-1)[keep], (rows[keep], nbr.reshape(-1)[keep])), shape=(n, n))
    G.sort_indices()
    return G
