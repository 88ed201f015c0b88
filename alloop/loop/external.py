"""Rounds whose model is trained outside alloop: an ``external`` learner (the ``command`` learner).

The loop exports the labeled samples (COCO boxes for detection, JSON lines of labels
otherwise), the learner runs the team's own training script, and its predictions for the
pool (and the held-out samples) come back as an :class:`ExternalModel`: class probabilities
by sample key, or detections. They are saved as the round's model artifact, so a restarted
process scores and pre-annotates from the same predictions without rerunning the script.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from alloop.detection.annotations import image_size, pixel_boxes
from alloop.detection.boxes import Proposals
from alloop.errors import LearnerError, format_list
from alloop.files import atomic_write
from alloop.protocols import ExportItem, ExternalLearner
from alloop.rng import derive_seed
from alloop.store.engine import session_scope
from alloop.store.models import ModelVersion, Project, Sample
from alloop.store.queries import training_boxes, training_labels

if TYPE_CHECKING:
    from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["ExternalModel", "SampleRow", "export_item", "sample_rows", "train_external"]


class SampleRow(NamedTuple):
    """The columns of a sample an export reads, as a plain row."""

    id: int
    key: str
    data: dict[str, Any]
    reference_label: str | None


def sample_rows(session: Any, project_id: int, split: str) -> list[SampleRow]:
    """The readable samples of ``split`` ("pool" or "test") in id order, as plain rows: no ORM
    instances, which cost about ten times the time and memory for a pool of millions."""
    t = Sample.__table__  # type: ignore[attr-defined]
    stmt = (t.select().with_only_columns(t.c.id, t.c.key, t.c.data, t.c.reference_label)
            .where(t.c.project_id == project_id, t.c.status == "ok", t.c.split == split).order_by(t.c.id))
    return [SampleRow(*r) for r in session.connection().execute(stmt)]


def export_item(smp: Sample | SampleRow, *, label: str | None = None,
                boxes: Sequence[dict[str, Any]] | None = None) -> ExportItem:
    """The :class:`~alloop.protocols.ExportItem` of a sample (boxes: percent -> pixels)."""
    data: dict[str, Any] = {k: smp.data[k] for k in ("path", "text", "width", "height") if k in smp.data}
    if boxes is not None:
        size = image_size(smp.data, smp.key)
        data["width"], data["height"] = size
        return ExportItem(smp.key, data, boxes=pixel_boxes(boxes, size))
    return ExportItem(smp.key, data, label=label)


@dataclass(frozen=True)
class ExternalModel:
    """Predictions of an external learner for the samples it was asked about.

    Attributes
    ----------
    task : str
    labels : tuple of str
    keys : tuple of str
        The predicted samples' keys.
    proba : ndarray of shape (len(keys), len(labels)) or None
        Classification and text.
    detections : Proposals or None
        Detection: boxes by image key.
    """

    task: str
    labels: tuple[str, ...]
    keys: tuple[str, ...]
    proba: NDArray[Any] | None = None
    detections: Proposals | None = None

    # -- what the loop reads -------------------------------------------------------------------
    def proba_of(self, keys: Sequence[str]) -> NDArray[Any]:
        """Class probabilities of ``keys`` (rows in that order)."""
        if self.proba is None:
            raise LearnerError(f"The {self.task} model has no class probabilities.")
        row = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys if k not in row]
        if missing:
            raise LearnerError(
                f"The external model predicted no probabilities for {len(missing)} pool samples (e.g. "
                f"{format_list(missing[:3])}). Only ask for the samples it predicted (see `keys`)."
            )
        return self.proba[[row[k] for k in keys]]

    def predict_proba(self, X: Any) -> NDArray[Any]:  # pragma: no cover - guards misuse
        raise LearnerError("An external model predicts by sample key: use proba_of(keys).")

    def embed(self, X: Any) -> None:
        return None

    # -- persistence ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        arrays: dict[str, NDArray[Any]] = {
            "task": np.array(self.task), "labels": np.array(self.labels, dtype=str),
            "keys": np.array(self.keys, dtype=str),
        }
        if self.proba is not None:
            arrays["proba"] = np.asarray(self.proba, dtype=np.float32)
        if self.detections is not None:
            d = self.detections
            arrays.update(det_image=np.asarray(d.image, dtype=str), det_box=d.box,
                          det_label=np.asarray(d.label, dtype=str), det_score=d.score)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=True, **arrays)  # the default, spelled out: else mypy matches **arrays to it
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> ExternalModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                dets = None
                if "det_image" in z.files:
                    dets = Proposals(z["det_image"].tolist(), z["det_box"], z["det_label"].tolist(), z["det_score"])
                return cls(
                    task=str(z["task"]), labels=tuple(z["labels"].tolist()), keys=tuple(z["keys"].tolist()),
                    proba=z["proba"] if "proba" in z.files else None, detections=dets,
                )
        except (OSError, ValueError, KeyError) as exc:
            raise LearnerError(
                f"Cannot read the external model's predictions {str(path)!r}: {type(exc).__name__}: {exc}. "
                "Delete the file to have the round's training command run again."
            ) from None


def evaluate_external(model: ExternalModel, test: Sequence[Sample | SampleRow],
                      labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy of a classification model on held-out samples with known labels."""
    if model.proba is None or not test:
        return {}
    classes = {lb: i for i, lb in enumerate(labels)}
    predicted = set(model.keys)
    known = [(smp.key, smp.reference_label) for smp in test
             if smp.key in predicted and smp.reference_label is not None]
    if not known:
        return {}
    y = np.array([classes[label] for _, label in known])
    pred = np.argmax(model.proba_of([key for key, _ in known]), axis=1)
    return {"accuracy": float(np.mean(pred == y)), "n_test": len(known)}


