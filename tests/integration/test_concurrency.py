"""Two processes on one database never advance the same project at once.

Real processes race on one project (PostgreSQL, and SQLite for comparison): two Python
processes tick the same project's controller in tight loops, and pairs of real `alloop run`
processes start at the same instant. The project must end exactly like an uninterrupted run:
every round transition happened once and in order, nothing selected, pushed or annotated
twice; a process that lost the race said so ("another process") and exited with status 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from sqlmodel import select

from alloop.loop.controller import Controller
from alloop.loop.lock import ProjectLease
from alloop.store.engine import make_engine, session_scope
from alloop.store.models import Project, Round
from tests.conftest import ALLOOP, open_workspace, write_project
from tests.integration.snapshot import assert_no_duplicates, snapshot

SECTIONS = dict(
    strategy={"name": "margin"},
    connector={"name": "oracle", "params": {"annotators": 2, "noise": 0.2, "skip_rate": 0.1}},
    loop={"initial_size": 15, "batch_size": 8, "max_rounds": 4},
)

# one process: tick until the project is finished, one JSON line per attempt
TICKER = r"""
import json, os, random, sys, time
from pathlib import Path
from alloop.config import load_config
from alloop.errors import LockedError
from alloop.loop.controller import Controller
from alloop.workspace import Workspace

cfg, _ = load_config(Path(sys.argv[1]))
ctl = Controller(Workspace(cfg))
ctl.ws.project()  # connected and migrated before the start signal
go = sys.argv[2]
rng = random.Random(os.getpid())
while not os.path.exists(go):
    time.sleep(0.002)
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        r = ctl.tick()
    except LockedError as exc:
        print(json.dumps({"locked": str(exc)}), flush=True)
    else:
        print(json.dumps({"t": time.time(), "action": r.action, "round": r.round, "progressed": r.progressed}), flush=True)
        if r.finished:
            break
    time.sleep(rng.uniform(0.0, 0.01))
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same project run by one process on SQLite: its ticks and its final snapshot."""
    ws = open_workspace(write_project(tmp_path_factory.mktemp("ref") / "ref", **SECTIONS))
    ticks = [(r.round, r.action) for r in Controller(ws).run() if r.progressed]
    snap = snapshot(str(ws.engine.url))
    ws.close()
    assert ticks[-1] == (None, "finished") and len(snap["rounds"]) == 4
    return ticks, snap


def _project(tmp_path, db_url: str | None):
    pf = write_project(tmp_path / "proj", database=db_url, **SECTIONS)
    open_workspace(pf).close()  # imported: the processes only advance it
    return pf


def _assert_rounds_in_order(db_url: str) -> None:
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        rounds = s.exec(select(Round).order_by(Round.number)).all()
        assert s.exec(select(Project)).one().status == "finished"
    engine.dispose()
    assert [r.number for r in rounds] == [0, 1, 2, 3]
    assert all(r.state == "CLOSED" and r.attempt == 0 and r.last_error is None for r in rounds)
    for a, b in zip(rounds, rounds[1:]):  # a round is created only once the previous one closed
        assert a.created_at <= a.pushed_at <= a.completed_at <= b.created_at


def test_two_processes_ticking_one_project_take_turns(tmp_path, db_url, uninterrupted):
    expected_ticks, expected_snap = uninterrupted
    pf = _project(tmp_path, db_url)
    go = tmp_path / "go"
    env = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", TICKER, str(pf), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    time.sleep(2.0)  # both past their imports (they wait for the signal)
    go.touch()
    lines = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err  # never "changed state while this process worked on it"
        lines.append([json.loads(x) for x in out.splitlines()])
    ticks = sorted((x for proc in lines for x in proc if "action" in x), key=lambda x: x["t"])
    progressed = [(x["round"], x["action"]) for x in ticks if x["progressed"]]
    # every transition once, in order: the same sequence as one process running alone
    assert progressed == expected_ticks
    locked = [x["locked"] for proc in lines for x in proc if "locked" in x]
    assert locked and all("another process" in m for m in locked)  # they did collide, and were refused
    assert all(any(x.get("progressed") for x in proc) for proc in lines), "one process never got a turn"
    final = snapshot(db_url)
    assert_no_duplicates(final)
    assert final == expected_snap
    _assert_rounds_in_order(db_url)


def test_alloop_run_processes_racing_on_postgres(tmp_path, postgres_url, uninterrupted, monkeypatch):
    _, expected_snap = uninterrupted
    monkeypatch.setenv("ALLOOP_DATABASE_URL", postgres_url)  # the team-database way: no URL in the project file
    pf = _project(tmp_path, None)
    env = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1", "COLUMNS": "200"}
    cmd = [ALLOOP, "run", "-p", str(pf), "--rounds", "2"]  # three pairs: rounds 0-1, rounds 2-3, the end

    # a live holder: `alloop run` refuses at once, with the reason
    engine = make_engine(postgres_url)
    with session_scope(engine) as s:
        project_id = s.exec(select(Project.id)).one()
    with ProjectLease(engine, project_id, "t", ttl=3600) as lease:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2, r.stderr
        assert "another process" in r.stdout + r.stderr and lease.owner in " ".join((r.stdout + r.stderr).split())
    engine.dispose()

    # pairs started at the same instant, until the project is finished
    losers = 0
    for _pair in range(8):
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        results = [(p, *p.communicate(timeout=300)) for p in procs]
        codes = sorted(p.returncode for p, _, _ in results)
        assert codes in ([0, 0], [0, 2]), [err for _, _, err in results]
        for p, out, err in results:
            if p.returncode == 2:
                losers += 1
                assert "another process" in out + err
        assert_no_duplicates(snapshot(postgres_url))
        if snapshot(postgres_url)["project"][0] == "finished":
            break
    else:
        pytest.fail("the project never finished")
    assert losers >= 1, "the processes never overlapped"
    final = snapshot(postgres_url)
    assert final == expected_snap
    _assert_rounds_in_order(postgres_url)
    assert not list(tmp_path.rglob("*.db")), "a SQLite file was used instead of $ALLOOP_DATABASE_URL"
