"""``alloop serve`` as a labeling tool's ML backend (Label Studio's "Connect Model").

Label Studio calls a backend URL with these paths appended (``label_studio/ml/api_connector.py``
of Label Studio 1.23.2; its default time limits in brackets, ``ML_TIMEOUT_*``):

- ``GET /health`` (1 s) and ``POST /setup`` (3 s) whenever the backend is saved or read:
  ``{"project": "<id>.<created>", "schema": <labeling config>, "hostname", "access_token",
  "extra_params"}``; the answer's ``model_version`` tells Label Studio which predictions are
  current (tasks that hold one of that version are not asked again);
- ``POST /predict`` (100 s) for "Retrieve Predictions" (all selected tasks in one call) and for
  a task opened without a prediction: ``{"tasks": [...], "project", "label_config", "params"}``;
  answered ``{"results": [[prediction, ...] per task]}`` in the order of the tasks;
- ``POST /webhook``: the project's events (Label Studio creates a webhook to ``<url>/webhook``
  with the backend), and "Start Training", sent as ``{"action": "START_TRAINING", "project":
  {...}}`` (the predict limit, 100 s); servers with that feature flag off ``POST /train``
  (``{"annotations": [...], "project": "<id>.<created>", "label_config", "params"}``).

Every call carries the HTTP Basic credentials configured on the backend in Label Studio; they
are compared in constant time with ``$ALLOOP_ML_BACKEND_USER`` (default ``alloop``) and
``$ALLOOP_ML_BACKEND_PASSWORD``, never logged nor stored. Without the password the endpoints
do not exist.

Each alloop project is served under ``/ml/<project>`` (the URL to connect); the bare paths
(``/predict`` ...) find the project by the tool's project id, or serve the only project.

``/predict`` answers with the model of the newest round that has one, named like the
pre-annotations alloop pushes (``<project>-round-<n>``): its probabilities from the round's
score files (one memory-mapped lookup for all tasks), the model itself only for samples the
round did not score (held-out ones), in one batch. Detection projects get the round's boxes.

"Start Training" closes the collecting round at its next tick if it has a new label since its
model (recorded on the round, so a restart keeps the request; ``alloop run`` honors it too),
and the next round trains; the loop never trains outside a round.

The labeling tool's formats (its labeling config, its predictions) come from a
:class:`ToolFormat` the caller injects: this module knows no labeling tool.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import col
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from alloop.errors import AlloopError, ConnectorError
from alloop.loop.artifacts import RoundScores, scores_path
from alloop.loop.data import PoolData
from alloop.loop.external import ExternalModel
from alloop.loop.models import RoundModels
from alloop.loop.states import RoundState
from alloop.protocols import Prediction, WebhookSource
from alloop.serve.webhooks import client_host
from alloop.store.arrays import SampleArrays
from alloop.store.engine import session_scope
from alloop.store.models import Project, Round, Sample, table, utcnow
from alloop.store.queries import current_round, get_project
from alloop.workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["ML_PREFIX", "PASSWORD_ENV", "USER_ENV", "Credentials", "MLError", "MLProject", "ToolFormat",
           "credentials_from_env", "ml_routes", "model_version_name"]

USER_ENV = "ALLOOP_ML_BACKEND_USER"
PASSWORD_ENV = "ALLOOP_ML_BACKEND_PASSWORD"
DEFAULT_USER = "alloop"
ML_PREFIX = "/ml"
#: a /predict of thousands of tasks with inline images is large (Label Studio allows 250 MB)
MAX_BODY = 256 * 1024 * 1024
#: rounds whose score files are final (written before the SCORED transition committed)
SCORED = {RoundState.SCORED.value, RoundState.SELECTED.value, RoundState.PUSHED.value,
          RoundState.COLLECTING.value, RoundState.CLOSED.value}


class ToolFormat(Protocol):
    """What a labeling tool's ML backend calls carry (Label Studio: ``connectors.label_studio.ml``)."""

    name: str
    """The connector whose projects it serves."""
    title: str
    """The tool's name in messages."""

    def check_config(self, xml: str, task: str, labels: Sequence[str], where: str) -> Any:
        """The parsed labeling config; raises ConfigError saying what differs from the project."""
        ...

    def prediction(self, info: Any, pred: Prediction) -> dict[str, Any]:
        """One prediction as the tool stores it (``model_version``, ``score``, ``result``)."""
        ...

    def tool_project(self, uid: Any) -> str | None:
        """The tool's project id in a call's ``project`` field, or None."""
        ...


