"""Two processes on one database never advance the same project at once.

Real processes race on one project (PostgreSQL, and SQLite for comparison): two Python
processes tick the same project's controller in tight loops, and pairs of real `alloop run`
processes start together. The project must end exactly like an uninterrupted run: every round
transition happened once and in order, nothing selected, pushed or annotated twice; a process
that lost the race said so ("another process") and exited with status 2.

The collisions are not hoped for: handshakes make them happen. The tickers report on stdout and
take their go-ahead on stdin, so the test holds each of them in turn on the lease until the other
was refused; an `alloop run` is held inside a transition (ALLOOP_TEST_HOLD_AT) until its partner
was refused and exited.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from sqlmodel import select

from alloop.loop.controller import Controller
from alloop.loop.lock import ProjectLease
from alloop.store.engine import make_engine, session_scope
from alloop.store.models import Project, Round
from tests.conftest import ALLOOP, open_workspace, write_project
from tests.helpers.waiting import SAFETY_NET_S, wait_until
from tests.integration.snapshot import assert_no_duplicates, snapshot

SECTIONS = dict(
    strategy={"name": "margin"},
    connector={"name": "oracle", "params": {"annotators": 2, "noise": 0.2, "skip_rate": 0.1}},
    loop={"initial_size": 15, "batch_size": 8, "max_rounds": 4},
)

# One process: tick until the project is finished, one JSON line per attempt. A tick runs under the
# lease, held until its line is printed, so the lines' `seq` (the host's monotonic clock) orders the
# ticks of both processes. Handshake with the test: "ready", then wait for "go"; at its first
# progress, keep the lease ("holding") until told "release", then wait for "continue".
TICKER = r"""
import json, os, random, sys, time
from pathlib import Path
from alloop.config import load_config
from alloop.errors import LockedError
from alloop.loop.controller import Controller
from alloop.workspace import Workspace


def say(**line):
    print(json.dumps(line), flush=True)


def hear(word):
    got = sys.stdin.readline().strip()
    if got != word:
        sys.exit(f"expected {word!r} on stdin, got {got!r}")


cfg, _ = load_config(Path(sys.argv[1]))
ctl = Controller(Workspace(cfg))
ctl.ws.project()  # connected and migrated before the start signal
say(ready=os.getpid())
hear("go")
rng = random.Random(os.getpid())
held = False
while True:
    released = False
    try:
        with ctl:
            r = ctl.tick()
            say(seq=time.monotonic_ns(), action=r.action, round=r.round, progressed=r.progressed)
            if r.progressed and not held:
                held = released = True
                say(holding=os.getpid())
                hear("release")
    except LockedError as exc:
        say(locked=str(exc), holder=exc.owner)
    else:
        if released:
            say(released=os.getpid())
            hear("continue")
        if r.finished:
            break
    time.sleep(rng.uniform(0.0, 0.01))  # jitter: the other process gets its chances at the lease
