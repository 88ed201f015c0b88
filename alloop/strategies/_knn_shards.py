"""IDEAL's neighbour search per shard on an execution backend, and the SEALS candidate subset.

:class:`ShardedKnn` prepares the search once on the driver. For ``"exact"``: the unit rows of
:func:`~alloop.strategies._influence_graph.knn_graph` (mean-centred, normalised, on the
``2**-24`` grid), shared with :meth:`Backend.share <alloop.execution.Backend.share>`. For faiss:
one index of every row (IVF trained once, on the same sample as the single-process graph),
serialized with ``faiss.serialize_index`` and shared once (the local backend keeps the index
object itself); the embeddings themselves are shared (a memory-mapped pool as its path: no copy),
with their mean and inverse row norms, and each shard computes its query rows' unit rows
(:class:`~alloop.strategies._influence_graph.UnitRows`). So the driver holds the index and
``n`` floats, not a normalised copy of the pool. :meth:`ShardedKnn.search` then runs
:func:`search_shard` on row ranges of ``shard_rows`` query rows through
:meth:`Backend.map_shards <alloop.execution.Backend.map_shards>`; the driver only assembles the
``(rows, k)`` results.

Equality with the single-process graph:

* ``"exact"``: a row's neighbours and cosines are a function of the unit rows alone, whatever
  block of query rows it is computed in (see :mod:`~alloop.strategies._influence_graph`), given
  the shortlist margin of the *whole* matrix, which the driver computes once and shares. So any
  shard boundaries give the graph of :func:`knn_graph`, bit for bit, on either backend.
* ``"faiss-ivf"``: every shard searches the same index. faiss scores a query against the
  lists' vectors one query at a time, so a row's result does not depend on its shard except
  through the coarse quantizer's batched (BLAS) scores, which decide the probed lists;
  measured identical to one search for shards of 17 to 5000 rows and 1 or 2 threads
  (n = 2e4, d = 128), but faiss does not promise it for near-ties.
* ``"faiss-exact"``: the flat index scores query blocks with one BLAS product, whose rounding
  depends on the block's shape and on the thread count (measured: the same neighbours, the
  last float32 bit of ~40% of the cosines differs from one search). Shards search with one
  faiss thread, so the graph is the same on every backend for a given ``shard_rows``, but
  equals the single-process graph only up to float32 rounding. Use ``"exact"`` for bit
  equality.

:func:`seals_subset` grows SEALS's candidate subset (Coleman et al., AAAI 2022) with the same
search.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from alloop.execution import Backend, LocalBackend, SharedArray
from alloop.strategies._influence_graph import (
    UnitRows,
    _block,
    _margin,
    _resolve,
    _weights,
    check_args,
    exact_rows,
    faiss_index,
    faiss_rows,
)

__all__ = ["ShardedKnn", "seals_subset", "search_shard"]

log = logging.getLogger(__name__)

#: token -> the deserialized faiss index, at most one per process (a worker keeps the index it
#: read for the next shard of the same search; the local backend's driver puts its own here).
_INDEXES: dict[str, Any] = {}


@dataclass(frozen=True)
class _Search:
    """What every shard of one search gets (small: the arrays travel as :class:`SharedArray`)."""

    X: SharedArray  # the unit rows (exact) or the embeddings (faiss), with
    mean: NDArray[Any] | None  # their mean and
    inv: SharedArray | None  # inverse row norms (faiss: unit rows computed per shard)
    k: int
    method: str
    block: int
    margin: float
    index: SharedArray | None
    token: str


def _open_index(job: _Search) -> Any:
    index = _INDEXES.get(job.token)
    if index is None:
        import faiss

        assert job.index is not None  # a faiss search shares its index
        index = faiss.deserialize_index(np.asarray(job.index.open()))
        _INDEXES.clear()  # one index per process: the previous search's is done
        _INDEXES[job.token] = index
    return index


def search_shard(rows: tuple[int, int] | NDArray[Any], job: _Search) -> tuple[NDArray[Any], NDArray[Any]]:
    """The shard work: top-``k`` neighbours of the query rows ``rows`` (a ``(start, stop)``
    range or an array of row numbers). Returns (m, k) neighbour rows (-1: missing) and their
    cosines."""
    q = np.arange(rows[0], rows[1], dtype=np.int64) if isinstance(rows, tuple) else np.asarray(rows, np.int64)
    if job.method == "exact":
        return exact_rows(job.X.open(), q, job.k, job.block, job.margin)
    assert job.mean is not None and job.inv is not None  # a faiss search shares them
    units = UnitRows(job.X.open(), job.mean, job.inv.open())
    if job.method != "faiss-exact":
        return faiss_rows(_open_index(job), units, q, job.k, job.method)
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the BLAS product's rounding depends on the threads
    try:
        return faiss_rows(_open_index(job), units, q, job.k, job.method)
    finally:
        faiss.omp_set_num_threads(threads)


class ShardedKnn:
    """IDEAL's kNN search, prepared once, run per shard of query rows on ``backend``.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    k : int
        Neighbours per row (``min(k, n_samples - 1)`` kept).
    neighbors, block_rows, nlist, nprobe
        As in :func:`~alloop.strategies._influence_graph.knn_graph`.
    backend : Backend, optional
        Where the shards run; default: this process.
    shard_rows : int
        Query rows per shard.
    """

    def __init__(self, X: Any, k: int = 10, *, neighbors: str = "auto", block_rows: int | None = None,
                 nlist: int | None = None, nprobe: int = 16, backend: Backend | None = None,
                 shard_rows: int = 50_000) -> None:
        check_args(k, neighbors, block_rows, nlist, nprobe)
        units = UnitRows.of(X)
        self.n = units.n
        self.k = min(int(k), self.n - 1)
        self.method = _resolve(neighbors, self.n, units.shape[1])
        self.backend: Backend = backend if backend is not None else LocalBackend()
        self.shard_rows = max(1, int(shard_rows))
        self.token = uuid.uuid4().hex
        index = None
        if self.k > 0 and self.method != "exact":
            built = faiss_index(units, self.method, nlist, nprobe)
            if self.backend.name == "local":  # the shards run here: no copy
                _INDEXES[self.token] = built
            else:
                import faiss

                blob = faiss.serialize_index(built)
                del built  # the index or its bytes, never both, next to the object store's copy
                index = self.backend.share(blob)
                del blob
        if self.method == "exact":  # compared with every row: the unit rows, in memory
            U = units.all()
            self.job = _Search(self.backend.share(U), None, None, self.k, self.method, _block(self.n, block_rows),
                               _margin(U), index, self.token)
        else:  # the embeddings as given (a memory-mapped pool travels as its path)
            self.job = _Search(self.backend.share(units.X), units.mean, self.backend.share(units.inv), self.k,
                               self.method, 0, 0.0, index, self.token)

    def search(self, rows: NDArray[Any] | None = None) -> tuple[NDArray[Any], NDArray[Any]]:
        """Neighbours (m, k) and cosines of ``rows`` (default: every row, in order)."""
        if self.k == 0:
            m = self.n if rows is None else len(rows)
            return np.empty((m, 0), np.int64), np.empty((m, 0), np.float64)
        shards: list[Any]
        if rows is None:
            shards = [(s, min(self.n, s + self.shard_rows)) for s in range(0, self.n, self.shard_rows)]
        else:
            rows = np.asarray(rows, np.int64)
            shards = [rows[s : s + self.shard_rows] for s in range(0, rows.size, self.shard_rows)]
        if not shards:
            return np.empty((0, self.k), np.int64), np.empty((0, self.k), np.float64)
        parts = self.backend.map_shards(search_shard, shards, self.job, what="IDEAL: neighbour search")
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def graph(self) -> sp.csr_matrix:
        """The whole graph: equal to :func:`knn_graph` with the same arguments (see the module)."""
        if self.k == 0:
            return sp.csr_matrix((self.n, self.n), dtype=np.float64)
        nbr, sim = self.search()
        return _weights(nbr, sim, self.n)

    def close(self) -> None:
        """Drop the driver's index (the workers' copies go with their next search)."""
        _INDEXES.pop(self.token, None)

    def __enter__(self) -> ShardedKnn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def seals_subset(knn: ShardedKnn, seeds: NDArray[Any], budget: int,
                 need: NDArray[Any] | None = None, want: int = 0) -> tuple[NDArray[np.int64], sp.csr_matrix]:
    """SEALS's candidate subset and IDEAL's graph restricted to it.

    The subset starts from ``seeds`` (the labeled rows) and grows by hops: the ``k`` nearest
    neighbours of the rows added last, nearest ranks first (all first neighbours, then all
    second ones, ...; ties by the order of the rows), until it holds ``budget`` rows or a hop
    adds nothing; it also keeps growing while it holds fewer than ``want`` rows of ``need``.
    Every row of the subset is searched once (the neighbours of a hop's rows are the next
    hop). The graph is the induced subgraph of the whole pool's graph: a row's edges keep the
    weights they have there, edges leaving the subset are dropped.

    Returns
    -------
    subset : ndarray of int64, sorted
        Rows of the pool in the subset (the seeds included, even past ``budget``).
    graph : scipy.sparse.csr_matrix of shape (len(subset), len(subset))
        Its rows and columns are positions in ``subset``.
    """
    n = knn.n
    inside = np.zeros(n, bool)
    order: list[NDArray[np.int64]] = []
    nbrs: list[NDArray[Any]] = []
    sims: list[NDArray[Any]] = []
    frontier = np.unique(np.asarray(seeds, np.int64))
    inside[frontier] = True
    size = int(frontier.size)
    need_mask = np.zeros(n, bool)
    if need is not None:
        need_mask[np.asarray(need, np.int64)] = True
    have = int(need_mask[frontier].sum())
    while frontier.size:
        nbr, sim = knn.search(frontier)
        order.append(frontier)
        nbrs.append(nbr)
        sims.append(sim)
        if size >= budget and have >= want:
            break
        flat: NDArray[Any] = nbr.T.reshape(-1)  # rank-major: every row's first neighbour, then the second ones...
        flat = flat[flat >= 0]
        flat = flat[~inside[flat]]
        _, first = np.unique(flat, return_index=True)
        new = flat[np.sort(first)]
        room = max(budget - size, 0)
        if room < new.size and have < want:  # past the budget only for the rows still wanted
            wanted = np.flatnonzero(need_mask[new])[: want - have]
            extra = np.zeros(new.size, bool)
            extra[:room] = True
            extra[wanted] = True
            new = new[extra]
        else:
            new = new[:room]
        inside[new] = True
        size += int(new.size)
        have += int(need_mask[new].sum())
        frontier = new
    subset = np.flatnonzero(inside).astype(np.int64)
    rows = np.concatenate(order) if order else np.empty(0, np.int64)
    nbr = np.concatenate(nbrs) if nbrs else np.empty((0, knn.k), np.int64)
    sim = np.concatenate(sims) if sims else np.empty((0, knn.k), np.float64)
    searched = np.zeros(n, bool)
    searched[rows] = True
    rest = subset[~searched[subset]]  # the last hop's rows: their own edges
    if rest.size:
        r_nbr, r_sim = knn.search(rest)
        rows, nbr, sim = np.concatenate([rows, rest]), np.concatenate([nbr, r_nbr]), np.concatenate([sim, r_sim])
    perm = np.argsort(rows, kind="stable")
    nbr, sim = nbr[perm], sim[perm]
    loc = np.searchsorted(subset, np.maximum(nbr, 0))
    loc = np.minimum(loc, max(subset.size - 1, 0))
    cols = np.where((nbr >= 0) & (subset[loc] == nbr), loc, -1) if subset.size else nbr
    log.info("SEALS subset: %d of %d rows (%d seeds, budget %d)", subset.size, n, len(seeds), budget)
    return subset, _weights(nbr, sim, subset.size, cols)
