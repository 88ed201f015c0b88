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


class _UncertaintyStrategy(Strategy):
    """Score candidates with ``_score(proba)`` and keep the top ``k``."""

    requires: ClassVar[frozenset[str]] = frozenset({"proba"})
    _score: ClassVar[staticmethod[[NDArray[Any]], NDArray[np.float64]]]

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"))[ctx.candidates]
        scores = type(self)._score(proba)
        idx = _scores.top_k(scores, k)
        return Selection(positions=ctx.candidates[idx], scores=scores[idx])


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
