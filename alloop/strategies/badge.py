"""BADGE: k-means++ seeding on gradient embeddings, without materialising them.

From "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds" (Ash, Zhang,
Krishnamurthy, Langford, Agarwal, ICLR 2020). For an unlabeled item with penultimate features
``h`` (the input of the model's last, linear layer, with a 1 appended for its bias) and class
probabilities ``p``, the gradient of the cross-entropy at the model's own guess
``ŷ = argmax p`` with respect to the last layer's weights is ``g = (p - e_ŷ) ⊗ h``: its norm
grows with the model's uncertainty, its direction carries what the item looks like. BADGE
picks the batch by k-means++ seeding on the ``g``: the first pick has the largest ``‖g‖``, each
next one is drawn with probability proportional to its squared distance to the nearest pick.

``g`` has ``C x (d + 1)`` values per item: for 10^6 items, 10 classes and d = 768, 30 GB. It
is never built: ``<a ⊗ h, a' ⊗ h'> = <a, a'> <h, h'>``, so ``‖g_i - g_j‖^2 = ‖a_i‖^2 ‖h_i‖^2 +
‖a_j‖^2 ‖h_j‖^2 - 2 <a_i, a_j> <h_i, h_j>``: each pick costs one product with ``A`` (n x C) and
one with ``H`` (n x d).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from alloop.errors import InvalidInputError
from alloop.strategies.base import Selection, SelectionContext, Strategy

__all__ = ["BadgeStrategy", "badge_select", "gradient_factors"]

logger = logging.getLogger(__name__)


def gradient_factors(proba: NDArray[Any], features: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(A, H)`` with ``g_i = A[i] ⊗ H[i]``: ``A = p - onehot(argmax p)`` and ``H`` the features
    with a bias column of ones."""
    P = np.asarray(proba, dtype=np.float64)
    A = P.copy()
    A[np.arange(len(A)), np.argmax(P, axis=1)] -= 1.0
    F = np.asarray(features, dtype=np.float64)
    H = np.concatenate([F, np.ones((len(F), 1))], axis=1)
    return A, H


def badge_select(
    proba: NDArray[Any],
    features: NDArray[Any],
    k: int,
    *,
    candidates: NDArray[np.int64],
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """k-means++ seeding on the candidates' gradient embeddings: ``(positions, distances)``, each
    pick's distance to the nearest earlier pick (its own norm for the first).

    Exact: the squared distances are those of the materialised embeddings up to float64
    rounding. Ties for the first pick go to the lowest position; when every candidate left
    coincides with a pick (all distances 0), the rest are drawn uniformly.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    if k > cand.size:
        raise InvalidInputError(f"BADGE cannot pick {k} of {cand.size} candidates.")
    A, H = gradient_factors(np.asarray(proba)[cand], np.asarray(features)[cand])
    a2 = np.einsum("ij,ij->i", A, A)
    h2 = np.einsum("ij,ij->i", H, H)
    g2 = a2 * h2  # ‖g_i‖^2
    picks, dist = np.empty(k, np.int64), np.empty(k, np.float64)
    first = int(np.argmax(g2))
    picks[0], dist[0] = first, np.sqrt(g2[first])
    d2 = np.full(cand.size, np.inf)
    open_ = np.ones(cand.size, bool)
    c = first
    for t in range(1, k):
        open_[c] = False
        to_c = g2 + g2[c] - 2.0 * (A @ A[c]) * (H @ H[c])
        np.minimum(d2, np.maximum(to_c, 0.0), out=d2)
        weights = np.where(open_, d2, 0.0)
        total = weights.sum()
        if total > 0:
            c = int(rng.choice(cand.size, p=weights / total))
        else:  # the candidates left all coincide with picks
            c = int(rng.choice(np.flatnonzero(open_)))
        picks[t], dist[t] = c, np.sqrt(d2[c])
    return cand[picks], dist


class BadgeStrategy(Strategy):
    """Diverse and uncertain batches from gradient embeddings (BADGE, Ash et al., ICLR 2020).

    Notes
    -----
    Needs the model's class probabilities and its penultimate features (the input of its last,
    linear layer): the ``sklearn`` learner gives them for linear models (logistic regression,
    SGD with a probabilistic loss: the features after the pipeline's scaling) and for
    ``MLPClassifier`` (its last hidden layer), ``kd_student`` for its heads (the standardised
    features); another learner is refused when the project is loaded. Cost per pick: two
    matrix-vector products over the candidates (``n x C`` and ``n x d``); memory: the
    candidates' probabilities and features in float64. Scores are each pick's distance to the
    nearest earlier pick in gradient space.
    """

    name: ClassVar[str] = "badge"
    requires: ClassVar[frozenset[str]] = frozenset({"proba", "penultimate"})

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"))
        features = np.asarray(ctx.require("penultimate"))
        if len(features) != ctx.n_samples:
            raise InvalidInputError(
                f"penultimate features have {len(features)} rows but the pool has {ctx.n_samples} positions."
            )
        positions, scores = badge_select(proba, features, k, candidates=ctx.candidates, rng=ctx.rng)
        return Selection(positions=positions, scores=scores)
