"""Find strategies, learners, connectors and encoders by name.

Every component - built-in or third-party - is registered as a Python entry point in one of
the groups below, and loaded lazily: only the requested entry point is imported.

A plugin package registers a strategy like this in its ``pyproject.toml``::

    [project.entry-points."alloop.strategies"]
    my_strategy = "my_package.module:MyStrategy"
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from alloop.errors import UnknownComponentError
from alloop.protocols.context import PluginContext

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


@cache
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


def create(kind: str, name: str, params: Mapping[str, Any] | None = None, *,
           context: PluginContext | None = None) -> Any:
    """Load the component class and build it: ``Cls.from_params(params, context=context)``.

    Every plugin kind is built this way (see :mod:`alloop.protocols`). ``context`` describes the
    project; without one, a neutral :class:`~alloop.protocols.PluginContext` is passed (enough for
    strategies, encoders and learners; connectors and teachers need theirs).
    """
    cls = load(kind, name)
    return cls.from_params(dict(params or {}), context=context if context is not None else PluginContext())
