from __future__ import annotations

import numpy as np
import pytest

from alloop import registry
from alloop.strategies.base import SelectionContext

# PCoreSet is k-center in the simplex: its exact picks rest on float32 BLAS, rerun under each
# OpenBLAS kernel family by make test
pytestmark = pytest.mark.numerics


def brute_force(proba, labeled, candidates, k):
    """Farthest-first in the simplex with full float64 distance matrices."""
    centres = list(labeled)
    picks = []
    cand = list(candidates)
    for _ in range(k):
        if centres:
            d = np.sqrt(((proba[cand][:, None, :] - proba[centres][None, :, :]) ** 2).sum(-1)).min(axis=1)
        else:
            mean = proba[cand].mean(axis=0)
            d = np.sqrt(((proba[cand] - mean) ** 2).sum(-1))
        i = int(np.argmax(d))  # first max = lowest position (cand is ascending)
        picks.append(cand[i])
        centres.append(cand[i])
        cand.pop(i)
    return picks


@pytest.mark.parametrize("seed", range(12))
def test_pcoreset_equals_brute_force_farthest_first(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(20, 80)), int(rng.integers(2, 12))
    proba = rng.dirichlet(np.full(c, 0.3), size=n)
    labeled = np.sort(rng.choice(n, size=int(rng.integers(0, 6)), replace=False))
    candidates = np.setdiff1d(np.arange(n), labeled)
    k = int(rng.integers(1, 10))
    strategy = registry.create("strategy", "pcoreset")
    sel = strategy.select(SelectionContext(n, candidates, labeled, rng, proba=proba), k)
    assert sel.positions.tolist() == brute_force(proba, labeled.tolist(), candidates.tolist(), k)
    # scores are the distances to the nearest centre at pick time: non-increasing along the
    # greedy order (without labeled items the first score is the distance to the mean instead)
    scores = sel.scores if len(labeled) else sel.scores[1:]
    assert np.all(np.diff(scores) <= 1e-6)


def test_centres_are_predictions_of_labeled_items_not_one_hot():
    # two labeled items predicted near class 0; a candidate near them is not picked first
    proba = np.array([[0.9, 0.1], [0.85, 0.15], [0.88, 0.12], [0.1, 0.9], [0.5, 0.5]])
    labeled = np.array([0, 1])
    cand = np.array([2, 3, 4])
    sel = registry.create("strategy", "pcoreset").select(
        SelectionContext(5, cand, labeled, np.random.default_rng(0), proba=proba), 2)
    assert sel.positions.tolist() == [3, 4]


def test_given_strategy_takes_listed_keys_then_fills(tmp_path):
    from alloop.errors import ConfigError

    keys = np.array([f"k{i}" for i in range(10)], dtype=object)
    ctx = SelectionContext(10, np.array([0, 2, 3, 4, 5, 6, 7, 8, 9]), np.array([1]), np.random.default_rng(0),
                           keys=keys)
    sel = registry.create("strategy", "given", {"keys": ["k5", "k1", "k3"]}).select(ctx, 4)
    assert sel.positions[:2].tolist() == [5, 3]  # k1 is labeled already: skipped
    assert sel.scores.tolist() == [1, 1, 0, 0] and len(set(sel.positions)) == 4
    (tmp_path / "keys.txt").write_text("k9\nk0\n")
    sel = registry.create("strategy", "given", {"path": str(tmp_path / "keys.txt")}).select(ctx, 2)
    assert sel.positions.tolist() == [9, 0]
    with pytest.raises(ConfigError, match="not in the pool: 'zz'"):
        registry.create("strategy", "given", {"keys": ["zz"]}).select(ctx, 1)
