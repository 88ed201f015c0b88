"""Core-set selection: greedy k-center in feature space (Sener & Savarese, ICLR 2018)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from alloop.strategies.base import Selection, SelectionContext, Strategy
from alloop.strategies.kcenter_sharded import select_k_center


class CoresetStrategy(Strategy):
    """Pick a batch that covers the embedding space: greedy k-center from the labeled set.

    The labeled items are the initial centres; each pick is the candidate farthest from its
    nearest centre, which then becomes a centre (farthest-first traversal, a 2-approximation
    of the k-center objective; Sener & Savarese, "Active Learning for Convolutional Neural
    Networks: A Core-Set Approach", ICLR 2018). Exact and memory-bounded; see
    :func:`alloop.strategies.kcenter.k_center_greedy`.

    Parameters
    ----------
    metric : {"cosine", "euclidean"}
        Distance between embeddings. Cosine (the default) suits encoder features such as CLIP.
    mode : {"exact", "composable"}
        ``exact`` (default): the greedy itself, in this process on the local backend, else on
        shards of the pool held by the backend's workers, one broadcast per pick
        (:func:`~alloop.strategies.kcenter_sharded.k_center_greedy_sharded`: the same picks).
        ``composable``: greedy per shard of candidates, then over the union of the shards'
        picks (:func:`~alloop.strategies.kcenter_sharded.k_center_composable`, on any backend):
        two rounds instead of one per pick, a 4-approximation of the k-center objective instead
        of a 2-approximation (Malkomes et al., NeurIPS 2015), picks that depend on the shards.
    shard_rows : int, optional
        Rows per shard; default ``[execution] shard_rows``.

    Notes
    -----
    Needs ``embeddings`` of shape (n_samples, n_features). Scores are the pick's distance to
    its nearest centre when it was picked (cosine distance ``1 - cos`` for ``"cosine"``).
    With no labeled item the first pick is the candidate farthest from the candidates' mean.
    """

    name: ClassVar[str] = "coreset"
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    uses_backend: ClassVar[bool] = True

    metric: Literal["cosine", "euclidean"] = "cosine"
    mode: Literal["exact", "composable"] = "exact"
    shard_rows: int | None = Field(default=None, ge=1)

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        emb = np.asarray(ctx.require("embeddings"))
        positions, scores = select_k_center(
            emb, k, init=ctx.labeled, candidates=ctx.candidates, metric=self.metric, backend=ctx.backend,
            mode=self.mode, shard_rows=self.shard_rows,
        )
        return Selection(positions=positions, scores=scores)
