"""IDEAL: influence-driven selection on a kNN similarity graph (model-free, any round).

From "IDEAL: Influence-Driven Selective Annotations Empower In-Context Learners in Large
Language Models" (Zhang et al., ICLR 2024). No trained model is needed, so it is a cold start
for round 0 of any project whose items have embeddings (CLIP for images, a sentence encoder
for texts, given vectors):

1. a directed kNN graph over the pool's mean-centred embeddings, ``k`` cosine neighbours per
   item (self excluded), edge weights ``cos(i, j) / sum of i's neighbours' cosines``
   (:func:`alloop.strategies._influence_graph.knn_graph`);
2. the influence of a set S: the expected number of items an independent cascade started
   from S activates, the weights being activation probabilities; estimated on ``runs``
   Monte-Carlo live-edge worlds drawn once, every item counted once per world
   (:mod:`alloop.strategies._influence`);
3. greedy maximisation of that influence, lazily (CELF): the same worlds for every candidate,
   so the picks are exactly those of the plain greedy over them.

Items already labeled start active (their reach is covered), so later rounds add the items
that reach what the labeled set does not. The paper's reference code has no lazy greedy,
runs one cascade at a time and counts an item twice when two parents reach it in one wave;
this one is exact over its worlds and batched (see ``benchmarks/ideal.py``).

Scale: on a pool larger than ``shard_rows`` the graph's neighbour search runs per shard on the
project's execution backend (:mod:`alloop.strategies._knn_shards`: one faiss index, trained
once, searched by every shard; exact search gives the single-process graph bit for bit), and
the diffusion runs on the driver. A pool whose graph does not fit uses ``subset="seals"``:
the graph, the worlds and the greedy on a SEALS candidate subset around the labeled items.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import Field

from alloop.errors import InvalidInputError
from alloop.strategies._influence import celf_greedy, sample_worlds
from alloop.strategies._influence_graph import knn_graph
from alloop.strategies._knn_shards import ShardedKnn, seals_subset
from alloop.strategies.base import Selection, SelectionContext, Strategy

if TYPE_CHECKING:
    import scipy.sparse as sp

    from alloop.execution import Backend

__all__ = ["IdealStrategy", "ideal_select"]

logger = logging.getLogger(__name__)


def ideal_select(
    embeddings: NDArray[Any],
    k: int,
    *,
    rng: np.random.Generator,
    candidates: ArrayLike | None = None,
    labeled: ArrayLike | None = None,
    n_neighbors: int = 10,
    runs: int = 10,
    neighbors: str = "auto",
    nlist: int | None = None,
    nprobe: int = 16,
    backend: Backend | None = None,
    shard_rows: int = 50_000,
    subset: str = "all",
    subset_rows: int = 100_000,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Pick ``k`` candidates by greedy influence maximisation on the kNN graph.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, n_features)
    k : int
        Number of picks.
    rng : numpy.random.Generator
        Draws the Monte-Carlo worlds (and, for a SEALS subset with nothing labeled, its seeds).
    candidates : array_like of int, optional
        Positions that may be picked; default all.
    labeled : array_like of int, optional
        Positions already labeled: active from the start.
    n_neighbors, runs, neighbors, nlist, nprobe, shard_rows, subset, subset_rows
        See :class:`IdealStrategy`.
    backend : Backend, optional
        Where the neighbour search runs per shard (when the pool has more than ``shard_rows``
        rows, or for a SEALS subset); default: in this process, in one piece.

    Returns
    -------
    positions : ndarray of shape (k,), int64
        Picks in greedy order.
    gains : ndarray of shape (k,), float64
        Expected number of newly activated items each pick added (marginal influence gain,
        averaged over the worlds); non-increasing.
    """
    n = int(np.asarray(embeddings).shape[0])
    if subset not in ("all", "seals"):
        raise InvalidInputError(f"subset must be 'all' or 'seals'; got {subset!r}.")
    cand = np.arange(n, dtype=np.int64) if candidates is None else np.asarray(candidates, np.int64)
    seeds = np.empty(0, np.int64) if labeled is None else np.asarray(labeled, np.int64)
    t0 = time.perf_counter()
    where = "in process"
    if subset == "seals":
        rows, G = _seals(embeddings, int(k), rng, cand, seeds, n_neighbors, neighbors, nlist, nprobe, backend,
                         shard_rows, subset_rows)
        where = f"SEALS subset of {rows.size} rows"
        cand, seeds = _local(rows, cand), _local(rows, seeds)
    elif backend is not None and n > shard_rows:
        with ShardedKnn(embeddings, n_neighbors, neighbors=neighbors, nlist=nlist, nprobe=nprobe, backend=backend,
                        shard_rows=shard_rows) as knn:
            G = knn.graph()
        where = f"{-(-n // shard_rows)} shards on {backend.name}"
    else:
        G = knn_graph(embeddings, n_neighbors, neighbors=neighbors, nlist=nlist, nprobe=nprobe)
    t1 = time.perf_counter()
    W = sample_worlds(G, runs, rng)
    picks, gains = celf_greedy(W, int(k), cand, seeds=seeds if seeds.size else None)
    if subset == "seals":
        picks = rows[picks]
    t2 = time.perf_counter()
    logger.info(
        "ideal: %d picks from %d items (graph %s %.2fs, %d edges; greedy over %d worlds %.2fs)",
        k, n, where, t1 - t0, G.nnz, runs, t2 - t1,
    )
    return picks, gains.astype(np.float64) / W.runs