@dataclass(frozen=True)
class Credentials:
    """The HTTP Basic credentials the tool must send (from the environment only)."""

    user: str
    password: str = field(repr=False)

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = given.partition(b":")
        ok_user = hmac.compare_digest(user, self.user.encode("utf-8"))
        ok_pass = hmac.compare_digest(password, self.password.encode("utf-8"))
        return bool(sep) and ok_user and ok_pass


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """``$ALLOOP_ML_BACKEND_USER`` (default "alloop") and ``$ALLOOP_ML_BACKEND_PASSWORD``; None
    when the password is not set (the ML backend is off)."""
    env = os.environ if env is None else env
    password = env.get(PASSWORD_ENV) or None
    if password is None:
        return None
    return Credentials(env.get(USER_ENV) or DEFAULT_USER, password)


def model_version_name(project: str, round_number: int) -> str:
    """The model identity of a round, as its pushed pre-annotations carry it."""
    return f"{project}-round-{round_number}"


class MLError(Exception):
    """A call the backend refuses: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _ModelRound:
    id: int
    number: int
    state: str


class MLProject:
    """One alloop project as an ML backend: setup, predict, train requests.

    Parameters
    ----------
    ws : Workspace
    fmt : ToolFormat
    wake : callable
        Wakes the project's loop (returns at once).
    source : WebhookSource, optional
        The project's connector: which events wake the loop, and the tool's project id.
    tool_project : str, optional
        The tool's project id when already known (else asked from ``source`` on first use).
    """

    def __init__(self, ws: Workspace, fmt: ToolFormat, wake: Callable[[str], None],
                 source: WebhookSource | None = None, tool_project: str | None = None) -> None:
        self.ws = ws
        self.name = ws.name
        self.fmt = fmt
        self.wake = wake
        self.source = source
        self._lock = threading.Lock()
        self._tool_project = tool_project
        self._configs: dict[str, Any] = {}
        self._scores: tuple[int, RoundScores | None] | None = None
        self.data = PoolData(ws)
        self.models = RoundModels(ws, self.data)

    # -- which project ---------------------------------------------------------------------------
    def tool_project(self) -> str | None:
        """The tool's id of this project (asked once; None when unknown or unreachable)."""
        if self._tool_project is None and self.source is not None:
            try:
                self._tool_project = self.source.webhook_project()
            except ConnectorError as exc:
                logger.warning("project %s: cannot tell which %s project it is (%s)", self.name, self.fmt.title, exc)
        return self._tool_project

    def _check_project(self, uid: Any) -> None:
        called = self.fmt.tool_project(uid)
        mine = self.tool_project()
        if called is not None and mine is not None and called != mine:
            raise MLError(400, (
                f"This ML backend URL serves alloop project {self.name!r}, which labels in {self.fmt.title} project "
                f"{mine}; {self.fmt.title} project {called} called it. Connect this URL to project {mine} "
                f"(`alloop labelstudio connect -p <{self.name}'s folder>`), or the URL of the alloop project "
                f"that labels in project {called} ({ML_PREFIX}/<its name>)."))

    def _config(self, xml: Any, uid: Any) -> Any:
        if not isinstance(xml, str) or not xml.strip():
            raise MLError(400, "Expected the labeling config in the call (\"schema\" for /setup, \"label_config\" "
                               f"for /predict); got {type(xml).__name__}.")
        if xml not in self._configs:
            project = self.ws.project()
            where = f"the labeling config of {self.fmt.title} project {self.fmt.tool_project(uid) or '?'}"
            self._configs = {xml: self.fmt.check_config(xml, project.task, project.labels, where)}
        return self._configs[xml]

    # -- the model ---------------------------------------------------------------------------------
    def _model_round(self, project_id: int) -> _ModelRound | None:
        """The newest round that trained a model."""
        r = table(Round)
        with self.ws.engine.connect() as c:
            row = c.execute(sa_select(r.c.id, r.c.number, r.c.state)
                            .where(r.c.project_id == project_id, r.c.model_version_id.is_not(None))
                            .order_by(r.c.number.desc()).limit(1)).first()
        return None if row is None else _ModelRound(int(row[0]), int(row[1]), str(row[2]))

    def _round_scores(self, rnd: _ModelRound) -> RoundScores | None:
        if self._scores is None or self._scores[0] != rnd.number:
            path = scores_path(self.ws.work_dir, rnd.number)
            self._scores = (rnd.number, RoundScores.load(path) if rnd.state in SCORED and path.exists() else None)
        return self._scores[1]

    def model_version(self) -> str | None:
        project = self.ws.project()
        rnd = self._model_round(project.id)  # type: ignore[arg-type]
        return None if rnd is None else model_version_name(project.name, rnd.number)

    # -- the calls -----------------------------------------------------------------------------------
    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Check that the calling project is this one and its labeling config fits; the model version."""
        self._check_project(payload.get("project"))
        self._config(payload.get("schema"), payload.get("project"))
        return {"model_version": self.model_version()}

    def predict(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Predictions of the newest round's model for the tasks, in their order."""
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise MLError(400, f"Expected {{\"tasks\": [task objects]}}; got tasks of type {type(tasks).__name__}.")
        self._check_project(payload.get("project"))
        info = self._config(payload.get("label_config"), payload.get("project"))
        started = time.perf_counter()
        with self._lock:
            project = self.ws.project()
            rnd = self._model_round(project.id)  # type: ignore[arg-type]
            if rnd is None:
                return {"results": [[] for _ in tasks], "model_version": None}
            version = model_version_name(project.name, rnd.number)
            keys = [str((t.get("data") or {}).get("sample_id", "")) for t in tasks]
            if project.task == "detection":
                preds = self._boxes(project, rnd, keys, version)
            else:
                preds = self._choices(project, rnd, keys, version)
        results = [[self.fmt.prediction(info, p)] if p is not None else [] for p in preds]
        logger.info("project %s: predicted %d of %d tasks with %s in %.3f s", self.name, sum(map(bool, results)),
                    len(tasks), version, time.perf_counter() - started)
        return {"results": results, "model_version": version}

    def _samples(self, project_id: int, keys: Sequence[str], with_data: bool = False
                 ) -> dict[str, tuple[Any, ...]]:
        """``{key: (id, vector-store row, data?)}`` of the readable samples among ``keys``."""
        t = table(Sample)
        cols = [t.c.key, t.c.id, t.c.row] + ([t.c.data] if with_data else [])
        wanted = sorted(set(keys))
        out: dict[str, tuple[Any, ...]] = {}
        with self.ws.engine.connect() as c:
            for i in range(0, len(wanted), 900):
                for row in c.execute(sa_select(*cols).where(t.c.project_id == project_id, t.c.status == "ok",
                                                            t.c.key.in_(wanted[i : i + 900]))):
                    out[row[0]] = tuple(row[1:])
        return out

    def _choices(self, project: Project, rnd: _ModelRound, keys: list[str], version: str) -> list[Prediction | None]:
        recs = self._samples(project.id, keys)  # type: ignore[arg-type]
        ids = np.array(sorted({int(v[0]) for v in recs.values()}), dtype=np.int64)
        P: NDArray[np.float32] = np.full((len(ids), len(project.labels)), np.nan, dtype=np.float32)
        scores = self._round_scores(rnd)
        if scores is not None and scores.proba is not None and len(scores.sample_ids) and len(ids):
            pos = np.minimum(np.searchsorted(scores.sample_ids, ids), len(scores.sample_ids) - 1)
            hit = scores.sample_ids[pos] == ids
            P[hit] = np.asarray(scores.proba[pos[hit]])  # one fancy-indexed read of the memory map
        todo = np.flatnonzero(np.isnan(P[:, 0])) if len(ids) else np.zeros(0, dtype=np.int64)
        if len(todo):  # not scored by the round (held-out, imported later): the model itself, one batch
            self._model_proba(project, rnd, ids, todo, P, recs)
        at = {int(i): n for n, i in enumerate(ids)}
        out: list[Prediction | None] = []
        for key in keys:
            rec = recs.get(key)
            p = P[at[int(rec[0])]] if rec is not None else None
            if p is None or np.isnan(p[0]):
                out.append(None)
                continue
            top = int(np.argmax(p))
            out.append(Prediction(label=project.labels[top], score=float(p[top]), model_version=version,
                                  proba={lb: float(v) for lb, v in zip(project.labels, p)}))
        return out

    def _model_proba(self, project: Project, rnd: _ModelRound, ids: NDArray[np.int64], todo: NDArray[np.int64],
                     P: NDArray[np.float32], recs: Mapping[str, tuple[Any, ...]]) -> None:
        with session_scope(self.ws.engine) as s:
            row = s.get(Round, rnd.id)
        model = self.models.of(row) if row is not None else None
        if model is None:
            return
        if isinstance(model, ExternalModel):
            if model.proba is None:
                return
            key_of = {int(v[0]): k for k, v in recs.items()}
            known = set(model.keys)
            mine = [j for j in todo if key_of[int(ids[j])] in known]
            if mine:
                P[mine] = model.proba_of([key_of[int(ids[j])] for j in mine])
            return
        rows = {int(v[0]): -1 if v[1] is None else int(v[1]) for v in recs.values()}
        want = SampleArrays(ids[todo], np.array([rows[int(i)] for i in ids[todo]], dtype=np.int64))
        kept, X = self.data.features(project.id, want)  # type: ignore[arg-type]
        if len(kept):
            at = np.searchsorted(ids, kept.ids)
            P[at] = np.asarray(model.predict_proba(np.asarray(X)), dtype=np.float32)

    def _boxes(self, project: Project, rnd: _ModelRound, keys: list[str], version: str) -> list[Prediction | None]:
        from alloop.detection.annotations import image_size, percent_boxes

        recs = self._samples(project.id, keys, with_data=True)  # type: ignore[arg-type]
        scores = self._round_scores(rnd)
        boxes: dict[int, list[dict[str, Any]]] = {}
        if scores is not None and scores.objects is not None and len(scores.objects) and recs:
            ids = np.array(sorted({int(v[0]) for v in recs.values()}), dtype=np.int64)
            o, sid = scores.objects, scores.sample_ids
            pos = np.minimum(np.searchsorted(sid, ids), len(sid) - 1)
            pos = pos[sid[pos] == ids]
            for j in np.flatnonzero(np.isin(o.image, pos)):
                x0, y0, x1, y1 = (float(v) for v in o.box[j])
                boxes.setdefault(int(sid[o.image[j]]), []).append(
                    {"bbox": [x0, y0, x1 - x0, y1 - y0], "label": project.labels[int(o.label[j])],
                     "score": float(o.score[j])})
        out: list[Prediction | None] = []
        for key in keys:
            rec = recs.get(key)
            mine = boxes.get(int(rec[0])) if rec is not None else None
            if not mine or rec is None:
                out.append(None)
                continue
            best = max(mine, key=lambda b: b["score"])
            out.append(Prediction(label=best["label"], score=float(np.mean([b["score"] for b in mine])),
                                  model_version=version,
                                  value={"boxes": percent_boxes(mine, image_size(rec[2] or {}, key))}))
        return out

    def request_training(self, why: str) -> dict[str, Any]:
        """Close the collecting round at its next tick with a new label; wake the loop."""
        with session_scope(self.ws.engine) as s:
            project = get_project(s, self.name)
            if project.status == "finished":
                raise MLError(409, f"Project {self.name!r} is finished ({project.finished_reason}): there is no "
                                   "next round to train. Raise [loop] max_rounds or budget in alloop.toml to go on.")
            rnd = current_round(s, project.id)  # type: ignore[arg-type]
            number = rnd.number if rnd is not None else None
            if rnd is None or rnd.state == RoundState.CLOSED:
                what = "the next round starts now"
            elif rnd.state == RoundState.FAILED:
                raise MLError(409, f"Round {rnd.number} of project {self.name!r} FAILED ({rnd.last_error}): fix the "
                                   "cause, then run `alloop retry` and the loop trains again.")
            elif rnd.state in (RoundState.PUSHED, RoundState.COLLECTING):
                r = table(Round)
                s.connection().execute(update(r).where(
                    r.c.id == rnd.id, col(r.c.state).in_([RoundState.PUSHED.value, RoundState.COLLECTING.value]),
                    r.c.retrain_requested_at.is_(None)).values(retrain_requested_at=utcnow()))
                what = (f"round {rnd.number} closes at its next tick with at least one new label since its model, "
                        f"then round {rnd.number + 1} trains")
            else:
                what = f"round {rnd.number} is {rnd.state}: its model is trained already"
        logger.info("project %s: %s: %s", self.name, why, what)
        self.wake(why)
        return {"project": self.name, "round": number, "training": what}

    def event(self, payload: Any) -> tuple[int, dict[str, Any]]:
        """A /webhook call: "Start Training", or a project event that wakes the loop as the webhook does."""
        action = payload.get("action") if isinstance(payload, dict) else None
        if not isinstance(action, str):
            raise MLError(400, "Expected a JSON object with an \"action\" string.")
        if action == "START_TRAINING":
            return 201, self.request_training(f"training requested in {self.fmt.title}")
        ev = self.source.webhook_event(payload) if self.source is not None else None
        if ev is None or not ev.wakes:
            return 200, {"project": self.name, "action": action, "woken": False}
        self.wake(f"webhook {action}")
        return 202, {"project": self.name, "action": action, "woken": True}


