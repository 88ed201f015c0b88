"""The simulated annotator: answers from the pool's known labels.

Detection projects get boxes: the ground-truth boxes of each image (``reference_boxes``), in
percent of the image as Label Studio reports them, with the same optional label noise per box.

It is a first-class connector: demos, simulations and benchmarks use it exactly like a real
labeling tool. Answers are a pure function of (project seed, sample key, annotator), so a
re-pull returns identical annotations (same source ids, same timestamps): ingesting twice
changes nothing, and a resumed run sees the same labels as an uninterrupted one.

Task ids are ``oracle:<sample key>``: pushing a sample again gives the same id and creates
nothing. The oracle answers every task it is asked about (it has no task to delete); the tasks
pushed through an instance are remembered in memory for :meth:`OracleConnector.find_tasks`
(a restarted process starts with none, and pushing again is free).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alloop.errors import ConfigError, ConnectorDataError
from alloop.protocols import AnnotationRecord, ConnectorContext, TaskPayload, TaskRef
from alloop.rng import derive_rng


class OracleParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Probability that an annotator gives a uniformly drawn wrong label (detection: to each box)."""
    annotators: int = Field(default=1, ge=1, le=100)
    """Number of simulated annotators labeling every task."""
    skip_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Probability that an annotator skips (cancels) a task."""


class OracleConnector:
    """Simulated annotator(s) answering from known labels, with optional noise and skips."""

    name = "oracle"
    #: answers never change once given (a pure function of the task): pulls skip answered tasks
    final_annotations = True

    def __init__(self, context: ConnectorContext, params: OracleParams) -> None:
        self.detection = context.task == "detection"
        if self.detection and context.reference_boxes is None:
            raise ConfigError("The oracle connector needs the pool's ground-truth boxes (context.reference_boxes).")
        if not self.detection and context.reference_labels is None:
            raise ConfigError("The oracle connector needs the pool's known labels (reference_labels).")
        self.context = context
        self.params = params
        #: sample key -> round it was pushed in (this instance's tasks, for find_tasks)
        self._pushed: dict[str, int] = {}
        self._made: dict[tuple[str, Any], list[AnnotationRecord]] = {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, *, context: ConnectorContext) -> OracleConnector:
        from alloop.params import parse_params

        return cls(context, parse_params(OracleParams, params, "oracle connector parameters"))

    def ensure_project(self) -> None:
        return None

    @staticmethod
    def task_id(key: str) -> str:
        """The oracle's task id of a sample: ``oracle:<key>``."""
        return f"oracle:{key}"

    def find_tasks(self, keys: Sequence[str], round_number: int | None = None) -> dict[str, str]:
        """The tasks pushed through this instance (of ``round_number`` if given)."""
        return {k: self.task_id(k) for k in keys
                if k in self._pushed and (round_number is None or self._pushed[k] == round_number)}

    def push(self, tasks: Sequence[TaskPayload]) -> dict[str, str]:
        missing = self._known(t.sample_key for t in tasks)
        unknown = [k for k, v in missing.items() if v is None]
        if unknown:
            what = ("ground-truth boxes", "a COCO file as `annotations` in [pool.source]") if self.detection else (
                "a known label", "class sub-folders, a label column")
            raise ConnectorDataError(
                f"The simulated annotator cannot label {len(unknown)} samples without {what[0]} "
                f"(e.g. {unknown[0]!r}). Give the pool its truth ({what[1]}) or use a real labeling connector."
            )
        for t in tasks:
            self._pushed.setdefault(t.sample_key, t.round_number)
        return {t.sample_key: self.task_id(t.sample_key) for t in tasks}

    def _known(self, keys: Any) -> dict[str, Any]:
        keys = list(keys)
        if not keys:
            return {}
        if self.detection:
            return dict(self.context.reference_boxes(keys))  # type: ignore[misc]
        return dict(self.context.reference_labels(keys))  # type: ignore[misc]

    def _wrong(self, truth: str | None, rng: Any) -> str | None:
        others = [lb for lb in self.context.labels if lb != truth]
        return others[int(rng.integers(len(others)))] if others else truth

    def pull(self, tasks: Sequence[TaskRef]) -> list[AnnotationRecord]:
        for t in tasks:
            if t.external_id != self.task_id(t.sample_key):
                raise ConnectorDataError(
                    f"The simulated annotator never issued the task id {t.external_id!r} (sample "
                    f"{t.sample_key!r}): its task ids are 'oracle:<sample key>', here "
                    f"{self.task_id(t.sample_key)!r}. The task was recorded for another connector."
                )
        # a task's annotations are a pure function of (seed, key, truth, pushed_at): made once per
        # task, then handed out again (every pull lists every task)
        fresh = [t for t in tasks if (t.sample_key, t.pushed_at) not in self._made]
        known = self._known(t.sample_key for t in fresh)
        for t in fresh:
            self._made[(t.sample_key, t.pushed_at)] = self._annotate(t, known.get(t.sample_key))
        return [r for t in tasks for r in self._made[(t.sample_key, t.pushed_at)]]

    def _annotate(self, t: TaskRef, truth: Any) -> list[AnnotationRecord]:
        out: list[AnnotationRecord] = []
        for a in range(self.params.annotators):
            rng = derive_rng(self.context.seed, "oracle", t.sample_key, a)
            cancelled = bool(rng.random() < self.params.skip_rate)
            value = None
            if self.detection:
                label = None
                if truth is None and not cancelled:  # push checked it: the pool's truth changed since
                    raise ConnectorDataError(
                        f"The simulated annotator has no ground-truth boxes for sample {t.sample_key!r} any "
                        "more. Give the pool its truth again (a COCO file as `annotations` in [pool.source])."
                    )
                boxes = [dict(b) for b in truth["boxes"]] if truth is not None and not cancelled else []
                for b in boxes:
                    if self.params.noise and rng.random() < self.params.noise:
                        b["label"] = self._wrong(b["label"], rng)
                value = None if cancelled else {"boxes": boxes}
            else:
                label = None if cancelled else truth
                if not cancelled and self.params.noise and rng.random() < self.params.noise:
                    label = self._wrong(truth, rng)
            at = t.pushed_at + timedelta(seconds=1 + a)
            out.append(
                AnnotationRecord(
                    sample_key=t.sample_key,
                    external_task_id=t.external_id,
                    source_id=f"{t.sample_key}#{a}",
                    annotator=f"oracle-{a}",
                    label=label,
                    cancelled=cancelled,
                    value=value,
                    created_at=at,
                    updated_at=at,
                    lead_time=0.0,
                )
            )
        return out

    def close(self) -> None:
        return None
