"""PCoreSet: greedy k-center in the probability simplex of a (distilled) student.

From "PCoreSet: Effective Active Learning through Knowledge Distillation from
Vision-Language Models" (ActiveKD). Instead of covering the *feature* space like core-set,
PCoreSet covers the space of the model's *predictions*: with a student distilled from a
zero-shot teacher, items whose predicted distributions are far from every labeled item's
prediction carry the knowledge the student still lacks.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from alloop.strategies.base import Selection, SelectionContext, Strategy
from alloop.strategies.kcenter_sharded import select_k_center


class PCoresetStrategy(Strategy):
    """Farthest-first traversal over predicted class probabilities.

    - ``z(x)`` is the model's probability vector for each item (rows of ``proba``,
      shape (n_samples, n_classes));
    - the centres start as ``z`` of the currently labeled items (their predictions, not their
      one-hot labels);
    - repeat ``k`` times: pick the candidate whose Euclidean distance to its nearest centre is
      largest, make it a centre. Ties go to the lowest position.

    It reuses the exact k-center kernel (:func:`alloop.strategies.kcenter.k_center_greedy`:
    running min-distance vector, one pass over the pool per pick, exact pruning), so it scales
    to millions of items. No class balancing and no uncertainty weighting, as in the paper.
    Scores are the picks' distances to their nearest centre at pick time.

    Parameters
    ----------
    mode : {"exact", "composable"}
        ``exact`` (default): the greedy itself, in this process on the local backend, else on
        shards of the pool held by the backend's workers (the same picks). ``composable``:
        greedy per shard, then over the union of the shards' picks, a 4-approximation instead
        of 2 (see :class:`~alloop.strategies.coreset.CoresetStrategy`).
    shard_rows : int, optional
        Rows per shard; default ``[execution] shard_rows``.
    """

    name: ClassVar[str] = "pcoreset"
    requires: ClassVar[frozenset[str]] = frozenset({"proba"})
    uses_backend: ClassVar[bool] = True

    mode: Literal["exact", "composable"] = "exact"
    shard_rows: int | None = Field(default=None, ge=1)

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"), dtype=np.float32)
        positions, scores = select_k_center(
            proba, k, init=ctx.labeled, candidates=ctx.candidates, metric="euclidean", backend=ctx.backend,
            mode=self.mode, shard_rows=self.shard_rows,
        )
        return Selection(positions=positions, scores=scores)
