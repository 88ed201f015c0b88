"""A private, throwaway PostgreSQL cluster for the tests (the Debian ``postgresql`` package).

One cluster per test session in a temporary folder: ``initdb`` with trust authentication,
``pg_ctl start`` on a free loopback port (its unix socket inside the folder, fsync off),
stopped at the end of the session - also when the session fails or is interrupted. Each
test gets its own empty database, dropped afterwards.

``initdb`` refuses to run as root: as root, the cluster runs as the ``postgres`` OS user
(the folder is handed over to it), otherwise as the current user. There is no skip: a
cluster that cannot start fails the tests with the reason and the end of the server log.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

#: where Debian puts the server binaries (``postgresql-<major>``); $ALLOOP_PG_BINDIR overrides
PG_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"


#: stops the cluster when the test process is gone without its teardown (SIGTERM, SIGKILL)
_WATCHDOG = r"""
import os, shutil, subprocess, sys, time
parent, pg_ctl, data, root, uid, gid = sys.argv[1:7]
while True:
    try:
        os.kill(int(parent), 0)
    except ProcessLookupError:
        break
    except PermissionError:
        pass
    time.sleep(1)
if os.path.exists(os.path.join(data, "postmaster.pid")):
    owner = dict(user=int(uid), group=int(gid), extra_groups=[]) if uid != "-" else {}
    subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60, **owner)
shutil.rmtree(root, ignore_errors=True)
"""


class PostgresUnavailable(RuntimeError):
    """The private cluster could not be created or started (the message says why)."""


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest Debian major version first)."""
    env = os.environ.get("ALLOOP_PG_BINDIR")
    if env:
        candidates = [env]
    else:
        candidates = sorted(glob.glob(PG_BINDIR_GLOB), key=_major, reverse=True)
        which = shutil.which("initdb")
        if which:
            candidates.append(str(Path(which).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {env or PG_BINDIR_GLOB + ' or on PATH'}. "
        "Install them: `apt-get install -y --no-install-recommends postgresql` (`make test` does), or "
        "point ALLOOP_PG_BINDIR to them."
    )


def _major(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A private cluster: ``start()``, ``create_database()`` -> URL, ``drop_database()``, ``stop()``."""

    def __init__(self, root: Path | None = None) -> None:
        self.bindir = find_bindir()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="alloop-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port: int | None = None
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "Running as root, but there is no `postgres` OS user to run the cluster as (initdb "
                    "refuses root). Install Debian's postgresql package, which creates it."
                ) from None
        self._started = False
        self._watchdog: subprocess.Popen | None = None

    # -- processes -------------------------------------------------------------------------------
    def _as_owner(self) -> tuple[dict, dict]:
        """Environment and Popen arguments to run as the cluster's owner."""
        kwargs: dict = {}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self._user is not None:
            kwargs = dict(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
            env["HOME"] = self._user.pw_dir
            env["USER"] = env["LOGNAME"] = "postgres"
        return env, kwargs

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env, kwargs = self._as_owner()
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], env=env, cwd=self.root, capture_output=True,
            text=True, timeout=timeout, **kwargs,
        )

    def _start_watchdog(self) -> None:
        """A detached process that stops the cluster once this process is gone (it needs no teardown)."""
        env, _ = self._as_owner()
        uid, gid = (str(self._user.pw_uid), str(self._user.pw_gid)) if self._user is not None else ("-", "-")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.bindir / "pg_ctl"), str(self.data),
             str(self.root), uid, gid],
            env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-n:]) or "(empty server log)"

    def _fail(self, what: str, res: subprocess.CompletedProcess | None = None) -> PostgresUnavailable:
        out = f"\n{res.stdout}{res.stderr}".rstrip() if res is not None else ""
        return PostgresUnavailable(f"{what} (cluster in {self.root}).{out}\n--- server log tail ---\n{self.log_tail()}")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self._user is not None:
            for p in (self.root, self.sock):
                os.chown(p, self._user.pw_uid, self._user.pw_gid)
            os.chmod(self.root, 0o755)  # the tests (root) read the log
        res = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--no-sync", "--no-instructions")
        if res.returncode != 0:
            raise self._fail("initdb failed", res)
        # the session fixture stops it; these cover an interrupted run (atexit) and a killed one
        atexit.register(self.stop)
        self._start_watchdog()
        last: subprocess.CompletedProcess | None = None
        for _ in range(3):  # a port taken between the probe and the bind: try another one
            self.port = free_port()
            opts = (
                f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
                "-c shared_buffers=64MB -c log_min_messages=warning"
            )
            last = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
            if last.returncode == 0:
                self._started = True
                return
            if "could not bind" not in self.log_tail(10) and "in use" not in self.log_tail(10):
                break
        raise self._fail("pg_ctl start failed", last)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._started:
            self._started = False
            res = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
            if res.returncode != 0:  # leave the folder for a post-mortem
                return
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------------
    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        if not self._started:
            raise self._fail("the cluster is not running")
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        try:
            self._admin(f'CREATE DATABASE "{name}"')
        except Exception as exc:  # report with the server's log
            raise self._fail(f"CREATE DATABASE failed: {type(exc).__name__}: {exc}") from exc
        return self.admin_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a test database, closing what still connects to it (engines a test left open)."""
        name = url.rsplit("/", 1)[1]
        for _ in range(3):
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except Exception:  # a leftover database costs nothing; retry briefly
                time.sleep(0.2)
