"""A per-project lease in the database, so two processes never advance one project at once.

The holder renews the lease from a heartbeat thread. A lease is taken over when it expired,
or at once when its holder was a process on this host that no longer exists (SIGKILL); a
holder killed on another machine is taken over when its lease expires (``ttl``).
Works the same on SQLite and PostgreSQL: acquisition is one conditional UPDATE (on
PostgreSQL a concurrent one waits for the row and re-checks the condition, so exactly one
wins). On PostgreSQL, expiry times come from the database server's clock, so machines whose
clocks disagree still agree on when a lease expired.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import Update, or_, text, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from alloop.errors import LockedError
from alloop.store.engine import session_scope
from alloop.store.models import ProjectLock, utcnow

logger = logging.getLogger(__name__)


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(owner: str) -> bool:
    """True if ``owner`` was a process on this host that is gone."""
    try:
        host, pid_s, _ = owner.split(":")
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _now(session: Session) -> datetime:
    """The time leases are measured in: the database server's clock on PostgreSQL, else this host's."""
    if session.get_bind().dialect.name == "postgresql":
        now: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return now.astimezone(timezone.utc)
    return utcnow()


def _execute(session: Session, statement: Update) -> CursorResult[Any]:
    """Run an UPDATE; its result has a rowcount (``Session.execute`` is typed as returning a plain Result)."""
    return cast("CursorResult[Any]", session.execute(statement))


class ProjectLease:
    """Context manager holding the project's lease, renewed every ``ttl/3`` seconds."""

    def __init__(self, engine: Engine, project_id: int, project_name: str, ttl: float = 60.0) -> None:
        self.engine = engine
        self.project_id = project_id
        self.project_name = project_name
        self.ttl = ttl
        self.owner = _owner_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquisition -----------------------------------------------------------------------
    def _try_acquire(self) -> str | None:
        """Take the lease; return None on success, else the current owner."""
        with session_scope(self.engine) as s:
            if s.get(ProjectLock, self.project_id) is None:
                try:
                    s.add(ProjectLock(project_id=self.project_id))
                    s.flush()
                except IntegrityError:  # another process created it at the same moment
                    s.rollback()
        with session_scope(self.engine) as s:
            now = _now(s)
            expires = now + timedelta(seconds=self.ttl)
            res = _execute(
                s,
                update(ProjectLock)
                .where(col(ProjectLock.project_id) == self.project_id)
                .where(or_(col(ProjectLock.owner).is_(None), col(ProjectLock.expires_at) < now))
                .values(owner=self.owner, acquired_at=now, expires_at=expires),
            )
            if res.rowcount == 1:
                return None
            row = s.get(ProjectLock, self.project_id)
            holder = row.owner if row else None
        if holder and _holder_is_dead(holder):
            logger.warning("Taking over the lock of dead process %s", holder)
            with session_scope(self.engine) as s:
                res = _execute(
                    s,
                    update(ProjectLock)
                    .where(col(ProjectLock.project_id) == self.project_id)
                    .where(col(ProjectLock.owner) == holder)
                    .values(owner=self.owner, acquired_at=now, expires_at=expires),
                )
                if res.rowcount == 1:
                    return None
        return holder or "unknown"

    def acquire(self, wait: float = 0.0) -> None:
        deadline = utcnow() + timedelta(seconds=wait)
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            if utcnow() >= deadline:
                raise LockedError(self.project_name, holder)
            self._stop.wait(0.5)
        self._thread = threading.Thread(target=self._heartbeat, name="alloop-lease", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                with session_scope(self.engine) as s:
                    s.execute(
                        update(ProjectLock)
                        .where(col(ProjectLock.project_id) == self.project_id)
                        .where(col(ProjectLock.owner) == self.owner)
                        .values(expires_at=_now(s) + timedelta(seconds=self.ttl))
                    )
            except Exception:  # a missed beat must not kill the worker
                logger.exception("Could not renew the project lease")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with session_scope(self.engine) as s:
            s.execute(
                update(ProjectLock)
                .where(col(ProjectLock.project_id) == self.project_id)
                .where(col(ProjectLock.owner) == self.owner)
                .values(owner=None, expires_at=None)
            )

    def __enter__(self) -> ProjectLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
