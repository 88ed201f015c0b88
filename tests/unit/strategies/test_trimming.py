"""OFDS's fit to the budget: which images the trimming removes, and the rarest-first order."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.errors import InvalidInputError
from alloop.strategies._trimming import interleave, trim_union

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


def test_trimming_and_interleave_errors():
    with pytest.raises(InvalidInputError, match="reps, counts and quotas need one entry per class; got 3, 2, 3"):
        trim_union(REPS, COUNTS[:2], QUOTAS, 5)
    with pytest.raises(InvalidInputError, match="budget must be an integer >= 0; got -1"):
        trim_union(REPS, COUNTS, QUOTAS, -1)
    with pytest.raises(InvalidInputError, match="quotas must be non-negative"):
        trim_union(REPS, COUNTS, [3, -2, 1], 5)
    with pytest.raises(InvalidInputError, match="counts must be a 1-D array of integers"):
        interleave(REPS, [[100, 50, 5]], kept=[0])
