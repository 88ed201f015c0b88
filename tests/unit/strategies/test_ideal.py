"""IDEAL: the kNN graph, the Monte-Carlo worlds, and CELF against brute force."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from alloop import registry
from alloop.errors import ConfigError, InvalidInputError, PoolExhaustedError
from alloop.strategies import _influence_graph as graph
from alloop.strategies._influence import (
    celf_greedy,
    influence,
    reach_counts,
    sample_worlds,
)
from alloop.strategies._influence_graph import knn_graph
from alloop.strategies.base import SelectionContext
from alloop.strategies.ideal import ideal_select
from tests.helpers.blas import kernel_families

REPO = Path(__file__).resolve().parents[3]

# -- brute-force references ----------------------------------------------------------------------


def brute_knn(X, k):
    """Full float64 cosine matrix of the centred rows; top k by (-cos, column), self excluded."""
    U = X - X.mean(axis=0)
    norm = np.linalg.norm(U, axis=1, keepdims=True)
    U = np.divide(U, norm, out=np.zeros_like(U), where=norm > 0)
    S = U @ U.T
    n = len(X)
    out = {}
    for i in range(n):
        order = sorted((j for j in range(n) if j != i), key=lambda j: (-S[i, j], j))[:k]
        pos = [j for j in order if S[i, j] > 0]
        tot = sum(S[i, j] for j in pos)
        out[i] = {j: S[i, j] / tot for j in pos}
    return out


def python_worlds(G: sp.csr_matrix, runs: int, seed: int):
    """The live-edge worlds as adjacency lists, drawn as documented: u[r] = rng.random(nnz)."""
    rng = np.random.default_rng(seed)
    n = G.shape[0]
    src = np.repeat(np.arange(n), np.diff(G.indptr))
    worlds = []
    for _ in range(runs):
        live = rng.random(G.nnz) < G.data
        adj = [[] for _ in range(n)]
        for u, v in zip(src[live], G.indices[live]):
            adj[u].append(int(v))
        worlds.append(adj)
    return worlds


def python_influence(worlds, seeds) -> int:
    """Sum over worlds of the number of nodes reachable from the seeds (each counted once)."""
    total = 0
    for adj in worlds:
        seen, stack = set(seeds), list(seeds)
        while stack:
            for w in adj[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        total += len(seen)
    return total


def brute_greedy(worlds, k, candidates, seeds=()):
    """Plain greedy: every step evaluates every remaining candidate; ties to the lowest."""
    chosen, gains = list(seeds), []
    base = python_influence(worlds, chosen)
    cand = sorted(set(candidates) - set(seeds))
    for _ in range(k):
        vals = [python_influence(worlds, [*chosen, v]) for v in cand]
        best = int(np.argmax(vals))  # first max: lowest position
        gains.append(vals[best] - base)
        base = vals[best]
        chosen.append(cand.pop(best))
    return chosen[len(seeds) :], gains


def random_graph(rng, n, density=None):
    """A random sparse graph with probabilities in (0, 1] (not normalised: harder cases)."""
    density = density or rng.uniform(0.01, 0.08)
    A = sp.random(n, n, density=density, format="csr", random_state=rng, data_rvs=lambda m: rng.uniform(0.05, 1.0, m))
    A.setdiag(0)
    A.eliminate_zeros()
    A.sort_indices()
    return A


# -- graph ---------------------------------------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("seed", range(6))
def test_exact_knn_graph_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(5, 90)), int(rng.integers(2, 20)), int(rng.integers(1, 12))
    X = rng.normal(size=(n, d))
    if seed % 2:  # duplicated rows: ties must go to the lowest column
        X[n // 2 :] = X[: n - n // 2]
    G = knn_graph(X, k, neighbors="exact")
    ref = brute_knn(X, min(k, n - 1))
    assert G.shape == (n, n) and G.has_sorted_indices
    for i in range(n):
        row = G.indices[G.indptr[i] : G.indptr[i + 1]]
        assert i not in row
        assert row.tolist() == sorted(ref[i])
        np.testing.assert_allclose(G.data[G.indptr[i] : G.indptr[i + 1]], [ref[i][j] for j in row], rtol=1e-5)
    sums = np.asarray(G.sum(axis=1)).ravel()
    assert np.all((np.abs(sums - 1) < 1e-9) | (sums == 0))


def near_ties(seed: int = 11, n: int = 700, d: int = 37) -> np.ndarray:
    """Rows with exact duplicates (ties) and duplicates moved by 1e-7 (float32-rounding ties)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[n - 100 : n - 50] = X[:50]
    X[n - 50 :] = X[50:100] + 1e-7 * rng.normal(size=(50, d))
    return X


