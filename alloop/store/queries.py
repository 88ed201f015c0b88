"""Reads and small writes over the tables, shared by the loop, the CLI and the reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from alloop.errors import ConfigError, ProjectNotFoundError
from alloop.labels import Vote, aggregate
from alloop.store.models import (
    Annotation,
    ModelVersion,
    Project,
    Round,
    Sample,
    Selection,
)


def get_project(session: Session, name: str) -> Project:
    project = session.exec(select(Project).where(Project.name == name)).first()
    if project is None:
        known = session.exec(select(Project.name).order_by(Project.name)).all()
        raise ProjectNotFoundError(
            f"No project named {name!r} in this database (known: {', '.join(known) or 'none'}). "
            "Run `alloop import` first to create it."
        )
    return project


def ensure_project(
    session: Session, *, name: str, task: str, labels: Sequence[str] | None, seed: int, config: dict[str, Any]
) -> Project:
    """Create the project row, or refresh its stored config from the project file.

    The label set may be set once; changing it after annotations exist is refused.
    """
    if not -(2**63) <= seed < 2**63:  # the seed column is a 64-bit integer on every backend
        raise ConfigError(
            f"[project] seed = {seed} does not fit in 64 bits; use a seed between {-(2**63)} and {2**63 - 1}."
        )
    project = session.exec(select(Project).where(Project.name == name)).first()
    if project is None:
        project = Project(name=name, task=task, labels=list(labels or []), seed=seed, config=config)
        session.add(project)
        session.flush()
        return project
    if project.task != task:
        raise ConfigError(
            f"Project {name!r} was created with task {project.task!r}; the project file now says {task!r}. "
            "A project's task cannot change: create a new project (another name) instead."
        )
    if labels is not None and list(labels) != project.labels:
        n_ann = session.exec(
            select(func.count()).select_from(Annotation).where(Annotation.project_id == project.id)
        ).one()
        if n_ann and not set(project.labels) <= set(labels):
            removed = sorted(set(project.labels) - set(labels))
            raise ConfigError(
                f"The project file removes labels {removed} that annotations may use. Labels can only "
                "be added once labeling started; restore them in [project] labels."
            )
        project.labels = list(labels)
    if project.seed != seed and session.exec(
        select(func.count()).select_from(Round).where(Round.project_id == project.id)
    ).one():
        raise ConfigError(
            f"Project {name!r} already ran rounds with seed {project.seed}; the project file says {seed}. "
            "Changing the seed mid-project would break reproducibility: restore it."
        )
    project.seed = seed
    project.config = config
    session.add(project)
    session.flush()
    return project


def pool_samples(session: Session, project_id: int) -> list[Sample]:
    """Selectable samples (readable, not held out), in id order: the pool's positions."""
    return list(
        session.exec(
            select(Sample)
            .where(Sample.project_id == project_id, Sample.status == "ok", Sample.split == "pool")
            .order_by(col(Sample.id))
        ).all()
    )


def selected_ids(session: Session, project_id: int) -> set[int]:
    return set(session.exec(select(Selection.sample_id).where(Selection.project_id == project_id)).all())


def rounds(session: Session, project_id: int) -> list[Round]:
    return list(session.exec(select(Round).where(Round.project_id == project_id).order_by(col(Round.number))).all())


def current_round(session: Session, project_id: int) -> Round | None:
    return session.exec(
        select(Round).where(Round.project_id == project_id).order_by(col(Round.number).desc()).limit(1)
    ).first()


def training_labels(session: Session, project: Project, rule: str) -> dict[int, str]:
    """Aggregated label per sample id, from valid non-cancelled annotations."""
    rows = session.connection().execute(  # Core: plain rows, no ORM loading (every round reads them)
        select(Annotation.sample_id, Annotation.annotator, Annotation.label, Annotation.updated_at).where(
            Annotation.project_id == project.id,
            Annotation.valid == True,  # noqa: E712
            Annotation.cancelled == False,  # noqa: E712
            col(Annotation.label).is_not(None),
        )
        # a fixed order, so votes with equal timestamps break ties alike on every backend (PostgreSQL
        # returns rows in storage order, which an updated annotation changes)
        .order_by(col(Annotation.id))
    ).all()
    return aggregate((Vote(*r) for r in rows), rule)


def round_count(session: Session, project_id: int) -> tuple[int, int | None]:
    """``(number of rounds, highest round number or None)``."""
    n, last = session.execute(
        select(func.count(), func.max(Round.number)).where(Round.project_id == project_id)
    ).one()
    return int(n), last


def latest_model(session: Session, project_id: int) -> ModelVersion | None:
    """The most recent round model (not the final one), or None."""
    return session.exec(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.final == False)  # noqa: E712
        .order_by(col(ModelVersion.id).desc()).limit(1)
    ).first()


def recent_model_metrics(session: Session, project_id: int, n: int) -> list[dict[str, Any]]:
    """The metrics of the ``n`` latest round models (not the final one), latest first."""
    rows = session.exec(
        select(ModelVersion.metrics).where(ModelVersion.project_id == project_id, ModelVersion.final == False)  # noqa: E712
        .order_by(col(ModelVersion.id).desc()).limit(n)
    ).all()
    return [dict(m) for m in rows]


def model_versions(session: Session, project_id: int) -> list[ModelVersion]:
    return list(
        session.exec(
            select(ModelVersion).where(ModelVersion.project_id == project_id).order_by(col(ModelVersion.id))
        ).all()
    )


def training_boxes(session: Session, project: Project) -> dict[int, list[dict[str, Any]]]:
    """Detection: the boxes of each labeled sample id, from its latest valid box annotation.

    Boxes are in percent of the image (``{"x", "y", "width", "height", "rotation", "label"}``).
    Several annotators' boxes are not fused: the most recent valid, non-cancelled annotation
    of a sample wins (an empty list means "nothing to detect here", a real label).
    """
    rows = session.exec(
        select(Annotation.sample_id, Annotation.value, Annotation.updated_at).where(
            Annotation.project_id == project.id,
            Annotation.valid == True,  # noqa: E712
            Annotation.cancelled == False,  # noqa: E712
            col(Annotation.value).is_not(None),
        )
        .order_by(col(Annotation.id))  # equal timestamps: the same winner on every backend
    ).all()
    best: dict[int, tuple[list[dict[str, Any]], datetime]] = {}
    for sid, value, at in rows:
        if isinstance(value, dict) and "boxes" in value and (sid not in best or at > best[sid][1]):
            best[sid] = (value["boxes"], at)
    return {sid: list(boxes) for sid, (boxes, _) in best.items()}
