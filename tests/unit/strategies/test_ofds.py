"""OFDS's selection: its guarantees on random pools, rare classes, seeds, and the strategy class."""

from __future__ import annotations

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, EmptyPoolError, InvalidInputError, PoolExhaustedError
from alloop.strategies import ofds
from alloop.strategies.base import SelectionContext
from alloop.strategies.objects import ObjectSet
from alloop.strategies.ofds import OfdsStrategy, ofds_select

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
    objects = ObjectSet(image=[0, 1], label=[0, 1], score=[0.5, 0.5], features=np.ones((2, 3)))
    with pytest.raises(InvalidInputError, match=r"\[0, 1\); object 1 is in image 1"):
        ofds_select(objects, 1, n_samples=1)
    with pytest.raises(PoolExhaustedError):
        ofds_select(objects, 3, candidates=[0, 1], n_samples=4)
    with pytest.raises(EmptyPoolError):
        ofds_select(objects, 1, candidates=[], n_samples=4)
    with pytest.raises(InvalidInputError, match="allocation must be one of uniform, sqrt, proportional; got 'log'"):
        ofds_select(objects, 1, n_samples=4, allocation="log")
    with pytest.raises(InvalidInputError, match="objects must be an ObjectSet .*got dict"):
        ofds_select({"image": [0]}, 1, n_samples=4)
    with pytest.raises(InvalidInputError, match="max_rounds must be an integer >= 1; got 0"):
        ofds_select(objects, 1, n_samples=4, max_rounds=0)
    with pytest.raises(InvalidInputError, match="budget must be an integer >= 0; got -1"):
        ofds_select(objects, -1, n_samples=4)
    with pytest.raises(InvalidInputError, match="min_score must be a finite number; got nan"):
        ofds_select(objects, 1, n_samples=4, min_score=float("nan"))
    with pytest.raises(InvalidInputError, match="candidates must be a 1-D array of integer pool positions"):
        ofds_select(objects, 1, candidates=np.array([True, False, True, True]), n_samples=4)
    with pytest.raises(InvalidInputError, match=r"candidates positions must lie in \[0, 4\) \(4 rows\); got 7"):
        ofds_select(objects, 1, candidates=[0, 7], n_samples=4)


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
    with pytest.raises(InvalidInputError, match=r"ctx.extras\['objects'\] to be an alloop.strategies.objects"):
        strategy.select(SelectionContext(120, cand, np.arange(20), np.random.default_rng(3),
                                         extras={"objects": {"image": [1]}}), 3)
    with pytest.raises(ConfigError, match="allocation"):
        OfdsStrategy.from_params({"allocation": "log"})


def test_a_large_pool_is_clustered_on_subsamples(monkeypatch):
    """30k objects (one class of ~20k), d = 32, budget 300, fit_size 5000: k-means never fits more
    than max(fit_size, 4 k) rows of a class - what keeps a large pool cheap (its speed is measured in
    benchmarks/, not here) - and the selection still covers every class."""
    from sklearn.cluster import KMeans

    fits = []
    real_fit = KMeans.fit

    def counting_fit(self, X, *args, **kwargs):
        fits.append((X.shape[0], self.n_clusters))
        return real_fit(self, X, *args, **kwargs)

    monkeypatch.setattr(KMeans, "fit", counting_fit)
    rng = np.random.default_rng(0)
    n, n_img = 30000, 6000
    label = rng.choice(8, n, p=[0.66, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.01])
    objects = ObjectSet(image=rng.integers(0, n_img, n), label=label, score=np.ones(n, np.float32),
                        features=rng.standard_normal((n, 32)).astype(np.float32))
    pos, scores = ofds_select(objects, 300, n_samples=n_img, rng=0, fit_size=5000)
    assert pos.size == 300 and (scores > 0).all()
    assert classes_covered(objects, pos) == set(range(8))
    assert fits and all(rows <= max(5000, 4 * k) for rows, k in fits), fits
    assert any(rows == 5000 for rows, _ in fits) and (label == 0).sum() > 5000  # the big class: a subsample
