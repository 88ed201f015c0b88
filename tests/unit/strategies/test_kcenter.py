"""k_center_greedy against a brute-force farthest-first, plus the coreset strategy."""

from __future__ import annotations

import tracemalloc
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alloop.errors import ConfigError, EmptyPoolError, InvalidInputError, PoolExhaustedError
from alloop.strategies import kcenter
from alloop.strategies.base import SelectionContext
from alloop.strategies.coreset import CoresetStrategy
from alloop.strategies.kcenter import k_center_greedy

METHODS = ["naive", "pruned"]

# every test here checks exact (bit for bit) claims of float32 BLAS kernels: rerun under each
# OpenBLAS kernel family by make test
pytestmark = pytest.mark.numerics


@pytest.fixture
def always_sparse(monkeypatch):
    """Make the pruned method gather the rows it cannot skip, however many there are."""
    monkeypatch.setattr(kcenter, "_DENSE_FRACTION", 1.01)


def brute(X, k, init=(), candidates=None, metric="euclidean"):
    """Farthest-first from the full float64 distance matrix (the definition, nothing clever)."""
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    n = len(X)
    init = np.unique(np.asarray(init, dtype=np.int64))
    cand = np.arange(n) if candidates is None else np.unique(candidates)
    cand = np.setdiff1d(cand, init)
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    D[D < 1e-9] = 0.0
    mind = np.full(n, -np.inf)
    picks, scores = [], []
    if init.size:
        mind[cand] = D[np.ix_(cand, init)].min(axis=1)
    else:  # documented start: the candidate farthest from the candidates' mean
        dm = np.full(n, -np.inf)
        dm[cand] = ((X[cand] - X[cand].mean(axis=0)) ** 2).sum(1)
        p = int(np.argmax(dm))
        picks.append(p), scores.append(dm[p])
        mind[cand] = D[cand, p]
        mind[p] = -np.inf
    while len(picks) < k:
        p = int(np.argmax(mind))
        picks.append(p), scores.append(mind[p])
        mind = np.minimum(mind, D[:, p])
        mind[p] = -np.inf
    s = np.array(scores)
    return np.array(picks, dtype=np.int64), (np.sqrt(s) if metric == "euclidean" else s / 2)