"""


class Tickers:
    """The TICKER processes, their stdout lines (all kept), and one queue of (process, line) events."""

    def __init__(self, pf: Path, n: int, logs: Path) -> None:
        env = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1"}
        self.errs = [logs / f"ticker-{i}.err" for i in range(n)]
        self.procs = []
        for err in self.errs:
            with open(err, "w") as fh:
                self.procs.append(subprocess.Popen([sys.executable, "-c", TICKER, str(pf)], stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=fh, text=True, env=env))
        self.lines: list[list[dict]] = [[] for _ in range(n)]
        self.events: queue.Queue = queue.Queue()
        self.readers = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(n)]
        for t in self.readers:
            t.start()

    def _read(self, i: int) -> None:
        for raw in self.procs[i].stdout:
            line = json.loads(raw)
            self.lines[i].append(line)
            self.events.put((i, line))
        self.events.put((i, None))

    def expect(self, what: str, match) -> tuple[int, dict]:
        """The next event ``match(i, line)`` accepts (the others are skipped, still kept in ``lines``)."""
        deadline = time.monotonic() + SAFETY_NET_S
        while True:
            try:
                i, line = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{what} did not happen within the {SAFETY_NET_S:g} s safety net")
            if line is None:
                self.procs[i].wait(SAFETY_NET_S)
                pytest.fail(f"ticker {i} exited ({self.procs[i].returncode}) while waiting for {what}:\n"
                            f"{self.errs[i].read_text()[-3000:]}")
            if match(i, line):
                return i, line

    def send(self, i: int, word: str) -> None:
        self.procs[i].stdin.write(word + "\n")
        self.procs[i].stdin.flush()

    def finish(self) -> None:
        for i, p in enumerate(self.procs):
            assert p.wait(SAFETY_NET_S) == 0, self.errs[i].read_text()  # never "changed state while ... worked on it"
        for t in self.readers:
            t.join(SAFETY_NET_S)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


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
    for a, b in pairwise(rounds):  # a round is created only once the previous one closed
        assert a.created_at <= a.pushed_at <= a.completed_at <= b.created_at


def test_two_processes_ticking_one_project_take_turns(tmp_path, db_url, uninterrupted):
    expected_ticks, expected_snap = uninterrupted
    pf = _project(tmp_path, db_url)
    t = Tickers(pf, 2, tmp_path)
    try:
        pids = {t.expect("ticker ready", lambda i, m: "ready" in m)[1]["ready"] for _ in range(2)}
        assert pids == {p.pid for p in t.procs}  # both past their imports, connected: start them together
        for i in (0, 1):
            t.send(i, "go")
        # the first to progress keeps the lease until the other, ticking, was refused by it; then it
        # lets go and waits while the other progresses and keeps the lease, until the first was refused
        x, _ = t.expect("a first progress", lambda i, m: "holding" in m)
        for holder, other in ((x, 1 - x), (1 - x, x)):
            if holder != x:
                t.expect(f"ticker {holder} to progress", lambda i, m, h=holder: i == h and "holding" in m)
                t.send(other, "continue")
            pid = t.procs[holder].pid
            t.expect(f"ticker {other} refused by ticker {holder}",
                     lambda i, m, o=other, pid=pid: i == o and "locked" in m and m["holder"].split(":")[1] == str(pid))
            t.send(holder, "release")
            t.expect(f"ticker {holder} to let go", lambda i, m, h=holder: i == h and "released" in m)
        t.send(1 - x, "continue")
        t.finish()
    finally:
        t.kill()
    lines = t.lines
    ticks = sorted((x for proc in lines for x in proc if "action" in x), key=lambda x: x["seq"])
    progressed = [(x["round"], x["action"]) for x in ticks if x["progressed"]]
    # every transition once, in order: the same sequence as one process running alone
    assert progressed == expected_ticks
    locked = [x for proc in lines for x in proc if "locked" in x]
    assert all("another process" in x["locked"] for x in locked)
    for i in (0, 1):  # each was refused by the other, and each progressed
        other = str(t.procs[1 - i].pid)
        assert any(x["holder"].split(":")[1] == other for x in lines[i] if "locked" in x)
        assert any(x.get("progressed") for x in lines[i])
    final = snapshot(db_url)
    assert_no_duplicates(final)
    assert final == expected_snap
    _assert_rounds_in_order(db_url)


def _held(release: Path) -> int | None:
    """The pid of the process holding at its ALLOOP_TEST_HOLD_AT point (released by creating ``release``)."""
    reached = Path(f"{release}.reached")
    return int(reached.read_text()) if reached.exists() else None


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

    # pairs started together. In the first two, whichever process takes the lease is held inside a
    # transition of its second round until its partner was refused and exited: they overlapped
    losers = 0
    for pair, hold in enumerate(["1:before_commit:TRAINED", "3:before_commit:TRAINED", None]):
        release = tmp_path / f"release-{pair}"
        pair_env = {**env, "ALLOOP_TEST_HOLD_AT": f"{hold}={release}"} if hold else env
        outs = [tmp_path / f"pair-{pair}-{i}.out" for i in range(2)]
        procs = []
        for out in outs:
            with open(out, "w") as fh:
                procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=pair_env))
        try:
            if hold:
                def both_exited(procs: list[subprocess.Popen] = procs, outs: list[Path] = outs) -> str | None:
                    if all(p.poll() is not None for p in procs):
                        return "both processes exited: " + " | ".join(o.read_text()[-1500:] for o in outs)
                    return None

                holder = wait_until(lambda r=release: _held(r), f"pair {pair}: a process held at {hold}",
                                    alive=both_exited)
                (winner,) = [i for i, p in enumerate(procs) if p.pid == holder]
                loser = procs[1 - winner]
                assert loser.wait(SAFETY_NET_S) == 2, outs[1 - winner].read_text()
                said = " ".join(outs[1 - winner].read_text().split())
                assert "another process" in said and f":{holder}:" in said  # refused by the held process
                release.touch()
                assert procs[winner].wait(SAFETY_NET_S) == 0, outs[winner].read_text()
                losers += 1
            else:
                codes = sorted(p.wait(SAFETY_NET_S) for p in procs)
                assert codes in ([0, 0], [0, 2]), [o.read_text() for o in outs]
                losers += codes == [0, 2]
                for p, out in zip(procs, outs):
                    if p.returncode == 2:
                        assert "another process" in out.read_text()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert_no_duplicates(snapshot(postgres_url))
    assert snapshot(postgres_url)["project"][0] == "finished"
    assert losers >= 2
    final = snapshot(postgres_url)
    assert final == expected_snap
    _assert_rounds_in_order(postgres_url)
    assert not list(tmp_path.rglob("*.db")), "a SQLite file was used instead of $ALLOOP_DATABASE_URL"
