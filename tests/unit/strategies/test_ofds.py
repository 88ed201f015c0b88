"""OFDS: the allocation arithmetic, the trimming order, and the selection's guarantees."""

from __future__ import annotations

import time

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, EmptyPoolError, PoolExhaustedError
from alloop.strategies import ofds
from alloop.strategies.base import SelectionContext
from alloop.strategies.ofds import (
    ObjectSet,
    OfdsStrategy,
    allocate,
    class_representatives,
    interleave,
    ofds_select,
    trim_union,
)

# -- helpers -----------------------------------------------------------------------------------------


def make_objects(seed: int, n_images: int = 200, p=(0.5, 0.3, 0.15, 0.05), per_image=(0, 5),
                 d: int = 8, spread: float = 0.6) -> ObjectSet:
    """Images with 0..4 objects each; class c drawn with probability p[c]; class-dependent features."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(per_image[0], per_image[1], n_images)
    image = np.repeat(np.arange(n_images), counts)
    label = rng.choice(len(p), image.size, p=np.asarray(p) / np.sum(p))
    centres = 3 * rng.standard_normal((len(p), d))
    feats = centres[label] + spread * rng.standard_normal((image.size, d))
    return ObjectSet(image=image, label=label, score=rng.random(image.size).astype(np.float32),
                     features=feats.astype(np.float32))


def classes_covered(objects: ObjectSet, picks, keep=None) -> set[int]:
    keep = np.ones(len(objects), bool) if keep is None else keep
    return set(objects.label[keep & np.isin(objects.image, picks)].tolist())


# -- allocate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget, counts, mode, expected",
    [
        # uniform: class 3 is capped at its 1 object, 9 slots left -> 4.5 / 4.5; the tie on the
        # remainder goes to the class with fewer objects (class 0: 5 < 100)
        (10, [5, 100, 0, 1], "uniform", [5, 4, 0, 1]),
        # uniform, no caps binding: 10 / 3 = 3.33 each, the extra unit to the rarest class
        (10, [40, 30, 20], "uniform", [3, 3, 4]),
        # uniform, one class capped at 2: the other two share 8
        (10, [2, 50, 60], "uniform", [2, 4, 4]),
        # sqrt: weights 1, 2, 4; class 0 capped at 1; 9 left split 2:4 -> 3, 6
        (10, [1, 4, 16, 0], "sqrt", [1, 3, 6, 0]),
        # sqrt: weights 10, 20, 30 -> 12 * (1/6, 2/6, 3/6) = 2, 4, 6 exactly
        (12, [100, 400, 900], "sqrt", [2, 4, 6]),
        # proportional: class 0 floored at 1; 9 left split 4:16 -> 1.8, 7.2 -> 1 + 1 (remainder .8), 7
        (10, [1, 4, 16, 0], "proportional", [1, 2, 7, 0]),
        # proportional, exact
        (10, [10, 30, 60], "proportional", [1, 3, 6]),
        # proportional: 7 * (1/7, 2/7, 4/7) = 1, 2, 4
        (7, [3, 6, 12], "proportional", [1, 2, 4]),
        # the floor of 1 protects a class far below its proportional share (0.1 of a slot)
        (10, [1, 99], "proportional", [1, 9]),
        # budget above the total: every class gets all of its objects
        (50, [3, 2, 0, 1], "sqrt", [3, 2, 0, 1]),
    ],
)
def test_allocation_arithmetic(budget, counts, mode, expected):
    out = allocate(budget, counts, mode)
    assert out.tolist() == expected
    assert out.dtype == np.int64 and out.sum() == min(budget, sum(counts))


@pytest.mark.parametrize("mode", ["uniform", "sqrt", "proportional"])
def test_budget_below_the_number_of_classes_serves_the_rarest_first(mode):
    assert allocate(2, [10, 1, 5], mode).tolist() == [0, 1, 1]
    assert allocate(1, [10, 1, 5], mode).tolist() == [0, 1, 0]
    assert allocate(2, [3, 0, 3, 3], mode).tolist() == [1, 0, 1, 0]  # ties: lower class index
    assert allocate(0, [3, 4], mode).tolist() == [0, 0]
    assert allocate(5, [], mode).tolist() == []


def test_caps_bound_the_parts_and_pass_the_rest_on():
    assert allocate(10, [100, 100], "proportional", caps=[2, 100]).tolist() == [2, 8]
    assert allocate(10, [100, 100], "uniform", caps=[0, 100]).tolist() == [0, 10]  # cap 0: inactive
    assert allocate(10, [5, 5], "uniform", caps=[3, 4]).tolist() == [3, 4]  # all the caps allow


def test_allocation_invariants_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(400):
        C = int(rng.integers(1, 12))
        counts = rng.integers(0, 60, C) * (rng.random(C) < 0.8)
        caps = np.minimum(counts, rng.integers(0, 60, C))
        budget = int(rng.integers(0, 80))
        mode = ("uniform", "sqrt", "proportional")[int(rng.integers(3))]
        out = allocate(budget, counts, mode, caps=caps)
        active = (counts > 0) & (caps > 0)
        assert out.sum() == min(budget, caps[active].sum())
        assert (out <= caps).all() and (out[~active] == 0).all()
        if budget >= active.sum():
            assert (out[active] >= 1).all()
        else:
            rarest = np.flatnonzero(active)[np.lexsort((np.flatnonzero(active), counts[active]))][:budget]
            assert np.flatnonzero(out).tolist() == sorted(rarest.tolist())
        # uncapped classes with more weight never get fewer slots than lighter ones
        if mode != "uniform" and budget >= active.sum():
            free = np.flatnonzero(active & (out < caps))
            for a in free:
                for b in free:
                    if counts[a] > counts[b]:
                        assert out[a] >= out[b] - 1e-9


def test_allocation_errors():
    with pytest.raises(ConfigError, match="allocation mode"):
        allocate(3, [1, 2], "log")
    with pytest.raises(ConfigError, match="non-negative integer"):
        allocate(-1, [1, 2])
    with pytest.raises(ConfigError, match="non-negative"):
        allocate(3, [1, -2])
    with pytest.raises(ConfigError, match="one entry per class"):
        allocate(3, [1, 2], caps=[1])
    with pytest.raises(ConfigError, match="1-D array of integers"):
        allocate(3, [1.5, 2])


# -- trimming and order ------------------------------------------------------------------------------

REPS = [np.array([0, 1, 2, 3, 4, 5]), np.array([6, 7, 8, 9]), np.array([3])]
COUNTS = [100, 50, 5]
QUOTAS = [3, 2, 1]


def test_trimming_takes_from_the_most_frequent_class_down_to_its_quota():
    # union {0..9} = 10 images; 3 too many: class 0 (most frequent) gives up its worst-ranked
    # images 5 and 4, skips 3 (the only image of the rare class 2) and gives up 2
    assert trim_union(REPS, COUNTS, QUOTAS, 7).tolist() == [0, 1, 3, 6, 7, 8, 9]


def test_trimming_moves_to_the_next_class_only_at_quota():
    # class 0 down to its quota 3 (keeps 0, 1, 3), then class 1 down to its quota 2
    assert trim_union(REPS, COUNTS, QUOTAS, 5).tolist() == [0, 1, 3, 6, 7]


def test_below_the_quotas_every_class_keeps_one_image_most_frequent_first():
    # stage 2: class 0 goes down to one image (3, which the rare class also needs)
    assert trim_union(REPS, COUNTS, QUOTAS, 3).tolist() == [3, 6, 7]
    assert trim_union(REPS, COUNTS, QUOTAS, 2).tolist() == [3, 6]
    # the rare class's only image survives to the end
    assert trim_union(REPS, COUNTS, QUOTAS, 1).tolist() == [3]


def test_below_the_number_of_classes_the_most_frequent_lose_their_last_image_first():
    reps = [np.array([0]), np.array([1]), np.array([2])]
    assert trim_union(reps, [100, 50, 5], [1, 1, 1], 2).tolist() == [1, 2]
    assert trim_union(reps, [100, 50, 5], [1, 1, 1], 1).tolist() == [2]
    assert trim_union(reps, [5, 50, 100], [1, 1, 1], 1).tolist() == [0]


def test_no_trimming_when_the_union_fits():
    assert trim_union(REPS, COUNTS, QUOTAS, 10).tolist() == list(range(10))
    assert trim_union(REPS, COUNTS, QUOTAS, 50).tolist() == list(range(10))


def test_trimming_order_on_random_disjoint_classes():
    """With no shared image the rule is exact: by frequency, classes are cut to their quota,
    one at a time, until the union fits; rarer classes keep everything."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        C = int(rng.integers(2, 7))
        sizes = rng.integers(1, 8, C)
        counts = rng.permutation(np.arange(10, 10 + 10 * C, 10))  # distinct frequencies
        quotas = np.array([int(rng.integers(1, s + 1)) for s in sizes])
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        reps = [rng.permutation(np.arange(s, s + m)) for s, m in zip(starts, sizes)]
        budget = int(rng.integers(quotas.sum(), sizes.sum() + 1))
        kept = set(trim_union(reps, counts, quotas, budget).tolist())
        assert len(kept) == min(budget, sizes.sum())
        held = np.array([len(kept & set(r.tolist())) for r in reps])
        excess = sizes.sum() - budget
        for c in np.argsort(-counts):  # most frequent first
            cut = min(excess, sizes[c] - quotas[c])
            assert held[c] == sizes[c] - cut
            assert kept & set(reps[c].tolist()) == set(reps[c][: held[c]].tolist())  # worst-ranked go
            excess -= cut


