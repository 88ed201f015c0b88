"""Core-set selection: greedy k-center in feature space (Sener & Savarese, ICLR 2018)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from alloop.strategies.base import Selection, SelectionContext, Strategy
from alloop.strategies.kcenter import k_center_greedy


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

    Notes
    -----
    Needs ``embeddings`` of shape (n_samples, n_features). Scores are the pick's distance to
    its nearest centre when it was picked (cosine distance ``1 - cos`` for ``"cosine"``).
    With no labeled item the first pick is the candidate farthest from the candidates' mean.
    """

    name: ClassVar[str] = "coreset"
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    metric: Literal["cosine", "euclidean"] = "cosine"

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        emb = np.asarray(ctx.require("embeddings"))
        positions, scores = k_center_greedy(
            emb, k, init=ctx.labeled, candidates=ctx.candidates, metric=self.metric
        )
        return Selection(positions=positions, scores=scores)
