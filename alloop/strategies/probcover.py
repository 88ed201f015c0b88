"""ProbCover: greedy maximum coverage of δ-balls (a low-budget cold start).

From "Active Learning Through a Covering Lens" (Yehuda, Dekel, Hacohen, Weinshall, NeurIPS
2022). Each point covers the points within distance δ of it (on L2-normalised embeddings, as
the paper's code does); the strategy picks, ``budget`` times, the candidate whose ball covers
the most points not covered yet, the balls of every non-candidate (labeled, or picked before)
being covered first. When everything is covered, the rest are drawn at random (seeded), as
the paper does.

δ is chosen by the paper's purity rule unless given: cluster the pool with k-means into as
many clusters as there are classes (pseudo-labels); a ball is pure when all its points share
its centre's pseudo-label; δ is the largest radius at which at least ``alpha`` (0.95) of the
balls are pure. A ball around ``x`` is pure exactly when ``x``'s nearest point of another
pseudo-label is farther than δ, so purity falls as δ grows and the largest pure-enough δ is a
quantile of those distances: computed exactly here, where the paper scans a grid of δ
values. On a pool larger than ``purity_sample`` the distances are those of a seeded sample
of centres (to every point of the pool).

δ and the ball graph depend on the pool's embeddings alone (the pseudo-labels' k-means has its
own ``seed``), as in the paper, which computes them once: they are kept for the process, keyed
by the embeddings' bytes, and later rounds only run the greedy.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from alloop.errors import InvalidInputError
from alloop.strategies._neighbors import nearest_other, radius_graph
from alloop.strategies.base import PoolCache, Selection, SelectionContext, Strategy, array_digest
from alloop.strategies.typiclust import cluster_pool

__all__ = ["ProbCoverStrategy", "normalise", "probcover_select", "purity", "purity_radius"]

logger = logging.getLogger(__name__)

#: (digest of the unit embeddings, delta, alpha, n_classes, purity_sample, seed) -> (delta, ball graph)
_GRAPHS: PoolCache[tuple[float, sp.csr_matrix]] = PoolCache(keep=2)


def normalise(X: NDArray[Any]) -> NDArray[np.float64]:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out: NDArray[np.float64] = X / np.where(norms > 0, norms, 1.0)
    return out


def purity(X: NDArray[Any], pseudo: NDArray[Any], delta: float) -> float:
    """Share of the balls of radius ``delta`` (around every row) whose points all share the
    centre's pseudo-label."""
    return float(np.mean(nearest_other(X, pseudo, X, pseudo) > delta))


def purity_radius(X: NDArray[Any], pseudo: NDArray[Any], alpha: float = 0.95, *,
                  sample: NDArray[np.int64] | None = None) -> float:
    """The largest δ at which at least ``alpha`` of the balls (around the rows ``sample``, all
    by default) are pure: just below (by a relative 1e-9, beyond the distances' rounding) the
    ``ceil(alpha * m)``-th largest distance from a centre to its nearest point of another
    pseudo-label."""
    if not 0 < alpha <= 1:
        raise InvalidInputError(f"alpha must lie in (0, 1]; got {alpha}.")
    rows = np.arange(X.shape[0]) if sample is None else np.asarray(sample, dtype=np.int64)
    far = np.sort(nearest_other(X[rows], pseudo[rows], X, pseudo))
    m = far.size
    need = math.ceil(alpha * m - 1e-9)  # balls that must stay pure
    limit = float(far[m - need])  # at this distance the need-th largest stops being pure
    if not np.isfinite(limit):  # enough balls are pure at any radius (one pseudo-label): unit vectors are within 2
        return 2.0
    return limit * (1.0 - 1e-9)


def _ranges(indptr: NDArray[np.int64], rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """The positions ``indptr[r] .. indptr[r + 1] - 1`` of every row ``r`` of ``rows``, concatenated."""
    starts, lens = indptr[rows], indptr[rows + 1] - indptr[rows]
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, np.int64)
    out: NDArray[np.int64] = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
    return out


