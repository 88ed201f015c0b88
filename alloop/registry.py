"""Find strategies, learners, connectors and encoders by name.

Every component - built-in or third-party - is registered as a Python entry point in one of
the groups below, and loaded lazily: only the requested entry point is imported.

A plugin package registers a strategy like this in its ``pyproject.toml``::

    [project.entry-points."alloop.strategies"]
    my_strategy = "my_package.module:MyStrategy"
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from alloop.errors import UnknownComponentError

GROUPS: dict[str, str] = {
    "strategy": "alloop.strategies",
    "learner": "alloop.learners",
    "connector": "alloop.connectors",
    "encoder": "alloop.encoders",
    "aggregator": "alloop.aggregators",
    "teacher": "alloop.teachers",
}


def _group(kind: str) -> str:
    try:
        return GROUPS[kind]
    except KeyError:
        raise UnknownComponentError("component kind", kind, list(GROUPS)) from None


@lru_cache(maxsize=None)
def _entry_points(kind: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=_group(kind))}


def available(kind: str) -> list[str]:
    """Names registered for ``kind`` ("strategy", "learner", "connector", "encoder")."""
    return sorted(_entry_points(kind))


def load(kind: str, name: str) -> Any:
    """Import and return the object registered for ``kind`` under ``name``.

    Raises
    ------
    UnknownComponentError
        If nothing is registered under that name; the message lists the known names.
    """
    eps = _entry_points(kind)
    if name not in eps:
        raise UnknownComponentError(kind, name, list(eps))
    return eps[name].load()


def create(kind: str, name: str, params: dict[str, Any] | None = None) -> Any:
    """Load the component class and build it from its parameters.

    Components expose ``from_params(dict)`` (pydantic-validated) or take keyword arguments.
    """
    cls = load(kind, name)
    params = dict(params or {})
    if hasattr(cls, "from_params"):
        return cls.from_params(params)
    return cls(**params)
