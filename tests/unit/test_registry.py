from __future__ import annotations

import pytest

from alloop import registry
from alloop.errors import UnknownComponentError


def test_builtins_are_registered_through_entry_points():
    assert {"random", "entropy", "margin", "least_confidence", "coreset"} <= set(registry.available("strategy"))
    assert "sklearn" in registry.available("learner")
    assert {"oracle", "jsonl"} <= set(registry.available("connector"))
    assert {"pixels", "vector", "hashing"} <= set(registry.available("encoder"))


def test_unknown_name_lists_known_ones_and_suggests():
    with pytest.raises(UnknownComponentError) as e:
        registry.load("strategy", "margn")
    msg = str(e.value)
    assert "Unknown strategy 'margn'" in msg
    assert "coreset" in msg and "random" in msg
    assert "Did you mean 'margin'" in msg
    assert isinstance(e.value, LookupError)


def test_unknown_kind():
    with pytest.raises(UnknownComponentError, match="component kind"):
        registry.available("teacherz")


def test_create_validates_params():
    from alloop.errors import ConfigError

    with pytest.raises(ConfigError, match="metrc"):
        registry.create("strategy", "coreset", {"metrc": "cosine"})
