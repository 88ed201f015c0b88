"""Greedy k-center on shards of the pool: the exact distributed greedy, and composable core-sets.

:func:`k_center_greedy_sharded` returns, bit for bit, what :func:`~alloop.strategies.kcenter.
k_center_greedy` returns, with the pool's rows split over stateful shard workers
(:meth:`alloop.execution.base.Backend.shard_workers`: plain objects locally, Ray actors on a
cluster). The driver holds no pool-sized float array: each shard keeps its rows (memory-mapped
where the pool is a file), their norm terms, its running min-distances and nearest-centre
assignments, and its own copy of the centres; the driver keeps the positions (candidates,
``init``, picks) and the current centre. One broadcast per pick: every shard lowers its
min-distances with the new centre (triangle-inequality pruning inside the shard) and reports its
farthest row; the driver takes the largest value, ties to the lowest position, and broadcasts
that row as the next centre.

Why the bits are the same (see :mod:`alloop.strategies.kcenter`): the working rows (all of ``X``,
or the compact copy of the candidates when they are at most half of it) are cut at multiples of
256 rows, so a row's position in its shard is congruent mod 16 to its position in the working
array (what the chunked BLAS calls need) and the first pick's mean is summed over the same blocks
of 256 rows, whose float64 sums the shards return and the driver adds in block order; the
pruner's error margin uses the largest norm over all shards; everything else is computed per
row.

:func:`k_center_composable` is the approximate alternative: farthest-first on each shard, then
on the union of the shards' picks (a 4-approximation instead of 2, a bounded number of rounds).
:func:`select_k_center` chooses for the core-set strategies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from alloop.checks import check_choice, check_int
from alloop.strategies.kcenter import (
    _F32,
    _MEAN_ROWS,
    _PAD,
    _argmax,
    _block_sums,
    _check_args,
    _dense_update,
    _farthest_from,
    _mean_of_blocks,
    _nearest,
    _plan,
    _Pool,
    _Pruner,
    _row_terms,
    k_center_greedy,
)

if TYPE_CHECKING:
    from alloop.execution.base import Backend
    from alloop.execution.shared import SharedArray

__all__ = ["MODES", "k_center_composable", "k_center_greedy_sharded", "select_k_center"]

logger = logging.getLogger(__name__)

MODES = ("exact", "composable")

#: a shard's farthest row: (squared min-distance, input position, position in the shard,
#: coordinates, norm term, inverse norm)
_Best = tuple[float, int, int, NDArray[Any], float, float]


@dataclass(frozen=True)
class _Spec:
    """One shard: working rows ``[start, stop)``; ``rows`` are their input positions (compact)
    or the candidates among them (else)."""

    index: int
    start: int
    stop: int
    rows: NDArray[np.int64]
    compact: bool
    metric: str
    chunk: int
    naive: bool
    k: int


class _KShard:
    """A shard worker of :func:`k_center_greedy_sharded` (built by the backend, one per shard)."""

    def __init__(self, spec: _Spec, shared: SharedArray) -> None:
        X = shared.open()
        self.spec = spec
        n = spec.stop - spec.start
        if spec.compact:
            W = np.ascontiguousarray(X[spec.rows], dtype=_F32)
            positions = spec.rows
            self.pickable = np.ones(n, bool)
        else:
            W = np.ascontiguousarray(X[spec.start : spec.stop], dtype=_F32)
            positions = np.arange(spec.start, spec.stop)
            self.pickable = np.zeros(n, bool)
            self.pickable[spec.rows - spec.start] = True
        q, w = _row_terms(W, spec.metric, positions)
        d = W.shape[1]
        self.pool = _Pool(W, q, w, np.empty(n, _F32), (2 * d + 8) * 2.0**-24, np.zeros((_PAD, d), _F32), spec.chunk)
        self.assign = np.full(n, -1, np.int32)
        self.pruner: _Pruner | None = None

    def qmax(self) -> float:
        """The largest norm term of the shard's rows."""
        return float(self.pool.q.max())

    def block_sums(self) -> NDArray[np.float64]:
        """The float64 sums of the first pick's mean, one row per block of 256 rows."""
        return np.array(list(_block_sums(self.pool, self.pickable)), dtype=np.float64)

    def farthest(self, mu: NDArray[Any]) -> _Best:
        """The pickable row farthest from ``mu`` (the first pick when there is no ``init``)."""
        return self._best(*_farthest_from(self.pool, mu, self.pickable))

    def start(self, C0: NDArray[Any], q0: NDArray[Any], w0: NDArray[Any] | None, qmax: float) -> _Best:
        """Set the min-distances from the initial centres (or to +inf when there are none) and
        the pruner (``qmax``: the largest norm term of the whole pool and of ``C0``)."""
        pool = self.pool
        if C0.shape[0]:
            _nearest(pool, C0, q0, w0, self.assign)
        else:
            pool.mind.fill(np.inf)
        pool.mind[~self.pickable] = -np.inf
        if not self.spec.naive:
            self.pruner = _Pruner(pool, self.spec.k, C0, q0, w0, self.assign, qmax)
        return self._best(*_argmax(pool.mind))

    def step(self, owner: int, local: int, c: NDArray[Any], qc: float, wc: float) -> _Best:
        """Shard ``owner``'s row ``local`` (coordinates ``c``) was picked: make it a centre."""
        pool = self.pool
        if owner == self.spec.index:
            pool.mind[local] = -np.inf
        if self.pruner is None:
            _dense_update(pool, (c, qc, wc))
        else:
            self.pruner.add_centre(pool, (c, qc, wc))
        return self._best(*_argmax(pool.mind))

    def _best(self, p: int, value: float) -> _Best:
        spec, pool = self.spec, self.pool
        g = int(spec.rows[p]) if spec.compact else spec.start + p
        c, qc, wc = pool.centre(p)
        return value, g, p, np.array(c), float(qc), float(wc)


