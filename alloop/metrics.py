"""Which metric a task kind's models are judged by (the headline of status, reports, stop rules)."""

from __future__ import annotations

__all__ = ["HEADLINE", "headline"]

#: The headline metric of a model, by task kind: (metrics key, what it is called).
HEADLINE = {"detection": ("map50", "held-out mAP@0.5")}
_DEFAULT_HEADLINE = ("accuracy", "held-out accuracy")


def headline(task: str) -> tuple[str, str]:
    """The metrics key a task kind's models are judged by, and its display name."""
    return HEADLINE.get(task, _DEFAULT_HEADLINE)
