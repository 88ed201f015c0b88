"""Kill a real `alloop run` process (SIGKILL) at every round state and at random points.

The resumed project must end exactly like an uninterrupted run with the same seed: same
rounds, same selections, same tasks, same annotations, same models - and nothing selected,
pushed or annotated twice. Both run on SQLite and on PostgreSQL, against one reference run on
SQLite: the backends give the same project.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest

from tests.conftest import ALLOOP, open_workspace, run_cli, write_project
from tests.integration.snapshot import assert_no_duplicates, snapshot

STATES = ["CREATED", "TRAINED", "SCORED", "SELECTED", "PUSHED", "COLLECTING", "CLOSED"]
SECTIONS = dict(
    strategy={"name": "margin"},
    connector={"name": "oracle", "params": {"annotators": 2, "noise": 0.2, "skip_rate": 0.1}},
    loop={"initial_size": 15, "batch_size": 8, "max_rounds": 4},
)


def _project(tmp_path, name, database=None):
    pf = write_project(tmp_path / name, database=database, **SECTIONS)
    ws = open_workspace(pf)
    url = str(ws.engine.url)
    ws.close()
    return pf, url


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    pf, url = _project(tmp_path_factory.mktemp("ref"), "ref")
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    snap = snapshot(url)
    assert snap["project"][0] == "finished"
    assert len(snap["rounds"]) == 4 and all(st == "CLOSED" for _, st, _, _ in snap["rounds"])
    assert len(snap["selections"]) == 15 + 3 * 8
    assert len(snap["annotations"]) == 2 * len(snap["tasks"])
    assert any(cancelled for *_, cancelled, _ in snap["annotations"])  # skips happen
    return snap


def test_kill_at_every_round_state_then_resume(tmp_path, db_url, reference):
    pf, url = _project(tmp_path, "chain", db_url)
    points = [f"0:{p}:{st}" for st in STATES for p in ("before_commit", "after_commit")]
    points += [f"2:{p}:{st}" for st in STATES for p in ("before_commit", "after_commit")]
    points += ["1:after_push", "3:after_push"]
    points.sort(key=lambda p: (int(p.split(":")[0]),
                               STATES.index(p.split(":")[-1]) if p.split(":")[-1] in STATES else 4.5))
    killed = 0
    for point in points:
        r = run_cli("run", "-p", str(pf), env={"ALLOOP_TEST_KILL_AT": point})
        assert r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}\n{r.stderr}"
        killed += 1
        assert_no_duplicates(snapshot(url))
    assert killed == 30
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    final = snapshot(url)
    assert_no_duplicates(final)
    assert final == reference


def test_kill_at_random_moments_then_resume(tmp_path, db_url, reference):
    pf, url = _project(tmp_path, "random", db_url)
    rng = random.Random(1234)
    env = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    kills = 0
    for _attempt in range(100):
        proc = subprocess.Popen([ALLOOP, "run", "-p", str(pf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        # die during the step after a random number of reported ones (each step prints a line once it
        # committed): wherever the run is, this process is killed while it works, however fast steps are
        for _ in range(rng.randint(1, 6)):
            if not proc.stdout.readline():  # the run finished first
                break
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
        snap = snapshot(url)
        assert_no_duplicates(snap)
        if snap["project"][0] == "finished":
            break
    else:
        pytest.fail("the run never completed")
    assert kills >= 3
    final = snapshot(url)
    assert final == reference