def test_trimming_invariants_on_random_overlapping_classes():
    rng = np.random.default_rng(2)
    for _ in range(300):
        C = int(rng.integers(1, 8))
        n_img = int(rng.integers(C, 40))
        reps = [rng.permutation(np.unique(rng.choice(n_img, int(rng.integers(1, 10))))) for _ in range(C)]
        counts = rng.integers(1, 100, C)
        quotas = np.array([int(rng.integers(1, r.size + 1)) for r in reps])
        union = set(np.concatenate(reps).tolist())
        budget = int(rng.integers(1, len(union) + 3))
        kept = set(trim_union(reps, counts, quotas, budget).tolist())
        assert kept <= union and len(kept) == min(budget, len(union))
        if budget >= C:  # every class keeps one of its images
            assert all(kept & set(r.tolist()) for r in reps)


def test_interleave_gives_one_image_per_class_per_turn_rarest_first():
    reps = [np.array([0, 1, 2, 3]), np.array([4, 5]), np.array([6, 0])]
    images, turns = interleave(reps, [100, 50, 5], kept=[0, 1, 2, 4, 5, 6])
    # image 0 belongs to classes 0 and 2: it is credited to the rare class 2 (its 2nd image)
    assert images.tolist() == [6, 4, 1, 0, 5, 2]
    assert turns.tolist() == [0, 0, 0, 1, 1, 1]