@pytest.mark.numerics
def test_graph_does_not_depend_on_block_rows():
    for X in (np.random.default_rng(3).normal(size=(301, 16)), near_ties()):
        ref = knn_graph(X, 10, neighbors="exact")
        for b in (1, 7, 64, 1000):
            G = knn_graph(X, 10, neighbors="exact", block_rows=b)
            assert (ref != G).nnz == 0, f"block_rows={b}: {(ref != G).nnz} entries differ"
            assert (G.indptr == ref.indptr).all() and (G.indices == ref.indices).all()


_GRAPH_CHILD = """
import sys
import numpy as np
from threadpoolctl import threadpool_info
from alloop.strategies._influence_graph import knn_graph
X = np.load(sys.argv[1])
out = {}
for b in (None, 1, 7, 64, 1000):
    G = knn_graph(X, 10, neighbors="exact", block_rows=b)
    out[f"indptr {b}"], out[f"indices {b}"], out[f"data {b}"] = G.indptr, G.indices, G.data
np.savez(sys.argv[2], **out)
print(",".join(sorted({i["architecture"] for i in threadpool_info() if i["internal_api"] == "openblas"})))
"""


def test_graph_is_identical_under_every_blas_kernel_family(tmp_path):
    """Bit for bit the same graph, weights included, under each OpenBLAS kernel family this CPU
    runs (each in a fresh process: OPENBLAS_CORETYPE is read when numpy loads) and each block
    size. The float32 similarities differ between these families (and block shapes); only the
    shortlist comes from them."""
    np.save(tmp_path / "X.npy", near_ties())
    graphs, ran = {}, {}
    for family in kernel_families():
        env = {**os.environ, "OPENBLAS_CORETYPE": family, "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-c", _GRAPH_CHILD, str(tmp_path / "X.npy"), str(tmp_path / f"{family}.npz")]
        proc = subprocess.run(args, check=False, env=env, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, f"OPENBLAS_CORETYPE={family}: {proc.stderr}"
        ran[family] = proc.stdout.strip()
        graphs[family] = dict(np.load(tmp_path / f"{family}.npz"))
    # each family really ran its own kernels (Prescott's are reported as "Katmai")
    assert len(set(ran.values())) == len(ran), f"expected one kernel family per run; got {ran}"
    first = next(iter(graphs))
    ref = graphs[first]
    for family, arrays in graphs.items():
        for key, a in arrays.items():
            b = ref[key.split(" ")[0] + " None"]
            assert a.shape == b.shape and (a == b).all(), f"{family} {key} differs from {first} (block_rows None)"


@pytest.mark.numerics
def test_shortlist_keeps_the_exact_top_k_under_worst_case_rounding():
    """The exact top k survive any float32 rounding within the bound E: here every true top-k
    similarity is pushed down by 0.9 E and every other one up by 0.9 E, the worst a kernel may
    do. A margin of E / 4 instead of 2 E loses neighbours on the same similarities."""
    X = near_ties(seed=5, n=300, d=24)
    U = graph._unit_rows(X)
    n, k = len(U), 10
    exact = U.astype(np.float64) @ U.astype(np.float64).T  # exact: the rows are on the 2**-24 grid
    np.fill_diagonal(exact, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), -exact), axis=1)[:, :k]
    ref_nbr = np.sort(order, axis=1)
    top = np.zeros((n, n), bool)
    top[np.arange(n)[:, None], order] = True
    margin = graph._margin(U)
    E = margin / 2
    width = -(-n // graph._GROUPS) * graph._GROUPS
    S = np.full((n, width), graph._SENTINEL, np.float32)
    S[:, :n] = np.where(top, exact - 0.9 * E, exact + 0.9 * E)
    np.fill_diagonal(S, graph._SENTINEL)

    def neighbours(m):
        r, c = graph._shortlist(S, np.empty(S.shape, bool), k, m)
        nbr, sim = graph._rank(r, c, graph._dots(U, r, c), n, k)
        return np.sort(nbr, axis=1), sim

    nbr, sim = neighbours(margin)
    assert (nbr == ref_nbr).all()
    np.testing.assert_array_equal(np.sort(sim, axis=1), np.sort(np.take_along_axis(exact, order, axis=1), axis=1))
    assert (neighbours(margin / 8)[0] != ref_nbr).any(), "the worst case should need the full margin"


@pytest.mark.numerics
def test_faiss_exact_matches_exact_and_ivf_is_a_valid_graph():
    X = np.random.default_rng(4).normal(size=(2000, 32)).astype(np.float32)
    exact = knn_graph(X, 10, neighbors="exact")
    flat = knn_graph(X, 10, neighbors="faiss-exact")
    assert (exact.indices == flat.indices).all()
    np.testing.assert_allclose(exact.data, flat.data, rtol=1e-4)
    ivf = knn_graph(X, 10, neighbors="faiss-ivf", nprobe=8)
    assert ivf.shape == (2000, 2000) and ivf.diagonal().sum() == 0
    assert np.diff(ivf.indptr).max() <= 10
    sums = np.asarray(ivf.sum(axis=1)).ravel()
    assert np.allclose(sums[sums > 0], 1)
    # IVF is approximate, but most neighbours agree with the exact ones
    overlap = np.mean([
        len(set(exact.indices[exact.indptr[i]:exact.indptr[i + 1]])
            & set(ivf.indices[ivf.indptr[i]:ivf.indptr[i + 1]])) / 10
        for i in range(2000)
    ])  # fmt: skip
    assert overlap > 0.5


@pytest.mark.numerics
def test_non_positive_similarities_are_dropped():
    # after centring, the two pairs point in opposite directions: each row's second neighbour
    # has cosine <= 0 and gets no edge; a row equal to the mean gets no out-edge at all
    X = np.array([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, -0.01], [0.0, 0.0]])
    G = knn_graph(X, 2, neighbors="exact")
    assert G[0].indices.tolist() == [1] and G[0, 1] == 1.0
    assert G[4].nnz == 0