def _local(rows: NDArray[np.int64], pos: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions in ``rows`` (sorted) of the members of ``pos`` that are in it."""
    loc = np.searchsorted(rows, pos)
    ok = loc < rows.size
    ok[ok] = rows[loc[ok]] == pos[ok]
    return loc[ok].astype(np.int64)


def _seals(X: NDArray[Any], k: int, rng: np.random.Generator, cand: NDArray[np.int64], seeds: NDArray[np.int64],
           n_neighbors: int, neighbors: str, nlist: int | None, nprobe: int, backend: Backend | None,
           shard_rows: int, subset_rows: int) -> tuple[NDArray[np.int64], sp.csr_matrix]:
    """The SEALS subset (grown from the labeled rows, or random candidates when none) and its graph."""
    with ShardedKnn(X, n_neighbors, neighbors=neighbors, nlist=nlist, nprobe=nprobe, backend=backend,
                    shard_rows=shard_rows) as knn:
        if not seeds.size and cand.size:  # a cold start: spread seeds, a hop of neighbours each
            m = min(cand.size, max(k, subset_rows // (1 + knn.k)))
            seeds = np.sort(rng.choice(cand, m, replace=False))
        rows, G = seals_subset(knn, seeds, subset_rows, need=cand, want=k)
        short = k - _local(rows, cand).size
        if short > 0:  # the neighbourhoods hold too few candidates: add some at random
            outside = np.setdiff1d(cand, rows, assume_unique=True)
            extra = rng.choice(outside, min(short, outside.size), replace=False)
            rows, G = seals_subset(knn, np.concatenate([seeds, extra]), subset_rows, need=cand, want=k)
    return rows, G


class IdealStrategy(Strategy):
    """Influence-driven selection (IDEAL): cover the pool's similarity graph by diffusion.

    Parameters
    ----------
    n_neighbors : int, default 10
        Out-neighbours per item in the kNN graph (the paper's k).
    runs : int, default 10
        Monte-Carlo worlds of the independent cascade (the paper uses 10). The greedy fits the
        worlds it is given: with 10, its own estimate of the selection's influence is far above
        the true one. More runs give picks with more true influence (measured at N = 3,000,
        budget 100: +1.4% with 30 runs, +2.0% with 100); time and memory grow linearly.
    neighbors : {"auto", "exact", "faiss-exact", "faiss-ivf", "faiss-ivf-sq8"}, default "auto"
        Neighbour search: exact float32 BLAS in blocks up to 5e4 items, faiss IVF above, its
        rows quantized to 8 bits (a quarter of the memory; the neighbours' cosines recomputed
        exactly) when a full-precision index would pass 2 GiB.
    nlist, nprobe : int
        faiss IVF lists (default ``4 sqrt(n)``) and lists probed per query.
    shard_rows : int, default 50000
        Pools with more rows build the graph on the project's execution backend
        (``[execution]``), ``shard_rows`` query rows per shard
        (:class:`~alloop.strategies._knn_shards.ShardedKnn`): a faiss index is built (IVF:
        trained) once on the driver and shared once with the embeddings (a memory-mapped pool
        as its path) and their norms, or for ``"exact"`` the unit rows are shared, every shard
        searches its rows, the driver assembles the graph and diffuses. Exact modes give the
        single-process graph bit for bit, so the picks are the same on the local and the Ray
        backend; smaller pools (or no backend) search in process, in one piece.
    subset : {"all", "seals"}, default "all"
        ``"all"``: the graph over the whole pool, ``N k`` edges (about ``N k 24`` bytes as a
        CSR matrix with its worlds; 2.4 GB at N = 1e7, k = 10), plus the faiss index (``N d 4``
        bytes, ``N d`` for ``"faiss-ivf-sq8"``; ``"exact"``: ``N d 4`` bytes of unit rows).
        ``"seals"``: for pools whose graph does not fit, the candidate subset of SEALS
        (Coleman et al., "Similarity Search for Efficient Active Learning and Search of Rare
        Concepts", AAAI 2022): the labeled items, their ``k``
        nearest neighbours, the neighbours of those, ... (nearest ranks first) up to
        ``subset_rows`` rows, found with the same index; the graph, the worlds and the greedy
        are restricted to that subset (graph memory ``subset_rows k 24`` bytes; the search
        still needs the whole pool's index). The trade: influence is counted
        only inside the subset and only along paths that stay in it, and only subset items can
        be picked, so items far from everything labeled are not considered (SEALS's
        assumption: what matters next lies near what is labeled). With nothing labeled (a cold
        start) the subset grows from ``max(k, subset_rows / (n_neighbors + 1))`` candidates
        drawn at random; when the neighbourhoods hold fewer than the batch's candidates, random
        candidates are added as seeds.
    subset_rows : int, default 100000
        Rows of a SEALS subset (the labeled items are always in it, past the budget if need be,
        and it grows further until it holds the batch's number of candidates).

    Notes
    -----
    Needs ``embeddings``. Scores are the marginal influence gains: the expected number of
    items newly activated by each pick, non-increasing along the selection order.
    """

    name: ClassVar[str] = "ideal"
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})
    uses_backend: ClassVar[bool] = True

    n_neighbors: int = Field(default=10, ge=1)
    runs: int = Field(default=10, ge=1)
    neighbors: Literal["auto", "exact", "faiss-exact", "faiss-ivf", "faiss-ivf-sq8"] = "auto"
    nlist: int | None = Field(default=None, ge=1)
    nprobe: int = Field(default=16, ge=1)
    shard_rows: int = Field(default=50_000, ge=1)
    subset: Literal["all", "seals"] = "all"
    subset_rows: int = Field(default=100_000, ge=1)

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        positions, gains = ideal_select(
            np.asarray(ctx.require("embeddings")),
            k,
            rng=ctx.rng,
            candidates=ctx.candidates,
            labeled=ctx.labeled,
            n_neighbors=self.n_neighbors,
            runs=self.runs,
            neighbors=self.neighbors,
            nlist=self.nlist,
            nprobe=self.nprobe,
            backend=ctx.backend,
            shard_rows=self.shard_rows,
            subset=self.subset,
            subset_rows=self.subset_rows,
        )
        return Selection(positions=positions, scores=gains)
