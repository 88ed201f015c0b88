from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from alloop.config import LoopConfig
from alloop.errors import InvalidTransitionError, PoolExhaustedError
from alloop.loop.policies import round_budget, round_complete, stop_reason
from alloop.loop.states import RoundState, check_transition
from alloop.store.models import ModelVersion


def test_stop_reasons():
    loop = LoopConfig(max_rounds=3, budget=100, target_accuracy=0.9)
    assert stop_reason(loop, 2, 50, 10, None) is None
    assert "max_rounds" in stop_reason(loop, 3, 50, 10, None)
    assert "budget spent" in stop_reason(loop, 1, 100, 10, None)
    good = ModelVersion(project_id=1, learner="x", metrics={"accuracy": 0.95})
    assert "target accuracy" in stop_reason(loop, 1, 10, 10, good)
    assert "pool exhausted" in stop_reason(LoopConfig(), 1, 10, 0, None)


def test_round_budget_caps_and_errors():
    loop = LoopConfig(initial_size=20, batch_size=10, budget=35)
    assert round_budget(loop, 0, 0, 1000) == 20
    assert round_budget(loop, 1, 30, 1000) == 5
    with pytest.raises(PoolExhaustedError) as e:
        round_budget(LoopConfig(batch_size=50), 1, 0, 7)
    assert "only 7 unlabeled samples remain" in str(e.value)
    assert "loop.batch_size" in str(e.value)


def test_round_complete_fraction_and_timeout():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    full = LoopConfig()
    assert round_complete(full, 10, 10, t0)
    assert not round_complete(full, 10, 9, t0)
    part = LoopConfig(completion_fraction=0.8, completion_timeout_s=60)
    assert not round_complete(part, 10, 8, t0, now=t0 + timedelta(seconds=30))
    assert round_complete(part, 10, 8, t0, now=t0 + timedelta(seconds=61))
    assert not round_complete(part, 10, 7, t0, now=t0 + timedelta(days=1))


def test_transition_table():
    check_transition(1, "CREATED", "TRAINED")
    check_transition(1, "COLLECTING", "FAILED")
    with pytest.raises(InvalidTransitionError, match="cannot move from CREATED to PUSHED"):
        check_transition(1, "CREATED", "PUSHED")
    with pytest.raises(InvalidTransitionError):
        check_transition(1, RoundState.CLOSED.value, "CREATED")


def test_a_stream_round_closes_at_its_target_not_at_every_task():
    from alloop.loop.policies import close_reason

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def reason(loop, n_resolved, target, n_tasks=50):
        return close_reason(loop, n_tasks=n_tasks, n_resolved=n_resolved, pushed_at=now, model_at=now,
                            new_labels=n_resolved, target=target, now=now)

    assert reason(LoopConfig(), 9, target=10) is None
    assert reason(LoopConfig(), 10, target=10) == "complete"  # 10 of the view's 50 tasks
    assert reason(LoopConfig(), 10, target=None) is None  # batch: every task
    assert reason(LoopConfig(), 3, target=10, n_tasks=3) == "complete"  # fewer tasks than the target
    # the completion fraction applies to the target; the retrain rules are unchanged
    part = LoopConfig(completion_fraction=0.5)  # no timeout: the fraction alone
    assert reason(part, 4, target=10) is None and reason(part, 5, target=10) == "complete"
    assert reason(LoopConfig(retrain_after_labels=3), 3, target=10).startswith("3 new labels")


def test_stream_size_caps_by_candidates_and_by_the_total_budget():
    from alloop.loop.select import stream_size

    assert stream_size(5, 10, 1000, 0, None) == 50
    assert stream_size(5, 10, 37, 0, None) == 37  # the pool is smaller than factor x budget
    # 30 leftovers and 15 samples of loop.budget left: at most 45 picks, so at most 15 new ones
    assert stream_size(5, 10, 1000, 30, 15) == 45
    assert stream_size(5, 10, 1000, 0, 12) == 12
