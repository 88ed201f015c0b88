from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.datasets import load_iris

from alloop import registry
from alloop.errors import ConfigError, LearnerError, NotFittedError


def learner(**params):
    return registry.create("learner", "sklearn", params)


def test_proba_has_a_column_per_label_even_unseen_classes():
    X, y = load_iris(return_X_y=True)
    mask = y < 2  # class 2 never seen
    lr = learner().fit(X[mask], y[mask], n_classes=3, seed=0)
    p = lr.predict_proba(X)
    assert p.shape == (150, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.all(p[:, 2] == 0)
    assert (np.argmax(p[mask], axis=1) == y[mask]).mean() > 0.95


def test_fresh_clone_each_fit_and_seeded():
    X, y = load_iris(return_X_y=True)
    est = "sklearn.ensemble.RandomForestClassifier"
    a = learner(estimator=est, params={"n_estimators": 10}).fit(X, y, n_classes=3, seed=1).predict_proba(X)
    b = learner(estimator=est, params={"n_estimators": 10}).fit(X, y, n_classes=3, seed=1).predict_proba(X)
    c = learner(estimator=est, params={"n_estimators": 10}).fit(X, y, n_classes=3, seed=2).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    lr = learner()
    lr.fit(X[:100], y[:100], n_classes=3, seed=0)
    first = lr.model_
    lr.fit(X, y, n_classes=3, seed=0)
    assert lr.model_ is not first


def test_save_and_load_roundtrip(tmp_path):
    X, y = load_iris(return_X_y=True)
    lr = learner(scale=True).fit(X, y, n_classes=3, seed=0)
    buf = io.BytesIO()
    lr.save(buf)
    path = tmp_path / "m.joblib"
    path.write_bytes(buf.getvalue())
    back = registry.load("learner", "sklearn").load(path, {"scale": True})
    np.testing.assert_array_equal(back.predict_proba(X), lr.predict_proba(X))


def test_errors():
    with pytest.raises(ConfigError, match="Cannot import estimator 'sklearn.nope.Thing'"):
        learner(estimator="sklearn.nope.Thing")
    with pytest.raises(ConfigError, match="not a probabilistic classifier"):
        learner(estimator="sklearn.preprocessing.StandardScaler")
    with pytest.raises(ConfigError, match="Invalid parameters"):
        learner(params={"not_a_param": 1})
    with pytest.raises(NotFittedError):
        learner().predict_proba(np.zeros((1, 4)))
    with pytest.raises(LearnerError, match="at least 2 classes"):
        learner().fit(np.zeros((3, 2)), np.array([1, 1, 1]), n_classes=3, seed=0)
