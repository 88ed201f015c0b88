"""When to stop, how big a round is, when a round's labeling is complete or its model is stale.

Policies read the persisted history (rounds, selections, models), never in-memory state,
so they give the same answer after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from alloop.config import LoopConfig
from alloop.errors import PoolExhaustedError
from alloop.loop.stopping import stopping_reason
from alloop.store.models import ModelVersion, utcnow


def stop_reason(
    loop: LoopConfig,
    n_rounds: int,
    n_selected: int,
    n_candidates: int,
    latest_model: ModelVersion | None,
    recent_metrics: Sequence[Mapping[str, Any]] = (),
) -> str | None:
    """Why the project should stop before creating another round, or None to go on.

    ``recent_metrics``: the latest round models' metrics, latest first (at least ``stop_window``
    of them when a stop-set rule is set, see :mod:`alloop.loop.stopping`)."""
    if loop.max_rounds is not None and n_rounds >= loop.max_rounds:
        return f"max_rounds reached ({n_rounds} rounds)"
    if loop.budget is not None and n_selected >= loop.budget:
        return f"budget spent ({n_selected} of {loop.budget} samples selected)"
    if loop.target_accuracy is not None and latest_model is not None:
        acc = latest_model.metrics.get("accuracy")
        if acc is not None and acc >= loop.target_accuracy:
            return f"target accuracy reached ({acc:.4f} >= {loop.target_accuracy})"
    stable = stopping_reason(loop, recent_metrics)
    if stable is not None:
        return stable
    if n_candidates == 0:
        return "pool exhausted (every sample was selected)"
    return None


def round_budget(loop: LoopConfig, number: int, n_selected: int, n_candidates: int) -> int:
    """How many samples round ``number`` selects; errors if the pool cannot supply them."""
    size = loop.initial_size if number == 0 else loop.batch_size
    what = "loop.initial_size" if number == 0 else "loop.batch_size"
    if loop.budget is not None:
        size = min(size, loop.budget - n_selected)
    if size > n_candidates:
        raise PoolExhaustedError(
            size,
            n_candidates,
            hint=(
                f"Set {what} (now {size}) to at most {n_candidates} in alloop.toml, set loop.budget, "
                "or import more samples."
            ),
        )
    return size


def round_complete(
    loop: LoopConfig, n_tasks: int, n_resolved: int, pushed_at: datetime | None, now: datetime | None = None
) -> bool:
    """All tasks resolved; or the configured fraction, once the timeout (if any) passed."""
    if n_tasks == 0 or n_resolved >= n_tasks:
        return True
    if n_resolved < loop.completion_fraction * n_tasks:
        return False
    if loop.completion_timeout_s is None:
        return True
    now = now or utcnow()
    return pushed_at is not None and now - pushed_at >= timedelta(seconds=loop.completion_timeout_s)


def close_reason(
    loop: LoopConfig,
    *,
    n_tasks: int,
    n_resolved: int,
    pushed_at: datetime | None,
    model_at: datetime | None,
    new_labels: int,
    requested: bool = False,
    target: int | None = None,
    now: datetime | None = None,
) -> str | None:
    """Why a collecting round should close now, or None to keep collecting.

    Whichever rule fires first closes the round:

    - the round is complete (:func:`round_complete`: every task, or the configured fraction once
      the timeout passed); with a ``target`` (stream mode: the round's budget, while its view
      holds more tasks), ``target`` resolved tasks complete it (or the fraction of ``target``);
    - ``retrain_after_labels``: at least that many samples got a new valid label since the
      round's model (``new_labels``);
    - ``retrain_after_s``: the round's model (trained at ``model_at``) is at least that old and
      at least one new label arrived;
    - ``requested``: someone asked to train now (Label Studio's "Start Training", see
      :mod:`alloop.serve.mlbackend`) and at least one new label arrived.
    """
    now = now or utcnow()
    wanted = n_tasks if target is None else min(target, n_tasks)
    if round_complete(loop, wanted, n_resolved, pushed_at, now=now):
        return "complete"
    if loop.retrain_after_labels is not None and new_labels >= loop.retrain_after_labels:
        return f"{new_labels} new labels, retrain_after_labels = {loop.retrain_after_labels}"
    if (
        loop.retrain_after_s is not None
        and new_labels >= 1
        and model_at is not None
        and now - model_at >= timedelta(seconds=loop.retrain_after_s)
    ):
        age = (now - model_at).total_seconds()
        return f"model {age:.0f} s old with {new_labels} new labels, retrain_after_s = {loop.retrain_after_s:g}"
    if requested and new_labels >= 1:
        return f"training requested, {new_labels} new labels"
    return None
