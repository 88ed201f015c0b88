"""IDEAL's graph built per shard on an execution backend, and the SEALS candidate subset."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.execution import LocalBackend
from alloop.strategies._influence_graph import knn_graph
from alloop.strategies._knn_shards import ShardedKnn, seals_subset
from alloop.strategies.base import SelectionContext
from alloop.strategies.ideal import IdealStrategy, ideal_select
from tests.helpers.graphs import blobs as _blobs
from tests.helpers.graphs import same_graph


def blobs(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return _blobs(n, d, seed, clusters=8)


@pytest.mark.parametrize("shard_rows", [1, 7, 64, 333, 1000, 5000])
def test_exact_graph_per_shard_equals_knn_graph_bit_for_bit(shard_rows):
    X = blobs(1000)
    X[5] = X[6]  # a duplicate: ties broken by column in every shard alike
    ref = knn_graph(X, 10, neighbors="exact")
    with ShardedKnn(X, 10, neighbors="exact", backend=LocalBackend(), shard_rows=shard_rows) as knn:
        assert same_graph(knn.graph(), ref)


def test_exact_graph_per_shard_with_small_blocks_and_row_sets():
    X = blobs(600, d=40, seed=3)
    ref_nbr = knn_graph(X, 5, neighbors="exact")
    with ShardedKnn(X, 5, neighbors="exact", block_rows=3, shard_rows=50) as knn:
        assert same_graph(knn.graph(), ref_nbr)
        rows = np.array([599, 0, 17, 300, 17])  # any rows, any order, repeats
        nbr, sim = knn.search(rows)
        all_nbr, all_sim = knn.search()
        assert np.array_equal(nbr, all_nbr[rows]) and np.array_equal(sim, all_sim[rows])


def test_ivf_graph_per_shard_equals_one_search_of_the_same_index():
    X = blobs(4000, d=32, seed=1)
    ref = knn_graph(X, 10, neighbors="faiss-ivf", nprobe=4)
    for shard_rows in (17, 1000, 4096):
        with ShardedKnn(X, 10, neighbors="faiss-ivf", nprobe=4, shard_rows=shard_rows) as knn:
            assert same_graph(knn.graph(), ref)


def test_faiss_exact_per_shard_has_the_same_edges_up_to_float32_rounding():
    X = blobs(4000, d=32, seed=1)
    ref = knn_graph(X, 10, neighbors="faiss-exact")
    graphs = []
    for shard_rows in (17, 1000):
        with ShardedKnn(X, 10, neighbors="faiss-exact", shard_rows=shard_rows) as knn:
            G = knn.graph()
        assert np.array_equal(G.indptr, ref.indptr) and np.array_equal(G.indices, ref.indices)
        assert np.allclose(G.data, ref.data, rtol=1e-6, atol=0)
        graphs.append(G)
    with ShardedKnn(X, 10, neighbors="faiss-exact", shard_rows=1000) as knn:
        assert same_graph(knn.graph(), graphs[1])  # the same shards: the same bits


def test_ideal_picks_with_a_backend_equal_the_in_process_picks():
    X = blobs(900, seed=2)
    labeled = np.arange(0, 900, 97)
    kw = dict(labeled=labeled, candidates=np.setdiff1d(np.arange(900), labeled), neighbors="exact", runs=5)
    ref = ideal_select(X, 12, rng=np.random.default_rng(4), **kw)
    got = ideal_select(X, 12, rng=np.random.default_rng(4), backend=LocalBackend(), shard_rows=100, **kw)
    assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])


def test_the_strategy_shards_on_the_context_backend_and_picks_the_same():
    X = blobs(700, seed=5)
    strat = IdealStrategy(neighbors="exact", shard_rows=128)
    assert IdealStrategy.uses_backend

    def ctx(backend):
        return SelectionContext(n_samples=700, candidates=np.arange(700), labeled=np.arange(5),
                                rng=np.random.default_rng(9), embeddings=X, backend=backend)

    calls = []

    class Counting(LocalBackend):
        def map_shards(self, fn, shards, shared=None, **kw):
            calls.append(len(shards))
            return super().map_shards(fn, shards, shared, **kw)

    a, b = strat.select(ctx(None), 10), strat.select(ctx(Counting()), 10)
    assert calls == [6]  # 700 rows in shards of 128
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.scores, b.scores)


# -- SEALS -------------------------------------------------------------------------------------


def test_seals_subset_holds_the_labeled_and_their_neighbours_within_the_budget():
    X = blobs(3000, seed=6)
    labeled = np.array([3, 50, 2999, 1200])
    with ShardedKnn(X, 10, neighbors="exact", shard_rows=500) as knn:
        all_nbr, _ = knn.search()
        for budget in (4, 30, 44, 200, 1000):
            rows, G = seals_subset(knn, labeled, budget)
            assert np.all(np.diff(rows) > 0) and np.isin(labeled, rows).all()
            assert rows.size == max(budget, labeled.size)
            first_hop = np.unique(all_nbr[labeled])
            if budget >= labeled.size + first_hop.size:
                assert np.isin(first_hop, rows).all()  # every labeled item's k neighbours
            else:  # nearest ranks first: the first neighbours before any later one
                take = budget - labeled.size
                ranked = [v for v in all_nbr[labeled].T.reshape(-1) if v not in labeled]
                assert set(rows) - set(labeled) == set(list(dict.fromkeys(ranked))[:take])
            # the induced subgraph: the whole graph's weights on edges inside the subset
            full = knn.graph()
            assert np.allclose(G.toarray(), full[rows][:, rows].toarray(), rtol=0, atol=0)


def test_seals_subset_is_the_same_per_seed_and_on_every_shard_size():
    X = blobs(2000, seed=7)
    out = []
    for shard_rows in (64, 2000):
        with ShardedKnn(X, 8, neighbors="exact", shard_rows=shard_rows) as knn:
            rows, G = seals_subset(knn, np.array([1, 2, 3]), 300)
            out.append((rows, G))
    assert np.array_equal(out[0][0], out[1][0]) and (out[0][1] != out[1][1]).nnz == 0


def test_ideal_on_a_seals_subset_picks_candidates_near_the_labeled_and_is_seeded():
    X = blobs(5000, seed=8)
    labeled = np.arange(0, 50)
    cand = np.arange(50, 5000)
    kw = dict(labeled=labeled, candidates=cand, neighbors="faiss-ivf", subset="seals", subset_rows=400,
              shard_rows=150, runs=5)
    a = ideal_select(X, 20, rng=np.random.default_rng(1), **kw)
    b = ideal_select(X, 20, rng=np.random.default_rng(1), **kw)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].size == 20 and np.isin(a[0], cand).all() and np.unique(a[0]).size == 20
    with ShardedKnn(X, 10, neighbors="faiss-ivf", shard_rows=150) as knn:
        rows, _ = seals_subset(knn, labeled, 400, need=cand, want=20)
    assert np.isin(a[0], rows).all() and rows.size == 400
    # a cold start (nothing labeled) and a budget below the batch still give a full batch
    c = ideal_select(X, 30, rng=np.random.default_rng(2), neighbors="exact", subset="seals", subset_rows=10)
    assert c[0].size == 30 and np.unique(c[0]).size == 30


def test_bad_subset_settings_are_rejected():
    from pydantic import ValidationError

    from alloop.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="subset must be"):
        ideal_select(blobs(50), 3, rng=np.random.default_rng(0), subset="some")
    for bad in ({"subset": "some"}, {"subset_rows": 0}, {"shard_rows": 0}):
        with pytest.raises(ValidationError):
            IdealStrategy(**bad)
