"""Knowing when to stop without a labeled test set: measures on a fixed, unlabeled stop set.

Two rules, both read from each round model's metrics (so they survive restarts and show in
``alloop status`` and ``alloop report``):

- **stabilizing predictions** (Bloodgood & Vijay-Shanker, "A Method for Stopping Active
  Learning Based on Stabilizing Predictions and the Need for User-Adjustable Stopping",
  CoNLL 2009): Cohen's kappa between the predictions of two successive models on the stop set
  (``stop_kappa`` in the metrics); stop when its mean over the last ``[loop] stop_window``
  pairs (3) reaches ``[loop] stop_kappa`` (the paper's 0.99);
- **overall uncertainty** (Zhu, Wang, Hovy 2008, as small-text's ``OverallUncertainty``): the
  stop set's mean prediction entropy divided by ``log(classes)`` (``stop_uncertainty`` in the
  metrics); stop when it falls below ``[loop] stop_uncertainty`` (0.05 there).

The stop set: ``[loop] stop_set_size`` pool samples (1,000) drawn once with the project's seed,
kept in ``<work_dir>/stop_set.npy`` (their sample ids) so a restarted process and every later
round use the same ones. Its samples may get labeled later; they stay in it (the models are
compared on the same items). Each round's predictions on it are kept next to the round's scores
(``rounds/round-NNNN/stop_set.npz``) for the next round's comparison.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from alloop.config import LoopConfig
from alloop.files import atomic_write
from alloop.rng import derive_rng

if TYPE_CHECKING:
    from alloop.loop.data import PoolData
    from alloop.store.models import Project

__all__ = ["cohen_kappa", "normalised_entropy", "stop_metrics", "stopping_reason", "tracks_stopping"]

logger = logging.getLogger(__name__)


def tracks_stopping(loop: LoopConfig) -> bool:
    """Whether round models measure themselves on the stop set."""
    return loop.stop_kappa is not None or loop.stop_uncertainty is not None or loop.track_stopping


def cohen_kappa(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Cohen's kappa of two label vectors; 1.0 when they agree everywhere (even on one class)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0:
        return float("nan")
    observed = float(np.mean(a == b))
    if observed == 1.0:
        return 1.0
    labels = np.union1d(a, b)
    pa = np.array([np.mean(a == c) for c in labels])
    pb = np.array([np.mean(b == c) for c in labels])
    expected = float(pa @ pb)
    return (observed - expected) / (1.0 - expected)


def normalised_entropy(proba: NDArray[Any]) -> NDArray[np.float64]:
    """Each row's prediction entropy divided by ``log(C)`` (0: certain, 1: uniform)."""
    p = np.asarray(proba, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    out: NDArray[np.float64] = h / np.log(p.shape[1]) if p.shape[1] > 1 else np.zeros(len(p))
    return out


def _stop_set_ids(data: PoolData, project: Project, size: int, work_dir: Path) -> NDArray[np.int64]:
    path = work_dir / "stop_set.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=np.int64)
    pool = data.arrays(project.id)  # type: ignore[arg-type]
    rng = derive_rng(project.seed, "stop-set")
    take = np.sort(rng.choice(len(pool), size=min(size, len(pool)), replace=False))
    ids = np.asarray(pool.ids[take], dtype=np.int64)
    buf = io.BytesIO()
    np.save(buf, ids)
    atomic_write(path, buf.getvalue())
    return ids


def _round_file(work_dir: Path, number: int) -> Path:
    return work_dir / "rounds" / f"round-{number:04d}" / "stop_set.npz"


def stop_metrics(data: PoolData, project: Project, loop: LoopConfig, model: Any, round_number: int,
                 work_dir: Path) -> dict[str, float]:
    """The round model's stop-set measures: ``stop_kappa`` (against the previous round's model,
    when it had one) and ``stop_uncertainty``; its predictions are kept for the next round."""
    ids = _stop_set_ids(data, project, loop.stop_set_size, Path(work_dir))
    part, X = data.features(project.id, data.arrays_among(project.id, ids.tolist()))  # type: ignore[arg-type]
    if not len(part):
        return {}
    proba = np.asarray(model.predict_proba(X))
    pred = np.argmax(proba, axis=1)
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(part.ids, dtype=np.int64), pred=pred)
    atomic_write(_round_file(Path(work_dir), round_number), buf.getvalue())
    out = {"stop_uncertainty": float(normalised_entropy(proba).mean())}
    before = _round_file(Path(work_dir), round_number - 1)
    if round_number > 0 and before.exists():
        with np.load(before) as old:
            common, i, j = np.intersect1d(part.ids, old["ids"], assume_unique=True, return_indices=True)
            if common.size:
                out["stop_kappa"] = cohen_kappa(pred[i], old["pred"][j])
    return out


def stopping_reason(loop: LoopConfig, recent: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a stop-set rule says stop, given the latest round models' metrics (latest first)."""
    if loop.stop_kappa is not None:
        kappas = [m.get("stop_kappa") for m in recent[: loop.stop_window]]
        if len(kappas) == loop.stop_window and all(k is not None for k in kappas):
            mean = float(np.mean(kappas))  # type: ignore[arg-type]
            if mean >= loop.stop_kappa:
                return (f"predictions stabilized (mean kappa {mean:.4f} >= {loop.stop_kappa} over the last "
                        f"{loop.stop_window} model pairs on the stop set)")
    if loop.stop_uncertainty is not None and recent:
        u = recent[0].get("stop_uncertainty")
        if u is not None and u < loop.stop_uncertainty:
            return f"overall uncertainty {u:.4f} < {loop.stop_uncertainty} on the stop set"
    return None
