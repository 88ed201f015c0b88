"""PCoreSet: greedy k-center in the probability simplex of a (distilled) student.

From "PCoreSet: Effective Active Learning through Knowledge Distillation from
Vision-Language Models" (ActiveKD). Instead of covering the *feature* space like core-set,
PCoreSet covers the space of the model's *predictions*: with a student distilled from a
zero-shot teacher, items whose predicted distributions are far from every labeled item's
prediction carry the knowledge the student still lacks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from alloop.strategies.base import Selection, SelectionContext, Strategy
from alloop.strategies.kcenter import k_center_greedy


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
    """

    name: ClassVar[str] = "pcoreset"
    requires: ClassVar[frozenset[str]] = frozenset({"proba"})

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"), dtype=np.float32)
        positions, scores = k_center_greedy(
            proba, k, init=ctx.labeled, candidates=ctx.candidates, metric="euclidean"
        )
        return Selection(positions=positions, scores=scores)