def probcover_select(
    graph: sp.csr_matrix,
    k: int,
    *,
    candidates: NDArray[np.int64],
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Greedy coverage on a symmetric ball graph: ``(positions, newly covered points per pick)``.

    The balls of every non-candidate are covered first. Ties go to the lowest position; once
    no candidate covers anything new, the remaining picks are drawn at random (score 0).
    """
    n = graph.shape[0]
    indptr, indices = graph.indptr, graph.indices
    covered = np.zeros(n, bool)
    open_ = np.zeros(n, bool)
    open_[candidates] = True
    fixed = np.flatnonzero(~open_)
    covered[indices[_ranges(indptr, fixed)]] = True
    gain = np.diff(indptr).astype(np.int64)  # uncovered points in each ball
    if covered.any():  # the graph is symmetric: ball(i) holds j exactly when ball(j) holds i
        gain -= np.bincount(indices[_ranges(indptr, np.flatnonzero(covered))], minlength=n)
    picks, scores = np.empty(k, np.int64), np.empty(k, np.float64)
    t = 0
    while t < k:
        masked = np.where(open_, gain, -1)
        p = int(np.argmax(masked))
        if masked[p] <= 0:
            break
        picks[t], scores[t] = p, masked[p]
        open_[p] = False
        new = indices[indptr[p] : indptr[p + 1]]
        new = new[~covered[new]]
        covered[new] = True
        gain -= np.bincount(indices[_ranges(indptr, new)], minlength=n)  # every ball that held them loses them
        t += 1
    if t < k:
        rest = rng.choice(np.flatnonzero(open_), size=k - t, replace=False)
        picks[t:], scores[t:] = np.sort(rest), 0.0
    return picks, scores


class ProbCoverStrategy(Strategy):
    """Cover the embedding space with δ-balls (ProbCover, Yehuda et al., NeurIPS 2022).

    Parameters
    ----------
    delta : float, optional
        Ball radius on unit-normalised embeddings (0 to 2). Default: the purity rule.
    alpha : float
        Share of pure balls the purity rule keeps (the paper's 0.95).
    n_classes : int, optional
        Pseudo-labels of the purity rule; default the project's number of classes.
    purity_sample : int
        Balls the purity rule looks at (a seeded sample on larger pools).
    seed : int
        Seed of the purity rule's k-means pseudo-labels and of its sample: δ is a property of
        the pool, the same in every round.

    Notes
    -----
    Needs ``embeddings``. Memory and time: the ball graph, every pair within δ (``n^2 x
    n_features`` distance work in blocks): meant for the low-budget regime on pools of up to
    about 10^5 items. The result is sensitive to δ (the MaxHerding paper, 2024, shows how much);
    the log says which δ was used. Scores are the number of points each pick newly covered.
    """

    name: ClassVar[str] = "probcover"
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    delta: float | None = Field(default=None, gt=0, le=2)
    alpha: float = Field(default=0.95, gt=0, le=1)
    n_classes: int | None = Field(default=None, ge=2)
    purity_sample: int = Field(default=10_000, ge=100)
    seed: int = Field(default=0, ge=0)

    def radius(self, X: NDArray[Any], ctx: SelectionContext) -> float:
        """δ: the given one, or the purity rule's on ``X`` (unit-normalised)."""
        if self.delta is not None:
            return float(self.delta)
        n_classes = self.n_classes or ctx.n_classes
        if n_classes is None:
            raise InvalidInputError(
                "ProbCover's purity rule needs the number of classes: none is known here. Set "
                "`n_classes` (or `delta`) in the strategy's params."
            )
        pseudo = cluster_pool(X, n_classes, self.seed)
        sample = None
        if X.shape[0] > self.purity_sample:
            sample = np.sort(np.random.default_rng(self.seed).choice(X.shape[0], self.purity_sample, replace=False))
        return purity_radius(X, pseudo, self.alpha, sample=sample)

    def ball_graph(self, X: NDArray[Any], ctx: SelectionContext) -> tuple[float, sp.csr_matrix]:
        """``(δ, the δ-ball graph)`` of the unit-normalised ``X``: computed once per pool and
        kept for the process."""
        n_classes = self.n_classes or ctx.n_classes
        key = (array_digest(X), self.delta, self.alpha, n_classes, self.purity_sample, self.seed)

        def compute() -> tuple[float, sp.csr_matrix]:
            delta = self.radius(X, ctx)
            graph = radius_graph(X, delta)
            logger.info("ProbCover: delta = %.4f, %.1f points per ball on average", delta, graph.nnz / X.shape[0])
            return delta, graph

        return _GRAPHS.get(key, compute)

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        _, graph = self.ball_graph(normalise(ctx.require("embeddings")), ctx)
        positions, scores = probcover_select(graph, k, candidates=ctx.candidates, rng=ctx.rng)
        return Selection(positions=positions, scores=scores)