def _choose(bests: list[_Best]) -> tuple[int, _Best]:
    """The shard whose farthest row is the farthest; ties: the lowest shard (lowest position)."""
    i = 0
    for j in range(1, len(bests)):
        if bests[j][0] > bests[i][0]:
            i = j
    return i, bests[i]


def _step_rows(n: int, shard_rows: int, max_shards: int | None) -> int:
    rows = max(int(shard_rows), -(-n // max_shards) if max_shards else 1)
    return -(-rows // _MEAN_ROWS) * _MEAN_ROWS


def k_center_greedy_sharded(
    X: NDArray[Any],
    k: int,
    *,
    init: NDArray[Any] | None = None,
    candidates: NDArray[Any] | None = None,
    metric: str = "euclidean",
    method: str = "auto",
    chunk_rows: int = 32768,
    out_scores: bool = True,
    backend: Backend | None = None,
    shard_rows: int = 65536,
    max_shards: int | None = None,
) -> tuple[NDArray[Any], NDArray[Any]] | NDArray[Any]:
    """:func:`~alloop.strategies.kcenter.k_center_greedy` on shards of the pool: the same picks
    and scores, bit for bit.

    Parameters
    ----------
    X, k, init, candidates, metric, method, chunk_rows, out_scores
        As for :func:`~alloop.strategies.kcenter.k_center_greedy` (``chunk_rows`` per shard).
    backend : Backend, optional
        Where the shard workers run (default: in this process). ``X`` travels as
        :meth:`Backend.share` describes it: a memory-mapped file as its path (each worker maps
        its rows), anything else once through the object store.
    shard_rows : int
        Working rows per shard, rounded up to a multiple of 256 (the working rows are ``X``, or
        the candidates when they are at most half of it).
    max_shards : int, optional
        At most this many shards (larger ones then), e.g. the backend's ``workers``.

    Returns
    -------
    positions, scores
        As :func:`~alloop.strategies.kcenter.k_center_greedy` returns them.

    Raises
    ------
    InvalidInputError, EmptyPoolError, PoolExhaustedError
        As :func:`~alloop.strategies.kcenter.k_center_greedy`.
    ExecutionError
        A shard worker died (Ray: its process or node); nothing is left running.

    Notes
    -----
    Driver memory: the positions, the initial centres ``(len(init), n_features)`` and, when
    ``init`` is empty, ``n_rows / 256`` float64 block sums per feature. Each shard: its rows
    (a compact copy of its candidates, or a view of ``X``), the centres ``(len(init) + k,
    n_features)`` and a few ``(shard rows,)`` vectors. One round trip to every shard per pick.
    """
    X = _check_args(X, k, metric, method, chunk_rows)
    check_int("shard_rows", shard_rows, 1)
    n_all, k = X.shape[0], int(k)
    init, cand = _plan(n_all, k, init, candidates)
    if k == 0:
        empty = (np.empty(0, np.int64), np.empty(0, np.float64))
        return empty if out_scores else empty[0]
    if backend is None:
        from alloop.execution.local import LocalBackend

        backend = LocalBackend()
    compact = cand.size <= n_all // 2
    n_w = int(cand.size) if compact else n_all
    step = _step_rows(n_w, shard_rows, max_shards)
    chunk = -(-int(chunk_rows) // _PAD) * _PAD
    specs = []
    for i, a in enumerate(range(0, n_w, step)):
        b = min(a + step, n_w)
        rows = cand[a:b] if compact else cand[np.searchsorted(cand, a) : np.searchsorted(cand, b)]
        specs.append(_Spec(i, a, b, rows, compact, metric, chunk, method == "naive", k))
    logger.info("k-center greedy, exact on %d shard(s) of at most %d rows (%s backend)", len(specs), step,
                backend.name)
    picks, sq = np.empty(k, np.int64), np.empty(k, np.float64)
    with backend.shard_workers(_KShard, specs, backend.share(X), what="k-center greedy") as group:
        qmax = max(group.call("qmax"))
        C0 = np.ascontiguousarray(X[init], dtype=_F32)
        q0, w0 = _row_terms(C0, metric, init) if init.size else (np.empty(0, _F32), None)
        if init.size:
            qmax = max(qmax, float(q0.max()))
            current = _choose(group.call("start", C0, q0, w0, qmax))
        else:
            sums = group.call("block_sums")
            mu = _mean_of_blocks((b for part in sums for b in part), int(cand.size))
            current = _choose(group.call("farthest", mu))
            group.call("start", C0, q0, w0, qmax)
        for t in range(k):
            i, (value, g, p, c, qc, wc) = current
            picks[t], sq[t] = g, value
            if t + 1 < k:
                current = _choose(group.call("step", i, p, c, qc, wc))
    scores = np.sqrt(sq) if metric == "euclidean" else sq / 2.0
    return (picks, scores) if out_scores else picks


def _composable_shard(spec: tuple[NDArray[np.int64], int, str, int], shared: dict[str, Any]) -> NDArray[np.int64]:
    """Farthest-first over one shard's candidates, from the (global) initial centres."""
    rows, k, metric, chunk_rows = spec
    X = shared["X"].open()
    out = k_center_greedy(X, min(k, rows.size), init=shared["init"], candidates=rows, metric=metric,
                          chunk_rows=chunk_rows, out_scores=False)
    return np.asarray(out, dtype=np.int64)


def k_center_composable(
    X: NDArray[Any],
    k: int,
    *,
    init: NDArray[Any] | None = None,
    candidates: NDArray[Any] | None = None,
    metric: str = "euclidean",
    chunk_rows: int = 32768,
    backend: Backend | None = None,
    shard_rows: int = 65536,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Composable core-sets: greedy k-center per shard, then over the union of the shards' picks.

    The candidates (ascending) are cut into shards of ``shard_rows``; on each shard (a task of
    ``backend``, or in this process), farthest-first picks ``min(k, shard size)`` rows with the
    rows ``init`` as initial centres; then farthest-first picks ``k`` among the union of those
    picks, ``init`` again the initial centres. Two rounds of communication, whatever ``k``.

    Farthest-first traversal is a 2-approximation of the k-center objective (the covering
    radius of the candidates); this two-round composition is a 4-approximation (Malkomes,
    Kusner, Chen, Weinberger, Moseley, "Fast Distributed k-Center Clustering with Outliers on
    Massive Data", NeurIPS 2015): its covering radius is at most 4 times the optimum, so at
    most 4 times the exact greedy's. Deterministic: the same shards give the same picks, but
    the picks depend on ``shard_rows`` and are not the exact greedy's.

    Parameters
    ----------
    X, k, init, candidates, metric, chunk_rows
        As for :func:`~alloop.strategies.kcenter.k_center_greedy`.
    backend : Backend, optional
        Where the shards run (default: in this process).
    shard_rows : int
        Candidates per shard.

    Returns
    -------
    positions : ndarray of shape (k,), int64
    scores : ndarray of shape (k,), float64
        Each pick's distance to its nearest centre (``init`` and the earlier picks) when it was
        picked, as :func:`~alloop.strategies.kcenter.k_center_greedy` returns them for the
        second round.
    """
    X = _check_args(X, k, metric, "auto", chunk_rows)
    check_int("shard_rows", shard_rows, 1)
    k = int(k)
    init, cand = _plan(X.shape[0], k, init, candidates)
    if k == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if backend is None:
        from alloop.execution.local import LocalBackend

        backend = LocalBackend()
    step = int(shard_rows)
    specs = [(cand[a : a + step], k, metric, int(chunk_rows)) for a in range(0, cand.size, step)]
    logger.info("k-center greedy, composable over %d shard(s) of at most %d candidates (%s backend)",
                len(specs), step, backend.name)
    parts = backend.map_shards(_composable_shard, specs, {"X": backend.share(X), "init": init},
                               what="k-center greedy per shard")
    union = np.sort(np.concatenate(parts))
    out = k_center_greedy(X, k, init=init, candidates=union, metric=metric, chunk_rows=chunk_rows)
    assert isinstance(out, tuple)
    return out


def select_k_center(
    X: NDArray[Any],
    k: int,
    *,
    init: NDArray[Any],
    candidates: NDArray[Any],
    metric: str,
    backend: Backend | None,
    mode: Literal["exact", "composable"] = "exact",
    shard_rows: int | None = None,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The core-set strategies' k-center: ``(positions, scores)``.

    ``exact``: :func:`~alloop.strategies.kcenter.k_center_greedy` in this process when
    ``backend`` is None or local, else :func:`k_center_greedy_sharded` on it (the same picks),
    at most one shard per worker of the backend. ``composable``: :func:`k_center_composable`
    on ``backend`` (in this process when None). ``shard_rows`` defaults to the backend's
    ``[execution] shard_rows``.
    """
    check_choice("mode", mode, MODES)
    if mode == "composable":
        if backend is None:
            from alloop.execution.local import LocalBackend

            backend = LocalBackend()
        return k_center_composable(X, k, init=init, candidates=candidates, metric=metric, backend=backend,
                                   shard_rows=shard_rows or backend.shard_rows)
    if backend is None or backend.name == "local":
        out = k_center_greedy(X, k, init=init, candidates=candidates, metric=metric)
    else:
        out = k_center_greedy_sharded(X, k, init=init, candidates=candidates, metric=metric, backend=backend,
                                      shard_rows=shard_rows or backend.shard_rows, max_shards=backend.workers)
    assert isinstance(out, tuple)
    return out
