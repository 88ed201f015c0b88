"""The sharded k-center greedy equals the kernel bit for bit; composable core-sets; the routing
of the core-set strategies. All on the local backend (its shard workers are plain objects); the
Ray cluster runs the same in tests/integration/execution/test_kcenter_ray.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from alloop.errors import InvalidInputError, PoolExhaustedError
from alloop.execution import LocalBackend
from alloop.strategies import kcenter
from alloop.strategies.base import SelectionContext
from alloop.strategies.coreset import CoresetStrategy
from alloop.strategies.kcenter import k_center_greedy
from alloop.strategies.kcenter_sharded import k_center_composable, k_center_greedy_sharded
from alloop.strategies.pcoreset import PCoresetStrategy

# exact (bit for bit) claims of float32 BLAS kernels, like test_kcenter.py
pytestmark = pytest.mark.numerics


def assert_same(ref, got):
    assert np.array_equal(ref[0], got[0])
    assert ref[1].dtype == got[1].dtype == np.float64
    assert np.array_equal(ref[1].view(np.int64), got[1].view(np.int64))  # the same bits


def random_case(rng):
    """A pool with duplicates or integer ties sometimes, d not always a multiple of 16, init
    empty or not, candidates few (compact copy) or many, k up to all candidates."""
    n = int(rng.integers(2, 2500))
    d = int(rng.choice([1, 3, 16, 17, 33]))
    X = rng.standard_normal((n, d)).astype(np.float32)
    if rng.random() < 0.3:  # exact duplicates
        X[rng.integers(0, n, n // 3)] = X[rng.integers(0, n, n // 3)]
    if rng.random() < 0.3:  # ties everywhere
        X = np.round(X * 2)
    metric = str(rng.choice(["euclidean", "cosine"]))
    if metric == "cosine":
        X[~X.any(axis=1)] = 1
    perm = rng.permutation(n)
    n_init = int(rng.integers(1, min(n - 1, 40) + 1)) if rng.random() < 0.7 else 0
    rest = perm[n_init:]
    cand = np.sort(rest[: max(1, int(rng.random() * rest.size))])
    k = int(cand.size) if rng.random() < 0.15 else int(min(cand.size, rng.integers(1, 50)))
    return X, dict(init=perm[:n_init], candidates=cand, metric=metric, method=str(rng.choice(["auto", "naive"])),
                   chunk_rows=int(rng.integers(1, 700))), k


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-when-many", "always-gather"])
def test_sharded_equals_the_kernel_bit_for_bit(seed, sparse, monkeypatch):
    if sparse:
        monkeypatch.setattr(kcenter, "_DENSE_FRACTION", 1.01)  # the shards gather what they cannot skip
    rng = np.random.default_rng(seed)
    for _ in range(6):
        X, kw, k = random_case(rng)
        ref = k_center_greedy(X, k, **kw)
        got = k_center_greedy_sharded(X, k, **kw, backend=LocalBackend(), shard_rows=int(rng.integers(1, 900)))
        assert_same(ref, got)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("init", [False, True])
@pytest.mark.parametrize("compact", [False, True])
def test_every_case_on_many_small_shards(metric, init, compact):
    rng = np.random.default_rng(11)
    n = 3000
    X = rng.standard_normal((n, 20)).astype(np.float32)
    X[::7] = X[3]  # duplicates across shards
    labeled = rng.choice(n, 30, replace=False) if init else np.empty(0, np.int64)
    rest = np.setdiff1d(np.arange(n), labeled)
    cand = rest[::3] if compact else rest
    kw = dict(init=labeled, candidates=cand, metric=metric)
    ref = k_center_greedy(X, 200, **kw)
    for rows in (1, 256, 300, 1000, 10**6):  # 256-row shards ... one shard
        assert_same(ref, k_center_greedy_sharded(X, 200, **kw, backend=LocalBackend(), shard_rows=rows))
    assert_same(ref, k_center_greedy_sharded(X, 200, **kw, shard_rows=1, max_shards=3))


def test_all_candidates_picked_with_ties_to_the_lowest_position():
    X = np.repeat(np.eye(4, dtype=np.float32), 300, axis=0)  # 1,200 rows, 4 distinct points
    ref = k_center_greedy(X, 1199, init=[5])
    got = k_center_greedy_sharded(X, 1199, init=[5], shard_rows=256)
    assert_same(ref, got)
    assert sorted(got[0].tolist()) == [i for i in range(1200) if i != 5]


def test_a_memory_mapped_pool_float64_input_and_out_scores(tmp_path):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "X.npy", rng.standard_normal((2000, 24)).astype(np.float32))
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert_same(k_center_greedy(X, 40, init=[1, 2]), k_center_greedy_sharded(X, 40, init=[1, 2], shard_rows=512))
    X64 = np.asarray(X, dtype=np.float64)
    assert_same(k_center_greedy(X64, 30), k_center_greedy_sharded(X64, 30, shard_rows=300))
    assert np.array_equal(k_center_greedy_sharded(X, 30, out_scores=False, shard_rows=300),
                          k_center_greedy(X, 30, out_scores=False))


def test_errors_are_the_kernels():
    X = np.ones((600, 3), np.float32)
    X[400, 1] = np.nan
    with pytest.raises(InvalidInputError, match="row 400"):
        k_center_greedy_sharded(X, 2, shard_rows=256)
    with pytest.raises(PoolExhaustedError):
        k_center_greedy_sharded(np.ones((5, 2)), 6)
    with pytest.raises(InvalidInputError, match="shard_rows"):
        k_center_greedy_sharded(np.ones((5, 2)), 1, shard_rows=0)
    assert k_center_greedy_sharded(np.ones((5, 2)), 0)[0].size == 0


class _Calls:
    def __init__(self, shard, shared):
        self.shard, self.shared = shard, shared

    def get(self, x):
        return (self.shard, self.shared, x)


def test_local_shard_workers_answer_in_shard_order_and_close():
    with LocalBackend().shard_workers(_Calls, [3, 1, 2], "s", what="test") as group:
        assert group.size == 3
        assert group.call("get", 9) == [(3, "s", 9), (1, "s", 9), (2, "s", 9)]
    assert group.size == 0
    with pytest.raises(RuntimeError, match="closed"):
        group.call("get", 1)


# --- composable core-sets -----------------------------------------------------------------------
def covering_radius(X, centres, candidates):
    X = np.asarray(X, np.float64)
    D = ((X[candidates, None, :] - X[None, centres, :]) ** 2).sum(-1)
    return float(np.sqrt(D.min(axis=1).max()))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("labeled", [0, 10])
def test_composable_covers_within_four_times_the_greedy_and_is_deterministic(seed, labeled):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, 6)) * 4
    X = (centres[rng.integers(0, 8, 1500)] + rng.standard_normal((1500, 6))).astype(np.float32)
    init = rng.choice(1500, labeled, replace=False)
    cand = np.setdiff1d(np.arange(1500), init)
    k = int(rng.integers(5, 60))
    exact = k_center_greedy(X, k, init=init, candidates=cand)[0]
    comp, scores = k_center_composable(X, k, init=init, candidates=cand, shard_rows=int(rng.integers(100, 700)))
    assert (np.diff(scores[1:]) <= 0).all()
    assert comp.size == k and np.unique(comp).size == k and np.isin(comp, cand).all()
    r_exact = covering_radius(X, np.r_[init, exact], cand)
    r_comp = covering_radius(X, np.r_[init, comp], cand)
    assert r_comp <= 4 * r_exact
    first = k_center_composable(X, k, init=init, candidates=cand, shard_rows=250)
    assert_same(first, k_center_composable(X, k, init=init, candidates=cand, shard_rows=250))


def test_composable_on_one_shard_is_the_exact_greedy_from_labeled_centres():
    """(Without centres the second round's first pick is the farthest from the mean of the union,
    not of every candidate.)"""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((900, 7)).astype(np.float32)
    assert_same(k_center_greedy(X, 25, init=[4, 50]), k_center_composable(X, 25, init=[4, 50], shard_rows=10**6))


# --- the strategies -------------------------------------------------------------------------------
class _ClusterLike(LocalBackend):
    """A local backend that calls itself remote, so the strategies take the sharded path."""

    name = "ray"

    @property
    def workers(self) -> int:
        return 3


def _ctx(backend, n=1200, dim=10):
    rng = np.random.default_rng(9)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    proba = rng.dirichlet(np.ones(4), n).astype(np.float32)
    return SelectionContext(n_samples=n, candidates=np.arange(20, n), labeled=np.arange(20), rng=rng,
                            embeddings=emb, proba=proba, backend=backend)


@pytest.mark.parametrize("strategy", [CoresetStrategy(), CoresetStrategy(metric="euclidean"), PCoresetStrategy()])
def test_strategies_pick_the_same_on_shards_and_say_so(strategy, caplog):
    assert strategy.uses_backend
    local = strategy.select(_ctx(None), 30)
    assert_same((local.positions, local.scores), (strategy.select(_ctx(LocalBackend()), 30).positions,
                                                   strategy.select(_ctx(LocalBackend()), 30).scores))
    with caplog.at_level(logging.INFO, logger="alloop.strategies.kcenter_sharded"):
        sharded = strategy.select(_ctx(_ClusterLike(shard_rows=256)), 30)
    assert_same((local.positions, local.scores), (sharded.positions, sharded.scores))
    assert "exact on 3 shard(s) of at most 512 rows (ray backend)" in caplog.text


def test_strategies_composable_mode_runs_on_any_backend(caplog):
    for strategy in (CoresetStrategy(mode="composable", shard_rows=300), PCoresetStrategy(mode="composable")):
        with caplog.at_level(logging.INFO, logger="alloop.strategies.kcenter_sharded"):
            a = strategy.select(_ctx(None), 30)
            b = strategy.select(_ctx(LocalBackend(shard_rows=300)), 30)
        assert len(a) == 30 and "composable" in caplog.text
        if strategy.shard_rows:
            assert np.array_equal(a.positions, b.positions)
    with pytest.raises(Exception, match="mode"):
        CoresetStrategy(mode="approximate")
