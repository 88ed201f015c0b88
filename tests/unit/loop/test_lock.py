from __future__ import annotations

import subprocess
import sys

import pytest

from alloop.errors import LockedError
from alloop.loop.lock import ProjectLease
from alloop.loop.lock import _now as lease_clock
from alloop.store.engine import open_store, session_scope
from alloop.store.models import Project, ProjectLock
from tests.helpers.waiting import wait_until


def _project(engine):
    with session_scope(engine) as s:
        p = Project(name="p", task="classification", labels=["a", "b"])
        s.add(p)
        s.flush()
        return p.id


def test_second_holder_is_refused_until_release(db_url):
    engine = open_store(db_url)
    pid = _project(engine)
    a = ProjectLease(engine, pid, "p")
    a.acquire()
    b = ProjectLease(engine, pid, "p")
    with pytest.raises(LockedError, match="another process"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


def test_lease_of_a_killed_process_is_taken_over(db_url):
    engine = open_store(db_url)
    pid = _project(engine)
    code = (
        "import time,sys\n"
        "from alloop.store.engine import open_store\n"
        "from alloop.loop.lock import ProjectLease\n"
        f"e=open_store({db_url!r})\n"
        f"ProjectLease(e,{pid},'p',ttl=3600).acquire()\n"
        "print('held',flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with session_scope(engine) as s:
        assert s.get(ProjectLock, pid).owner.split(":")[1] == str(proc.pid)
    with pytest.raises(LockedError):
        ProjectLease(engine, pid, "p").acquire()
    proc.kill()
    proc.wait()
    lease = ProjectLease(engine, pid, "p")
    lease.acquire()  # the dead holder's hour-long lease does not block us
    with session_scope(engine) as s:
        assert s.get(ProjectLock, pid).owner == lease.owner
    lease.release()


def _lease_row(engine, pid):
    """(owner, expires_at, the lease clock's now): the database server's clock on PostgreSQL."""
    with session_scope(engine) as s:
        row = s.get(ProjectLock, pid)
        return row.owner, row.expires_at, lease_clock(s)


def test_expired_lease_is_taken_over_and_heartbeat_renews(db_url):
    engine = open_store(db_url)
    pid = _project(engine)
    a = ProjectLease(engine, pid, "p", ttl=2.0)  # a beat every 2/3 s
    a.acquire()
    owner, first_expiry, _ = _lease_row(engine, pid)
    assert owner == a.owner

    # the heartbeat renews: the row's expiry moves forward beat after beat, until the lease has
    # outlived its first expiry on the lease clock - and is still refused to another holder
    expiries = [first_expiry]

    def renewed_past_its_first_expiry():
        owner, expiry, now = _lease_row(engine, pid)
        assert owner == a.owner
        if expiry != expiries[-1]:
            expiries.append(expiry)
        return len(expiries) > 3 and now > first_expiry and expiry > now

    wait_until(renewed_past_its_first_expiry, "three heartbeats, past the first expiry")
    assert expiries == sorted(expiries)  # every beat moved it forward
    with pytest.raises(LockedError, match="another process"):
        ProjectLease(engine, pid, "p").acquire()

    # no more beats: the lease expires on the lease clock, untouched, and is taken over
    a._stop.set()
    a._thread.join()
    _, last_expiry, _ = _lease_row(engine, pid)
    wait_until(lambda: _lease_row(engine, pid)[2] > last_expiry, "the lease clock to pass the last expiry")
    assert _lease_row(engine, pid)[:2] == (a.owner, last_expiry)  # not released, not renewed: expired
    b = ProjectLease(engine, pid, "p")
    b.acquire()
    assert _lease_row(engine, pid)[0] == b.owner
    b.release()