def train_external(ws: Workspace, project: Project, round_key: object,
                   stem: str) -> tuple[ExternalModel | None, ModelVersion | None]:
    """Run the project's external learner on the current labels; (ExternalModel, ModelVersion) or (None, None).

    The predicted samples are the pool and the held-out samples. Predictions are written to
    ``<work_dir>/models/<stem>/predictions.npz`` (the model artifact) before the caller commits.
    """
    detection = project.task == "detection"
    with session_scope(ws.engine) as s:
        pool = sample_rows(s, project.id, "pool")  # type: ignore[arg-type]
        test = sample_rows(s, project.id, "test")  # type: ignore[arg-type]
        if detection:
            boxes = training_boxes(s, project)
            train = [export_item(smp, boxes=boxes[smp.id]) for smp in pool if smp.id in boxes]
        else:
            labels = training_labels(s, project, ws.config.loop.aggregation)
            train = [export_item(smp, label=labels[smp.id]) for smp in pool if smp.id in labels]
    if not train or (not detection and len({it.label for it in train}) < 2):
        return None, None
    predict = [export_item(smp) for smp in [*pool, *test]]
    run_dir = ws.work_dir / "models" / stem
    learner = ws.new_learner()
    if not isinstance(learner, ExternalLearner):  # learner_kind said "external"
        raise LearnerError(f"Learner {learner.name!r} does not train on exported files.")
    result = learner.run(task=project.task, labels=list(project.labels), train=train, predict=predict,
                         run_dir=run_dir, seed=derive_seed(project.seed, round_key, "learner"))
    model = ExternalModel(task=project.task, labels=tuple(project.labels), keys=result.keys,
                          proba=result.proba, detections=result.detections)
    blob = model.to_bytes()
    path = run_dir / "predictions.npz"
    atomic_write(path, blob)
    metrics: dict[str, Any] = {"n_labels": len(train), "train_seconds": round(result.seconds, 3)}
    metrics.update(result.metrics)
    if detection:
        from alloop.detection.metrics import evaluate_detections

        metrics.update(evaluate_detections(model.detections, [smp for smp in test if "reference_boxes" in smp.data],
                                           project.labels))
    else:
        metrics.update(evaluate_external(model, [smp for smp in test if smp.reference_label is not None],
                                         project.labels))
    mv = ModelVersion(project_id=project.id, learner=ws.config.learner.name, artifact_path=str(path),  # type: ignore[arg-type]
                      artifact_hash=hashlib.sha256(blob).hexdigest(), n_labels=len(train), metrics=metrics)
    logger.info("project %s: external model %s trained on %d samples in %.1f s", project.name, stem,
                len(train), result.seconds)
    return model, mv
