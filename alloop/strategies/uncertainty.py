"""Uncertainty sampling on the model's class probabilities (entropy, margin, least confidence).

All three score the candidates with a pure kernel from :mod:`alloop.strategies._scores` and
keep the ``k`` highest scores (ties to the lowest position). Reference: Settles, "Active
Learning Literature Survey" (2009), section 3.1; Scheffer et al. (2001) for the margin.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from alloop.strategies import _scores
from alloop.strategies.base import Selection, SelectionContext, Strategy

#: candidates scored at once (bounds the memory of a large pool's selection)
CHUNK_ROWS = 1 << 16


class _UncertaintyStrategy(Strategy):
    """Score candidates with ``_score(proba)`` and keep the top ``k``."""

    requires: ClassVar[frozenset[str]] = frozenset({"proba"})
    _score: ClassVar[staticmethod[[NDArray[Any]], NDArray[np.float64]]]

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = ctx.require("proba")
        score = type(self)._score
        cand = ctx.candidates
        if cand.size <= CHUNK_ROWS:
            scores = score(np.asarray(proba[cand]))
            idx = _scores.top_k(scores, k)
            return Selection(positions=cand[idx], scores=scores[idx])
        # a large pool (often memory-mapped): score a chunk at a time, keep each chunk's top k, then
        # the top k of those. Exact: a global winner is among its own chunk's k best (same order:
        # score descending, position ascending)
        best_pos, best_score = [], []
        for start in range(0, cand.size, CHUNK_ROWS):
            part = cand[start : start + CHUNK_ROWS]
            s = score(np.asarray(proba[part]))
            idx = _scores.top_k(s, min(k, s.size))
            best_pos.append(part[idx])
            best_score.append(s[idx])
        pos, sc = np.concatenate(best_pos), np.concatenate(best_score)
        order = np.argsort(pos, kind="stable")  # ascending positions, so ties go to the lowest
        pos, sc = pos[order], sc[order]
        idx = _scores.top_k(sc, k)
        return Selection(positions=pos[idx], scores=sc[idx])


class EntropyStrategy(_UncertaintyStrategy):
    """Pick the candidates whose predicted class distribution has the highest entropy.

    Score: ``H(p) = -sum_c p_c log p_c`` (nats), Shannon (1948) as used for active learning
    by Settles (2009). Needs ``proba`` of shape (n_samples, n_classes).
    """

    name: ClassVar[str] = "entropy"
    _score = staticmethod(_scores.entropy)


class MarginStrategy(_UncertaintyStrategy):
    """Pick the candidates whose two most likely classes are closest.

    Score: ``1 - (p_top1 - p_top2)``; margin sampling (Scheffer, Decomain & Wrobel, 2001).
    Needs ``proba`` of shape (n_samples, n_classes).
    """

    name: ClassVar[str] = "margin"
    _score = staticmethod(_scores.margin)


class LeastConfidenceStrategy(_UncertaintyStrategy):
    """Pick the candidates whose most likely class is least probable.

    Score: ``1 - max_c p_c``; least-confidence sampling (Lewis & Gale, 1994; Culotta &
    McCallum, 2005). Needs ``proba`` of shape (n_samples, n_classes).
    """

    name: ClassVar[str] = "least_confidence"
    _score = staticmethod(_scores.least_confidence)