@pytest.mark.parametrize(
    "X, kwargs, match",
    [
        (np.zeros((0, 3)), {}, "shape"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), {}, "row 0"),
        (np.array([["a"], ["b"]]), {}, "real numbers"),
        (np.ones((4, 2)), {"k": 0}, "k must be"),
        (np.ones((4, 2)), {"neighbors": "annoy"}, "neighbors must be one of"),
        (np.ones((4, 2)), {"block_rows": 0}, "block_rows"),
    ],
)
def test_bad_graph_input_raises_clear_invalid_input_error(X, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        knn_graph(X, **kwargs)


# -- worlds and influence ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_influence_and_reach_counts_equal_python_bfs_on_the_same_worlds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 150))
    G = random_graph(rng, n)
    W = sample_worlds(G, 7, np.random.default_rng(seed))
    worlds = python_worlds(G, 7, seed)
    for size in (1, 2, 5):
        seeds = rng.choice(n, size=size, replace=False).tolist()
        assert influence(W, seeds) * 7 == python_influence(worlds, seeds)
    # marginal reach of every node with a seed set active
    seeds = rng.choice(n, size=3, replace=False).tolist()
    active = np.zeros(n * 7, bool)
    from alloop.strategies._influence import activate

    activate(W, seeds, active)
    base = python_influence(worlds, seeds)
    got = reach_counts(W, np.arange(n), active)
    want = [python_influence(worlds, [*seeds, v]) - base for v in range(n)]
    assert got.tolist() == want


def test_live_edge_frequency_matches_the_edge_probability():
    G = sp.csr_matrix(np.array([[0, 0.2, 0.8], [0, 0, 0.5], [0, 0, 0]]))
    W = sample_worlds(G, 4000, np.random.default_rng(0))
    # node 0 reaches 1 with p = 0.2 (direct only); reaches 2 with 1 - (1 - .8)(1 - .2 * .5) = 0.82
    assert abs(influence(W, [0]) - (1 + 0.2 + 0.82)) < 0.05


# -- CELF against brute force --------------------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("seed", range(10))
def test_celf_selection_and_influence_equal_brute_force_greedy(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 200))
    if seed % 2:
        G = knn_graph(rng.normal(size=(n, 8)), int(rng.integers(2, 12)), neighbors="exact")
    else:
        G = random_graph(rng, n)
    runs = int(rng.integers(1, 12))
    W = sample_worlds(G, runs, np.random.default_rng(seed))
    worlds = python_worlds(G, runs, seed)
    candidates = np.sort(rng.choice(n, size=int(rng.integers(n // 2, n + 1)), replace=False))
    labeled = []
    if seed % 3 == 0:
        labeled = rng.choice(np.setdiff1d(np.arange(n), candidates), size=min(3, n - candidates.size), replace=False)
    k = int(min(rng.integers(1, 15), candidates.size))
    picks, gains = celf_greedy(W, k, candidates, seeds=labeled)
    ref_picks, ref_gains = brute_greedy(worlds, k, candidates.tolist(), list(map(int, labeled)))
    assert picks.tolist() == ref_picks
    assert gains.tolist() == ref_gains
    # the influence of every prefix: non-decreasing, and equal to the seeds' plus the gains
    infl = [python_influence(worlds, list(map(int, labeled)) + picks[:t].tolist()) for t in range(k + 1)]
    assert np.all(np.diff(infl) >= 0)
    assert infl[-1] - infl[0] == gains.sum()
    assert np.all(np.diff(gains) <= 0)


@pytest.mark.numerics
def test_greedy_covers_every_blob_before_any_second_pick():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 32)) * 10
    sizes = rng.integers(30, 90, size=8)  # unequal blobs: the big ones are picked first
    X = np.concatenate([c + rng.normal(size=(m, 32)) for c, m in zip(centres, sizes)])
    blob = np.repeat(np.arange(8), sizes)
    picks, gains = ideal_select(X, 12, rng=np.random.default_rng(1), neighbors="exact")
    assert sorted(blob[picks[:8]].tolist()) == list(range(8))
    assert np.all(np.diff(gains) <= 1e-12)
    # labeled items already cover their blobs: the first picks go to the other blobs
    labeled = np.flatnonzero(blob < 3)[::7]
    cand = np.setdiff1d(np.arange(len(X)), labeled)
    picks, _ = ideal_select(X, 5, rng=np.random.default_rng(1), candidates=cand, labeled=labeled, neighbors="exact")
    assert sorted(blob[picks].tolist()) == [3, 4, 5, 6, 7]


@pytest.mark.numerics
def test_same_seed_same_selection_and_the_seed_matters():
    X = np.random.default_rng(5).normal(size=(600, 16))
    a = ideal_select(X, 30, rng=np.random.default_rng(9))
    b = ideal_select(X, 30, rng=np.random.default_rng(9))
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    others = [ideal_select(X, 30, rng=np.random.default_rng(s))[0].tolist() for s in range(3)]
    assert any(o != a[0].tolist() for o in others)


def test_celf_rejects_more_picks_than_candidates():
    W = sample_worlds(random_graph(np.random.default_rng(0), 20), 2, np.random.default_rng(0))
    with pytest.raises(PoolExhaustedError):
        celf_greedy(W, 6, [1, 2, 3, 4, 5])
    with pytest.raises(InvalidInputError, match="runs must be"):
        sample_worlds(random_graph(np.random.default_rng(0), 20), 0, np.random.default_rng(0))


# -- the strategy --------------------------------------------------------------------------------


@pytest.mark.numerics
def test_strategy_uses_labeled_items_as_active_seeds_and_scores_are_gains():
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(size=(40, 8)) + off for off in (0, 30, 60)])
    n = len(X)
    labeled = np.arange(0, 40, 5)
    cand = np.setdiff1d(np.arange(n), labeled)
    strategy = registry.create("strategy", "ideal", {"runs": 20})
    sel = strategy.select(SelectionContext(n, cand, labeled, np.random.default_rng(0), embeddings=X), 2)
    assert sorted((sel.positions // 40).tolist()) == [1, 2]
    assert np.all(sel.scores > 1) and sel.scores[0] >= sel.scores[1]


@pytest.mark.parametrize(
    "params, match", [({"runs": 0}, "runs"), ({"n_neighbors": 0}, "n_neighbors"), ({"neighbors": "x"}, "neighbors")]
)
def test_bad_parameters_are_rejected(params, match):
    with pytest.raises(ConfigError, match=match):
        registry.create("strategy", "ideal", params)


def test_all_subsets_optimum_is_close_to_greedy_on_a_tiny_graph():
    """Sanity of the objective: greedy reaches at least (1 - 1/e) of the best pair/triple."""
    rng = np.random.default_rng(7)
    G = random_graph(rng, 25, 0.1)
    W = sample_worlds(G, 5, np.random.default_rng(0))
    for k in (2, 3):
        best = max(influence(W, list(s)) for s in itertools.combinations(range(25), k))
        picks, _ = celf_greedy(W, k, np.arange(25))
        assert influence(W, picks) >= (1 - 1 / np.e) * best
