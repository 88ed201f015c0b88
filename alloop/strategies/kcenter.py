"""Greedy k-center (farthest-first traversal): exact, chunked, float32 BLAS.

:func:`k_center_greedy` repeatedly picks the candidate farthest from its nearest centre and
makes it a centre. It keeps a running min-distance vector, so a pick costs one streaming pass
over the pool (``method="naive"``), or only a pass over the points the triangle inequality
cannot rule out (``method="pruned"``); both return the same picks.

Numerics, shared by every path so that results depend neither on chunking nor on the method:

* squared distances use the norm expansion ``|x|^2 + |c|^2 - 2 x.c`` in float32; a value at or
  below the worst-case rounding error of that expansion, ``tol * (|x|^2 + |c|^2)`` with
  ``tol = (2d + 8) * 2**-24``, is set to 0 (this also clamps negatives), so exact duplicates of
  a centre tie at 0 and fall back to the lowest position;
* every BLAS matrix-vector call gets a multiple of 16 rows (a remainder is zero-padded), and
  a row's position in its call is congruent mod 16 to its position in the pool: BLAS kernels
  round remainder rows differently, and some round a row by its position in the call
  (OpenBLAS's Sandybridge sgemv: positions 1 mod 4, for some ``d``), while the value computed
  for a row must not depend on where it sat. Chunks start at multiples of 16 (``chunk_rows``
  is rounded up to one); the pruned method packs its gathered rows in order where the BLAS is
  seen to compute a row the same at any position (:func:`_position_free`, probed once per
  ``d``), else deals them into congruent slots (:func:`_lanes`, slower);
* the distances to the initial centres come from a GEMM, whose rounding depends on its
  shapes: it only shortlists the centres near the best, and the distances are recomputed row
  by row (:func:`_nearest`); the first pick's mean is summed without BLAS, in fixed blocks;
* cosine distance is the Euclidean distance between L2-normalised rows, computed without a
  normalised copy of the data (dot products are scaled by inverse norms).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alloop.checks import check_choice, check_int, check_matrix, check_positions
from alloop.errors import EmptyPoolError, InvalidInputError, PoolExhaustedError

__all__ = ["METHODS", "METRICS", "k_center_greedy"]

METRICS = ("euclidean", "cosine")
METHODS = ("auto", "naive", "pruned")
_F32 = np.float32
_PAD = 16  # BLAS row-count granularity (see module docstring)
_BLOCK_ELEMS = 1 << 21  # rows x centres floats per block of the initial pass
_GATHER_BYTES = 1 << 21  # gather buffer of the pruned method
_DENSE_FRACTION = 0.25  # pruned: stream densely when more rows than this may change
_MEAN_ROWS = 256  # rows per block of the first pick's mean


#: a centre: its coordinates (d,) float32, its norm term, its inverse norm (1 for euclidean)
_Centre = tuple[NDArray[Any], float, float]


@dataclass
class _Pool:
    """The working rows and what is computed once about them.

    ``X`` (n, d) float32 rows (all of the input, or a compact copy of the candidates); ``q``
    (n,) squared norms in the metric's space; ``w`` (n,) inverse norms (cosine) or None;
    ``mind`` (n,) running squared min-distance, ``-inf`` = never pickable; ``pad`` (16, d);
    ``gather``: the pruned method's buffers, made on first use.
    """

    X: NDArray[Any]
    q: NDArray[Any]
    w: NDArray[Any] | None
    mind: NDArray[Any]
    tol: float
    pad: NDArray[Any]
    chunk: int
    gather: tuple[NDArray[Any], NDArray[Any]] | None = None

    def w_at(self, idx: Any) -> NDArray[Any] | None:
        return None if self.w is None else self.w[idx]

    def gather_buffers(self) -> tuple[NDArray[Any], NDArray[Any]]:
        """The pruned method's (rows (g, d), dots (g,)): g a multiple of 16 of at most
        ``max(16, min(chunk, _GATHER_BYTES / 4d))`` rows."""
        if self.gather is None:
            d = self.X.shape[1]
            g = min(self.chunk, max(1, _GATHER_BYTES // (4 * d)))
            g = -(-g // _PAD) * _PAD
            self.gather = np.empty((g, d), _F32), np.empty(g, _F32)
        return self.gather

    def centre(self, p: int) -> _Centre:
        """Row ``p`` as a centre: coordinates, norm term, inverse norm."""
        return self.X[p], self.q[p], 1.0 if self.w is None else self.w[p]


def _gemv(A: NDArray[Any], c: NDArray[Any], out: NDArray[Any], pad: NDArray[Any]) -> NDArray[Any]:
    """``out = A @ c`` with every BLAS call on a multiple of 16 rows."""
    n = A.shape[0]
    n16 = n - n % _PAD
    if n16:
        np.matmul(A[:n16], c, out=out[:n16])
    if n > n16:
        pad[: n - n16] = A[n16:]
        pad[n - n16 :] = 0
        out[n16:] = (pad @ c)[: n - n16]
    return out


def _sq(dots: NDArray[Any], q: NDArray[Any], w: NDArray[Any] | None, qc: Any, wc: Any, tol: float) -> NDArray[Any]:
    """Turn raw dot products ``x.c`` into snapped squared distances, in place.

    ``q``/``w`` are the rows' norm terms, ``qc``/``wc`` the centre's (scalars or arrays).
    """
    dots *= np.asarray(wc, dtype=_F32) * _F32(-2.0)
    if w is not None:
        dots *= w
    s = q + np.asarray(qc, dtype=_F32)
    dots += s
    s *= _F32(tol)
    np.copyto(dots, _F32(0.0), where=dots <= s)
    return dots


def _row_terms(A: NDArray[Any], metric: str, rows: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any] | None]:
    """Norm terms ``(q, w)`` of rows ``A`` (input positions ``rows``): ``(|x|^2, None)``, or
    ``(1, 1/|x|)`` for cosine."""
    xx = np.einsum("ij,ij->i", A, A)
    if not np.isfinite(xx).all():
        raise InvalidInputError(
            "X must be finite, with squared row norms that fit in float32; row "
            f"{int(rows[np.flatnonzero(~np.isfinite(xx))[0]])} holds NaN, inf or huge values."
        )
    if metric == "euclidean":
        return xx, None
    if (xx == 0).any():
        raise InvalidInputError(
            f"The cosine metric needs non-zero rows; row {int(rows[np.flatnonzero(xx == 0)[0]])} "
            "is all zeros. Drop it or use metric='euclidean'."
        )
    return np.ones_like(xx), (_F32(1.0) / np.sqrt(xx)).astype(_F32)


def _stream(pool: _Pool, c: NDArray[Any], qc: float, wc: float) -> Iterator[tuple[int, int, NDArray[Any]]]:
    """Yield ``(start, stop, sq)`` chunk by chunk: squared distances of the rows to ``c``."""
    n, ch = pool.X.shape[0], pool.chunk
    buf = np.empty(min(ch, n), _F32)
    for s in range(0, n, ch):
        e = min(s + ch, n)
        dots = _gemv(pool.X[s:e], c, buf[: e - s], pool.pad)
        yield s, e, _sq(dots, pool.q[s:e], pool.w_at(slice(s, e)), qc, wc, pool.tol)


def _nearest(pool: _Pool, C: NDArray[Any], Cq: NDArray[Any], Cw: NDArray[Any] | None, assign: NDArray[Any]) -> None:
    """Set ``pool.mind`` (and ``assign``) from the nearest of the centres ``C`` (l, d).

    A GEMM over blocks of (chunk rows x centres) ranks the centres; its rounding depends on the
    BLAS kernel and on the block shapes, so it only shortlists: the centres within
    :func:`_window` of a row's best GEMM value. Their distances are recomputed row by row
    (``einsum``, the same wherever the row sits) and the smallest wins, ties to the lowest
    centre; ``mind`` stores it. Neither ``chunk_rows`` nor the kernel decides between
    (nearly) equidistant centres.
    """
    X, ch = pool.X, pool.chunk
    cb = max(1, min(C.shape[0], _BLOCK_ELEMS // ch))
    Cs = C * (_F32(-2.0) * (Cw[:, None] if Cw is not None else _F32(1.0)))  # G = x.Cs + |c|^2
    for s in range(0, X.shape[0], ch):
        sl = slice(s, min(s + ch, X.shape[0]))
        m = sl.stop - s
        r, j = _near_pairs(X[sl], Cs, Cq, cb, _window(pool, sl, Cq))
        arg = np.empty(m, np.int64)
        arg[r] = j  # rows with one pair: that centre
        amb = np.bincount(r, minlength=m)[r] > 1
        if amb.any():  # several: the smallest recomputed distance, ties to the lowest centre
            r, j = r[amb], j[amb]
            sq = _sq_to(pool, s + r, C, Cq, Cw, j)
            order = np.lexsort((j, sq, r))
            first = order[np.r_[True, r[order][1:] != r[order][:-1]]]
            arg[r[first]] = j[first]
        pool.mind[sl], assign[sl] = _sq_to(pool, sl, C, Cq, Cw, arg), arg


def _near_pairs(
    Xc: NDArray[Any], Cs: NDArray[Any], Cq: NDArray[Any], cb: int, win: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """(row, centre) pairs whose GEMM value ``x.Cs + |c|^2`` is within ``win`` of the row's
    smallest (``Cs = -2 C``, or ``-2 C / |c|`` for cosine: the row's own factors do not change
    the order). Every row has at least one pair: its smallest."""
    m = Xc.shape[0]
    best, rows = np.full(m, np.inf, _F32), np.arange(m)
    rr, jj, gg = [], [], []
    for b in range(0, Cs.shape[0], cb):
        G = Xc @ Cs[b : b + cb].T  # (rows, cb)
        G += Cq[b : b + cb]
        v = G[rows, G.argmin(axis=1)]
        np.minimum(best, v, out=best)
        lim = best + win
        near = np.flatnonzero(v <= lim)  # rows with a pair in this block
        if near.size == m:
            r, j = np.nonzero(lim[:, None] >= G)
        else:
            r, j = np.nonzero(G[near] <= lim[near, None])
            r = near[r]
        rr.append(r)
        jj.append(j + b)
        gg.append(G[r, j])
    r, j, g = np.concatenate(rr), np.concatenate(jj), np.concatenate(gg)
    keep = g <= (best + win)[r]  # the best may have dropped since a pair was taken
    return r[keep], j[keep]


def _window(pool: _Pool, sl: Any, Cq: NDArray[Any]) -> NDArray[Any]:
    """How far above a row's best GEMM value a centre may be and still be the nearest by the
    recomputed distances: ``10 tol S``, ``S = |x|^2 + max |c|^2`` (cosine: ``1 + |x|``, the
    GEMM value's scale).

    With ``E`` bounding a GEMM value's error (``tol S``, any summation order) and ``F`` a
    recomputed distance's, rounding plus snapping, on the same scale (``2 tol S``; cosine
    ``4 tol |x|``), a centre more than ``2 E + 2 F`` above the best is farther by the recomputed
    distances too.
    """
    if pool.w is None:
        return np.asarray(_F32(10.0 * pool.tol) * (pool.q[sl] + _F32(Cq.max())))
    return np.asarray(_F32(10.0 * pool.tol) * (_F32(1.0) + _F32(1.0) / pool.w[sl]))


def _sq_to(pool: _Pool, rows: Any, C: NDArray[Any], Cq: NDArray[Any], Cw: NDArray[Any] | None,
           arg: NDArray[Any]) -> NDArray[Any]:
    """Snapped squared distances of working rows ``rows`` to centres ``arg``, row by row."""
    dots = np.einsum("ij,ij->i", pool.X[rows], C[arg])
    return _sq(dots, pool.q[rows], pool.w_at(rows), Cq[arg], 1.0 if Cw is None else Cw[arg], pool.tol)


def _first_pick(pool: _Pool, pickable: NDArray[Any]) -> tuple[int, float]:
    """Empty ``init``: the candidate farthest from the candidates' mean (ties: lowest).

    The mean is summed without BLAS, in float64, in blocks of ``_MEAN_ROWS`` rows whatever
    ``chunk_rows``: the same bits on every kernel and chunking (the products of float32 values
    are exact in float64; numpy adds the rows of a block in order), the block sums added in
    block order (:func:`_mean_of_blocks`).
    """
    mu = _mean_of_blocks(_block_sums(pool, pickable), int(pickable.sum()))
    return _farthest_from(pool, mu, pickable)


def _block_sums(pool: _Pool, pickable: NDArray[Any]) -> Iterator[NDArray[Any]]:
    """The float64 sums of the pickable (normalised, for cosine) working rows, one per block of
    ``_MEAN_ROWS`` rows, in order. A shard starting at a multiple of ``_MEAN_ROWS`` yields the
    same sums for its blocks as the whole array does."""
    X, w = pool.X, pool.w
    for s in range(0, X.shape[0], _MEAN_ROWS):
        B = X[s : s + _MEAN_ROWS].astype(np.float64)
        v = pickable[s : s + _MEAN_ROWS].astype(np.float64)
        if w is not None:
            v *= w[s : s + _MEAN_ROWS]
        B *= v[:, None]
        yield B.sum(axis=0)


def _mean_of_blocks(sums: Iterable[NDArray[Any]], count: int) -> NDArray[Any]:
    """The float32 mean from block sums added one by one, in block order, from zero."""
    acc: NDArray[Any] | None = None
    for b in sums:
        if acc is None:
            acc = np.zeros(b.shape[0], np.float64)
        acc += b
    assert acc is not None
    return np.asarray((acc / count).astype(_F32))


def _farthest_from(pool: _Pool, mu: NDArray[Any], pickable: NDArray[Any]) -> tuple[int, float]:
    """The pickable working row farthest from ``mu`` (ties: lowest) and its squared distance."""
    dist = np.empty(pool.X.shape[0], _F32)
    for s, e, sq in _stream(pool, mu, float(np.einsum("i,i->", mu, mu)), 1.0):
        dist[s:e] = sq
    dist[~pickable] = -np.inf
    return _argmax(dist)


def _dense_update(pool: _Pool, centre: _Centre, assign: NDArray[Any] | None = None, j: int = 0) -> None:
    """One streaming pass: lower ``mind`` with the distances to ``centre`` (see :meth:`_Pool.centre`)."""
    for s, e, sq in _stream(pool, *centre):
        m = pool.mind[s:e]
        if assign is None:
            np.minimum(m, sq, out=m)
        else:
            better = sq < m
            np.copyto(m, sq, where=better)
            np.copyto(assign[s:e], j, where=better)


def _sparse_update(pool: _Pool, centre: _Centre, idx: NDArray[Any], assign: NDArray[Any], j: int) -> None:
    """Lower ``mind`` on rows ``idx`` (sorted) only, gathered piece by piece into a buffer.

    A gathered row must get the value the dense pass computes for it (see the module
    docstring). Where this BLAS computes a row the same at any position of a call
    (:func:`_position_free`), a piece's rows are packed in order; otherwise each goes to a
    slot congruent to its own position mod 16 (:func:`_lanes`), the position it has in the
    dense pass.
    """
    X, (c, qc, wc) = pool.X, centre
    buf, out = pool.gather_buffers()
    g = buf.shape[0]
    packed = _position_free(X.shape[1])
    pending = idx
    while pending.size:
        if packed:
            ii, pending = pending[:g], pending[g:]
            n16 = -(-ii.size // _PAD) * _PAD
            np.take(X, ii, axis=0, out=buf[: ii.size], mode="clip")  # 'raise' would buffer
            buf[ii.size : n16] = 0
            np.matmul(buf[:n16], c, out=out[:n16])
            dots = out[: ii.size]
        else:
            ii, slot, n16, later = _lanes(pending[: g - g // 4], g)
            pending = np.concatenate([later, pending[g - g // 4 :]]) if later.size else pending[ii.size :]
            src = np.zeros(n16, np.int64)  # slot -> row of the piece (left-over slots: its first)
            src[slot] = np.arange(ii.size)
            np.take(X, ii[src], axis=0, out=buf[:n16], mode="clip")
            np.matmul(buf[:n16], c, out=out[:n16])
            dots = out[slot]
        sq = _sq(dots, pool.q[ii], pool.w_at(ii), qc, wc, pool.tol)
        better = sq < pool.mind[ii]
        pool.mind[ii[better]] = sq[better]
        assign[ii[better]] = j


def _lanes(rows: NDArray[Any], g: int) -> tuple[NDArray[Any], NDArray[Any], int, NDArray[Any]]:
    """Deal ``rows`` into 16 lanes by residue mod 16, lane ``r`` filling slots ``r, r + 16,
    ...`` of a buffer of ``g`` rows (a multiple of 16). Returns the rows placed, their slots,
    the slots used (a multiple of 16) and the rows left for later (a lane beyond ``g / 16``)."""
    lane = (rows & (_PAD - 1)).astype(np.uint8)
    cnt = np.bincount(lane, minlength=_PAD)
    by_lane = np.argsort(lane, kind="stable")
    level = np.arange(rows.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)  # rank in its lane
    fits = level < g // _PAD
    placed = by_lane[fits]
    slot = _PAD * level[fits] + lane[placed]
    return rows[placed], slot, _PAD * min(int(cnt.max()), g // _PAD), rows[by_lane[~fits]]


@functools.cache
def _position_free(d: int) -> bool:
    """Whether this BLAS computes each row of ``A @ c`` (float32, ``d`` columns) the same
    wherever it sits in a call of whole 16s of rows: probed once per ``d`` and process, with
    rows shifted through every residue mod 16 and calls of 16 to 1024 rows. Most kernel
    families do (OpenBLAS's Haswell and SkylakeX); Sandybridge's rounds rows at positions
    1 mod 4 differently for some ``d``."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((1024 + _PAD, d)).astype(_F32)
    c = rng.standard_normal(d).astype(_F32)
    ref = np.concatenate([A[s : s + _PAD] @ c for s in range(0, A.shape[0], _PAD)])
    if not np.array_equal(A[:1024] @ c, ref[:1024]):
        return False
    return all(np.array_equal(A[r : r + 1024] @ c, ref[r : r + 1024]) for r in range(1, _PAD))


class _Pruner:
    """Centres so far, each row's nearest one, and the exact skip rule of ``method="pruned"``.

    A row x whose nearest centre is a, at distance r, keeps r when the new centre c has
    ``d(c, a) >= 2 r`` (triangle inequality). In squared, rounded terms x is skipped when
    ``D2(c, a) >= 4 mind(x) + 5 E``, where E bounds the absolute error of any computed squared
    distance (rounding plus snapping): the naive pass would then compute a distance
    ``>= mind(x)`` for x and leave it unchanged, so both methods stay identical.
    """

    def __init__(self, pool: _Pool, k: int, C0: NDArray[Any], q0: NDArray[Any], w0: NDArray[Any] | None,
                 assign: NDArray[Any], qmax: float | None = None) -> None:
        self.l, d = C0.shape
        self.C, self.Cq = np.empty((self.l + k, d), _F32), np.empty(self.l + k, _F32)
        self.Cw = None if pool.w is None else np.empty(self.l + k, _F32)
        self.C[: self.l], self.Cq[: self.l] = C0, q0
        if self.Cw is not None:
            self.Cw[: self.l] = w0
        if qmax is None:  # a shard of the pool passes the whole pool's (kcenter_sharded)
            qmax = max(float(pool.q.max()), float(q0.max()) if self.l else 0.0)
        self.err5 = _F32(5.0 * 4.0 * pool.tol * qmax)
        self.assign, self.n = assign, self.l

    def add(self, pool: _Pool, p: int) -> None:
        """Make working row ``p`` a centre and lower ``mind`` where it can change."""
        self.add_centre(pool, pool.centre(p))

    def add_centre(self, pool: _Pool, centre: _Centre) -> None:
        """Make ``centre`` (a row of this pool or another shard's) a centre; lower ``mind``."""
        j = self.n
        c, self.Cq[j], wc = centre
        self.C[j] = c
        if self.Cw is not None:
            self.Cw[j] = wc
        self.n += 1
        if j == 0:  # no initial centres: every row is still at +inf
            return _dense_update(pool, centre, self.assign, j)
        Cw = None if self.Cw is None else self.Cw[:j]
        D2 = _sq(self.C[:j] @ c, self.Cq[:j], Cw, self.Cq[j], wc, pool.tol)
        lim = (D2 - self.err5) * _F32(0.25)
        active = np.flatnonzero(np.take(lim, self.assign) < pool.mind)
        if active.size > _DENSE_FRACTION * pool.X.shape[0]:
            _dense_update(pool, centre, self.assign, j)
        else:
            _sparse_update(pool, centre, active, self.assign, j)


def _greedy(pool: _Pool, k: int, first: tuple[int, float] | None,
            pruner: _Pruner | None) -> tuple[NDArray[Any], NDArray[Any]]:
    """Pick ``k`` working rows. Returns (rows, squared min-distances at pick time)."""
    picks, scores = np.empty(k, np.int64), np.empty(k, np.float64)
    for t in range(k):
        p, score = first if (t == 0 and first is not None) else _argmax(pool.mind)
        picks[t], scores[t] = p, score
        pool.mind[p] = -np.inf
        if t + 1 < k and pruner is None:
            _dense_update(pool, pool.centre(p))
        elif t + 1 < k and pruner is not None:
            pruner.add(pool, p)
    return picks, scores


def _argmax(mind: NDArray[Any]) -> tuple[int, float]:
    p = int(np.argmax(mind))
    return p, float(mind[p])


def _check_args(X: Any, k: Any, metric: str, method: str, chunk_rows: Any) -> NDArray[Any]:
    matrix = check_matrix(X, "X", finite=False)
    check_choice("metric", metric, METRICS)
    check_choice("method", method, METHODS)
    check_int("k", k, 0)
    check_int("chunk_rows", chunk_rows, 1)
    return matrix


def _plan(n_all: int, k: int, init: Any, candidates: Any) -> tuple[NDArray[Any], NDArray[Any]]:
    """Checked ``(init, candidates)`` positions: the candidates sorted, without ``init``."""
    init = check_positions(init, n_all, "init")
    if candidates is None:
        cand = np.setdiff1d(np.arange(n_all), init, assume_unique=True)
    else:
        cand = np.setdiff1d(check_positions(candidates, n_all, "candidates"), init, assume_unique=True)
    if k and cand.size == 0:
        raise EmptyPoolError("k_center_greedy has no candidates to pick from (all are centres).")
    if k > cand.size:
        raise PoolExhaustedError(k, int(cand.size), f"Lower k to at most {cand.size}.")
    return init, cand


def k_center_greedy(
    X: NDArray[Any],
    k: int,
    *,
    init: NDArray[Any] | None = None,
    candidates: NDArray[Any] | None = None,
    metric: str = "euclidean",
    method: str = "auto",
    chunk_rows: int = 32768,
    out_scores: bool = True,
) -> tuple[NDArray[Any], NDArray[Any]] | NDArray[Any]:
    """Greedy farthest-first k-center selection (Gonzalez 1985; Sener & Savarese 2018).

    Repeat ``k`` times: pick the candidate whose distance to its nearest centre is largest
    (ties: lowest position), then make it a centre. Centres start as the rows ``init``.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        Points (embeddings, or probability vectors for PCoreSet). Converted once to C-ordered
        float32; no copy when it already is one (a compact copy of the candidate rows is made
        when they are at most half of ``X``).
    k : int
        Number of picks, ``0 <= k <= #candidates``.
    init : array_like of shape (l,), int, optional
        Positions of the initial centres (e.g. the labeled items). When empty, the first pick
        is the candidate farthest from the candidates' mean (of the normalised rows for
        cosine), ties to the lowest position, and its score is that distance to the mean
        (for cosine, half the squared distance, matching ``1 - cos`` for unit vectors).
    candidates : array_like of shape (m,), int, optional
        Positions that may be picked; default: every row not in ``init``. Rows in ``init`` are
        never picked; other non-candidate rows are ignored.
    metric : {"euclidean", "cosine"}
        Cosine works on L2-normalised rows; its scores are cosine distances ``1 - cos``.
    method : {"auto", "naive", "pruned"}
        ``naive`` makes one BLAS pass over the pool per pick; ``pruned`` skips, exactly, the
        rows the triangle inequality rules out (see :class:`_Pruner`). Same picks and
        scores; ``auto`` = ``pruned``, which costs a few percent more than ``naive`` when
        nothing can be skipped and is several times faster on clustered data.
    chunk_rows : int
        Rows per block, rounded up to a multiple of 16: bounds temporary memory to
        ``O(chunk_rows * n_features)`` floats (the initial pass against ``init`` uses blocks
        of at most ``max(chunk_rows, 2**21)`` floats). Results do not depend on it.
    out_scores : bool
        Return the scores as well as the positions.

    Returns
    -------
    positions : ndarray of shape (k,), int64
        Picked positions into ``X``, in pick order.
    scores : ndarray of shape (k,), float64
        Distance from each pick to its nearest centre when it was picked (Euclidean
        distance, or cosine distance); non-increasing after the first pick. Only if
        ``out_scores``.

    Raises
    ------
    InvalidInputError
        Bad shapes, dtypes, positions, metric, method, ``chunk_rows``; non-finite values; an
        all-zero row with the cosine metric.
    EmptyPoolError
        ``k >= 1`` and there is no candidate.
    PoolExhaustedError
        ``k`` exceeds the number of candidates.

    Notes
    -----
    Memory beyond ``X``: a float32 copy only if ``X`` is not C-ordered float32 (or a compact
    copy of the candidate rows), the centres ``(len(init) + k, n_features)``, a few
    ``(n_samples,)`` vectors, and ``O(chunk_rows * n_features)`` scratch. Rows that are
    identical tie exactly; rows equal only mathematically (e.g. parallel rows under cosine)
    may be ordered by float32 rounding.
    """
    X = _check_args(X, k, metric, method, chunk_rows)
    n_all, k = X.shape[0], int(k)
    init, cand = _plan(n_all, k, init, candidates)
    if k == 0:
        empty = (np.empty(0, np.int64), np.empty(0, np.float64))
        return empty if out_scores else empty[0]
    if cand.size <= n_all // 2:
        W, rows = np.ascontiguousarray(X[cand], dtype=_F32), cand
        pickable = np.ones(cand.size, bool)
    else:
        W, rows = np.ascontiguousarray(X, dtype=_F32), np.arange(n_all)
        pickable = np.zeros(n_all, bool)
        pickable[cand] = True
    q, w = _row_terms(W, metric, rows)
    d = W.shape[1]
    pool = _Pool(W, q, w, np.empty(W.shape[0], _F32), (2 * d + 8) * 2.0**-24,
                 np.zeros((_PAD, d), _F32), -(-int(chunk_rows) // _PAD) * _PAD)
    C0 = np.ascontiguousarray(X[init], dtype=_F32)
    q0, w0 = _row_terms(C0, metric, init) if init.size else (np.empty(0, _F32), None)
    assign = np.full(W.shape[0], -1, np.int32)
    first = None
    if init.size:
        _nearest(pool, C0, q0, w0, assign)
    else:
        first = _first_pick(pool, pickable)
        pool.mind.fill(np.inf)
    pool.mind[~pickable] = -np.inf
    pruner = None if method == "naive" else _Pruner(pool, k, C0, q0, w0, assign)
    picks, sq = _greedy(pool, k, first, pruner)
    scores = np.sqrt(sq) if metric == "euclidean" else sq / 2.0
    return (rows[picks], scores) if out_scores else rows[picks]
