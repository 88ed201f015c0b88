"""ObjectSet, the columns of a pool's object proposals: conversions and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.errors import InvalidInputError
from alloop.strategies.objects import ObjectSet

GOOD = {"image": [0, 1], "label": [0, 1], "score": [0.5, 0.5], "features": np.ones((2, 3))}


def test_columns_are_converted_and_measured():
    objects = ObjectSet(**GOOD, box=[[0, 0, 5, 5], [1, 1, 2, 2]])
    assert len(objects) == 2 and objects.dim == 3
    assert objects.image.dtype == np.int64 and objects.label.dtype == np.int64
    assert objects.score.dtype == np.float32 and objects.features.dtype == np.float32
    assert objects.box.dtype == np.float32 and objects.box.shape == (2, 4)
    objects.check_positions(2)


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"label": [0, 1, 1]}, ["ObjectSet.label has 3 rows but ObjectSet.image has 2"]),
        ({"image": [0, -1]}, ["ObjectSet.image must be non-negative", "object 1 has -1"]),
        ({"image": [0.0, 1.0]}, ["ObjectSet.image must be a 1-D array of non-negative integers", "float64"]),
        ({"features": np.ones(2)}, ["ObjectSet.features must have shape (2, d)", "got shape (2,)"]),
        ({"features": np.array([[1, 2, 3], [1, np.nan, 3]])}, ["ObjectSet.features must be finite; object 1"]),
        ({"score": ["a", "b"]}, ["ObjectSet.score must hold real numbers"]),
        ({"box": [[0, 0, 5, 5], [6, 0, 5, 5]]}, ["x1 >= x0", "object 1 has [6.0, 0.0, 5.0, 5.0]"]),
    ],
)
def test_bad_columns_say_what_was_expected_and_what_was_got(over, words):
    with pytest.raises(InvalidInputError) as exc:
        ObjectSet(**{**GOOD, **over})
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_positions_outside_the_pool():
    with pytest.raises(InvalidInputError, match=r"\[0, 1\); object 1 is in image 1"):
        ObjectSet(**GOOD).check_positions(1)
