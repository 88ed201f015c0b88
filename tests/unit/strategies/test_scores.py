"""Uncertainty kernels, top_k, and the uncertainty strategies built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alloop.errors import InvalidInputError, PoolExhaustedError
from alloop.strategies._scores import entropy, least_confidence, margin, top_k
from alloop.strategies.base import SelectionContext
from alloop.strategies.uncertainty import (
    EntropyStrategy,
    LeastConfidenceStrategy,
    MarginStrategy,
)

KERNELS = [entropy, margin, least_confidence]

P = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.45, 0.1, 0.45]])


def test_entropy_equals_hand_computation():
    h0 = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    h3 = -(2 * 0.45 * math.log(0.45) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(entropy(P), [h0, 0.0, math.log(3), h3], rtol=1e-12, atol=1e-15)


def test_margin_equals_hand_computation():
    np.testing.assert_allclose(margin(P), [1 - 0.2, 0.0, 1.0, 1.0], rtol=1e-12, atol=1e-15)


def test_least_confidence_equals_hand_computation():
    np.testing.assert_allclose(least_confidence(P), [0.5, 0.0, 2 / 3, 0.55], rtol=1e-12)


def test_single_class_margin_takes_second_as_zero():
    np.testing.assert_allclose(margin([[0.7], [1.0]]), [0.3, 0.0])


def test_kernels_accept_float32_and_lists_and_return_float64():
    for f in KERNELS:
        out = f(P.astype(np.float32).tolist())
        assert out.dtype == np.float64 and out.shape == (4,)
        np.testing.assert_allclose(out, f(P), atol=1e-6)


proba_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(2, 7)),
    elements=st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False),
).filter(lambda a: (a.sum(axis=1) > 1e-3).all()).map(lambda a: a / a.sum(axis=1, keepdims=True))


@settings(max_examples=150, deadline=None)
@given(proba_rows, st.randoms(use_true_random=False))
def test_kernels_are_invariant_to_class_permutation(p, rnd):
    perm = list(range(p.shape[1]))
    rnd.shuffle(perm)
    q = p[:, perm]
    np.testing.assert_allclose(entropy(q), entropy(p), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(margin(q), margin(p))
    np.testing.assert_array_equal(least_confidence(q), least_confidence(p))


@settings(max_examples=150, deadline=None)
@given(proba_rows)
def test_kernels_stay_within_their_ranges(p):
    c = p.shape[1]
    assert (entropy(p) >= -1e-12).all() and (entropy(p) <= math.log(c) + 1e-9).all()
    assert (margin(p) >= -1e-12).all() and (margin(p) <= 1 + 1e-12).all()
    lc = least_confidence(p)
    assert (lc >= -1e-12).all() and (lc <= 1 - 1 / c + 1e-9).all()


def test_one_hot_rows_are_least_informative_and_uniform_most():
    p = np.array([[0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    for f in KERNELS:
        s = f(p)
        assert s[0] == s.min() and s[1] == s.max()


@pytest.mark.parametrize("f", KERNELS)
@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.array([0.5, 0.5]), ["2-D", "(n_samples, n_classes)", "got shape (2,)"]),
        (np.zeros((3, 0)), ["at least one class", "(3, 0)"]),
        (np.array([[0.5, 0.5], [np.nan, 1.0]]), ["finite", "row 1"]),
        (np.array([[0.5, 0.5], [0.2, 0.8], [1.2, -0.2]]), ["non-negative", "row 2", "softmax"]),
        (np.array([["a", "b"]]), ["real numbers", "dtype <U1"]),
    ],
)
def test_kernels_reject_bad_input_with_clear_messages(f, bad, words):
    with pytest.raises(InvalidInputError) as err:
        f(bad)
    for w in words:
        assert w in str(err.value)
    assert isinstance(err.value, ValueError)


def test_top_k_orders_by_score_then_lowest_position():
    s = np.array([1.0, 3.0, 3.0, 2.0, 3.0, -1.0])
    assert top_k(s, 1).tolist() == [1]
    assert top_k(s, 2).tolist() == [1, 2]
    assert top_k(s, 4).tolist() == [1, 2, 4, 3]
    assert top_k(s, 6).tolist() == [1, 2, 4, 3, 0, 5]
    assert top_k(s, 0).tolist() == []
    assert top_k(s, 3).dtype == np.int64


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 40), elements=st.integers(-3, 3).map(float)),
    st.data(),
)
def test_top_k_equals_a_full_sort(scores, data):
    k = data.draw(st.integers(0, scores.size))
    expected = sorted(range(scores.size), key=lambda i: (-scores[i], i))[:k]
    assert top_k(scores, k).tolist() == expected


def test_top_k_large_input_matches_stable_argsort():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 50, 200_000).astype(np.float64)  # many ties
    expected = np.argsort(-s, kind="stable")[:1000]
    np.testing.assert_array_equal(top_k(s, 1000), expected)


@pytest.mark.parametrize(
    ("scores", "k", "exc", "words"),
    [
        (np.ones(5), 6, PoolExhaustedError, ["Asked to select 6", "only 5"]),
        (np.ones(5), -1, InvalidInputError, ["integer >= 0", "-1"]),
        (np.ones(5), 2.0, InvalidInputError, ["integer >= 0", "2.0"]),
        (np.ones((2, 2)), 1, InvalidInputError, ["1-D", "(2, 2)"]),
        (np.array([1.0, np.inf]), 1, InvalidInputError, ["finite", "position 1"]),
    ],
)
def test_top_k_rejects_bad_input(scores, k, exc, words):
    with pytest.raises(exc) as err:
        top_k(scores, k)
    for w in words:
        assert w in str(err.value)


def _ctx(proba, candidates, seed=0):
    n = len(proba)
    labeled = np.setdiff1d(np.arange(n), candidates)
    return SelectionContext(n, np.asarray(candidates), labeled, np.random.default_rng(seed), proba=proba)


@pytest.mark.parametrize(
    ("cls", "kernel"),
    [(EntropyStrategy, entropy), (MarginStrategy, margin), (LeastConfidenceStrategy, least_confidence)],
)
def test_uncertainty_strategies_pick_the_top_scores_among_candidates(cls, kernel):
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(4) * 0.5, 50)
    proba[7] = proba[11] = 0.25  # the most uncertain rows under every kernel...
    cand = np.arange(10, 50)  # ...but row 7 is not a candidate
    sel = cls().select(_ctx(proba, cand), 5)
    scores = kernel(proba)
    expected = cand[np.argsort(-scores[cand], kind="stable")[:5]]
    np.testing.assert_array_equal(sel.positions, expected)
    assert sel.positions[0] == 11
    np.testing.assert_allclose(sel.scores, scores[expected])
    assert 7 not in sel.positions


def test_uncertainty_strategy_validates_candidate_probabilities():
    proba = np.full((6, 2), 0.5)
    proba[4] = [np.nan, 1.0]
    with pytest.raises(InvalidInputError, match="finite"):
        EntropyStrategy().select(_ctx(proba, np.arange(2, 6)), 2)
