"""Influence maximisation under the independent cascade: Monte-Carlo worlds and CELF greedy.

The independent cascade (IC) from a seed set S: every newly active node v gets one chance to
activate each successor w, with probability ``G[v, w]``. Its outcome has the law of
reachability in a *live-edge world*: keep each edge independently with its probability,
then the active nodes are exactly those reachable from S (Kempe, Kleinberg & Tardos, KDD
2003). So ``R`` Monte-Carlo runs are ``R`` worlds sampled once (:func:`sample_worlds`) and the
influence estimate is

    sigma(S) = (1 / R) * sum_r |reach_r(S)|,

every node counted once per world (exact de-duplication). With the worlds fixed, sigma is a
sum of coverage functions: monotone and submodular, so the lazy greedy (CELF; Leskovec et
al., KDD 2007) makes exactly the picks of the plain greedy over the same worlds.

Batching: the ``R`` worlds are one block-diagonal graph on ``n * R`` world-nodes (``r * n +
v`` is node v in world r). A BFS runs level-synchronously for many (source, world) pairs at
once, with vectorised gathers over the CSR arrays; a dense ``(slots, n * R)`` boolean array
(:data:`_VISITED_BYTES` at most, cleared by the entries it touched) de-duplicates nodes
reached twice in one level or across levels. Reach sets in these graphs are small (each
node's out-probabilities sum to 1: about one live out-edge per node), so all singleton
reaches cost ``O(R * sum_v |reach(v)|)``.

Marginal gains: the active set ``A_r = reach_r(S)`` is closed under reachability, so the gain
of v in world r is the number of nodes a BFS from v reaches without entering ``A_r``. Gains
are exact integer counts summed over worlds; ties go to the lowest position.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from alloop.checks import check_int
from alloop.errors import EmptyPoolError, PoolExhaustedError

__all__ = ["Worlds", "activate", "celf_greedy", "influence", "reach_counts", "sample_worlds"]

_VISITED_BYTES = 1 << 26  # dense per-slot visited array of a BFS batch (64 MiB)
_LAZY_MAX = 32  # CELF: most stale heap entries re-evaluated in one batch


@dataclass(frozen=True)
class Worlds:
    """``runs`` live-edge worlds of an ``n``-node graph, as one block-diagonal CSR graph.

    Attributes
    ----------
    n, runs : int
        Nodes per world and number of worlds.
    indptr : ndarray of shape (n * runs + 1,), int64
    indices : ndarray of shape (n_live,), int64
        Successors of world-node ``r * n + v`` are ``indices[indptr[r*n+v]:indptr[r*n+v+1]]``
        (world-node ids, all in world r).
    """

    n: int
    runs: int
    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]


def sample_worlds(G: sp.csr_matrix, runs: int, rng: np.random.Generator) -> Worlds:
    """Draw ``runs`` live-edge worlds: edge e of world r is live iff ``u[r, e] < G.data[e]``.

    Parameters
    ----------
    G : scipy.sparse.csr_matrix of shape (n, n)
        Edge probabilities in [0, 1], canonical CSR (sorted indices, no duplicates).
    runs : int
        Number of Monte-Carlo worlds, >= 1.
    rng : numpy.random.Generator
        ``u[r] = rng.random(G.nnz)`` for r = 0, 1, ... in turn (edges in CSR order).

    Returns
    -------
    Worlds
    """
    check_int("runs", runs, 1)
    G = sp.csr_matrix(G)
    n, runs = G.shape[0], int(runs)
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(G.indptr))
    counts, indices = np.zeros(n * runs, np.int64), []
    for r in range(runs):
        live = rng.random(G.nnz) < G.data
        counts[r * n : (r + 1) * n] = np.bincount(src[live], minlength=n)
        indices.append(G.indices[live].astype(np.int64) + r * n)
    indptr = np.zeros(n * runs + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Worlds(n, runs, indptr, np.concatenate(indices) if indices else np.empty(0, np.int64))


def _successors(
    W: Worlds, nodes: NDArray[np.int64], tags: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """All (successor, tag) pairs of ``nodes`` (world-node ids), tags repeated per edge."""
    start = W.indptr[nodes]
    cnt = W.indptr[nodes + 1] - start
    total = int(cnt.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    offset = np.repeat(start - (np.cumsum(cnt) - cnt), cnt)
    return W.indices[np.arange(total) + offset], np.repeat(tags, cnt)


def activate(W: Worlds, seeds: ArrayLike, active: NDArray[np.bool_]) -> int:
    """Mark everything reachable from ``seeds`` (in every world) in ``active``; in place.

    Parameters
    ----------
    seeds : array_like of shape (s,), int
        Node positions in ``[0, n)``.
    active : ndarray of shape (n * runs,), bool
        Reach-closed set of active world-nodes (e.g. all False); updated.

    Returns
    -------
    int
        Number of newly activated world-nodes (over all worlds).
    """
    seeds = np.asarray(seeds, np.int64)
    front = (seeds[None, :] + W.n * np.arange(W.runs)[:, None]).reshape(-1)
    front = np.unique(front[~active[front]])
    total = 0
    while front.size:
        active[front] = True
        total += front.size
        nxt, _ = _successors(W, front, front)
        front = np.unique(nxt[~active[nxt]])
    return total


def reach_counts(W: Worlds, sources: ArrayLike, active: NDArray[np.bool_] | None = None) -> NDArray[np.int64]:
    """For each source v: ``sum_r |reach_r(v) minus active_r|``, all sources batched.

    Parameters
    ----------
    sources : array_like of shape (m,), int
        Node positions in ``[0, n)``.
    active : ndarray of shape (n * runs,), bool, optional
        Reach-closed set of already active world-nodes (not entered, not counted).

    Returns
    -------
    ndarray of shape (m,), int64
        The marginal gains (times ``runs``) of the sources, each considered alone.
    """
    sources = np.asarray(sources, np.int64)
    nr = W.n * W.runs
    if active is None:
        active = np.zeros(nr, bool)
    slots = int(max(1, min(sources.size, _VISITED_BYTES // max(nr, 1))))
    seen = np.zeros(slots * nr, bool)
    out = np.zeros(sources.size, np.int64)
    for s in range(0, sources.size, slots):
        out[s : s + slots] = _batch_bfs(W, sources[s : s + slots], active, seen)
    return out


def _batch_bfs(
    W: Worlds, src: NDArray[np.int64], active: NDArray[np.bool_], seen: NDArray[np.bool_]
) -> NDArray[np.int64]:
    """BFS from each of ``src`` in every world at once; ``seen`` is all-False scratch."""
    nr, b = W.n * W.runs, src.size
    nodes = (src[:, None] + W.n * np.arange(W.runs)[None, :]).reshape(-1)
    keys = np.repeat(np.arange(b, dtype=np.int64), W.runs) * nr + nodes
    keys = keys[~active[nodes]]  # distinct: sources are distinct
    counts = np.zeros(b, np.int64)
    touched = []
    while keys.size:
        seen[keys] = True
        touched.append(keys)
        slot, node = np.divmod(keys, nr)
        counts += np.bincount(slot, minlength=b)
        nxt, tag = _successors(W, node, slot * nr)
        fresh = ~active[nxt]
        keys = nxt[fresh] + tag[fresh]
        keys = np.unique(keys[~seen[keys]])
    for t in touched:
        seen[t] = False
    return counts


def influence(W: Worlds, seeds: ArrayLike) -> float:
    """Monte-Carlo influence ``(1 / runs) * sum_r |reach_r(seeds)|`` of a seed set."""
    return activate(W, seeds, np.zeros(W.n * W.runs, bool)) / W.runs


def celf_greedy(
    W: Worlds, k: int, candidates: ArrayLike, seeds: ArrayLike | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Greedy maximisation of the influence over the fixed worlds, lazily (CELF).

    Repeat ``k`` times: add the candidate with the largest marginal gain (ties: lowest
    position) to the seed set. Gains are re-evaluated only when a stale upper bound reaches
    the top of the heap; by submodularity the result equals the plain greedy's.

    Parameters
    ----------
    W : Worlds
    k : int
        Number of picks, ``0 <= k <= #candidates``.
    candidates : array_like of shape (m,), int
        Positions that may be picked (positions in ``seeds`` are removed).
    seeds : array_like of shape (s,), int, optional
        Seeds already in place (e.g. labeled items): their reach is active from the start.

    Returns
    -------
    positions : ndarray of shape (k,), int64
        Picks in greedy order.
    gains : ndarray of shape (k,), int64
        Marginal gain of each pick when picked, summed over the worlds (divide by
        ``W.runs`` for the expected number of newly activated nodes); non-increasing.
    """
    seeds = np.unique(np.asarray([] if seeds is None else seeds, np.int64))
    cand = np.setdiff1d(np.asarray(candidates, np.int64), seeds)
    if k and cand.size == 0:
        raise EmptyPoolError("celf_greedy has no candidates to pick from (all are seeds).")
    if k > cand.size:
        raise PoolExhaustedError(int(k), int(cand.size), f"Lower k to at most {cand.size}.")
    active = np.zeros(W.n * W.runs, bool)
    activate(W, seeds, active)
    gains = reach_counts(W, cand, active)
    heap = [(-int(g), int(p), 0) for g, p in zip(gains, cand)]
    heapq.heapify(heap)
    picks, picked_gains = np.empty(k, np.int64), np.empty(k, np.int64)
    nr = max(W.n * W.runs, 1)
    lazy_max = max(1, min(_LAZY_MAX, _VISITED_BYTES // nr))  # scratch stays within _VISITED_BYTES
    seen = np.zeros(lazy_max * nr, bool)
    t, batch = 0, 1
    while t < k:
        if heap[0][2] == t:  # fresh: its exact gain beats every other upper bound
            neg, p, _ = heapq.heappop(heap)
            picks[t], picked_gains[t] = p, -neg
            activate(W, [p], active)
            t, batch = t + 1, 1
            continue
        stale = [heapq.heappop(heap)[1]]  # re-evaluate the top, and more as a round drags on
        while len(stale) < batch and heap and heap[0][2] != t:
            stale.append(heapq.heappop(heap)[1])
        fresh = _batch_bfs(W, np.array(stale, np.int64), active, seen)
        for p, g in zip(stale, fresh.tolist()):
            heapq.heappush(heap, (-g, p, t))
        batch = min(2 * batch, lazy_max)
    return picks, picked_gains
