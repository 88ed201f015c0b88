"""The Connector protocol: how alloop talks to a labeling tool.

A connector sets up the tool's project, pushes tasks (with optional model pre-annotations),
finds tasks already pushed (to heal a crash between push and commit) and pulls annotations.
Everything is keyed by the stable sample key and the tool's own task id - never by position.

Connectors are registered in the ``alloop.connectors`` entry-point group and built with
``Cls.from_params(params, context=ConnectorContext(...))``. Foreign errors (SDK, HTTP, I/O)
are translated into :class:`alloop.errors.ConnectorError` subclasses with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Prediction:
    """A model's pre-annotation for a task."""

    label: str
    score: float
    model_version: str
    #: full distribution over the label set, when available
    proba: Mapping[str, float] | None = None
    #: task-specific payload (e.g. boxes for detection)
    value: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TaskPayload:
    sample_key: str
    kind: str
    data: Mapping[str, Any]
    round_number: int
    prediction: Prediction | None = None


@dataclass(frozen=True)
class TaskRef:
    """A task alloop knows it pushed."""

    sample_key: str
    external_id: str
    round_number: int
    pushed_at: datetime


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation as the tool reports it. ``source_id`` is unique within the tool."""

    sample_key: str
    external_task_id: str
    source_id: str
    annotator: str
    label: str | None
    cancelled: bool
    created_at: datetime
    updated_at: datetime
    value: Mapping[str, Any] | None = None
    lead_time: float | None = None


@dataclass(frozen=True)
class ConnectorContext:
    """What a connector may know about the project it serves."""

    project: str
    task: str
    labels: tuple[str, ...]
    work_dir: Path
    seed: int = 0
    #: known labels by sample key (only the simulated annotator uses this)
    reference_labels: Callable[[Sequence[str]], Mapping[str, str | None]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Connector(Protocol):
    name: str

    def ensure_project(self) -> None:
        """Create or adopt the tool's project and its label set (idempotent)."""
        ...

    def find_tasks(self, keys: Sequence[str], round_number: int | None = None) -> dict[str, str]:
        """External task ids of already-pushed samples, by sample key (pushed in ``round_number``)."""
        ...

    def push(self, tasks: Sequence[TaskPayload]) -> dict[str, str]:
        """Create tasks; return the tool's task id for each sample key."""
        ...

    def pull(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        """All annotations currently present for these tasks (including cancelled ones)."""
        ...

    def close(self) -> None: ...
