"""Contract every registered acquisition strategy must honour (a new plugin is tested for free).

The context is built from the strategy's ``requires``; to support a new requirement, add a
builder to ``BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, EmptyPoolError, InvalidInputError, PoolExhaustedError
from alloop.strategies.base import (
    KNOWN_REQUIREMENTS,
    Selection,
    SelectionContext,
    Strategy,
)

NAMES = registry.available("strategy")
N, N_CLASSES, N_FEATURES = 120, 5, 16
LABELED = np.arange(0, N, 10)  # 12 labeled positions
EXCLUDED = np.arange(3, N, 10)  # selected before, not labeled yet: neither labeled nor candidate
CANDIDATES = np.setdiff1d(np.arange(N), np.concatenate([LABELED, EXCLUDED]))


def _labels(rng: np.random.Generator) -> np.ndarray:
    y = np.full(N, -1, dtype=np.int64)
    y[LABELED] = rng.integers(0, N_CLASSES, LABELED.size)
    return y


def _objects(rng: np.random.Generator) -> Any:
    """Object proposals in 80 of the N images (1-4 each; class 3 rare), for object strategies."""
    from alloop.strategies.objects import ObjectSet

    per_image = np.zeros(N, dtype=np.int64)
    per_image[rng.choice(N, 80, replace=False)] = rng.integers(1, 5, 80)
    image = np.repeat(np.arange(N), per_image)
    label = rng.choice(4, image.size, p=[0.5, 0.3, 0.17, 0.03])
    return ObjectSet(image=image, label=label, score=rng.random(image.size).astype(np.float32),
                     features=rng.standard_normal((image.size, N_FEATURES)).astype(np.float32))


BUILDERS: dict[str, Callable[[np.random.Generator], Any]] = {
    "proba": lambda rng: rng.dirichlet(np.full(N_CLASSES, 0.7), N),
    "embeddings": lambda rng: rng.standard_normal((N, N_FEATURES)),
    "labels": _labels,
    "objects": _objects,
    "keys": lambda rng: np.array([f"sample-{i:04d}" for i in range(N)], dtype=object),
    "penultimate": lambda rng: rng.standard_normal((N, N_FEATURES)),
    "members": lambda rng: rng.dirichlet(np.full(N_CLASSES, 0.7), (N, 3)),
}


def make_ctx(cls: type[Strategy], seed: int = 0, candidates=CANDIDATES, labeled=LABELED,
             provide: bool = True) -> SelectionContext:
    data_rng = np.random.default_rng(12345)  # the data is the same for every seed
    arrays: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for req in sorted(cls.requires) if provide else ():
        if req not in BUILDERS:
            pytest.fail(f"The contract suite cannot build {req!r} for {cls.__name__}; add a "
                        "builder to BUILDERS in tests/contract/test_strategies_contract.py.")
        target = arrays if req in ("proba", "embeddings", "labels", "keys") else extras
        target[req] = BUILDERS[req](data_rng)
    return SelectionContext(N, np.asarray(candidates, dtype=np.int64),
                            np.asarray(labeled, dtype=np.int64), np.random.default_rng(seed),
                            extras=extras, n_classes=N_CLASSES, **arrays)


@pytest.fixture(params=NAMES)
def cls(request) -> type[Strategy]:
    return registry.load("strategy", request.param)


def test_every_builtin_strategy_is_registered():
    assert {"random", "entropy", "margin", "least_confidence", "coreset"} <= set(NAMES)


def test_class_declares_name_and_known_requirements(cls):
    assert issubclass(cls, Strategy)
    assert cls.name in NAMES and registry.load("strategy", cls.name) is cls
    assert set(cls.requires) <= KNOWN_REQUIREMENTS
    assert cls.__doc__ and len(cls.__doc__.strip()) > 40


@pytest.mark.parametrize("k", [1, 7, CANDIDATES.size])
def test_returns_k_unique_candidates_with_finite_scores(cls, k):
    sel = cls().select(make_ctx(cls), k)
    assert isinstance(sel, Selection) and len(sel) == k
    assert sel.positions.dtype == np.int64 and sel.scores.dtype == np.float64
    assert np.unique(sel.positions).size == k
    assert np.isin(sel.positions, CANDIDATES).all()
    assert not np.isin(sel.positions, np.concatenate([LABELED, EXCLUDED])).any()
    assert sel.scores.shape == (k,) and np.isfinite(sel.scores).all()
    if k == CANDIDATES.size:
        np.testing.assert_array_equal(np.sort(sel.positions), CANDIDATES)


def test_same_seed_gives_the_same_selection(cls):
    a = cls().select(make_ctx(cls, seed=7), 9)
    b = cls().select(make_ctx(cls, seed=7), 9)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_works_with_no_labeled_items(cls):
    sel = cls().select(make_ctx(cls, labeled=[]), 5)
    assert len(sel) == 5 and np.isin(sel.positions, CANDIDATES).all()
    assert np.isfinite(sel.scores).all()


def test_more_than_the_candidates_raises_pool_exhausted(cls):
    with pytest.raises(PoolExhaustedError) as err:
        cls().select(make_ctx(cls), CANDIDATES.size + 1)
    assert err.value.available == CANDIDATES.size
    assert str(CANDIDATES.size) in str(err.value)


def test_no_candidates_raises_empty_pool(cls):
    with pytest.raises(EmptyPoolError, match="no unlabeled candidates"):
        cls().select(make_ctx(cls, candidates=[]), 1)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_batch_size_raises_invalid_input_error(cls, k):
    with pytest.raises(InvalidInputError, match="batch size must be an integer >= 1"):
        cls().select(make_ctx(cls), k)


def test_missing_requirement_raises_config_error(cls):
    if not cls.requires:
        sel = cls().select(make_ctx(cls, provide=False), 3)  # needs nothing: must still work
        assert len(sel) == 3
        return
    with pytest.raises(ConfigError, match="requires"):
        cls().select(make_ctx(cls, provide=False), 3)


def test_does_not_modify_the_context(cls):
    ctx = make_ctx(cls)
    before = {k: np.array(v, copy=True) for k, v in vars(ctx).items() if isinstance(v, np.ndarray)}
    cls().select(ctx, 10)
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(ctx, name), value, err_msg=name)


def test_unknown_parameter_raises_config_error_naming_it(cls):
    with pytest.raises(ConfigError) as err:
        cls.from_params({"nonsense": 1})
    assert "nonsense" in str(err.value)
    assert cls.name in str(err.value)


def test_default_parameters_round_trip(cls):
    s = cls.from_params({})
    assert cls.from_params(s.model_dump()) == s


def test_is_frozen(cls):
    s = cls()
    assert cls.model_config.get("frozen") is True
    field = next(iter(cls.model_fields), "anything")
    with pytest.raises((ValueError, TypeError, AttributeError)):
        setattr(s, field, 1)
