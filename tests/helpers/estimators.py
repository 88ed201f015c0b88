"""Real scikit-learn estimators that misbehave the way user models do (the learner imports them by path)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class NanProbaClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression whose probabilities are NaN for every other row (a diverged model)."""

    def fit(self, X, y):
        self.model_ = LogisticRegression(max_iter=200).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        p = self.model_.predict_proba(X)
        p[::2] = np.nan
        return p
