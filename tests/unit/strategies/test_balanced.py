"""balanced(<strategy>): quotas by predicted class, the wrapped strategy within each class."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.errors import ConfigError
from alloop.strategies.balanced import BalancedStrategy, quotas
from alloop.strategies.base import SelectionContext
from alloop.strategies.uncertainty import MarginStrategy


def test_quotas_split_evenly_respect_what_is_available_and_hand_the_rest_on():
    assert quotas(9, np.ones(3), np.array([10, 10, 10])).tolist() == [3, 3, 3]
    assert quotas(10, np.ones(3), np.array([10, 10, 10])).tolist() == [4, 3, 3]
    assert quotas(9, np.ones(3), np.array([1, 10, 10])).tolist() == [1, 4, 4]
    assert quotas(9, np.ones(3), np.array([0, 2, 10])).tolist() == [0, 2, 7]
    q = quotas(12, 1 / (np.array([30, 10, 0]) + 1), np.array([50, 50, 50]))  # inverse: the rarest most
    assert q.sum() == 12 and q[2] > q[1] > q[0]
    with pytest.raises(ValueError):
        quotas(5, np.ones(2), np.array([1, 2]))


def ctx_for(n=300, c=3, seed=0, labeled=20):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.array([3.0, 1.5, 1.2]), n)  # class 0 predicted most of the time
    labels = np.full(n, -1)
    labels[:labeled] = rng.integers(0, c, labeled)
    return SelectionContext(n, np.arange(labeled, n), np.arange(labeled), rng, proba=proba, labels=labels)


def test_each_class_quota_is_filled_by_margin_on_that_class_ranked_round_robin():
    ctx = ctx_for()
    sel = BalancedStrategy(strategy="margin").select(ctx, 9)
    pred = ctx.proba.argmax(1)
    assert np.bincount(pred[sel.positions], minlength=3).tolist() == [3, 3, 3]
    for c in range(3):  # within a class: margin's own picks among that class's candidates, in its order
        mine = ctx.candidates[pred[ctx.candidates] == c]
        sub = SelectionContext(ctx.n_samples, mine, ctx.labeled, np.random.default_rng(0), proba=ctx.proba)
        assert sel.positions[c::3].tolist() == MarginStrategy().select(sub, 3).positions.tolist()
    # a class the model is sure of gets no pick from plain margin, its quota from balanced
    proba = ctx.proba.copy()
    proba[pred == 2] = [0.02, 0.03, 0.95]
    sure = SelectionContext(ctx.n_samples, ctx.candidates, ctx.labeled, np.random.default_rng(0), proba=proba,
                            labels=ctx.labels)
    assert 2 not in pred[MarginStrategy().select(sure, 9).positions]
    assert np.bincount(pred[BalancedStrategy().select(sure, 9).positions], minlength=3).tolist() == [3, 3, 3]


def test_inverse_quotas_give_the_least_labeled_class_the_most():
    ctx = ctx_for(labeled=40)
    ctx.labels[:40] = np.repeat([0, 1, 2], [30, 9, 1])
    sel = BalancedStrategy(strategy="margin", quotas="inverse").select(ctx, 12)
    counts = np.bincount(ctx.proba.argmax(1)[sel.positions], minlength=3)
    assert counts[2] > counts[1] > counts[0]


def test_the_wrapper_asks_for_what_the_wrapped_strategy_needs():
    b = BalancedStrategy(strategy="coreset", strategy_params={"metric": "euclidean"})
    assert b.requires == {"proba", "labels", "embeddings"} and b.uses_backend
    with pytest.raises(ConfigError, match="cannot wrap 'ofds'"):
        BalancedStrategy.from_params({"strategy": "ofds"})
