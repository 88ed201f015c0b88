"""BADGE: factorised gradient-embedding distances against the materialised embeddings; the
penultimate features the learners give are the inputs of their last layers."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.strategies.badge import BadgeStrategy, badge_select, gradient_factors
from alloop.strategies.base import SelectionContext


def materialised(proba, features, k, candidates, rng):
    """BADGE as written in the paper's code: build every g = (p - e_yhat) ⊗ [h, 1], then k-means++."""
    P, F = proba[candidates], features[candidates]
    A = P.copy()
    A[np.arange(len(A)), P.argmax(1)] -= 1
    H = np.hstack([F, np.ones((len(F), 1))])
    G = np.einsum("ic,id->icd", A, H).reshape(len(A), -1)
    first = int(np.argmax((G ** 2).sum(1)))
    picks, dist = [first], [np.linalg.norm(G[first])]
    d2 = np.full(len(G), np.inf)
    for _ in range(1, k):
        d2 = np.minimum(d2, ((G - G[picks[-1]]) ** 2).sum(1))
        w = d2.copy()
        w[picks] = 0
        c = int(rng.choice(len(G), p=w / w.sum()))
        picks.append(c)
        dist.append(np.sqrt(d2[c]))
    return candidates[np.array(picks)], np.array(dist)


def data(n=200, c=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)) * 2
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return P, rng.standard_normal((n, d))


def test_factors_give_the_gradient_embedding():
    P, F = data(10)
    A, H = gradient_factors(P, F)
    for i in range(10):
        onehot = np.eye(4)[P[i].argmax()]
        assert np.allclose(np.outer(A[i], H[i]), np.outer(P[i] - onehot, np.append(F[i], 1.0)))


@pytest.mark.parametrize("k", [1, 5, 40])
def test_factorised_picks_and_distances_equal_the_materialised_ones(k):
    P, F = data()
    cand = np.setdiff1d(np.arange(200), np.arange(0, 200, 7))
    got = badge_select(P, F, k, candidates=cand, rng=np.random.default_rng(3))
    want = materialised(P, F, k, cand, np.random.default_rng(3))
    assert np.array_equal(got[0], want[0])
    assert np.allclose(got[1], want[1], rtol=1e-9, atol=1e-9)


def test_a_confident_item_has_no_gradient_and_the_first_pick_is_the_largest():
    P, F = data(50)
    P[7] = np.eye(4)[2]  # certain: p - e_yhat = 0
    F[7] *= 100
    F[11] *= 10
    picks, dist = badge_select(P, F, 1, candidates=np.arange(50), rng=np.random.default_rng(0))
    assert picks[0] == 11 and dist[0] > 0
    A, _ = gradient_factors(P, F)
    assert np.linalg.norm(A[7]) == 0


def test_duplicates_left_are_drawn_uniformly_and_the_same_seed_repeats():
    P = np.tile(data(1)[0], (6, 1))
    F = np.zeros((6, 3))
    picks, dist = badge_select(P, F, 4, candidates=np.arange(6), rng=np.random.default_rng(1))
    assert len(set(picks.tolist())) == 4 and np.all(dist[1:] == 0)
    P, F = data()
    ctx = lambda s: SelectionContext(200, np.arange(20, 200), np.arange(20), np.random.default_rng(s),  # noqa: E731
                                     proba=P, extras={"penultimate": F})
    assert np.array_equal(BadgeStrategy().select(ctx(4), 10).positions, BadgeStrategy().select(ctx(4), 10).positions)


def softmax(z):
    z = z - z.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_penultimate_features_are_the_last_layers_inputs():
    from sklearn.datasets import load_iris

    from alloop.learners.sklearn import SklearnLearner, SklearnParams

    X, y = load_iris(return_X_y=True)
    lr = SklearnLearner(SklearnParams(scale=True)).fit(X, y, n_classes=3, seed=0)
    h = lr.penultimate(X)
    final = lr.model_.steps[-1][1]
    assert lr.gives_penultimate and np.allclose(softmax(h @ final.coef_.T + final.intercept_), lr.predict_proba(X))
    mlp = SklearnLearner(SklearnParams(estimator="sklearn.neural_network.MLPClassifier",
                                       params={"hidden_layer_sizes": [8, 5], "max_iter": 50})).fit(
        X, y, n_classes=3, seed=0)
    h = mlp.penultimate(X)
    assert h.shape == (150, 5)
    assert np.allclose(softmax(h @ mlp.model_.coefs_[-1] + mlp.model_.intercepts_[-1]), mlp.predict_proba(X))
    forest = SklearnLearner(SklearnParams(estimator="sklearn.ensemble.RandomForestClassifier",
                                          params={"n_estimators": 5})).fit(X, y, n_classes=3, seed=0)
    assert not forest.gives_penultimate and forest.penultimate(X) is None


def test_kd_student_penultimate_features_are_its_heads_inputs():
    import torch

    from alloop.learners.kd_student import KDStudentLearner

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5)).astype(np.float32) * 3 + 1
    y = rng.integers(0, 3, 60)
    kd = KDStudentLearner.from_params({"kd_weight": 0.0, "alpha": 0.0, "epochs": 3}).fit(X, y, n_classes=3, seed=0)
    h = kd.penultimate(X)
    ce = kd.state_["ce"]
    logits = h @ ce["weight"].numpy().T.astype(np.float64) + ce["bias"].numpy()
    logits[:, kd.state_["unseen"].numpy()] = -np.inf
    kdh = kd.state_["kd"]
    kd_logits = h @ kdh["weight"].numpy().T.astype(np.float64) + kdh["bias"].numpy()
    a, b = kd.params.alpha, kd.params.beta
    assert np.allclose((1 - a) * softmax(logits) + a * softmax(kd_logits / b), kd.predict_proba(X), atol=1e-5)
    assert torch is not None
