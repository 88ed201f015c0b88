"""The HTTP side of ``alloop serve`` (Starlette): ``GET /healthz`` and ``POST /webhooks/label-studio``.

A webhook call only *wakes* the project's loop - the next tick pulls Label Studio's export,
which stays the source of truth - so a lost, repeated or reordered event changes nothing.

The receiver checks the shared secret (``X-Alloop-Secret``, compared in constant time) before it
reads the body; a missing or wrong secret is answered 401, a body that is not a JSON object 400,
a project it does not serve 404 - each with one log line, never the secret. The project is named
by the ``project`` query parameter of the registered URL, else found by the Label Studio project
id of the payload.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.label_studio.connector import SECRET_HEADER, WEBHOOK_ACTIONS

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/label-studio"
#: Label Studio events that change annotations; any other event is acknowledged and ignored
WAKING_ACTIONS = frozenset(WEBHOOK_ACTIONS)
MAX_BODY = 16 * 1024 * 1024


@dataclass
class Target:
    """A project the receiver can wake."""

    name: str
    wake: Callable[[str], None]
    """Called with the reason (e.g. "webhook ANNOTATION_CREATED"); must return at once."""
    ls_project_id: int | None = None


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def create_app(
    targets: Mapping[str, Target],
    secret: str | None,
    health: Callable[[], dict[str, Any]],
) -> Starlette:
    """The ASGI app. ``secret=None`` serves ``/healthz`` only (``alloop serve --no-webhook``)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(health())

    key = (secret or "").encode("utf-8")

    async def label_studio(request: Request) -> JSONResponse:
        given = request.headers.get(SECRET_HEADER)
        if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key):
            logger.warning("Webhook from %s refused: %s %s header", _client(request),
                           "missing" if given is None else "wrong", SECRET_HEADER)
            return JSONResponse({"error": f"missing or wrong {SECRET_HEADER} header"}, status_code=401)
        length = request.headers.get("content-length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            logger.warning("Webhook from %s refused: Content-Length %r (at most %d bytes)", _client(request),
                           length[:20], MAX_BODY)
            return JSONResponse({"error": f"expected a Content-Length of at most {MAX_BODY} bytes"}, status_code=413)
        body = await request.body()
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            logger.warning("Webhook from %s refused: the body is not JSON (%s)", _client(request), exc)
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        action = payload.get("action") if isinstance(payload, dict) else None
        if not isinstance(action, str):
            logger.warning("Webhook from %s refused: expected a JSON object with an \"action\"", _client(request))
            return JSONResponse({"error": "expected a JSON object with an \"action\" string"}, status_code=400)
        target = _find(payload, request.query_params.get("project"))
        if target is None:
            logger.warning("Webhook %s from %s for a project this server does not drive (project=%r, Label Studio "
                           "project %r)", action, _client(request), request.query_params.get("project"),
                           _ls_project(payload))
            return JSONResponse({"error": "unknown project", "serving": sorted(targets)}, status_code=404)
        if action not in WAKING_ACTIONS:
            logger.debug("Webhook %s for %s ignored", action, target.name)
            return JSONResponse({"project": target.name, "action": action, "woken": False})
        target.wake(f"webhook {action}")
        return JSONResponse({"project": target.name, "action": action, "woken": True}, status_code=202)

    def _find(payload: dict[str, Any], name: str | None) -> Target | None:
        if name is not None:
            return targets.get(name)
        ls_id = _ls_project(payload)
        return next((t for t in targets.values() if ls_id is not None and t.ls_project_id == ls_id), None)

    routes = [Route("/healthz", healthz, methods=["GET"])]
    if secret:  # an empty secret would let anyone in: no receiver then
        routes.append(Route(WEBHOOK_PATH, label_studio, methods=["POST"]))
    return Starlette(routes=routes)


def _ls_project(payload: dict[str, Any]) -> int | None:
    """The Label Studio project id of an event: ``project.id``, else the annotation's ``project``."""
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if project is None and isinstance(payload.get("annotation"), dict):
        project = payload["annotation"].get("project")
    try:
        return int(project) if project is not None else None
    except (TypeError, ValueError):
        return None
