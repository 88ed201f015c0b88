"""The ``alloop serve`` process: scheduled and webhook-woken runs of each project's loop.

Threads:

- one **worker** per project: it sleeps until woken (by the schedule, a webhook, or once at
  start), then runs :meth:`Controller.run` - ticks until the round waits for labels or the
  project finishes - under the project lease. Another process holding the lease is logged
  and the run skipped (that process is advancing the project); errors are logged and kept for
  ``/healthz``, never fatal. Wakes that arrive during a run coalesce into one more run.
- the **scheduler** (APScheduler): one job per project (``[serve] interval_s`` or ``cron``)
  that only wakes its worker. The next run time is written to the project row
  (``next_action_at``/``next_action``) for ``alloop status``.
- the **HTTP server** (uvicorn running the Starlette app of :mod:`alloop.serve.webhooks`).
- the **main thread** waits for SIGTERM/SIGINT: the first stops the scheduler and lets each
  worker finish the transition in progress (each is one database transaction) before the
  HTTP server closes and the process exits 0; a second one exits at once (status 128+signal),
  which is still consistent since an unfinished transaction is rolled back.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from alloop.errors import (
    AlloopError,
    ConfigError,
    ConnectorError,
    ConnectorUnavailableError,
    EmptyPoolError,
    LockedError,
)
from alloop.loop.controller import Controller
from alloop.loop.result import TickResult
from alloop.protocols import WebhookSource
from alloop.serve.mlbackend import (
    ML_PREFIX,
    PASSWORD_ENV,
    USER_ENV,
    Credentials,
    MLProject,
    ToolFormat,
    ml_routes,
)
from alloop.serve.schedule import describe, make_trigger
from alloop.serve.status import off as status_off
from alloop.serve.status import status_routes
from alloop.serve.webhooks import Target, client_host, create_app, webhook_path
from alloop.store.engine import session_scope
from alloop.store.models import Project, Sample, utcnow
from alloop.store.queries import current_round, get_project
from alloop.workspace import Workspace

logger = logging.getLogger(__name__)


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def prepare(ws: Workspace) -> None:
    """What ``alloop run`` checks first: the project row, a readable pool, buildable components."""
    project = ws.ensure_project()
    with session_scope(ws.engine) as s:
        n = s.exec(
            select(func.count()).select_from(Sample).where(Sample.project_id == project.id, Sample.status == "ok")
        ).one()
    if n == 0:
        raise EmptyPoolError(f"Project {ws.name!r} has no readable samples. Run `alloop import` first.")
    ws.validate()


def webhook_url(public_url: str, project: str, connector: str) -> str:
    """Where the tool of ``connector`` calls this server for ``project``."""
    return f"{public_url.rstrip('/')}{webhook_path(connector)}?{urllib.parse.urlencode({'project': project})}"


@dataclass
class ProjectStatus:
    state: str | None = None
    round: int | None = None
    next_run_at: datetime | None = None
    last_tick_at: datetime | None = None
    last_error: str | None = None
    running: bool = False

    def as_json(self) -> dict[str, Any]:
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {"state": self.state, "round": self.round, "next_run_at": iso(self.next_run_at),
                "last_tick_at": iso(self.last_tick_at), "last_error": self.last_error, "running": self.running}


@dataclass
class ProjectRunner:
    """Runs one project's loop in its own thread whenever it is woken."""

    ws: Workspace
    stop: threading.Event
    owner: str
    webhook: str | None = None
    """The receiver URL to (re)register with Label Studio before the next run, until it worked."""
    secret: str | None = field(default=None, repr=False)
    status: ProjectStatus = field(default_factory=ProjectStatus)
    job: Any = None

    def __post_init__(self) -> None:
        self.name = self.ws.name
        self.ctl = Controller(self.ws)
        self._wake = threading.Event()
        self._why = "start"
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"alloop-serve-{self.name}", daemon=True)
        self.what = f"tick ({describe(self.ws.config.serve)}) by {self.owner}"

    # -- waking ----------------------------------------------------------------------------
    def wake(self, why: str) -> None:
        """Ask for a run soon (returns at once; wakes during a run coalesce into one more run)."""
        with self._lock:
            self._why = why
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if self.stop.is_set():
                return
            self._wake.clear()
            with self._lock:
                why = self._why
            self.run_once(why)

    # -- one run ---------------------------------------------------------------------------
    def run_once(self, why: str) -> list[TickResult]:
        results: list[TickResult] = []
        self.status.running = True
        try:
            self._register_webhook()
            results = self.ctl.run(should_stop=self.stop.is_set)
            self.status.last_error = None
        except LockedError as exc:
            logger.info("project %s: skipped this run (woken by %s): another process holds the lease (%s)",
                        self.name, why, exc.owner)
        except AlloopError as exc:
            logger.error("project %s: %s", self.name, " ".join([str(exc), *getattr(exc, "__notes__", ())]))
            self.status.last_error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug in one project must not stop the others
            logger.exception("project %s: unexpected error", self.name)
            self.status.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.status.running = False
            self.status.last_tick_at = utcnow()
        if results:
            last = results[-1]
            progressed = any(r.progressed for r in results)
            logger.log(logging.INFO if progressed or last.finished else logging.DEBUG,
                       "project %s: %s (woken by %s)", self.name, last.message, why)
            if last.finished:
                self.unschedule()
        try:
            self.refresh()
        except Exception:  # the database may be briefly unreachable
            logger.exception("project %s: could not read or write its status", self.name)
        return results

    def _register_webhook(self, *, at_start: bool = False) -> None:
        """Register the pending webhook. Label Studio unreachable: retried before the next run.
        Any other error stops serve at start; later (the server came back refusing) it is logged
        once and the project runs on its schedule only."""
        if self.webhook is None or self.secret is None:
            return
        try:
            register_webhook(self.ws, self.webhook, self.secret)
        except ConnectorUnavailableError as exc:
            logger.warning("project %s: Label Studio unreachable, webhook not registered yet (retried next run): %s",
                           self.name, exc)
            return
        except AlloopError as exc:
            if at_start:
                raise
            logger.error("project %s: could not register the webhook; scheduled ticks only: %s", self.name,
                         " ".join([str(exc), *getattr(exc, "__notes__", ())]))
            self.status.last_error = f"{type(exc).__name__}: {exc}"
        self.webhook = None

    # -- status ----------------------------------------------------------------------------
    def next_run_at(self) -> datetime | None:
        if self.job is None:
            return None
        at = self.job.next_run_time
        now = utcnow()
        if at is not None and at <= now:  # the scheduler has not moved the job on yet
            at = self.job.trigger.get_next_fire_time(at, now)
        return at

    def refresh(self) -> None:
        """Read the round state; write the next scheduled action to the project row."""
        at = self.next_run_at()
        with session_scope(self.ws.engine) as s:
            project = get_project(s, self.name)
            rnd = current_round(s, project.id)  # type: ignore[arg-type]
            s.execute(update(Project).where(col(Project.id) == project.id)
                      .values(next_action_at=at, next_action=self.what if at is not None else None))
        self.status.next_run_at = at
        self.status.round = rnd.number if rnd else None
        self.status.state = "finished" if project.status == "finished" else (rnd.state if rnd else "new")

    def unschedule(self) -> None:
        if self.job is not None:
            try:
                self.job.remove()
            except Exception:  # already gone (scheduler shut down)
                pass
            self.job = None
            logger.info("project %s finished: no more scheduled ticks", self.name)

    def forget_next_action(self) -> None:
        """Clear the next action in the database, if it is still this process's."""
        with session_scope(self.ws.engine) as s:
            s.execute(update(Project).where(col(Project.name) == self.name, col(Project.next_action) == self.what)
                      .values(next_action_at=None, next_action=None))


