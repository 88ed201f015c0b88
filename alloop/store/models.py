"""The database tables (SQLModel). Schema changes go through Alembic migrations.

Invariants the constraints enforce (so a bug or a crash cannot break them):

- a sample key appears once per project;
- a sample is selected at most once per project (``selection.project_id, sample_id`` unique);
- a sample is pushed at most once per connector (``task.project_id, connector, sample_id``);
- an annotation from a labeling tool is stored once (``annotation.project_id, connector,
  source_id``): re-ingesting updates it in place;
- a round number appears once per project.

Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Table, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def table(model: type[SQLModel]) -> Table:
    """The Core table of a model: hot statements run on it (``session.connection().execute``), which
    spares them the ORM's per-statement work (entity loading, session synchronization)."""
    return model.__table__  # type: ignore[attr-defined,no-any-return]


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    task: str
    labels: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    seed: int = Field(default=0, sa_type=BigInteger)  # any 64-bit seed (PostgreSQL's integer is 32-bit)
    status: str = "active"  # active | finished
    finished_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    next_action_at: datetime | None = None
    """When ``alloop serve`` ticks the project next (written by serve when it schedules)."""
    next_action: str | None = None
    """What that is and who does it, e.g. "tick (every 300 s) by host:pid"."""


class Sample(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "key", name="uq_sample_project_key"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    key: str
    kind: str  # image | text | vector
    content_hash: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reference_label: str | None = None
    split: str = "pool"  # pool | test
    status: str = "ok"  # ok | quarantined
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    row: int | None = Field(default=None, sa_type=BigInteger)
    """Vector samples: the sample's row in the project's vector store (see :class:`VectorFile`);
    ``None`` for other kinds (and for vector samples imported before the store existed)."""


class VectorFile(SQLModel, table=True):
    """One file of a project's vector store: rows ``first_row ..< first_row + rows`` of the store.

    A vectors import writes its float32 matrix once, as ``path`` (relative to the work dir,
    content-addressed), and gives each new sample ``row = first_row + <its row in the file>``.
    Rounds read features by these rows, memory-mapped, without a second copy.
    """

    __table_args__ = (
        UniqueConstraint("project_id", "path", name="uq_vectorfile_project_path"),
        UniqueConstraint("project_id", "first_row", name="uq_vectorfile_project_first_row"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    path: str
    first_row: int = Field(sa_type=BigInteger)
    rows: int = Field(sa_type=BigInteger)
    dim: int
    created_at: datetime = Field(default_factory=utcnow)


class Round(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "number", name="uq_round_project_number"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    number: int
    state: str = "CREATED"
    strategy: str = ""
    strategy_params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    budget: int
    model_version_id: int | None = Field(default=None, foreign_key="modelversion.id")
    attempt: int = 0
    last_error: str | None = None
    failed_from: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    pushed_at: datetime | None = None
    completed_at: datetime | None = None
    retrain_requested_at: datetime | None = None
    """When someone asked to train now (Label Studio's "Start Training"): the collecting round
    closes at the first tick with a new label since its model."""


class Selection(SQLModel, table=True):
    """What a strategy picked in a round, and why (rank and score)."""

    __table_args__ = (UniqueConstraint("project_id", "sample_id", name="uq_selection_project_sample"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    sample_id: int = Field(foreign_key="sample.id")
    rank: int
    score: float


class Task(SQLModel, table=True):
    """A sample pushed to a labeling tool: the tool's task id, never a position."""

    __table_args__ = (
        UniqueConstraint("project_id", "connector", "sample_id", name="uq_task_project_connector_sample"),
        UniqueConstraint("project_id", "connector", "external_id", name="uq_task_project_connector_ext"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    sample_id: int = Field(foreign_key="sample.id")
    connector: str
    external_id: str
    pushed_at: datetime = Field(default_factory=utcnow)


class Annotation(SQLModel, table=True):
    """Every annotation received, kept (also cancelled/skipped and invalid ones)."""

    __table_args__ = (
        UniqueConstraint("project_id", "connector", "source_id", name="uq_annotation_project_connector_source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    sample_id: int = Field(foreign_key="sample.id", index=True)
    task_id: int | None = Field(default=None, foreign_key="task.id")
    round_id: int | None = Field(default=None, foreign_key="round.id")
    connector: str
    source_id: str
    annotator: str
    label: str | None = None
    value: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    cancelled: bool = False
    valid: bool = True
    invalid_reason: str | None = None
    lead_time: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    ingested_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    """A model trained in a round (``round_number``) or at the end (``final``)."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    round_number: int | None = None
    final: bool = False
    learner: str
    artifact_path: str | None = None
    artifact_hash: str | None = None
    n_labels: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class ProjectLock(SQLModel, table=True):
    """Who advances a project right now (a lease, renewed by a heartbeat)."""

    project_id: int = Field(foreign_key="project.id", primary_key=True)
    owner: str | None = None
    acquired_at: datetime | None = None
    expires_at: datetime | None = None


class ConnectorState(SQLModel, table=True):
    """A connector's own state for a project, kept between ticks (e.g. an incremental pull's
    watermark); written in the transaction that stores what it describes."""

    project_id: int = Field(foreign_key="project.id", primary_key=True)
    connector: str = Field(primary_key=True)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)
