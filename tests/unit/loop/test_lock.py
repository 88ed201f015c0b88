from __future__ import annotations

import subprocess
import sys
import time

import pytest

from alloop.errors import LockedError
from alloop.loop.lock import ProjectLease
from alloop.store.engine import open_store, session_scope
from alloop.store.models import Project, ProjectLock


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


def test_expired_lease_is_taken_over_and_heartbeat_renews(db_url):
    engine = open_store(db_url)
    pid = _project(engine)
    a = ProjectLease(engine, pid, "p", ttl=0.6)
    a.acquire()
    time.sleep(1.0)  # heartbeats every 0.2 s keep it alive
    with pytest.raises(LockedError):
        ProjectLease(engine, pid, "p").acquire()
    a._stop.set()
    a._thread.join()
    time.sleep(0.8)  # no more beats: it expires
    b = ProjectLease(engine, pid, "p")
    b.acquire()
    b.release()
