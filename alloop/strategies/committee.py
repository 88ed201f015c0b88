"""Query by committee: vote entropy and BALD over the members of an ensemble.

Both need the ``ensemble`` learner (or any learner that gives ``member_proba``):

- **vote entropy** (Dagan & Engelson 1995): the entropy of the members' hard votes,
  ``-sum_c (V_c / M) log(V_c / M)`` with ``V_c`` the members voting for class ``c``;
- **BALD** (Houlsby, Huszár, Ghahramani, Lengyel 2011; Gal, Islam, Ghahramani 2017): the mutual
  information between the label and the model, ``H[mean_m p_m] - mean_m H[p_m]``: high where
  the members are each sure and disagree with each other.

Both pick the ``k`` highest scores (ties: the lowest position).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from alloop.strategies._scores import top_k
from alloop.strategies.base import Selection, SelectionContext, Strategy

__all__ = ["BaldStrategy", "VoteEntropyStrategy", "bald", "vote_entropy"]


def _entropy(p: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: NDArray[np.float64] = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)
    return out


def vote_entropy(members: NDArray[Any]) -> NDArray[np.float64]:
    """Entropy of the hard-vote distribution; ``members`` of shape (n, M, C)."""
    P = np.asarray(members, dtype=np.float64)
    votes = np.argmax(P, axis=2)  # (n, M)
    counts = np.stack([(votes == c).sum(axis=1) for c in range(P.shape[2])], axis=1)
    return _entropy(counts / P.shape[1])


def bald(members: NDArray[Any]) -> NDArray[np.float64]:
    """Mutual information ``H[mean p] - mean H[p]``; ``members`` of shape (n, M, C)."""
    P = np.asarray(members, dtype=np.float64)
    out: NDArray[np.float64] = np.maximum(_entropy(P.mean(axis=1)) - _entropy(P).mean(axis=1), 0.0)
    return out


class _Committee(Strategy):
    requires: ClassVar[frozenset[str]] = frozenset({"proba", "members"})

    def _scores(self, members: NDArray[Any]) -> NDArray[np.float64]:  # pragma: no cover
        raise NotImplementedError

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        members = np.asarray(ctx.require("members"))
        cand = ctx.candidates
        s = self._scores(members[cand])
        order = top_k(s, k)
        return Selection(positions=cand[order], scores=s[order])


class VoteEntropyStrategy(_Committee):
    """The items the ensemble's members vote most differently on (needs the ``ensemble`` learner)."""

    name: ClassVar[str] = "vote_entropy"

    def _scores(self, members: NDArray[Any]) -> NDArray[np.float64]:
        return vote_entropy(members)


class BaldStrategy(_Committee):
    """The items with the most mutual information between label and model (needs the ``ensemble`` learner)."""

    name: ClassVar[str] = "bald"

    def _scores(self, members: NDArray[Any]) -> NDArray[np.float64]:
        return bald(members)
