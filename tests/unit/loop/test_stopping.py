"""Stopping without a test set: kappa and normalised entropy against direct computations, and
the rules' windows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from alloop.config import LoopConfig
from alloop.loop.policies import stop_reason
from alloop.loop.stopping import cohen_kappa, normalised_entropy, stopping_reason


@pytest.mark.parametrize("seed", range(5))
def test_kappa_equals_sklearns(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 300)
    b = np.where(rng.random(300) < 0.7, a, rng.integers(0, 4, 300))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_full_agreement_is_one_even_on_a_single_class():
    assert cohen_kappa(np.zeros(10), np.zeros(10)) == 1.0
    assert cohen_kappa(np.array([1, 2, 2]), np.array([1, 2, 2])) == 1.0


def test_normalised_entropy():
    p = np.array([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert np.allclose(normalised_entropy(p), [0.0, 1.0, np.log(2) / np.log(3)])


def test_stabilizing_predictions_needs_a_full_window_whose_mean_reaches_the_threshold():
    loop = LoopConfig(stop_kappa=0.99, stop_window=3)
    assert stopping_reason(loop, [{"stop_kappa": 1.0}, {"stop_kappa": 1.0}]) is None  # window not full
    assert stopping_reason(loop, [{"stop_kappa": 1.0}, {"stop_kappa": 1.0}, {}]) is None  # a model without one
    assert stopping_reason(loop, [{"stop_kappa": 1.0}, {"stop_kappa": 0.99}, {"stop_kappa": 0.97}]) is None
    why = stopping_reason(loop, [{"stop_kappa": 1.0}, {"stop_kappa": 0.99}, {"stop_kappa": 0.985}, {"stop_kappa": 0}])
    assert why is not None and "0.9917" in why
    assert stop_reason(loop, 4, 10, 100, None, [{"stop_kappa": 1.0}] * 3) == why.replace("0.9917", "1.0000")


def test_overall_uncertainty_reads_the_latest_model():
    loop = LoopConfig(stop_uncertainty=0.05)
    assert stopping_reason(loop, [{"stop_uncertainty": 0.06}, {"stop_uncertainty": 0.01}]) is None
    assert "0.0400 < 0.05" in stopping_reason(loop, [{"stop_uncertainty": 0.04}])
    assert stopping_reason(LoopConfig(), [{"stop_kappa": 1.0, "stop_uncertainty": 0.0}] * 5) is None
