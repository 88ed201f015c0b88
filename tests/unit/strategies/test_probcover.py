"""ProbCover against set computations: ball graph, purity, the purity rule's δ, greedy coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from alloop.errors import InvalidInputError
from alloop.strategies._neighbors import radius_graph
from alloop.strategies.base import SelectionContext
from alloop.strategies.probcover import ProbCoverStrategy, normalise, probcover_select, purity, purity_radius


def balls(X: np.ndarray, delta: float) -> list[set[int]]:
    D = cdist(X, X)
    return [set(np.flatnonzero(D[i] <= delta).tolist()) | {i} for i in range(len(X))]


def set_purity(X, pseudo, delta) -> float:
    return float(np.mean([len({pseudo[j] for j in b}) == 1 for b in balls(X, delta)]))


def set_greedy(X, delta, k, candidates, rng):
    B = balls(X, delta)
    open_ = set(candidates.tolist())
    covered: set[int] = set()
    for i in range(len(X)):
        if i not in open_:
            covered |= B[i]
    picks, scores = [], []
    while len(picks) < k:
        gains = {i: len(B[i] - covered) for i in open_}
        best = max(gains.values())
        if best == 0:
            break
        p = min(i for i, g in gains.items() if g == best)
        picks.append(p)
        scores.append(best)
        covered |= B[p]
        open_.discard(p)
    if len(picks) < k:
        rest = np.sort(rng.choice(np.array(sorted(open_)), size=k - len(picks), replace=False))
        picks += rest.tolist()
        scores += [0] * len(rest)
    return np.array(picks), np.array(scores, float)


@pytest.fixture
def X() -> np.ndarray:
    return normalise(np.random.default_rng(0).standard_normal((120, 6)))


def test_the_ball_graph_holds_every_pair_within_delta(X) -> None:
    for delta in (0.0, 0.4, 0.9, 2.0):
        g = radius_graph(X, delta)
        got = [set(g.indices[g.indptr[i]:g.indptr[i + 1]].tolist()) for i in range(len(X))]
        assert got == balls(X, delta)
        assert (g != g.T).nnz == 0  # symmetric


def test_purity_is_the_share_of_single_label_balls(X) -> None:
    pseudo = np.random.default_rng(1).integers(0, 3, len(X))
    for delta in (0.1, 0.5, 0.8, 1.2):
        assert purity(X, pseudo, delta) == pytest.approx(set_purity(X, pseudo, delta), abs=0)


@pytest.mark.parametrize("alpha", [0.5, 0.8, 0.95, 1.0])
def test_the_purity_rule_takes_the_largest_pure_enough_radius(X, alpha) -> None:
    pseudo = (X[:, 0] > 0).astype(int)  # two half-spheres
    delta = purity_radius(X, pseudo, alpha)
    assert set_purity(X, pseudo, delta) >= alpha
    # the smallest pair distance at which purity falls below alpha (purity only falls as the radius grows)
    radii = np.unique(cdist(X, X))
    lo, hi = 0, len(radii) - 1
    if set_purity(X, pseudo, radii[hi]) >= alpha:
        assert delta == 2.0
        return
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if set_purity(X, pseudo, radii[mid]) >= alpha else (lo, mid)
    assert radii[lo] * (1 - 1e-6) <= delta < radii[lo]


def test_greedy_coverage_equals_the_set_computation(X) -> None:
    cand = np.setdiff1d(np.arange(len(X)), [3, 50, 77])
    for delta, k in ((0.5, 5), (0.9, 12), (1.3, 10)):  # the last covers everything early: random fill
        got = probcover_select(radius_graph(X, delta), k, candidates=cand, rng=np.random.default_rng(4))
        want = set_greedy(X, delta, k, cand, np.random.default_rng(4))
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), (delta, k)


def test_the_strategy_needs_the_number_of_classes_or_a_radius(X) -> None:
    ctx = SelectionContext(len(X), np.arange(len(X)), np.empty(0, np.int64), np.random.default_rng(0), embeddings=X)
    with pytest.raises(InvalidInputError, match="number of classes"):
        ProbCoverStrategy().select(ctx, 3)
    assert len(ProbCoverStrategy(delta=0.5).select(ctx, 3)) == 3
    assert len(ProbCoverStrategy(n_classes=4).select(ctx, 3)) == 3


def test_separated_clusters_get_one_pick_each_and_the_same_seed_the_same_picks() -> None:
    rng = np.random.default_rng(2)
    centres = normalise(rng.standard_normal((4, 10))) * 5
    X = np.concatenate([c + 0.3 * rng.standard_normal((50, 10)) for c in centres])
    truth = np.repeat(np.arange(4), 50)

    def run(seed: int) -> np.ndarray:
        ctx = SelectionContext(200, np.arange(200), np.empty(0, np.int64), np.random.default_rng(seed),
                               embeddings=X, n_classes=4)
        return ProbCoverStrategy().select(ctx, 4).positions

    picks = run(0)
    assert sorted(truth[picks]) == [0, 1, 2, 3]
    assert np.array_equal(run(0), picks)


def test_delta_and_the_ball_graph_are_computed_once_per_pool(monkeypatch, X) -> None:
    from alloop.strategies import probcover as pc

    calls = []
    real = pc.radius_graph
    monkeypatch.setattr(pc, "radius_graph", lambda *a: calls.append(a[1]) or real(*a))
    pc._GRAPHS.clear()
    s = ProbCoverStrategy(n_classes=3)
    for r in range(3):  # three rounds, each with its own rng: one δ, one graph
        ctx = SelectionContext(len(X), np.arange(5 * r, len(X)), np.arange(5 * r), np.random.default_rng(r),
                               embeddings=X)
        assert len(s.select(ctx, 5)) == 5
    assert len(calls) == 1
    assert calls[0] == s.radius(X, ctx)  # the purity rule's δ, with the strategy's own seed
    ProbCoverStrategy(n_classes=3, seed=1).select(ctx, 5)  # other parameters: computed again
    assert len(calls) == 2
