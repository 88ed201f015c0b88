"""The IDEAL similarity graph: a directed k-nearest-neighbour graph with influence weights.

:func:`knn_graph` links every row to its ``k`` most cosine-similar other rows (of the
mean-centred embeddings) and weights each edge ``i -> j`` by ``cos(i, j) / sum over i's kept
neighbours``, so a node's out-weights sum to 1 and can serve as independent-cascade
probabilities (:mod:`alloop.strategies._influence`).

Neighbour search, ``neighbors=``:

* ``"exact"``: the top ``k`` per row by cosine, ties to the lowest column, as a function of
  the input alone: the same graph, weights included, whatever ``block_rows``, BLAS library,
  kernel family (``OPENBLAS_CORETYPE``) or CPU. The unit rows are rounded to multiples of
  ``2**-24`` (:func:`_unit_rows`), on which the dot product of two rows is *exact* in
  float64 in any summation order. Each block of rows is compared with every row by one float32
  matrix product, whose rounding depends on the BLAS kernel and on the call's shape: it only
  *shortlists*. A computed cosine is within ``E = gamma_d nmax^2`` of the exact one
  (``gamma_d = d u / (1 - d u)``, ``u = 2**-24``, any summation order, ``nmax`` the largest
  row norm), so a column whose exact cosine reaches the row's ``k``-th largest exact one is
  computed at least ``t - 2 E``, ``t`` the ``k``-th largest computed value, and a column
  computed lower is exactly below ``k`` others. ``t`` is bounded from below by the ``k``-th
  largest maximum over ``_GROUPS`` disjoint column groups, so the shortlist (about ``k + 1``
  entries a row) comes from one comparison with a threshold. The shortlisted cosines are
  recomputed exactly in float64 and ranked by (value desc, column asc). Extra cost: ``O(k d)``
  per row next to the product's ``O(n d)`` (measured: +3% at n = 2e4, d = 384).
* ``"faiss-exact"`` (``IndexFlatIP``) and ``"faiss-ivf"`` (``IndexIVFFlat``, approximate,
  ``nlist`` / ``nprobe``): faiss orders ties its own way; IVF may return fewer than ``k``
  neighbours for a few rows and then keeps those it found. The index holds every row
  (``4 d`` bytes each).
* ``"faiss-ivf-sq8"``: IVF over rows quantized to 8 bits (``IndexIVFScalarQuantizer``, ``d``
  bytes a row, a quarter of ``"faiss-ivf"``): its scores shortlist ``2 (k + 1)`` rows, whose
  cosines are then recomputed exactly and ranked as for ``"exact"``.
* ``"auto"``: ``"exact"`` below :data:`AUTO_FAISS_ROWS` rows, ``"faiss-ivf"`` from there on
  (exact search costs O(n^2 d): about 1 min at n = 1e5, d = 384 on 2 cores, hours at 1e6),
  ``"faiss-ivf-sq8"`` when a ``"faiss-ivf"`` index would pass :data:`AUTO_SQ8_BYTES` (2 GiB:
  4.2 million rows at d = 128); ``"exact"`` when faiss is not installed. The faiss-cpu wheel carries its own OpenBLAS,
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
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from alloop.checks import check_int
from alloop.errors import ConfigError, InvalidInputError

__all__ = ["AUTO_FAISS_ROWS", "NEIGHBORS", "UnitRows", "exact_rows", "faiss_index", "faiss_rows", "knn_graph"]

log = logging.getLogger(__name__)

NEIGHBORS = ("auto", "exact", "faiss-exact", "faiss-ivf", "faiss-ivf-sq8")
AUTO_FAISS_ROWS = 50_000
#: ``"auto"`` compresses the IVF index (``"faiss-ivf-sq8"``) when a full-precision one would pass this
AUTO_SQ8_BYTES = 2 << 30
_F32 = np.float32
_BLOCK_ELEMS = 1 << 24  # similarities per block when block_rows is None (64 MiB)
_GROUPS = 64  # column groups whose maxima bound the k-th largest similarity
_SENTINEL = _F32(-3.0)  # below any cosine: self and padding columns
_FLOOR = _F32(-2.0)  # above the sentinel, below any computed cosine
_U32 = 2.0**-24  # unit roundoff of float32
_GRID = 2.0**24  # unit rows are rounded to multiples of 1 / _GRID
_PAIR_ELEMS = 1 << 17  # gathered values per chunk of the exact recomputation (cache-sized)
_UNIT_BLOCK = 1 << 14  # rows per block when computing unit rows
_FAISS_BLOCK = 1 << 16  # rows per faiss add / search call
_TRAIN_PER_LIST = 256  # IVF training rows per list (faiss's own cap)
_TRAIN_SEED = 1234  # the seed of the training sample


def knn_graph(
    X: NDArray[Any],
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
    neighbors : {"auto", "exact", "faiss-exact", "faiss-ivf", "faiss-ivf-sq8"}
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
    units = UnitRows.of(X)
    n = units.n
    check_args(k, neighbors, block_rows, nlist, nprobe)
    kk = min(int(k), n - 1)
    if kk == 0:
        return sp.csr_matrix((n, n), dtype=np.float64)
    method = _resolve(neighbors, n, units.shape[1])
    if method == "exact":
        nbr, sim = _exact_knn(units.all(), kk, block_rows)
    else:
        nbr, sim = _faiss_knn(units, kk, method, nlist, nprobe)
    return _weights(nbr, sim, n)


def check_args(k: int, neighbors: str, block_rows: int | None, nlist: int | None, nprobe: int) -> None:
    """Raise :class:`InvalidInputError` for a bad ``k``, ``neighbors``, ``block_rows``, ``nlist`` or
    ``nprobe`` (see :func:`knn_graph`)."""
    check_int("k", k, 1)
    check_int("nprobe", nprobe, 1)
    if block_rows is not None:
        check_int("block_rows", block_rows, 1)
    if nlist is not None:
        check_int("nlist", nlist, 1)
    if neighbors not in NEIGHBORS:
        raise InvalidInputError(f"neighbors must be one of {', '.join(NEIGHBORS)}; got {neighbors!r}.")


def _unit_rows(X: Any) -> NDArray[Any]:
    """Mean-centred, L2-normalised float32 copy of ``X`` (zero rows stay 0), rounded to the
    grid of multiples of ``2**-24``: every row of :class:`UnitRows`, in one array."""
    return UnitRows.of(X).all()


class UnitRows:
    """The unit rows of ``X``, computed on demand a block at a time: ``X`` is not copied (a
    memory-mapped pool stays on disk); held are its float64 mean (``d`` values) and the float32
    inverse row norms (``n``).

    A unit row is the row centred on the mean (float64, rounded to float32), scaled by its
    inverse norm, and rounded to the grid of multiples of ``2**-24`` (zero rows stay 0). On that
    grid the dot product of two rows is exact in float64 whatever the order of the sum: a
    product of two entries is a multiple of ``2**-48``, and every partial sum is at most
    ``|x| |y| ~ 1`` in magnitude, so it needs fewer than 53 significant bits. Rounding moves an
    entry by at most ``2**-25`` (only entries below 1/2 move at all), a cosine by about
    ``sqrt(d) 2**-24``, far below any difference that matters between neighbours. The centring
    (numpy's float64 mean) and the norms (:func:`_sq_norms`) use fixed-order arithmetic, and each
    row is computed alone, so a row is the same on every CPU and in any block.

    Use :meth:`of` to check ``X`` and compute the mean and norms (two passes over ``X`` in
    blocks); the constructor takes them as computed (a shard worker's copy).
    """

    def __init__(self, X: Any, mean: NDArray[Any], inv: NDArray[Any]) -> None:
        self.X = X
        self.mean = mean
        self.inv = inv
        self.shape: tuple[int, int] = (int(X.shape[0]), int(X.shape[1]))

    @classmethod
    def of(cls, X: Any) -> UnitRows:
        """Check ``X`` (2-D, real, finite) and compute its mean and inverse row norms."""
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InvalidInputError(
                f"embeddings must be a 2-D array of shape (n_samples, n_features) with at least one "
                f"row and one feature; got shape {X.shape}."
            )
        if X.dtype == bool or not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
            raise InvalidInputError(f"embeddings must hold real numbers; got dtype {X.dtype}.")
        n = X.shape[0]
        with np.errstate(invalid="ignore", over="ignore"):  # a row not finite: caught below
            mean = X.mean(axis=0, dtype=np.float64)
        inv = np.empty(n, _F32)
        for s in range(0, n, _UNIT_BLOCK):  # one pass: finiteness and norms
            block = X[s : s + _UNIT_BLOCK]
            finite = np.isfinite(block)
            if not finite.all():
                bad = s + int(np.argwhere(~finite)[0, 0])
                raise InvalidInputError(
                    f"embeddings must be finite; row {bad} contains NaN or inf. Check the encoder's output."
                )
            B = np.asarray(block - mean, dtype=_F32)
            norm = np.sqrt(_sq_norms(B))
            inv[s : s + B.shape[0]] = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        return cls(X, mean, inv)

    @property
    def n(self) -> int:
        return self.shape[0]

    def rows(self, q: NDArray[Any] | slice) -> NDArray[Any]:
        """The unit rows ``q`` (row numbers or a slice), as a new float32 array."""
        B = np.asarray(self.X[q] - self.mean, dtype=_F32)
        B *= self.inv[q][:, None]
        B *= _F32(_GRID)  # onto the grid (exact: powers of two)
        np.rint(B, out=B)
        B *= _F32(1.0 / _GRID)
        return B

    def all(self) -> NDArray[Any]:
        """Every unit row, in one array (``n d`` float32)."""
        U = np.empty(self.shape, _F32)
        for s in range(0, self.n, _UNIT_BLOCK):
            U[s : s + _UNIT_BLOCK] = self.rows(slice(s, s + _UNIT_BLOCK))
        return U


def _sq_norms(U: NDArray[Any]) -> NDArray[Any]:
    """Squared row norms in float64, summed in one fixed order (a halving tree over the
    features: element ``i`` += element ``i + w - w // 2`` while the width ``w`` > 1), so that
    they are the same on every CPU; the squares of float32 values are exact in float64."""
    out = np.empty(U.shape[0], np.float64)
    for s in range(0, U.shape[0], 256):
        P = U[s : s + 256].astype(np.float64)
        P *= P
        w = P.shape[1]
        while w > 1:
            h = w // 2
            P[:, :h] += P[:, w - h : w]
            w -= h
        out[s : s + 256] = P[:, 0]
    return out


def _resolve(neighbors: str, n: int, d: int) -> str:
    if neighbors != "auto":
        return neighbors
    if n < AUTO_FAISS_ROWS:
        return "exact"
    try:
        import faiss  # noqa: F401
    except ImportError:
        log.warning("faiss is not installed; exact BLAS kNN for %d rows (O(n^2) time).", n)
        return "exact"
    return "faiss-ivf-sq8" if 4 * n * d > AUTO_SQ8_BYTES else "faiss-ivf"


def _exact_knn(U: NDArray[Any], k: int, block_rows: int | None) -> tuple[NDArray[Any], NDArray[Any]]:
    """Top-``k`` cosine neighbours, ties to the lowest column. Returns (n, k) arrays: columns,
    and their float64 cosines (see the module docstring)."""
    n = U.shape[0]
    return exact_rows(U, np.arange(n), k, _block(n, block_rows), _margin(U))


def _block(n: int, block_rows: int | None) -> int:
    """Query rows per matrix product: ``block_rows``, default whole 16s near 64 MiB of similarities."""
    b = block_rows or -(-max(1, _BLOCK_ELEMS // n) // 16) * 16  # default: whole 16s (GEMM speed)
    return min(b, n)


def exact_rows(U: NDArray[Any], rows: NDArray[Any], k: int, b: int,
               margin: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """The exact top-``k`` neighbours of the rows ``rows`` of ``U`` among all its rows.

    A row's result is a function of ``U`` alone (not of ``rows``, ``b`` or the BLAS kernel;
    see the module docstring) provided ``margin`` is :func:`_margin` of the whole ``U``: shards
    of rows searched apart give the graph of one search.
    """
    n = U.shape[0]
    rows = np.asarray(rows, np.int64)
    width = -(-n // _GROUPS) * _GROUPS  # padded columns: whole groups
    b = max(1, min(b, rows.size))
    S = np.full((b, width), _SENTINEL, _F32)
    mask = np.empty((b, width), bool)
    nbr, sim = np.empty((rows.size, k), np.int64), np.empty((rows.size, k), np.float64)
    for s in range(0, rows.size, b):
        q = rows[s : s + b]
        m = q.size
        np.matmul(U[q], U.T, out=S[:m, :n])
        S[np.arange(m), q] = _SENTINEL  # self excluded
        r, c = _shortlist(S[:m], mask[:m], k, margin)
        nbr[s : s + m], sim[s : s + m] = _rank(r, c, _dots(U, q[r], c), m, k)
    return nbr, sim


def _margin(U: NDArray[Any]) -> float:
    """How far below a row's ``k``-th largest computed cosine the shortlist reaches: ``2 E``.

    ``E = gamma_d nmax^2`` bounds the error of a float32 dot product of two rows in any
    summation order, with or without FMA: ``|fl(x.y) - x.y| <= gamma_d sum |x_i y_i|`` and
    ``sum |x_i y_i| <= |x| |y|`` (``nmax^2``, the largest squared row norm, is exact here).
    """
    d = U.shape[1]
    if d * _U32 >= 0.5:  # no useful bound (d >= 2**23): every column is shortlisted
        return np.inf
    nmax2 = float(_sq_norms(U).max(initial=0.0))
    return 2.0 * d * _U32 / (1 - d * _U32) * nmax2


def _below(t: NDArray[Any], margin: float) -> NDArray[Any]:
    """float32 values at or below ``t - margin`` (computed in float64, then rounded down)."""
    lo = (t.astype(np.float64) - margin).astype(_F32)
    return np.nextafter(lo, _F32(-np.inf))


def _shortlist(S: NDArray[Any], mask: NDArray[Any], k: int, margin: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """Entries of ``S`` (m, width) that may hold one of their row's ``k`` largest exact values.
    Returns (rows, columns), sorted by row. ``mask`` is scratch.

    The ``_GROUPS`` column groups (``width / _GROUPS`` adjacent columns each) are disjoint; the
    ``k``-th largest group maximum ``t`` is at most the ``k``-th largest computed value (k
    groups each hold a value at least as large). A column whose exact cosine reaches the
    ``k``-th largest exact one is computed at least ``t - 2 E``; a column computed below it is
    exactly below ``k`` others.
    """
    m, width = S.shape
    if k < _GROUPS:
        groups = S.reshape(m, _GROUPS, width // _GROUPS).max(axis=2)
        lo = _below(-np.partition(-groups, k - 1, axis=1)[:, k - 1], margin)
        np.maximum(lo, _FLOOR, out=lo)
    else:  # few groups per k: every real entry is a candidate
        lo = np.full(m, _FLOOR, _F32)
    np.greater_equal(S, lo[:, None], out=mask)
    return np.divmod(np.flatnonzero(mask), width)


def _dots(U: NDArray[Any], r: NDArray[Any], c: NDArray[Any]) -> NDArray[Any]:
    """``U[r] . U[c]`` pair by pair, exactly (see :func:`_unit_rows`), in float64."""
    out = np.empty(r.size, np.float64)
    step = max(1, _PAIR_ELEMS // U.shape[1])
    for s in range(0, r.size, step):
        out[s : s + step] = np.einsum("ij,ij->i", U[r[s : s + step]], U[c[s : s + step]], dtype=np.float64)
    return out


def _rank(r: NDArray[Any], c: NDArray[Any], v: NDArray[Any], m: int, k: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Per row (``r`` in 0..m-1, each at least ``k`` times): the ``k`` best by (-v, column)."""
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    rank = np.arange(r.size) - np.searchsorted(r, r)  # position within its row
    keep = rank < k
    return c[keep].reshape(m, k), v[keep].reshape(m, k)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "neighbors='faiss-exact' / 'faiss-ivf' / 'faiss-ivf-sq8' needs the faiss-cpu package, which is not "
            "installed. Install it (pip install 'faiss-cpu>=1.8') or use neighbors='exact'."
        ) from None
    return faiss


def _faiss_knn(units: UnitRows, k: int, method: str, nlist: int | None,
               nprobe: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Top-``k`` neighbours by faiss inner product; missing neighbours are marked -1."""
    index = faiss_index(units, method, nlist, nprobe)
    parts = [faiss_rows(index, units, np.arange(s, min(s + _FAISS_BLOCK, units.n)), k, method)
             for s in range(0, units.n, _FAISS_BLOCK)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def faiss_index(units: UnitRows, method: str, nlist: int | None, nprobe: int) -> Any:
    """The faiss index of every unit row: flat, or IVF trained on at most ``256 nlist`` of them
    (faiss's own cap; a seeded sample when there are more), holding the rows (``"faiss-ivf"``,
    ``4 d`` bytes a row) or their 8-bit scalar quantization (``"faiss-ivf-sq8"``, ``d`` bytes).
    Rows are added a block at a time, so the index is the only copy of the rows held in memory."""
    faiss = _import_faiss()
    n, d = units.shape
    if method == "faiss-exact":
        index = faiss.IndexFlatIP(d)
    else:
        cap = max(1, n // 39)
        lists = min(int(nlist) if nlist else max(1, round(4 * np.sqrt(n))), cap)
        quantizer = faiss.IndexFlatIP(d)
        if method == "faiss-ivf-sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, lists, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
        most = _TRAIN_PER_LIST * lists
        if n > most:
            sample = np.sort(np.random.default_rng(_TRAIN_SEED).choice(n, most, replace=False))
            index.train(units.rows(sample))
        else:
            index.train(units.all())
        index.nprobe = min(int(nprobe), lists)
    for s in range(0, n, _FAISS_BLOCK):
        index.add(units.rows(slice(s, s + _FAISS_BLOCK)))
    return index


def faiss_rows(index: Any, units: UnitRows, rows: NDArray[Any], k: int,
               method: str = "faiss-ivf") -> tuple[NDArray[Any], NDArray[Any]]:
    """The top-``k`` neighbours in ``index`` (which holds every row of ``units``) of the rows
    ``rows``, self excluded; missing neighbours are marked -1 (cosine :data:`_SENTINEL`).

    ``"faiss-ivf-sq8"``: the compressed scores only shortlist ``2 (k + 1)`` rows; their cosines
    are recomputed exactly from the unit rows and ranked by (value desc, column asc), so the
    graph's weights are exact cosines whatever the quantization.
    """
    rows = np.asarray(rows, np.int64)
    m = rows.size
    Q = units.rows(rows)
    if method == "faiss-ivf-sq8":
        return _refined(index, units, Q, rows, k)
    D, Idx = index.search(Q, k + 1)
    is_self = Idx == rows[:, None]
    # drop self where found, else the last (k+1-th) neighbour
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones(Idx.shape, bool)
    keep[np.arange(m), drop] = False
    nbr = Idx[keep].reshape(m, k).astype(np.int64)
    sim = D[keep].reshape(m, k).astype(_F32)
    sim[nbr < 0] = _SENTINEL
    return nbr, sim


def _refined(index: Any, units: UnitRows, Q: NDArray[Any], rows: NDArray[Any],
             k: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Shortlist ``2 (k + 1)`` rows by the index's scores, keep the ``k`` of largest exact cosine."""
    m = rows.size
    _, Idx = index.search(Q, 2 * (k + 1))
    Idx = Idx.astype(np.int64)
    ok = (Idx >= 0) & (Idx != rows[:, None])
    v = np.full(Idx.shape, -np.inf)
    step = max(1, _PAIR_ELEMS // (Idx.shape[1] * Q.shape[1]))
    for s in range(0, m, step):
        r, c = np.nonzero(ok[s : s + step])
        v[s + r, c] = np.einsum("ij,ij->i", Q[s + r], units.rows(Idx[s + r, c]), dtype=np.float64)
    col = np.where(ok, Idx, np.iinfo(np.int64).max)
    order = np.lexsort((col, -v), axis=1)[:, :k]
    nbr = np.take_along_axis(col, order, axis=1)
    sim = np.take_along_axis(v, order, axis=1)
    missing = ~np.isfinite(sim)
    nbr[missing] = -1
    sim[missing] = _SENTINEL
    return nbr, sim


def _weights(nbr: NDArray[Any], sim: NDArray[Any], n: int, cols: NDArray[Any] | None = None) -> sp.csr_matrix:
    """CSR of ``sim / row sum`` over the positive entries; rows sorted by column.

    ``cols``: the columns the edges get (default ``nbr``); an edge whose column is -1 there is
    dropped *after* normalising (an induced subgraph keeps the full graph's weights).
    """
    w = sim.astype(np.float64)
    w[(w <= 0) | (nbr < 0)] = 0.0
    tot = w.sum(axis=1, keepdims=True)
    w = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
    cols = nbr if cols is None else cols
    w[cols < 0] = 0.0
    rows = np.repeat(np.arange(nbr.shape[0]), nbr.shape[1])
    keep = w.reshape(-1) > 0
    G = sp.csr_matrix((w.reshape(-1)[keep], (rows[keep], cols.reshape(-1)[keep])), shape=(n, n))
    G.sort_indices()
    return G
