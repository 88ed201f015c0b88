"""Uniform random sampling: the baseline every active-learning comparison needs."""

from __future__ import annotations

from typing import ClassVar

from alloop.strategies._scores import top_k
from alloop.strategies.base import Selection, SelectionContext, Strategy


class RandomStrategy(Strategy):
    """Pick ``k`` candidates uniformly at random, without replacement.

    Each candidate draws a priority ``u ~ Uniform[0, 1)`` from ``ctx.rng`` and the ``k``
    largest priorities win, which is a uniform sample without replacement. The scores are
    those draws (they carry no information about the samples; they only record the order).
    Random sampling is the reference every method is compared with (e.g. Settles, "Active
    Learning Literature Survey", 2009) and is surprisingly hard to beat at small budgets.

    Notes
    -----
    Needs nothing from the model (``requires`` is empty). Deterministic given ``ctx.rng``.
    """

    name: ClassVar[str] = "random"
    requires: ClassVar[frozenset[str]] = frozenset()

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        u = ctx.rng.random(ctx.candidates.size)
        idx = top_k(u, k)
        return Selection(positions=ctx.candidates[idx], scores=u[idx])
