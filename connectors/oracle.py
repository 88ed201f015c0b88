"""The simulated annotator: answers from the pool's known labels.

It is a first-class connector: demos, simulations and benchmarks use it exactly like a real
labeling tool. Answers are a pure function of (project seed, sample key, annotator), so a
re-pull returns identical annotations (same source ids, same timestamps): ingesting twice
changes nothing, and a resumed run sees the same labels as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alloop.errors import ConfigError, ConnectorDataError
from alloop.rng import derive_rng
from connectors.base import AnnotationRecord, ConnectorContext, TaskPayload, TaskRef


class OracleParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Probability that an annotator gives a uniformly drawn wrong label."""
    annotators: int = Field(default=1, ge=1, le=100)
    """Number of simulated annotators labeling every task."""
    skip_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Probability that an annotator skips (cancels) a task."""


class OracleConnector:
    """Simulated annotator(s) answering from known labels, with optional noise and skips."""

    name = "oracle"

    def __init__(self, context: ConnectorContext, params: OracleParams) -> None:
        if context.reference_labels is None:
            raise ConfigError("The oracle connector needs the pool's known labels (reference_labels).")
        self.context = context
        self.params = params

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, *, context: ConnectorContext) -> "OracleConnector":
        from alloop.config import parse_params

        return cls(context, parse_params(OracleParams, params, "oracle connector parameters"))

    def ensure_project(self) -> None:
        return None

    def find_tasks(self, keys: Sequence[str], round_number: int | None = None) -> dict[str, str]:
        # The oracle keeps no state: a task "exists" once alloop recorded it.
        return {}

    def push(self, tasks: Sequence[TaskPayload]) -> dict[str, str]:
        missing = self._known(t.sample_key for t in tasks)
        unknown = [k for k, v in missing.items() if v is None]
        if unknown:
            raise ConnectorDataError(
                f"The simulated annotator cannot label {len(unknown)} samples without a known label "
                f"(e.g. {unknown[0]!r}). Use a pool with labels (class sub-folders, a label column) "
                "or a real labeling connector."
            )
        return {t.sample_key: f"oracle:{t.sample_key}" for t in tasks}

    def _known(self, keys: Any) -> dict[str, str | None]:
        keys = list(keys)
        return dict(self.context.reference_labels(keys)) if keys else {}

    def pull(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        known = self._known(t.sample_key for t in tasks)
        labels = self.context.labels
        out: list[AnnotationRecord] = []
        for t in tasks:
            truth = known.get(t.sample_key)
            for a in range(self.params.annotators):
                rng = derive_rng(self.context.seed, "oracle", t.sample_key, a)
                cancelled = bool(rng.random() < self.params.skip_rate)
                label: str | None = None if cancelled else truth
                if not cancelled and self.params.noise and rng.random() < self.params.noise:
                    others = [lb for lb in labels if lb != truth]
                    label = others[int(rng.integers(len(others)))] if others else truth
                at = t.pushed_at + timedelta(seconds=1 + a)
                out.append(
                    AnnotationRecord(
                        sample_key=t.sample_key,
                        external_task_id=t.external_id,
                        source_id=f"{t.sample_key}#{a}",
                        annotator=f"oracle-{a}",
                        label=label,
                        cancelled=cancelled,
                        created_at=at,
                        updated_at=at,
                        lead_time=0.0,
                    )
                )
        return out

    def close(self) -> None:
        return None