# -- class representatives ---------------------------------------------------------------------------


def blobs(seed: int, k: int, per: int, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 10 * rng.standard_normal((k, d))
    y = np.repeat(np.arange(k), per)
    return (centres[y] + 0.1 * rng.standard_normal((k * per, d))).astype(np.float32), y


@pytest.mark.parametrize("fit_size", [20000, 300])  # the second fits on a subsample
@pytest.mark.numerics
def test_representatives_cover_well_separated_blobs(fit_size):
    X, y = blobs(0, 6, 200)
    rows, sizes = class_representatives(X, 6, seed=0, fit_size=fit_size)
    assert sorted(y[rows].tolist()) == list(range(6))
    assert sizes.tolist() == [200] * 6 and rows.tolist() == sorted(rows.tolist())  # ties: lowest row
    for r in rows if fit_size > X.shape[0] else ():  # each is the member nearest its blob's mean
        members = np.flatnonzero(y == y[r])
        centre = X[members].astype(np.float64).mean(axis=0)
        assert r == members[np.argmin(((X[members] - centre) ** 2).sum(axis=1))]


@pytest.mark.numerics
def test_representatives_order_and_edge_cases():
    X, _ = blobs(1, 3, 1)
    X = np.concatenate([np.repeat(X[:1], 5, axis=0) + 0.01, X])  # blob 0 has 6 members
    rows, sizes = class_representatives(X, 3, seed=0)
    assert sizes.tolist() == [6, 1, 1]  # largest cluster first
    rows, sizes = class_representatives(X, 8, seed=0)  # k >= n: every row
    assert rows.tolist() == list(range(8)) and sizes.tolist() == [1] * 8
    rows, _ = class_representatives(X, 1, seed=0)  # one cluster: the row nearest the mean
    assert rows.tolist() == [int(np.argmin(((X - X.mean(axis=0)) ** 2).sum(axis=1)))]
    Z = np.zeros((10, 4), np.float32)  # identical rows: no failure, lowest row represents
    assert class_representatives(Z, 3, seed=0)[0][0] == 0


@pytest.mark.numerics
def test_representatives_are_seeded():
    X = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    a = class_representatives(X, 20, seed=5)
    b = class_representatives(X, 20, seed=5)
    np.testing.assert_array_equal(a[0], b[0])


# -- the selection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("allocation", ["uniform", "sqrt", "proportional"])
def test_selection_invariants_on_random_pools(allocation, monkeypatch):
    unions: list[tuple[int, int]] = []
    real_trim = ofds.trim_union

    def spy(reps, counts, quotas, budget):
        kept = real_trim(reps, counts, quotas, budget)
        unions.append((len(kept), budget))
        return kept

    monkeypatch.setattr(ofds, "trim_union", spy)
    rng = np.random.default_rng(10)
    for trial in range(25):
        n_img = int(rng.integers(30, 150))
        C = int(rng.integers(1, 7))
        p = rng.dirichlet(np.ones(C))
        objects = make_objects(trial, n_img, p=p, per_image=(0, int(rng.integers(2, 7))))
        cand = np.sort(rng.choice(n_img, int(rng.integers(n_img // 2, n_img + 1)), replace=False))
        min_score = float(rng.choice([0.0, 0.3]))
        budget = int(rng.integers(1, cand.size + 1))
        pos, scores = ofds_select(objects, budget, candidates=cand, n_samples=n_img,
                                  allocation=allocation, rng=trial, min_score=min_score)
        assert pos.dtype == np.int64 and pos.size == budget == np.unique(pos).size
        assert np.isin(pos, cand).all()
        assert np.isfinite(scores).all() and (np.diff(scores) <= 0).all()
        keep = np.isin(objects.image, cand) & (objects.score >= min_score)
        with_objects = np.unique(objects.image[keep])
        object_picks = pos[scores > 0]
        assert object_picks.size == min(budget, with_objects.size)  # fill only when needed
        assert np.isin(object_picks, with_objects).all()
        assert not np.isin(pos[scores == 0], with_objects).any()
        present = set(objects.label[keep].tolist())
        if budget >= len(present):
            assert classes_covered(objects, pos, keep) == present
    assert unions and all(n <= b for n, b in unions)  # trimming happened, and always fit


def test_rare_class_is_always_selected_while_random_often_misses_it():
    p = (0.45, 0.25, 0.15, 0.14, 0.01)  # class 4: about 1% of the objects
    ofds_misses = random_misses = 0
    for seed in range(20):
        objects = make_objects(seed, n_images=500, p=p, per_image=(1, 5))
        rare_images = np.unique(objects.image[objects.label == 4])
        assert 0 < rare_images.size <= 25
        pos, _ = ofds_select(objects, 10, n_samples=500, rng=seed)
        ofds_misses += not np.isin(rare_images, pos).any()
        random_pick = np.random.default_rng(seed).choice(500, 10, replace=False)
        random_misses += not np.isin(rare_images, random_pick).any()
    assert ofds_misses == 0
    assert random_misses >= 10  # a random batch of 10 misses the rare class most of the time


@pytest.mark.numerics
def test_first_picks_cover_every_class_rarest_first():
    objects = make_objects(4, n_images=300, p=(0.6, 0.3, 0.08, 0.02), per_image=(1, 2))
    pos, scores = ofds_select(objects, 30, n_samples=300, rng=0)
    counts = np.bincount(objects.label)
    first = [set(objects.label[objects.image == x].tolist()) for x in pos[:4]]
    assert int(np.argmin(counts)) in first[0]
    assert set().union(*first) == {0, 1, 2, 3}
    assert scores[:4].tolist() == [1.0] * 4 and scores[4] == 0.5


@pytest.mark.numerics
def test_same_seed_same_selection_and_seed_matters():
    objects = make_objects(5, n_images=400, p=(0.5, 0.3, 0.2), per_image=(1, 4), spread=3.0)
    a = ofds_select(objects, 40, n_samples=400, rng=np.random.default_rng(7))
    b = ofds_select(objects, 40, n_samples=400, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    others = [ofds_select(objects, 40, n_samples=400, rng=s)[0] for s in range(1, 4)]
    assert any(set(o.tolist()) != set(a[0].tolist()) for o in others)


def test_candidates_and_min_score_are_respected():
    objects = ObjectSet(
        image=np.array([0, 1, 2, 3, 4, 5]), label=np.array([0, 0, 1, 1, 2, 3]),
        score=np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.1], np.float32),
        features=np.eye(6, dtype=np.float32),
    )
    # image 4 (the only class-2 object) is not a candidate; class 3 is below min_score
    pos, scores = ofds_select(objects, 3, candidates=[0, 1, 2, 3, 5, 6, 7], n_samples=8, rng=0,
                              min_score=0.5)
    assert np.isin(pos, [0, 1, 2, 3, 5, 6, 7]).all()
    assert classes_covered(objects, pos[scores > 0]) == {0, 1}
    assert (scores > 0).sum() == 3  # clusters grow: a third image with proposals, not a fill
    pos, scores = ofds_select(objects, 7, candidates=[0, 1, 2, 3, 5, 6, 7], n_samples=8, rng=0,
                              min_score=0.5)
    assert set(pos[scores > 0].tolist()) == {0, 1, 2, 3} and set(pos[scores == 0].tolist()) == {5, 6, 7}


def test_no_objects_at_all_is_a_random_fill():
    empty = ObjectSet(image=np.empty(0, np.int64), label=np.empty(0, np.int64),
                      score=np.empty(0, np.float32), features=np.empty((0, 3), np.float32))
    pos, scores = ofds_select(empty, 4, n_samples=10, rng=0)
    assert np.unique(pos).size == 4 and (scores == 0).all()
    assert ofds_select(empty, 0, n_samples=10, rng=0)[0].size == 0


def test_every_object_its_own_cluster_when_proposals_are_scarce():
    objects = make_objects(6, n_images=100, p=(0.7, 0.3), per_image=(0, 2))
    n_with = np.unique(objects.image).size
    pos, scores = ofds_select(objects, n_with, n_samples=100, rng=0, max_rounds=1)
    assert set(pos.tolist()) == set(objects.image.tolist()) and (scores > 0).all()


def test_errors():
    good = {"image": [0, 1], "label": [0, 1], "score": [0.5, 0.5], "features": np.ones((2, 3))}
    with pytest.raises(ConfigError, match="label has 3 rows"):
        ObjectSet(**{**good, "label": [0, 1, 1]})
    with pytest.raises(ConfigError, match="non-negative"):
        ObjectSet(**{**good, "image": [0, -1]})
    with pytest.raises(ConfigError, match="integers"):
        ObjectSet(**{**good, "image": [0.0, 1.0]})
    with pytest.raises(ConfigError, match=r"features must have shape \(2, d\)"):
        ObjectSet(**{**good, "features": np.ones(2)})
    with pytest.raises(ConfigError, match="finite; object 1"):
        ObjectSet(**{**good, "features": np.array([[1, 2, 3], [1, np.nan, 3]])})
    with pytest.raises(ConfigError, match="x1 >= x0"):
        ObjectSet(**good, box=[[0, 0, 5, 5], [6, 0, 5, 5]])
    objects = ObjectSet(**good)
    assert len(objects) == 2 and objects.dim == 3
    with pytest.raises(ConfigError, match=r"\[0, 1\); object 1 is in image 1"):
        ofds_select(objects, 1, n_samples=1)
    with pytest.raises(PoolExhaustedError):
        ofds_select(objects, 3, candidates=[0, 1], n_samples=4)
    with pytest.raises(EmptyPoolError):
        ofds_select(objects, 1, candidates=[], n_samples=4)
    with pytest.raises(ConfigError, match="allocation"):
        ofds_select(objects, 1, n_samples=4, allocation="log")
    with pytest.raises(ConfigError, match="ObjectSet"):
        ofds_select({"image": [0]}, 1, n_samples=4)
    with pytest.raises(ConfigError, match="max_rounds"):
        ofds_select(objects, 1, n_samples=4, max_rounds=0)


# -- the strategy ------------------------------------------------------------------------------------


def test_strategy_through_the_registry():
    objects = make_objects(7, n_images=120, p=(0.6, 0.3, 0.1))
    cand = np.arange(20, 120)
    ctx = SelectionContext(120, cand, np.arange(20), np.random.default_rng(3), extras={"objects": objects})
    strategy = registry.create("strategy", "ofds", {"allocation": "uniform", "min_score": 0.2})
    assert isinstance(strategy, OfdsStrategy) and strategy.requires == {"objects"}
    sel = strategy.select(ctx, 15)
    expected, scores = ofds_select(objects, 15, candidates=cand, n_samples=120, allocation="uniform",
                                   rng=np.random.default_rng(3), min_score=0.2)
    np.testing.assert_array_equal(sel.positions, expected)
    np.testing.assert_array_equal(sel.scores, scores)
    with pytest.raises(ConfigError, match="ObjectSet"):
        strategy.select(SelectionContext(120, cand, np.arange(20), np.random.default_rng(3),
                                         extras={"objects": {"image": [1]}}), 3)
    with pytest.raises(ConfigError, match="allocation"):
        OfdsStrategy.from_params({"allocation": "log"})


def test_a_large_pool_runs_quickly():
    """30k objects (one class of ~20k, fitted on a subsample), d = 32, budget 300."""
    rng = np.random.default_rng(0)
    n, n_img = 30000, 6000
    label = rng.choice(8, n, p=[0.66, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.01])
    objects = ObjectSet(image=rng.integers(0, n_img, n), label=label, score=np.ones(n, np.float32),
                        features=rng.standard_normal((n, 32)).astype(np.float32))
    t = time.perf_counter()
    pos, scores = ofds_select(objects, 300, n_samples=n_img, rng=0, fit_size=5000)
    assert time.perf_counter() - t < 30
    assert pos.size == 300 and (scores > 0).all()
    assert classes_covered(objects, pos) == set(range(8))