def _case(seed):
    """A small random problem: gaussian, integer grid (exact ties) or with duplicated rows."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 70)), int(rng.integers(2, 12))
    kind = seed % 3
    metric = "euclidean" if kind == 1 else ("cosine" if seed % 2 else "euclidean")
    if kind == 1:
        X = rng.integers(-2, 3, (n, d)).astype(np.float64)
    else:
        X = rng.standard_normal((n, d))
        if kind == 2:
            X[rng.integers(0, n, n // 2)] = X[rng.integers(0, n, n // 2)]
    X[~X.any(axis=1)] = 1.0
    n_init = int(rng.integers(1 if kind == 1 else 0, min(6, n)))  # grid data: exact ties need init
    init = rng.choice(n, n_init, replace=False)
    cand = None if seed % 4 else rng.choice(n, int(rng.integers(1, n + 1)), replace=False)
    m = np.setdiff1d(np.arange(n) if cand is None else cand, init).size
    return X, int(rng.integers(1, m + 1)) if m else 0, init, cand, metric


@pytest.mark.parametrize("method", [*METHODS, "pruned-sparse"])
@pytest.mark.parametrize("seed", range(120))
def test_equals_brute_force_farthest_first(seed, method, request):
    if method == "pruned-sparse":
        request.getfixturevalue("always_sparse")
        method = "pruned"
    X, k, init, cand, metric = _case(seed)
    if k == 0:
        with pytest.raises(EmptyPoolError):
            k_center_greedy(X, 1, init=init, candidates=cand, metric=metric, method=method)
        return
    exp_pos, exp_sc = brute(X, k, init, cand, metric)
    for chunk in (1, 5, 32768):
        pos, sc = k_center_greedy(X, k, init=init, candidates=cand, metric=metric, method=method,
                                  chunk_rows=chunk)
        np.testing.assert_array_equal(pos, exp_pos)
        np.testing.assert_allclose(sc, exp_sc, rtol=1e-4, atol=2e-3)


@settings(max_examples=120, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(1, 4)),
               elements=st.integers(-3, 3).map(float)),
    st.data(),
)
def test_integer_grids_tie_to_the_lowest_position(X, data):
    """Exact arithmetic: many exact ties, which must go to the lowest position."""
    n = len(X)
    init = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(3, n - 1), unique=True))
    k = data.draw(st.integers(1, n - len(init)))
    method = data.draw(st.sampled_from(METHODS))
    dense_fraction = data.draw(st.sampled_from([kcenter._DENSE_FRACTION, 1.01]))
    with mock.patch.object(kcenter, "_DENSE_FRACTION", dense_fraction):
        pos, sc = k_center_greedy(X, k, init=init, method=method,
                                  chunk_rows=data.draw(st.integers(1, 40)))
    exp_pos, exp_sc = brute(X, k, init)
    np.testing.assert_array_equal(pos, exp_pos)
    np.testing.assert_allclose(sc, exp_sc, rtol=1e-6)


@pytest.mark.parametrize("dense_fraction", [0.25, 1.01])
def test_collinear_points_on_the_pruning_boundary(dense_fraction, monkeypatch):
    """d(c, a) == 2 r exactly: a point exactly as far from the new centre as from its own."""
    monkeypatch.setattr(kcenter, "_DENSE_FRACTION", dense_fraction)
    X = np.arange(0, 40, dtype=np.float64)[:, None] * np.array([[1.0, 0.0]])
    for method in METHODS:
        pos, sc = k_center_greedy(X, 30, init=[0], method=method)
        exp_pos, exp_sc = brute(X, 30, [0])
        np.testing.assert_array_equal(pos, exp_pos)
        np.testing.assert_allclose(sc, exp_sc)


@pytest.mark.parametrize("dense_fraction", [0.25, 1.01])
def test_duplicates_of_centres_score_zero_and_come_last_in_position_order(dense_fraction, monkeypatch):
    monkeypatch.setattr(kcenter, "_DENSE_FRACTION", dense_fraction)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((10, 16)) * 30
    X = np.vstack([base, base[[3, 1, 3]]])  # rows 10..12 duplicate rows 3, 1, 3
    for metric in ("euclidean", "cosine"):
        for method in METHODS:
            pos, sc = k_center_greedy(X, 11, init=[1, 3], metric=metric, method=method)
            assert pos[-3:].tolist() == [10, 11, 12]
            assert sc[-3:].tolist() == [0.0, 0.0, 0.0]
            assert (sc[:-3] > 0).all()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pruned_equals_naive_bit_for_bit_on_clustered_data(metric, monkeypatch):
    computed = []
    sparse = kcenter._sparse_update
    monkeypatch.setattr(kcenter, "_sparse_update", lambda pool, p, idx, *a: (
        computed.append(idx.size), sparse(pool, p, idx, *a)))
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 24)) * 4
    X = (centres[rng.integers(0, 20, 6000)] + rng.standard_normal((6000, 24))).astype(np.float32)
    X[100:110] = X[200]  # duplicates
    for init, cand in (([], None), (np.arange(5), None), (np.arange(3), np.arange(0, 6000, 3))):
        a = k_center_greedy(X, 400, init=init, candidates=cand, metric=metric, method="naive")
        b = k_center_greedy(X, 400, init=init, candidates=cand, metric=metric, method="pruned")
        c = k_center_greedy(X, 400, init=init, candidates=cand, metric=metric)  # auto
        for other in (b, c):
            np.testing.assert_array_equal(a[0], other[0])
            np.testing.assert_array_equal(a[1], other[1])
    # the pruning really skips work: most picks touched under 10% of the rows
    assert len(computed) > 2 * 300 and np.median(computed) < 600


def test_lanes_put_every_gathered_row_at_a_distinct_congruent_slot():
    rng = np.random.default_rng(3)
    cases = [np.sort(rng.choice(100_000, 100, replace=False)), np.arange(0, 4000, 16) + 5,
             np.arange(7), np.array([31]), np.sort(rng.choice(100_000, 3000, replace=False))]
    for idx in cases:
        ii, slot, n16, later = kcenter._lanes(idx, 256)
        assert sorted(ii.tolist() + later.tolist()) == idx.tolist()
        assert ((slot - ii) % 16 == 0).all() and np.unique(slot).size == ii.size
        assert n16 % 16 == 0 and slot.max() < n16 <= 256
        assert later.size == 0 or ii.size >= 16  # a full lane at least
    assert kcenter._lanes(cases[0], 256)[3].size == 0  # 100 rows in 16 lanes fit 256 slots
    assert kcenter._lanes(cases[1], 256)[0].size == 16  # one lane: 16 rows now, the rest later
    assert kcenter._lanes(cases[4], 256)[0].size == 256  # every slot used


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pruned_equals_naive_through_the_congruent_slots_too(metric, monkeypatch):
    """The pruned method's second gather path (for BLAS kernels that round a row by its
    position in the call) is used here whatever the kernel."""
    monkeypatch.setattr(kcenter, "_position_free", lambda d: False)
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 21)) * 4
    X = (centres[rng.integers(0, 30, 4000)] + rng.standard_normal((4000, 21))).astype(np.float32)
    for init in ([], np.arange(4)):
        a = k_center_greedy(X, 300, init=init, metric=metric, method="naive", chunk_rows=1000)
        b = k_center_greedy(X, 300, init=init, metric=metric, method="pruned", chunk_rows=1000)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("method", METHODS)
def test_chunk_size_does_not_change_the_result(method):
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((8, 37)) * 5
    X = (centres[rng.integers(0, 8, 701)] + rng.standard_normal((701, 37))).astype(np.float32)
    X[50:60] = X[7]
    ref = k_center_greedy(X, 120, init=[0, 1, 2], method=method)
    for chunk in (1, 3, 16, 17, 100, 701, 10**6):
        got = k_center_greedy(X, 120, init=[0, 1, 2], method=method, chunk_rows=chunk)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunk_size_does_not_choose_between_equidistant_centres(metric):
    """Rows halfway between two initial centres (to float32 rounding): the GEMM that ranks the
    centres rounds differently per block shape and BLAS kernel, so it must not decide which
    of the two distances a row keeps."""
    rng = np.random.default_rng(0)
    d, n = 37, 3000
    a, e = rng.standard_normal((40, d)), rng.standard_normal((40, d)) * 0.5
    t = rng.integers(0, 40, n)
    Z = rng.standard_normal((n, d)) * 0.3
    Z -= (np.einsum("ij,ij->i", Z, e[t]) / np.einsum("ij,ij->i", e[t], e[t]))[:, None] * e[t]
    X = np.concatenate([a + e, a - e, a[t] + Z]).astype(np.float32)  # rows: on the bisectors
    init = np.arange(80)
    ref = k_center_greedy(X, 200, init=init, metric=metric, method="naive")
    for chunk in (1, 16, 48, 100, 1000):
        for method in METHODS:
            got = k_center_greedy(X, 200, init=init, metric=metric, method=method, chunk_rows=chunk)
            np.testing.assert_array_equal(got[0], ref[0], err_msg=f"chunk_rows={chunk} {method}")
            np.testing.assert_array_equal(got[1], ref[1], err_msg=f"chunk_rows={chunk} {method}")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_first_pick_does_not_depend_on_chunk_size(metric):
    """Empty init: the first pick is the farthest from the mean, summed in fixed blocks."""
    rng = np.random.default_rng(8)
    X = (rng.standard_normal((997, 29)) * rng.uniform(0.1, 10, 29)).astype(np.float32)
    ref = k_center_greedy(X, 50, metric=metric)
    for chunk in (1, 7, 16, 300, 10**6):
        got = k_center_greedy(X, 50, metric=metric, chunk_rows=chunk)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_float64_input_gives_the_same_result_as_float32_and_is_not_modified():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 10))
    before = X.copy()
    a = k_center_greedy(X, 50, init=[3])
    b = k_center_greedy(np.asfortranarray(X.astype(np.float32)), 50, init=[3])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(X, before)
    assert a[0].dtype == np.int64 and a[1].dtype == np.float64


def test_scores_never_increase_and_positions_are_unique_candidates():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((800, 8))
    cand = np.arange(100, 800, 2)
    pos, sc = k_center_greedy(X, 300, init=np.arange(10), candidates=cand)
    assert np.unique(pos).size == 300 and np.isin(pos, cand).all()
    assert (np.diff(sc) <= 1e-6).all()


def test_init_positions_are_never_picked_even_if_listed_as_candidates():
    X = np.random.default_rng(6).standard_normal((20, 3))
    pos = k_center_greedy(X, 15, init=[0, 5, 9], candidates=np.arange(18), out_scores=False)
    assert not np.isin(pos, [0, 5, 9, 18, 19]).any() and pos.size == 15
    with pytest.raises(PoolExhaustedError, match="only 15 unlabeled"):
        k_center_greedy(X, 16, init=[0, 5, 9], candidates=np.arange(18))


def test_k_zero_returns_empty_arrays():
    pos, sc = k_center_greedy(np.ones((4, 2)), 0)
    assert pos.shape == sc.shape == (0,)


def test_initial_distances_are_computed_in_bounded_blocks():
    """500 centres x 20000 rows would be a 40 MB matrix; chunked it must stay far below."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((20000, 64)).astype(np.float32)
    init = np.arange(500)

    def peak(chunk):
        tracemalloc.start()
        try:
            pos = k_center_greedy(X, 20, init=init, chunk_rows=chunk, out_scores=False)
            return tracemalloc.get_traced_memory()[1], pos
        finally:
            tracemalloc.stop()

    small, pos_small = peak(256)
    big, pos_big = peak(20000)
    np.testing.assert_array_equal(pos_small, pos_big)
    assert small < 4 * 2**20, small
    assert small < big / 2, (small, big)


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        (dict(X=np.ones(5), k=1), InvalidInputError, ["2-D", "got shape (5,)"]),
        (dict(X=np.ones((5, 0)), k=1), InvalidInputError, ["n_features >= 1", "(5, 0)"]),
        (dict(X=np.array([[1.0], [np.nan]]), k=1), InvalidInputError, ["finite", "row 1"]),
        (dict(X=np.ones((3, 2), bool), k=1), InvalidInputError, ["real numbers", "bool"]),
        (dict(X=np.ones((3, 2)), k=4), PoolExhaustedError, ["select 4", "only 3", "Lower k"]),
        (dict(X=np.ones((3, 2)), k=1, init=[0, 1, 2]), EmptyPoolError, ["no candidates"]),
        (dict(X=np.ones((3, 2)), k=1, candidates=[]), EmptyPoolError, ["no candidates"]),
        (dict(X=np.ones((3, 2)), k=-1), InvalidInputError, ["k must be an integer >= 0", "-1"]),
        (dict(X=np.ones((3, 2)), k=1, metric="l1"), InvalidInputError, ["euclidean, cosine", "'l1'"]),
        (dict(X=np.ones((3, 2)), k=1, method="fast"), InvalidInputError, ["auto, naive, pruned", "'fast'"]),
        (dict(X=np.ones((3, 2)), k=1, chunk_rows=0), InvalidInputError, ["chunk_rows", ">= 1", "got 0"]),
        (dict(X=np.ones((3, 2)), k=1, init=[3]), InvalidInputError, ["init", "[0, 3)", "got 3"]),
        (dict(X=np.ones((3, 2)), k=1, candidates=[True, False, True]), InvalidInputError,
         ["integer row positions", "np.flatnonzero"]),
        (dict(X=np.array([[1.0, 0.0], [0.0, 0.0]]), k=1, metric="cosine"), InvalidInputError,
         ["non-zero rows", "row 1 is all zeros", "metric='euclidean'"]),
        (dict(X=np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [0.0, 0.0]]), k=1, init=[3],
              candidates=[0], metric="cosine"), InvalidInputError, ["row 3 is all zeros"]),
        (dict(X=np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [1e30, 0.0]]), k=1,
              candidates=[0, 3]), InvalidInputError, ["finite", "row 3", "huge"]),
    ],
)
def test_errors_say_what_was_expected_and_what_was_got(kwargs, exc, words):
    with pytest.raises(exc) as err:
        k_center_greedy(**kwargs)
    for w in words:
        assert w in str(err.value)


