"""The Connector protocol: how alloop talks to a labeling tool, and what it exchanges.

A connector sets up the tool's project, pushes tasks (with optional model pre-annotations),
finds tasks already pushed (to heal a crash between push and commit) and pulls annotations.
Everything is keyed by the stable sample key and the tool's own task id - never by position.

Connectors are registered in the ``alloop.connectors`` entry-point group and built with
``Cls.from_params(params, context=ConnectorContext(...))``. Foreign errors (SDK, HTTP, I/O)
are translated into :class:`alloop.errors.ConnectorError` subclasses with ``raise ... from``.

Optional capabilities are small protocols of their own, checked with ``isinstance``:

- :class:`CompletePull`: the pull lists *every* annotation the tool holds for the pulled tasks,
  so one that is missing was deleted there (the loop then marks it invalid);
- :class:`WebhookSource`: the tool can call ``alloop serve`` when annotations change;
- :class:`RoundPresenter`: the tool shows the open round's tasks in a view of its own (e.g.
  most useful first), kept current when a round is pushed;
- :class:`IncrementalPull`: the pull can read only what changed since the last one, with a
  full reconciliation now and then; alloop keeps the connector's cursor in its database;
- :class:`StreamPresenter`: the tool's view can do the selecting (stream mode): a round pushes
  more candidates than its budget, ranked, re-ranks the unlabeled ones of earlier rounds, and
  closes once ``budget`` of them are labeled.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from alloop.protocols.context import PluginContext

__all__ = [
    "SECRET_HEADER",
    "AnnotationRecord",
    "CompletePull",
    "Connector",
    "ConnectorContext",
    "IncrementalPull",
    "Prediction",
    "PullResult",
    "RoundPresenter",
    "StreamPresenter",
    "TaskList",
    "TaskLookup",
    "TaskPayload",
    "TaskRef",
    "WebhookEvent",
    "WebhookSource",
]

#: the HTTP header carrying ``alloop serve``'s webhook secret (compared in constant time)
SECRET_HEADER = "X-Alloop-Secret"


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
    """One sample to put in front of annotators."""

    sample_key: str
    kind: str
    data: Mapping[str, Any]
    round_number: int
    prediction: Prediction | None = None
    #: position of the pick in the round's selection order, 1-based (1 = most useful first)
    rank: int | None = None
    #: the strategy's score for the pick (higher = more informative), when it gave one
    score: float | None = None


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
class ConnectorContext(PluginContext):
    """What a connector may know about the project it serves.

    Attributes
    ----------
    reference_labels : callable, optional
        Known labels by sample key (the simulated annotator answers from them).
    reference_boxes : callable, optional
        Known boxes by sample key, in percent of the image (the simulated annotator, detection).
    pool_root : Path, optional
        The folder holding the pool's files (images), for tools that serve them from disk.
    """

    reference_labels: Callable[[Sequence[str]], Mapping[str, str | None]] | None = None
    reference_boxes: Callable[[Sequence[str]], Mapping[str, Mapping[str, Any] | None]] | None = None
    pool_root: Path | None = None


@runtime_checkable
class Connector(Protocol):
    """A labeling tool, as the loop drives it."""

    name: str

    def ensure_project(self) -> None:
        """Create or adopt the tool's project and its label set (idempotent)."""
        ...

    def find_tasks(self, keys: Sequence[str], round_number: int | None = None) -> dict[str, str]:
        """External task ids of already-pushed samples, by sample key (pushed in ``round_number``)."""
        ...

    def push(self, tasks: Sequence[TaskPayload]) -> dict[str, str]:
        """Create tasks; return the tool's task id for each sample key.

        Idempotent by key within a round: a sample the tool already holds a task for in the
        task's round (pushed before, e.g. by a push whose answer was lost) is adopted, not
        created again. Pushing the same payloads twice returns the same id per key and leaves
        one task per key in the tool.
        """
        ...

    def pull(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        """The annotations currently present for these tasks (including cancelled ones).

        Raises :class:`~alloop.errors.ConnectorDataError`, naming it, for a task id the tool
        never issues (malformed for that tool). A task deleted in the tool - a valid id that is
        gone - yields no annotations and no error: the loop keeps collecting the others.
        """
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@runtime_checkable
class CompletePull(Protocol):
    """A connector that can list every annotation the tool holds for some tasks."""

    def pull_complete(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        """Every annotation of these tasks: one alloop has and this lacks was deleted in the tool."""
        ...


@dataclass(frozen=True)
class PullResult:
    """What an incremental pull read.

    Attributes
    ----------
    records : list of AnnotationRecord
        Every annotation of the tasks read.
    complete : frozenset of str
        External ids of the tasks whose annotations ``records`` lists completely (a stored
        annotation of one of them that is missing was deleted in the tool).
    cursor : dict
        The connector's state for the next pull (JSON-serializable); alloop stores it with the
        ingested annotations, in one transaction.
    full : bool
        Whether this was a full (reconciliation) pull over every given task.
    tasks_read : int
        How many tasks the tool was asked about (for reports and tests).
    """

    records: list[AnnotationRecord]
    complete: frozenset[str]
    cursor: dict[str, Any]
    full: bool
    tasks_read: int = 0


@runtime_checkable
class IncrementalPull(Protocol):
    """A connector that can pull only the tasks changed since its last pull."""

    def pull_changes(self, tasks: Sequence[TaskRef] | TaskLookup, cursor: Mapping[str, Any] | None) -> PullResult:
        """Annotations of the ``tasks`` that changed since ``cursor`` (all of them when ``cursor``
        is None or a reconciliation is due). ``tasks`` may be a :class:`TaskLookup`: the loop
        then reads from its database only the tasks the connector asks for (``among`` the
        changed ones), not every task of the project, on an incremental pull."""
        ...


@runtime_checkable
class TaskLookup(Protocol):
    """The tasks alloop pushed to a connector, read on demand."""

    def all(self) -> Sequence[TaskRef]:
        """Every task (a full pull)."""
        ...

    def among(self, external_ids: Collection[str]) -> Sequence[TaskRef]:
        """The tasks with these external ids (those alloop pushed; unknown ids are left out)."""
        ...


class TaskList:
    """A :class:`TaskLookup` over tasks already in memory."""

    def __init__(self, tasks: Sequence[TaskRef]) -> None:
        self.tasks = list(tasks)

    def all(self) -> Sequence[TaskRef]:
        return self.tasks

    def among(self, external_ids: Collection[str]) -> Sequence[TaskRef]:
        wanted = set(external_ids)
        return [t for t in self.tasks if t.external_id in wanted]


@runtime_checkable
class RoundPresenter(Protocol):
    """A connector that presents the open round's tasks in the tool (a view, a queue order)."""

    def present_round(self, round_number: int) -> None:
        """Show round ``round_number``'s tasks, most useful first (idempotent; called after every
        push, also one that only adopted tasks already there)."""
        ...


@runtime_checkable
class StreamPresenter(Protocol):
    """A connector whose view can do the selecting: annotators label continuously, in the view's
    order, and the loop keeps a larger ranked candidate set in front of them (stream mode).

    When :meth:`stream_factor` gives a number ``f``, a round selects ``f x budget`` samples
    (capped by what is available) among the never-selected ones and the *open leftovers* (picked
    in an earlier round, pushed, not annotated yet), pushes the new ones, re-ranks the leftovers
    picked again in the tool (:meth:`refresh_tasks`), and closes when ``budget`` of its tasks are
    resolved (or a retrain rule fires). ``None``: batch mode, as any other connector.
    """

    def stream_factor(self) -> int | None:
        """How many times the round's budget the view holds (>= 2), or None in batch mode."""
        ...

    def refresh_tasks(self, tasks: Mapping[str, TaskPayload]) -> int:
        """Move existing tasks (by the tool's task id) to the payloads' round, rank and score, with
        the payload's prediction as a new pre-annotation; return how many tasks were changed.

        Idempotent: a task that already shows the payload's round, rank and score and holds a
        prediction of its model version is left alone, so a push repeated after a crash applies
        only what is missing.
        """
        ...


@runtime_checkable
class FinalAnnotations(Protocol):
    """A connector whose annotations never change or disappear once it has returned them (the
    simulated annotator: its answers are a pure function of the task).

    The collect step then pulls only the open round's tasks and the tasks that have no stored
    annotation yet, instead of every task of the project on every tick.
    """

    final_annotations: Literal[True]


@dataclass(frozen=True)
class WebhookEvent:
    """What ``alloop serve`` needs of a tool's webhook call.

    Attributes
    ----------
    action : str
        The tool's event name.
    wakes : bool
        Whether the event changes annotations (the project's loop is woken).
    tool_project : str, optional
        The tool's project id named by the event, when the call's URL does not name the alloop
        project.
    """

    action: str
    wakes: bool
    tool_project: str | None = None


@runtime_checkable
class WebhookSource(Protocol):
    """A connector whose tool calls ``alloop serve`` when annotations change.

    The webhook only wakes the loop: the next pull stays the source of truth, so a lost,
    repeated or reordered call changes nothing.
    """

    def ensure_webhook(self, url: str, secret: str, *, match: Callable[[str], bool] | None = None) -> str:
        """Have the tool call ``url`` (with ``secret`` in :data:`SECRET_HEADER`) on annotation changes.

        Idempotent; ``match`` accepts an older URL of the same receiver, updated in place.
        Returns the tool's webhook id.
        """
        ...

    def webhook_event(self, payload: Any) -> WebhookEvent | None:
        """Read one call's JSON body; ``None`` when it is not an event of this tool."""
        ...

    def webhook_project(self) -> str | None:
        """The tool's id of this project, to match events whose URL names no alloop project."""
        ...
