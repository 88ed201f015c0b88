"""OFDS's budget split across classes: the allocation arithmetic, its invariants and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.errors import InvalidInputError
from alloop.strategies._allocation import allocate


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


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        ((3, [1, 2], "log"), {}, ["allocation mode must be one of uniform, sqrt, proportional", "'log'"]),
        ((-1, [1, 2]), {}, ["budget must be an integer >= 0", "got -1"]),
        ((2.5, [1, 2]), {}, ["budget must be an integer >= 0", "got 2.5"]),
        ((3, [1, -2]), {}, ["counts must be non-negative", "-2 at class 1"]),
        ((3, [1, 2]), {"caps": [1]}, ["caps needs one entry per class (2); got 1"]),
        ((3, [1.5, 2]), {}, ["counts must be a 1-D array of integers", "float64"]),
    ],
)
def test_allocation_errors_say_what_was_expected_and_what_was_got(args, kwargs, words):
    with pytest.raises(InvalidInputError) as exc:
        allocate(*args, **kwargs)
    assert all(w in str(exc.value) for w in words), str(exc.value)