def _coreset_ctx(n=300, seed=0, labeled=range(5)):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 12))
    labeled = np.asarray(list(labeled), dtype=np.int64)
    cand = np.setdiff1d(np.arange(0, n, 2), labeled)
    return SelectionContext(n, cand, labeled, rng, embeddings=emb)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_coreset_strategy_is_k_center_from_the_labeled_set(metric):
    ctx = _coreset_ctx()
    sel = CoresetStrategy(metric=metric).select(ctx, 25)
    pos, sc = brute(ctx.embeddings, 25, ctx.labeled, ctx.candidates, metric)
    np.testing.assert_array_equal(sel.positions, pos)
    np.testing.assert_allclose(sel.scores, sc, rtol=1e-4, atol=1e-5)


def test_coreset_cold_start_and_default_metric():
    ctx = _coreset_ctx(labeled=[])
    assert CoresetStrategy().metric == "cosine"
    sel = CoresetStrategy().select(ctx, 10)
    np.testing.assert_array_equal(sel.positions, brute(ctx.embeddings, 10, [], ctx.candidates, "cosine")[0])
    assert np.isfinite(sel.scores).all()


def test_coreset_rejects_an_unknown_metric():
    with pytest.raises(ConfigError, match="metric"):
        CoresetStrategy.from_params({"metric": "manhattan"})
