"""Stream mode (``[connector.params] mode = "stream"``) on a real Label Studio server: a round
pushes ``stream_factor x budget`` ranked tasks, closes once ``budget`` of them are labeled, and
the next round re-ranks the unlabeled ones it picks again, in Label Studio too - also when the
process is killed between Label Studio's update and alloop's commit."""

from __future__ import annotations

import signal
from pathlib import Path

from sqlalchemy import select as sa_select
from sqlmodel import col

from alloop.loop.controller import Controller
from alloop.pool.bundled import digits_pixels
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Task
from tests.conftest import open_workspace, run_cli, write_project
from tests.integration import ls_support as lss
from tests.integration.test_label_studio_order import DIGIT, _picks, _view_keys, _views


def _db_tasks(ws) -> dict[str, tuple[int, str]]:
    """Sample key -> (round number, Label Studio task id) of every task alloop recorded."""
    with session_scope(ws.engine) as s:
        rows = s.connection().execute(
            sa_select(col(Sample.key), col(Round.number), col(Task.external_id))
            .join(Task, col(Task.sample_id) == col(Sample.id)).join(Round, col(Round.id) == col(Task.round_id)))
        return {key: (number, ext) for key, number, ext in rows}


def test_a_stream_round_closes_at_its_budget_and_the_next_re_ranks_the_leftovers(label_studio):
    _, target = digits_pixels()
    keys = [f"{target[i]}/{i:04d}.png" for i in range(12)]  # the cold start's 12 picks, in rank order
    again = [keys[11], keys[9], keys[7], keys[5]]  # round 1 picks these leftovers first, in this order
    folder = Path(label_studio.document_root) / "stream"
    pf = write_project(
        folder, project={"name": "stream", "seed": 0},
        pool={"source": {"type": "bundled", "name": "digits"}, "test_fraction": 0.0},
        connector={"name": "label_studio", "params": {"mode": "stream", "stream_factor": 3}},
        cold_start={"name": "given", "params": {"keys": keys}},
        strategy={"name": "given", "params": {"keys": [keys[0], *again]}},  # keys[0] is labeled by then: skipped
        loop={"initial_size": 4, "batch_size": 4, "max_rounds": 3},
    )
    ws = open_workspace(pf)
    ls = lss.client()
    uid = lss.users(ls, ["sam"])["sam"]
    Controller(ws).run()
    pid = lss.project_id(ls, "alloop: stream")

    # round 0: a budget of 4, 3 x 4 = 12 tasks pushed with their ranks, the view lists them by rank
    assert [k for k, _, _ in _picks(ws, 0)] == keys
    tasks = {t.data["sample_id"]: t for t in lss.tasks(ls, pid, "task_only")}
    assert {k: (t.data["alloop_round"], t.data["alloop_rank"]) for k, t in tasks.items()} == {
        k: (0, i + 1) for i, k in enumerate(keys)}
    (view,) = _views(ls, pid)
    assert _view_keys(ls, pid, view.id) == keys

    def label(ks: list[str]) -> None:
        lss.annotate(ls, [(tasks[k].id, lss.choice(DIGIT(tasks[k].data)), uid, False) for k in ks])

    # 3 labels of a budget of 4: the round waits; the 4th closes it (not all 12)
    label(keys[:3])
    out = Controller(ws).run()
    assert out[-1].waiting and "3/12 tasks resolved (stream: closes at 4)" in out[-1].message
    label(keys[3:4])
    # round 1 runs in a process killed after Label Studio re-ranked the leftovers, before alloop's commit
    r = run_cli("run", "-p", str(pf), env={"ALLOOP_TEST_KILL_AT": "1:after_refresh"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    # the repeated push adopts the new tasks and finds the re-ranked ones already updated
    said = " ".join(r.stdout.split())
    assert "round 1: pushed 0 tasks to label_studio (adopted 8 already there), re-ranked 4 unlabeled tasks of " \
           "earlier rounds (0 updated there)" in said, said

    # round 1: the 4 leftovers it picked again first, then 8 new samples; the rest stay in round 0
    round1 = [k for k, _, _ in _picks(ws, 1)]
    assert len(round1) == 12 and round1[:4] == again and not set(round1[4:]) & set(keys)
    assert sorted(k for k, _, _ in _picks(ws, 0)) == sorted(set(keys) - set(again))
    # Label Studio holds one task per sample, and every task's round and rank are alloop's
    in_ls = lss.tasks(ls, pid, "all")
    assert len(in_ls) == 20 and len({t.data["sample_id"] for t in in_ls}) == 20
    db = _db_tasks(ws)
    assert {t.data["sample_id"]: (t.data["alloop_round"], str(t.id)) for t in in_ls} == db
    ranks = {k: (n, rank + 1) for n in (0, 1) for k, rank, _ in _picks(ws, n)}
    assert {t.data["sample_id"]: (t.data["alloop_round"], t.data["alloop_rank"]) for t in in_ls} == ranks
    # the view lists new picks and re-ranked leftovers together, by rank
    assert _view_keys(ls, pid, view.id) == round1
    # each re-ranked task got round 1's prediction once (the repeated push added none)
    for k in again:
        versions = [p.model_version for p in ls.predictions.list(task=tasks[k].id)]
        assert versions == ["stream-round-1"], (k, versions)
    ws.close()


def test_a_pool_smaller_than_the_stream_is_pushed_whole_and_its_leftovers_re_ranked(label_studio):
    folder = Path(label_studio.document_root) / "stream-small"
    pf = write_project(
        folder, project={"name": "stream-small", "seed": 3},
        pool={"source": {"type": "bundled", "name": "digits"}, "test_fraction": 0.99},  # a pool of ~18
        connector={"name": "label_studio", "params": {"mode": "stream"}},  # 5 x 4 = 20 wanted
        loop={"initial_size": 4, "batch_size": 4, "max_rounds": 3},
    )
    ws = open_workspace(pf)
    with session_scope(ws.engine) as s:
        n_pool = len(s.connection().execute(sa_select(col(Sample.id)).where(col(Sample.split) == "pool")).all())
    assert 4 < n_pool < 20
    ls = lss.client()
    uid = lss.users(ls, ["kim"])["kim"]
    Controller(ws).run()
    pid = lss.project_id(ls, "alloop: stream-small")
    # capped by the pool: every sample is pushed in round 0
    assert len(_picks(ws, 0)) == n_pool
    tasks = lss.tasks(ls, pid, "task_only")
    assert len(tasks) == n_pool
    # label 4 of different digits: the round closes; every other sample is a leftover
    by_digit = {}
    for t in tasks:
        by_digit.setdefault(DIGIT(t.data), t)
    done = list(by_digit.values())[:4]
    lss.annotate(ls, [(t.id, lss.choice(DIGIT(t.data)), uid, False) for t in done])
    labeled = {t.data["sample_id"] for t in done}
    out = Controller(ws).run()
    # no new sample is left, yet the project goes on: round 1 re-ranks the leftovers
    assert not out[-1].finished and out[-1].waiting, [r.message for r in out]
    round1 = [k for k, _, _ in _picks(ws, 1)]
    assert sorted(round1) == sorted(t.data["sample_id"] for t in tasks if t.data["sample_id"] not in labeled)
    in_ls = lss.tasks(ls, pid, "task_only")
    assert len(in_ls) == n_pool  # nothing pushed twice
    (view,) = _views(ls, pid)
    assert _view_keys(ls, pid, view.id) == round1
    assert {t.data["sample_id"]: t.data["alloop_rank"] for t in in_ls if t.data["alloop_round"] == 1} == {
        k: i + 1 for i, k in enumerate(round1)}
    ws.close()
