"""IDEAL's graph built per shard on an execution backend, and the SEALS candidate subset."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.errors import InvalidInputError
from alloop.execution import LocalBackend
from alloop.strategies._influence_graph import UnitRows, _resolve, _unit_rows, faiss_index, knn_graph
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


def test_unit_rows_per_block_equal_the_whole_matrix_bit_for_bit(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40_000, 12)).astype(np.float32) * 3 + 1
    X[100] = X.mean(axis=0)  # near the mean: a tiny norm
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    U = _unit_rows(X)
    units = UnitRows.of(mm)
    assert units.X is mm  # the memory map itself: no copy
    assert units.inv.nbytes == 4 * len(X)
    for q in (np.array([39_999, 0, 16_384, 16_383, 5, 5]), slice(16_000, 33_000), slice(0, 1)):
        assert np.array_equal(units.rows(q), U[q])
    assert np.array_equal(units.all(), U)
    assert np.allclose(np.linalg.norm(U[:50], axis=1), 1, atol=1e-5)
    ints = rng.integers(-5, 5, size=(300, 7))
    assert np.array_equal(UnitRows.of(ints).rows(slice(None)), _unit_rows(ints.astype(np.float64)))


def test_a_non_finite_row_is_named_whichever_block_it_is_in():
    X = np.zeros((20_000, 3), np.float32)
    X[17_001, 2] = np.nan
    with pytest.raises(InvalidInputError, match="row 17001 contains NaN"):
        UnitRows.of(X)
    with pytest.raises(InvalidInputError, match="row 17001 contains NaN"):
        ShardedKnn(X, 5, neighbors="faiss-ivf")


def test_faiss_shards_read_the_embeddings_not_a_normalised_copy(tmp_path):
    """A faiss search shares the embeddings as given (a memory map stays one) with n inverse
    norms; each shard computes its rows' unit rows, and gets the single-process graph."""
    X = blobs(3000, d=24, seed=2)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ref = knn_graph(X, 10, neighbors="faiss-ivf", nprobe=4)
    with ShardedKnn(mm, 10, neighbors="faiss-ivf", nprobe=4, shard_rows=700) as knn:
        shared = knn.job.X.open()
        assert np.shares_memory(shared, mm)
        assert knn.job.inv is not None and knn.job.inv.nbytes == 4 * 3000
        assert same_graph(knn.graph(), ref)


def test_ivf_trained_on_a_seeded_sample_is_the_same_everywhere():
    """More rows than 256 per list: the index trains on a seeded sample, the same for the
    single-process graph, every shard size and every build."""
    X = blobs(3000, d=16, seed=5)
    ref = knn_graph(X, 8, neighbors="faiss-ivf", nlist=4, nprobe=2)  # 3000 > 256 x 4 rows
    assert same_graph(knn_graph(X, 8, neighbors="faiss-ivf", nlist=4, nprobe=2), ref)
    for shard_rows in (100, 3000):
        with ShardedKnn(X, 8, neighbors="faiss-ivf", nlist=4, nprobe=2, shard_rows=shard_rows) as knn:
            assert same_graph(knn.graph(), ref)
    exact = knn_graph(X, 8, neighbors="exact")
    shared = (ref.multiply(exact) > 0).sum() / exact.nnz  # recall of the approximate graph
    assert shared > 0.9


def test_sq8_index_is_a_quarter_of_the_bytes_and_its_cosines_are_exact():
    import faiss

    units = UnitRows.of(blobs(8000, d=128, seed=6))
    sizes = {m: faiss.serialize_index(faiss_index(units, m, None, 4)).nbytes for m in ("faiss-ivf", "faiss-ivf-sq8")}
    assert sizes["faiss-ivf-sq8"] < 0.3 * sizes["faiss-ivf"]  # 1 byte a value, not 4 (ids and centroids aside)
    X = blobs(4000, d=32, seed=6)
    G = knn_graph(X, 10, neighbors="faiss-ivf-sq8", nprobe=4)
    with ShardedKnn(X, 10, neighbors="faiss-ivf-sq8", nprobe=4, shard_rows=333) as knn:
        assert same_graph(knn.graph(), G)
        nbr, sim = knn.search(np.arange(4000))
    U = _unit_rows(X).astype(np.float64)
    ok = nbr >= 0
    assert ok.mean() > 0.99
    rows = np.nonzero(ok)[0]
    assert np.array_equal(sim[ok], np.einsum("ij,ij->i", U[rows], U[nbr[ok]]))  # exact on the grid
    assert (np.diff(sim, axis=1)[ok[:, 1:]] <= 0).all()  # ranked by cosine
    assert not (nbr == np.arange(4000)[:, None]).any()  # self excluded
    exact = knn_graph(X, 10, neighbors="exact")

    def recall(H):
        return (H.multiply(exact) > 0).sum() / exact.nnz

    assert recall(G) == recall(knn_graph(X, 10, neighbors="faiss-ivf", nprobe=4))  # the lists probed decide
    assert recall(knn_graph(X, 10, neighbors="faiss-ivf-sq8")) > 0.99  # the default nprobe = 16


def test_auto_compresses_the_index_only_when_a_full_one_would_pass_2_gib():
    assert _resolve("auto", 40_000, 128) == "exact"
    assert _resolve("auto", 1_000_000, 128) == "faiss-ivf"
    assert _resolve("auto", 4_000_000, 128) == "faiss-ivf"  # 1.9 GiB
    assert _resolve("auto", 5_000_000, 128) == "faiss-ivf-sq8"
    assert _resolve("auto", 1_000_000, 1024) == "faiss-ivf-sq8"
    assert _resolve("faiss-ivf", 10**8, 1024) == "faiss-ivf"  # asked for: kept


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
