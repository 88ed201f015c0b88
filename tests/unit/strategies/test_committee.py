"""Vote entropy and BALD against direct formulas; the ensemble learner's members."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alloop.learners.ensemble import EnsembleLearner, bootstrap_rows
from alloop.strategies.base import SelectionContext
from alloop.strategies.committee import BaldStrategy, VoteEntropyStrategy, bald, vote_entropy


def H(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_scores_equal_the_formulas():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), (50, 4))  # 50 items, 4 members, 3 classes
    for i in range(50):
        votes = [int(np.argmax(P[i, m])) for m in range(4)]
        assert vote_entropy(P)[i] == pytest.approx(H([votes.count(c) / 4 for c in range(3)]))
        mean = P[i].mean(axis=0)
        assert bald(P)[i] == pytest.approx(H(mean) - np.mean([H(P[i, m]) for m in range(4)]))


def test_bald_prefers_confident_disagreement_to_shared_doubt():
    agree_unsure = np.full((1, 2, 2), 0.5)
    disagree_sure = np.array([[[0.99, 0.01], [0.01, 0.99]]])
    P = np.concatenate([agree_unsure, disagree_sure])
    ctx = SelectionContext(2, np.arange(2), np.empty(0, np.int64), np.random.default_rng(0), proba=P.mean(1),
                           extras={"members": P})
    assert BaldStrategy().select(ctx, 1).positions.tolist() == [1]
    assert VoteEntropyStrategy().select(ctx, 1).positions.tolist() == [1]  # both vote 0 on item 0 (ties: argmax)


def test_members_train_on_bootstrap_resamples_and_the_ensemble_averages_them():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    ens = EnsembleLearner.from_params({"members": 4}).fit(X, y, n_classes=3, seed=5)
    M = ens.member_proba(X)
    assert M.shape == (150, 4, 3)
    assert np.allclose(ens.predict_proba(X), M.mean(axis=1))
    assert not np.allclose(M[:, 0], M[:, 1])  # different resamples, different models
    again = EnsembleLearner.from_params({"members": 4}).fit(X, y, n_classes=3, seed=5)
    assert np.array_equal(again.member_proba(X), M)


def test_a_bootstrap_resample_keeps_two_classes():
    y = np.array([0] * 19 + [1])
    for seed in range(20):
        rows = bootstrap_rows(y, np.random.default_rng(seed))
        assert set(y[rows]) == {0, 1}