def register_webhook(ws: Workspace, url: str, secret: str) -> str:
    """Have the project's labeling tool call ``url`` when its annotations change (idempotent)."""
    conn = ws.connector
    if not isinstance(conn, WebhookSource):
        raise ConfigError(f"Connector {conn.name!r} of project {ws.name!r} has no webhooks; run serve with "
                          "--no-register-webhook (scheduled ticks only) for it.")
    path = webhook_path(conn.name)
    path_query = url.split(path, 1)[-1]
    try:
        return conn.ensure_webhook(url, secret, match=lambda other: other.endswith(path + path_query))
    except ConnectorUnavailableError:
        raise
    except ConnectorError as exc:
        exc.add_note(
            f"{conn.name} must be able to call {url}. A server that refuses local or private addresses "
            "(403 'reserved network address') needs LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false or "
            "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS=false in its environment; or pass --public-url with an "
            "address it may call, or --no-register-webhook to register the webhook yourself."
        )
        raise


class Service:
    """``alloop serve`` for ``workspaces``: see the module docstring.

    Parameters
    ----------
    workspaces : sequence of Workspace
        The projects (names must differ).
    host, port : str, int
        Where the HTTP server listens.
    public_url : str, optional
        How Label Studio reaches this server (default ``http://host:port``).
    secret : str, optional
        The webhook secret; ``None`` turns the webhook receiver off (schedule only).
    register_webhook : bool, optional
        Register the webhook with each Label Studio project at start; default: when a secret
        is given, for projects whose connector is ``label_studio``.
    ml_backend : Credentials, optional
        Serve the ML backend (:mod:`alloop.serve.mlbackend`) with these HTTP Basic credentials
        for the projects whose connector has one of ``ml_formats``; None: off.
    ml_formats : sequence of ToolFormat
        The labeling tools' formats, by their connector's name.
    """

    def __init__(
        self,
        workspaces: Sequence[Workspace],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        public_url: str | None = None,
        secret: str | None = None,
        register_webhook: bool | None = None,
        ml_backend: Credentials | None = None,
        ml_formats: Sequence[ToolFormat] = (),
    ) -> None:
        names = [ws.name for ws in workspaces]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"Project names must differ within one serve process; {dupes} given twice.")
        if not workspaces:
            raise ConfigError("No project to serve: pass --project PATH (several times for several projects).")
        self.host, self.port = host, port
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
        self.public_url = (public_url or f"http://{shown}:{port}").rstrip("/")
        self.secret = secret or None
        self.register = register_webhook
        self.ml_credentials = ml_backend
        self.ml_formats = {f.name: f for f in ml_formats}
        self.owner = owner_id()
        self.stop = threading.Event()
        self.runners = {ws.name: ProjectRunner(ws, self.stop, self.owner) for ws in workspaces}
        self._signal: int | None = None
        self._scheduler: Any = None
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # -- start -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"status": "stopping" if self.stop.is_set() else "ok",
                "projects": {name: r.status.as_json() for name, r in self.runners.items()}}

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"Cannot listen on {self.host}:{self.port}: {exc.strerror}. Pass another --port "
                              "(or stop what uses it).") from None
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    def start(self) -> None:
        """Check every project, bind the port, register webhooks, start workers, scheduler and HTTP."""
        for r in self.runners.values():
            prepare(r.ws)
        self._sock = self._bind()
        targets = {}
        for name, r in self.runners.items():
            conn = r.ws.connector
            source = conn if isinstance(conn, WebhookSource) else None
            register = self.secret is not None and (self.register if self.register is not None else source is not None)
            if register:
                r.secret, r.webhook = self.secret, webhook_url(self.public_url, name, conn.name)
                r._register_webhook(at_start=True)
            tool_project = None
            if source is not None and self.secret is not None and r.webhook is None:  # registered, or by hand
                try:  # events of webhooks registered without ?project= are matched by this id
                    tool_project = source.webhook_project()
                except ConnectorError as exc:
                    logger.warning("project %s: the %s project is not known yet (%s)", name, conn.name, exc)
            targets[name] = Target(name, r.wake, source, conn.name, tool_project)
        ml = self._ml_projects(targets)
        self._start_scheduler()
        for r in self.runners.values():
            r.refresh()
            r.thread.start()
            r.wake("start")
        extra = ml_routes(ml, self.ml_credentials) if ml and self.ml_credentials else []
        self._start_http(targets, [*extra, *status_routes({n: r.ws for n, r in self.runners.items()},
                                                          lambda: self.health()["projects"], self._page_access)])
        hooks = f"status page at {self.public_url}/" if self.ml_credentials else "status page off"
        hooks += f"; webhooks at {self.public_url}/webhooks/<tool>" if self.secret else "; webhooks off"
        if ml:
            hooks += f"; ML backend at {self.public_url}{ML_PREFIX}/<project> for {', '.join(ml)}"
        logger.info("alloop serve %s: listening on %s:%d (%s); projects: %s", self.owner, self.host, self.port,
                    hooks, ", ".join(f"{n} ({describe(r.ws.config.serve)})" for n, r in self.runners.items()))

    def _page_access(self, request: Any) -> Any:
        """The status page's guard: the ML backend's HTTP Basic credentials; off without them."""
        if self.ml_credentials is None:
            return status_off(request)
        if self.ml_credentials.check(request.headers.get("authorization")):
            return None
        from starlette.responses import PlainTextResponse

        logger.warning("status page request from %s refused: %s HTTP Basic credentials", client_host(request),
                       "missing" if request.headers.get("authorization") is None else "wrong")
        return PlainTextResponse("The status page needs the HTTP Basic credentials of alloop serve's ML backend "
                                 f"(${USER_ENV}, ${PASSWORD_ENV}).", status_code=401,
                                 headers={"WWW-Authenticate": 'Basic realm="alloop"'})

    def _ml_projects(self, targets: dict[str, Target]) -> dict[str, MLProject]:
        """The projects served as ML backend: those whose connector's tool has a format."""
        if self.ml_credentials is None:
            return {}
        out = {}
        for name, r in self.runners.items():
            fmt = self.ml_formats.get(r.ws.config.connector.name)
            if fmt is not None:
                t = targets[name]
                out[name] = MLProject(r.ws, fmt, r.wake, t.source, t.tool_project)
        return out

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(timezone="UTC")
        for name, r in self.runners.items():
            r.job = self._scheduler.add_job(
                r.wake, make_trigger(r.ws.config.serve), args=["schedule"], id=name, name=f"tick {name}",
                coalesce=True, max_instances=1, misfire_grace_time=None,
            )
        self._scheduler.start()

    def _start_http(self, targets: dict[str, Target], extra: Sequence[Any] = ()) -> None:
        import uvicorn

        app = create_app(targets, self.secret, self.health, extra)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, log_config=None)
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, kwargs={"sockets": [self._sock]},
                                             name="alloop-serve-http", daemon=True)
        self._http_thread.start()

    # -- run and stop --------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._signal is not None:
            os.write(2, f"alloop serve: second {signal.Signals(signum).name}, exiting now\n".encode())
            os._exit(128 + signum)
        self._signal = signum
        self.stop.set()

    def serve_forever(self) -> None:
        """Start, then wait for SIGTERM/SIGINT and stop gracefully (main thread only)."""
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                self.start()
            except BaseException:
                self.stop.set()
                self.shutdown(quiet=True)
                raise
            while not self.stop.wait(0.5):
                if self._http_thread is not None and not self._http_thread.is_alive():
                    logger.error("the HTTP server stopped unexpectedly; stopping")
                    self.stop.set()
            self.shutdown()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)

    def shutdown(self, quiet: bool = False) -> None:
        """Stop scheduling, let each worker finish its transition, close the HTTP server."""
        why = signal.Signals(self._signal).name if self._signal else "shutdown"
        busy = [n for n, r in self.runners.items() if r.status.running]
        if not quiet:
            logger.info("%s: no new runs%s", why,
                        f"; finishing the transition in progress of {', '.join(busy)}" if busy else "")
        self.stop.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for r in self.runners.values():
            r._wake.set()
        for r in self.runners.values():
            if r.thread.is_alive():
                r.thread.join()
        for r in self.runners.values() if not quiet else ():
            try:
                r.forget_next_action()
            except Exception:
                logger.exception("project %s: could not clear its next action", r.name)
        if self._http is not None:
            self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        for r in self.runners.values():
            r.ws.close()
        if not quiet:
            logger.info("alloop serve %s stopped", self.owner)