def ml_routes(projects: Mapping[str, MLProject], creds: Credentials) -> list[BaseRoute]:
    """The ML backend's routes: ``/ml/<project>/<call>`` and the bare ``/<call>``."""

    def refuse(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization")
        if creds.check(header):
            return None
        logger.warning("ML backend call %s %s from %s refused: %s HTTP Basic credentials (see %s, %s)",
                       request.method, request.url.path, client_host(request), "missing" if header is None else "wrong",
                       USER_ENV, PASSWORD_ENV)
        return JSONResponse({"error": "missing or wrong HTTP Basic credentials: set the ML backend's Basic Auth "
                                      f"user and password in the labeling tool to ${USER_ENV} and ${PASSWORD_ENV}"},
                            status_code=401, headers={"WWW-Authenticate": 'Basic realm="alloop"'})

    async def body(request: Request) -> Any:
        length = request.headers.get("content-length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            raise MLError(413, f"Expected a Content-Length of at most {MAX_BODY} bytes; got {length[:20]!r}.")
        raw = await request.body()
        try:
            return json.loads(raw) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise MLError(400, "The body is not JSON.") from None

    def find(name: str | None, payload: Any) -> MLProject:
        if name is not None:
            if name not in projects:
                raise MLError(404, f"alloop serve drives no ML backend project {name!r}; it serves "
                                   f"{sorted(projects)}: connect {ML_PREFIX}/<one of them>.")
            return projects[name]
        if len(projects) == 1:
            return next(iter(projects.values()))
        uid = payload.get("project") if isinstance(payload, dict) else None
        for p in projects.values():
            called = p.fmt.tool_project(uid)
            if called is not None and called == p.tool_project():
                return p
        raise MLError(404, f"No served project labels in the calling project ({uid!r}); connect the URL "
                           f"{ML_PREFIX}/<project> of one of {sorted(projects)} instead of the bare server URL.")

    def endpoint(call: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> JSONResponse:
            refused = refuse(request)
            if refused is not None:
                return refused
            name = request.path_params.get("project")
            try:
                if call == "health":
                    if name is not None:
                        find(name, None)
                    return JSONResponse({"status": "UP", "model_class": "alloop",
                                         "projects": [name] if name is not None else sorted(projects)})
                payload = await body(request)
                if not isinstance(payload, dict):
                    raise MLError(400, f"Expected a JSON object; got {type(payload).__name__}.")
                p = find(name, payload)
                if call == "setup":
                    return JSONResponse(await run_in_threadpool(p.setup, payload))
                if call == "predict":
                    return JSONResponse(await run_in_threadpool(p.predict, payload))
                if call == "train":
                    return JSONResponse(await run_in_threadpool(p.request_training, "training requested (/train)"),
                                        status_code=201)
                status, out = await run_in_threadpool(p.event, payload)
                return JSONResponse(out, status_code=status)
            except MLError as exc:
                logger.warning("ML backend %s %s from %s: %d %s", request.method, request.url.path,
                               client_host(request), exc.status, exc.message)
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            except AlloopError as exc:
                message = " ".join([str(exc), *getattr(exc, "__notes__", ())])
                logger.warning("ML backend %s %s from %s refused: %s", request.method, request.url.path,
                               client_host(request), message)
                return JSONResponse({"error": message}, status_code=400)
            except Exception as exc:  # a bug must not take the server down; the tool shows a 500
                logger.exception("ML backend %s %s failed", request.method, request.url.path)
                return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

        return handle

    routes: list[BaseRoute] = []
    for call, method in (("health", "GET"), ("setup", "POST"), ("predict", "POST"), ("webhook", "POST"),
                         ("train", "POST")):
        routes.append(Route(f"{ML_PREFIX}/{{project}}/{call}", endpoint(call), methods=[method]))
        routes.append(Route(f"/{call}", endpoint(call), methods=[method]))
    return routes
